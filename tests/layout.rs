//! The source's shape: no import circles between modules, and no file over the size a reader
//! takes in at once.
//!
//! The module graph is read from the source text: a file (module) depends on every module a
//! `crate::` or `super::` path in it names, except its own submodules (a parent declaring and
//! re-exporting its children is structure, not dependency), and except its unit tests. A path
//! through a re-export counts as a dependency on the module that defines the item.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, by its module path (`data::loader`; `data` for `data/mod.rs`).
fn modules(dir: &Path, prefix: &[String], out: &mut BTreeMap<Vec<String>, PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
        let mut name = prefix.to_vec();
        if path.is_dir() {
            name.push(stem);
            modules(&path, &name, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            if !matches!(stem.as_str(), "mod" | "lib" | "main") {
                name.push(stem.clone());
            }
            if stem != "main" {
                out.insert(name, path);
            }
        }
    }
}

/// The paths a source names after `crate::` or `super::`, made absolute, `{a, b::c}` groups
/// spread out; comments are dropped.
fn paths(text: &str, module: &[String]) -> Vec<Vec<String>> {
    // A file's unit tests (at its end) are not part of the module's dependencies.
    let text = text.split("#[cfg(test)]\nmod ").next().unwrap();
    let code: String = text.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &code[i..];
        let boundary = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b'$');
        let base: Option<(Vec<String>, usize)> = if boundary && rest.starts_with("crate::") {
            Some((vec![], 7))
        } else if boundary && rest.starts_with("super::") {
            // `super` is the parent module, whichever file holds the module.
            let ups = (0..).take_while(|k| code[i + 7 * k..].starts_with("super::")).count();
            Some((module[..module.len().saturating_sub(ups)].to_vec(), 7 * ups))
        } else {
            None
        };
        match base {
            Some((base, skip)) => {
                let (tails, len) = tree(&code[i + skip..]);
                found.extend(tails.into_iter().map(|t| [base.clone(), t].concat()));
                i += skip + len.max(1);
            }
            None => i += rest.chars().next().unwrap().len_utf8(),
        }
    }
    found
}

/// The paths of a use-tree at the start of `s` (`a::b`, `{a, b::{c, d}}`), and its length.
fn tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let ident = |s: &str| s.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(s.len());
    let mut at = 0;
    let mut prefix = Vec::new();
    loop {
        let rest = &s[at..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut out = Vec::new();
            let mut inner = 1;
            loop {
                let piece = group[inner - 1..].trim_start_matches([' ', '\n', ',', '\t']);
                inner = group.len() - piece.len() + 1;
                if piece.starts_with('}') || piece.is_empty() {
                    return (out, at + inner + 1);
                }
                let (tails, len) = tree(piece);
                out.extend(tails.into_iter().map(|t| [prefix.clone(), t].concat()));
                inner += len.max(1);
            }
        }
        let n = ident(rest);
        if n == 0 {
            return (vec![prefix], at);
        }
        prefix.push(rest[..n].to_string());
        at += n;
        match s[at..].starts_with("::") {
            true => at += 2,
            false => return (vec![prefix], at),
        }
    }
}

/// What each module re-exports: `(module, name)` → the path it names (`pub use a::B;`).
fn reexports(files: &BTreeMap<Vec<String>, PathBuf>) -> BTreeMap<(Vec<String>, String), Vec<String>> {
    let mut out = BTreeMap::new();
    for (module, file) in files {
        let text = std::fs::read_to_string(file).unwrap();
        for line in text.lines().filter_map(|l| l.trim().strip_prefix("pub use ")) {
            let (base, rest) = match line {
                l if l.starts_with("crate::") || l.starts_with("super::") => (vec![], l),
                l => (module.clone(), l.strip_prefix("self::").unwrap_or(l)),
            };
            let named = match base.is_empty() {
                true => paths(rest, module),
                false => tree(rest).0.into_iter().map(|t| [base.clone(), t].concat()).collect(),
            };
            for target in named.into_iter().filter(|t| t.last().is_some_and(|n| n != "self")) {
                out.insert((module.clone(), target.last().unwrap().clone()), target);
            }
        }
    }
    out
}

/// Module → the modules it depends on, re-exports followed to where the item is defined.
fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut files = BTreeMap::new();
    modules(src, &[], &mut files);
    let reexported = reexports(&files);
    // The module defining `path`: its longest prefix that is a module, through re-exports.
    let resolve = |mut path: Vec<String>| {
        for _ in 0..8 {
            let n = (0..=path.len()).rev().find(|&n| files.contains_key(&path[..n]))?;
            match path.get(n).and_then(|item| reexported.get(&(path[..n].to_vec(), item.clone()))) {
                Some(target) if *target != path[..=n] => path = [target.clone(), path[n + 1..].to_vec()].concat(),
                _ => return Some(path[..n].to_vec()),
            }
        }
        None
    };
    let mut edges = BTreeMap::new();
    for (module, file) in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let targets: &mut BTreeSet<Vec<String>> = edges.entry(module.clone()).or_default();
        for target in paths(&text, module).into_iter().filter_map(&resolve) {
            if !target.starts_with(module) {
                targets.insert(target);
            }
        }
    }
    edges
}

