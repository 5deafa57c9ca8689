//! `barlow compare` end to end on the embedded sample: two methods at two batch sizes write the
//! table, the CSV and the picture; a compare that was interrupted trains only what is missing.

use barlow::compare::Comparison;
use std::path::Path;
use std::process::Command;

/// Barlow Twins and SimSiam (LARS and SGD recipes) at batch sizes 32 and 64, two epochs of 256
/// images at 16×16 through a width-8 ResNet-18: seconds each.
const TINY: &str = r#"
[compare]
methods = ["barlow", "simsiam"]
batch_sizes = [32, 64]
recipes = "cifar10"

[data]
dataset = "fashion-mnist-sample"
size = 16
limit = 256

[model]
width = 8

[optim]
epochs = 2
warmup_epochs = 1

[train]
knn_every = 2
knn_limit = 256
seed = 1

[method.barlow.model]
projector = [64, 64, 64]

[method.simsiam.model]
projector = [64, 64, 64]
predictor = [16, 64]
"#;

fn compare(file: &Path, out: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_barlow"))
        .args(["compare", "--config"])
        .arg(file)
        .arg("--out")
        .arg(out)
        .output()
        .expect("barlow runs");
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(output.status.success(), "barlow compare failed: {stderr}");
    stderr
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn compare_writes_the_report_and_resumes_only_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tiny.toml");
    std::fs::write(&file, TINY).unwrap();
    let out = dir.path().join("cmp");
    let runs = out.join("runs");

    // An interrupted comparison: Barlow Twins at 32 stopped after its first epoch (its
    // checkpoint), SimSiam at 64 killed before its first checkpoint; the others never started.
    let cmp = Comparison::load(file.to_str().unwrap()).unwrap();
    let mut stopped = cmp.config(barlow::methods::Method::Barlow, 32, None, &[]).unwrap();
    stopped.train.max_steps = Some(256 / 32);
    barlow::train::train(&stopped, &runs.join("barlow-b32"), false).unwrap();
    std::fs::create_dir_all(runs.join("simsiam-b64")).unwrap();
    std::fs::write(runs.join("simsiam-b64/metrics.jsonl"), "").unwrap();

    let log = compare(&file, &out);
    assert!(log.contains("resuming") && log.contains("barlow-b32 after epoch 1"), "{log}");
    for run in ["barlow-b64", "simsiam-b32", "simsiam-b64"] {
        assert!(log.contains(&format!("training into {}", runs.join(run).display())), "{run}: {log}");
    }

    let csv = String::from_utf8(read(&out.join("compare.csv"))).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    for row in &rows {
        assert_eq!(row[2], "2", "every run trained its two epochs: {csv}");
        let knn: f64 = row[8].parse().unwrap_or_else(|_| panic!("kNN top-1 of {row:?}"));
        assert!((0.0..=100.0).contains(&knn), "{csv}");
    }
    // The learning rate follows each recipe's scaling: linear in the batch for both.
    let peak = |m: &str, b: &str| -> f64 { rows.iter().find(|r| r[0] == m && r[1] == b).unwrap()[6].parse().unwrap() };
    assert!((peak("barlow", "64") / peak("barlow", "32") - 2.0).abs() < 1e-9, "{csv}");
    assert!((peak("simsiam", "64") / peak("simsiam", "32") - 2.0).abs() < 1e-9, "{csv}");

    let md = String::from_utf8(read(&out.join("compare.md"))).unwrap();
    assert!(md.contains("| kNN @32 | kNN @64 | Batch sensitivity |"), "{md}");
    for line in ["| Barlow Twins | none | no | no |", "| SimSiam | none | no | yes |"] {
        let row = md.lines().find(|l| l.starts_with(line)).unwrap_or_else(|| panic!("no row {line}: {md}"));
        assert!(row.trim_end().ends_with("% |"), "a measured batch sensitivity: {row}");
    }
    let png = read(&out.join("compare.png"));
    assert_eq!(&png[..4], b"\x89PNG");
    assert!(png.len() > 10_000, "a drawn chart, {} bytes", png.len());

    // Run again: everything is read back, nothing trains, the report is the same.
    let metrics: Vec<Vec<u8>> = ["barlow-b32", "simsiam-b64"].iter().map(|r| read(&runs.join(r).join("metrics.jsonl"))).collect();
    let log = compare(&file, &out);
    assert_eq!(log.matches("finished before").count(), 4, "{log}");
    assert!(!log.contains("training into") && !log.contains("resuming"), "{log}");
    let again: Vec<Vec<u8>> = ["barlow-b32", "simsiam-b64"].iter().map(|r| read(&runs.join(r).join("metrics.jsonl"))).collect();
    assert_eq!(metrics, again, "finished runs are left as they are");
    assert_eq!(read(&out.join("compare.csv")), csv.as_bytes());

    // A changed setting is not passed off as the finished runs' result: refused, naming it.
    let output = Command::new(env!("CARGO_BIN_EXE_barlow"))
        .args(["compare", "--config"]).arg(&file).arg("--out").arg(&out).arg("--set=optim.weight_decay=0.5")
        .output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("optim.weight_decay =") && stderr.contains("other settings"), "{stderr}");
    assert_eq!(read(&out.join("compare.csv")), csv.as_bytes(), "the report is left as it was");
}

#[test]
fn bad_comparisons_fail_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    let fails = |text: &str, args: &[&str], expect: &str| {
        std::fs::write(&file, text).unwrap();
        let output = Command::new(env!("CARGO_BIN_EXE_barlow"))
            .args(["compare", "--config"])
            .arg(&file)
            .args(["--out"])
            .arg(dir.path().join("out"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "accepted: {text}");
        assert!(stderr.contains(expect), "expected `{expect}` in: {stderr}");
        assert!(!dir.path().join("out/runs").exists(), "nothing trained");
    };
    let head = "[compare]\nrecipes = \"cifar10\"\nbatch_sizes = [64]\n";
    fails(&format!("{head}methods = [\"barlow\", \"swav\"]"), &[], "swav");
    fails(&format!("{head}\n[method.moco.model]\nqueue = 100\n"), &["--methods=moco"], "queue");
    fails(&format!("{head}\n[method.simclr.model]\npredictor = [64, 32]\n"), &["--methods=simclr"], "predictor");
    fails("[compare]\nrecipes = \"cifar10\"\n", &[], "nothing to compare");
    fails("[data]\nlimit = 3\n", &[], "[compare]");
}
