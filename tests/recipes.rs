//! docs/recipes.md against the presets: every row with a key holds the value the preset loads,
//! and a row that says `=` has the source's value too — so a preset that drifts from its source,
//! or from what the page says of it, fails.

use barlow::config::Config;

/// One row of a recipe table: preset, key, source value, barlow value, match.
struct Row {
    preset: String,
    key: String,
    source: String,
    barlow: String,
    matches: String,
}

fn rows(text: &str) -> Vec<Row> {
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| preset"))
        .map(|l| {
            let cells: Vec<String> = l.trim_matches('|').split(" | ").map(|c| c.trim().to_string()).collect();
            assert_eq!(cells.len(), 6, "a row of six cells: {l}");
            let [preset, key, _, source, barlow, matches] = <[String; 6]>::try_from(cells).unwrap();
            Row { preset, key, source, barlow, matches }
        })
        .collect()
}

/// A cell's value: the TOML between its backticks.
fn value(cell: &str) -> Option<toml::Value> {
    let inner = cell.strip_prefix('`')?.strip_suffix('`')?;
    let table: toml::Table = toml::from_str(&format!("v = {inner}")).ok()?;
    table.get("v").cloned()
}

/// `preset`'s value of `section.key` as it loads (defaults filled in).
fn loaded(preset: &str, key: &str) -> Option<toml::Value> {
    let config = Config::load(preset, &[]).unwrap_or_else(|e| panic!("{preset}: {e:#}"));
    let table: toml::Table = toml::from_str(&config.to_toml()).unwrap();
    let (section, key) = key.split_once('.')?;
    table.get(section)?.get(key).cloned()
}

fn check(text: &str) -> Vec<String> {
    let mut wrong = vec![];
    for row in rows(text) {
        if row.key == "—" {
            if row.matches.is_empty() || row.matches == "=" {
                wrong.push(format!("{}: a difference without a reason", row.preset));
            }
            continue;
        }
        let Some(want) = value(&row.barlow) else {
            wrong.push(format!("{} {}: barlow's value `{}` is not a TOML value in backticks", row.preset, row.key, row.barlow));
            continue;
        };
        if loaded(&row.preset, &row.key).as_ref() != Some(&want) {
            wrong.push(format!("{} {}: the page says {}, the preset has {:?}", row.preset, row.key, row.barlow, loaded(&row.preset, &row.key)));
        }
        if row.matches.starts_with('=') && value(&row.source) != Some(want) {
            wrong.push(format!("{} {}: marked `=`, but the source has {}", row.preset, row.key, row.source));
        }
    }
    wrong
}

#[test]
fn every_row_of_docs_recipes_holds_for_its_preset() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/recipes.md")).unwrap();
    assert!(rows(&text).len() > 60, "the tables are read");
    let wrong = check(&text);
    assert!(wrong.is_empty(), "docs/recipes.md and the presets disagree:\n{}", wrong.join("\n"));
}

/// The check can fail: a preset value the page misstates, a `=` over two different values, and
/// a difference without its reason are each caught.
#[test]
fn a_drifted_row_is_caught() {
    let bad = "| cifar10 | optim.eta | x | `0.02` | `0.001` | = |\n\
               | cifar10 | model.lambda | x | `0.005` | `0.0051` | = |\n\
               | cifar10 | — | x | a | b |  |\n";
    assert_eq!(check(bad).len(), 4, "{:#?}", check(bad));
}