/// The strongly connected components of more than one module (Tarjan's algorithm).
fn circles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a [String], (usize, usize)>,
        stack: Vec<&'a [String]>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(w: &mut Walk<'a>, v: &'a [String]) {
        let n = w.index.len();
        w.index.insert(v, (n, n));
        w.stack.push(v);
        for u in w.edges.get(v).into_iter().flatten() {
            let low = match w.index.get(u.as_slice()) {
                None => {
                    visit(w, u);
                    w.index[u.as_slice()].1
                }
                Some(&(i, _)) if w.stack.contains(&u.as_slice()) => i,
                Some(_) => continue,
            };
            let e = w.index.get_mut(v).unwrap();
            e.1 = e.1.min(low);
        }
        if w.index[v].0 == w.index[v].1 {
            let at = w.stack.iter().position(|m| *m == v).unwrap();
            let mut component: Vec<String> = w.stack.drain(at..).map(|m| m.join("::")).collect();
            component.sort();
            if component.len() > 1 {
                w.found.push(component);
            }
        }
    }
    let mut w = Walk { edges, index: BTreeMap::new(), stack: vec![], found: vec![] };
    for v in edges.keys() {
        if !w.index.contains_key(v.as_slice()) {
            visit(&mut w, v);
        }
    }
    w.found
}

#[test]
fn paths_are_read_as_rust_resolves_them() {
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let text = "use crate::{config::Config, data::{self, Loader}};\nuse super::super::x::Y; // crate::z\nfn f() { super::g(); }";
    let found = paths(text, &m("a::b::c"));
    assert_eq!(found, [m("config::Config"), m("data::self"), m("data::Loader"), m("a::x::Y"), m("a::b::g")]);
    assert_eq!(paths("use super::Batch;", &m("data::loader")), [m("data::Batch")]);
    let mut edges = BTreeMap::new();
    edges.insert(m("a"), BTreeSet::from([m("b")]));
    edges.insert(m("b"), BTreeSet::from([m("c")]));
    edges.insert(m("c"), BTreeSet::from([m("a")]));
    edges.insert(m("d"), BTreeSet::from([m("a")]));
    assert_eq!(circles(&edges), [vec!["a".to_string(), "b".into(), "c".into()]]);
}

#[test]
fn a_path_through_a_reexport_depends_on_the_module_defining_the_item() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    std::fs::write(dir.path().join("lib.rs"), "pub mod a;\npub mod c;\n").unwrap();
    std::fs::write(dir.path().join("a/mod.rs"), "pub mod b;\npub use b::Thing;\n").unwrap();
    std::fs::write(dir.path().join("a/b.rs"), "use crate::c::f;\npub struct Thing;\n").unwrap();
    std::fs::write(dir.path().join("c.rs"), "use crate::a::Thing;\npub fn f() {}\n").unwrap();
    let m = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    let edges = graph(dir.path());
    assert_eq!(edges[&m("c")], BTreeSet::from([m("a::b")]));
    assert_eq!(circles(&edges), [vec!["a::b".to_string(), "c".into()]]);
}

#[test]
fn the_module_graph_has_no_circles() {
    let found = circles(&graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src")));
    let listed: Vec<String> = found.iter().map(|c| c.join(" ↔ ")).collect();
    assert!(found.is_empty(), "{} import circles:\n{}", found.len(), listed.join("\n"));
}

#[test]
fn no_source_file_is_over_400_lines() {
    let mut files = BTreeMap::new();
    modules(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut files);
    let long: Vec<String> = files.values()
        .map(|f| (f, std::fs::read_to_string(f).unwrap().lines().count()))
        .filter(|(_, n)| *n > 420)
        .map(|(f, n)| format!("{} ({n} lines)", f.display()))
        .collect();
    assert!(long.is_empty(), "over ~400 lines: {}", long.join(", "));
}

/// The modules that name `clap`: the command line's structs live in the CLI layer only.
fn clap_users(src: &Path) -> Vec<String> {
    let mut files = BTreeMap::new();
    modules(src, &[], &mut files);
    files.into_iter()
        .filter(|(_, f)| std::fs::read_to_string(f).unwrap().lines().any(|l| l.split("//").next().unwrap().contains("clap")))
        .map(|(m, _)| m.join("::"))
        .collect()
}

#[test]
fn command_line_structs_are_in_the_cli_layer_only() {
    let outside: Vec<String> = clap_users(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
        .into_iter()
        .filter(|m| m != "cli" && !m.starts_with("cli::"))
        .collect();
    assert!(outside.is_empty(), "clap outside src/cli/: {}", outside.join(", "));
    // The check can fail: a library module deriving clap's Args is found.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lib.rs"), "pub mod train;\n").unwrap();
    std::fs::write(dir.path().join("train.rs"), "#[derive(clap::Args)]\npub struct TrainArgs {}\n").unwrap();
    assert_eq!(clap_users(dir.path()), vec!["train".to_string()]);
}
