//! `barlow train` end to end: learning on real data, exact resume after SIGKILL, NaN handling.

mod common;

use barlow::train::metrics::{self, Record};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A network small enough that a few epochs take seconds: the embedded Fashion-MNIST sample.
const TINY: [&str; 9] = [
    "--set=data.limit=512",
    "--set=data.size=16",
    "--set=model.width=8",
    "--set=model.projector=[64, 64]",
    "--set=optim.batch_size=64",
    "--set=optim.epochs=3",
    "--set=optim.warmup_epochs=1",
    "--set=train.knn_every=0",
    "--set=train.seed=5",
];

fn barlow(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barlow"));
    cmd.args(["train", "--config", "quick", "--out"]).arg(out).args(TINY).args(extra);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("barlow runs");
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "barlow failed: {text}");
    output
}

/// The names of the tensors that differ between two runs' checkpoints (all, if their sets differ).
fn differing_weights(a: &Path, b: &Path) -> Vec<String> {
    let (a, b) = (common::checkpoint_weights(a), common::checkpoint_weights(b));
    let (a, b) = (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
    if a.names().len() != b.names().len() {
        return a.names().into_iter().map(|n| n.to_string()).collect();
    }
    a.names().into_iter()
        .filter(|n| b.tensor(n).map(|t| t.data() != a.tensor(n).unwrap().data()).unwrap_or(true))
        .map(|n| n.to_string()).collect()
}

#[test]
fn a_run_killed_and_resumed_ends_with_the_same_weights() {
    let whole = tempfile::tempdir().unwrap();
    run(&mut barlow(whole.path(), &[]));

    let broken = tempfile::tempdir().unwrap();
    let ckpt = broken.path().join("checkpoint.bin");
    let mut child = barlow(broken.path(), &[]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    // Kill it in the second epoch, after the first checkpoint landed.
    while !ckpt.exists() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "finished before it could be killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    run(Command::new(env!("CARGO_BIN_EXE_barlow")).args(["train", "--resume", "--out"]).arg(broken.path()));

    let differ = differing_weights(whole.path(), broken.path());
    assert!(differ.is_empty(), "resumed weights differ from the uninterrupted run's: {differ:?}");
    let steps = |p: &Path| -> Vec<usize> {
        metrics::read(&p.join("metrics.jsonl")).unwrap().iter()
            .filter_map(|r| match r { Record::Step(s) => Some(s.step), _ => None }).collect()
    };
    assert_eq!(steps(broken.path()), steps(whole.path()), "the log holds each step once");
}

#[test]
fn an_existing_run_is_not_overwritten_by_accident() {
    let dir = tempfile::tempdir().unwrap();
    run(&mut barlow(dir.path(), &["--set=optim.epochs=1"]));
    let before = std::fs::read(dir.path().join("checkpoint.bin")).unwrap();
    let output = barlow(dir.path(), &["--set=optim.epochs=1"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && text.contains("--resume") && text.contains("--overwrite"), "{text}");
    assert_eq!(std::fs::read(dir.path().join("checkpoint.bin")).unwrap(), before);
    run(&mut barlow(dir.path(), &["--set=optim.epochs=1", "--overwrite"]));
}

#[test]
fn a_diverging_loss_stops_training_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    run(&mut barlow(dir.path(), &["--set=train.max_steps=8"]));
    let ckpt = dir.path().join("checkpoint.bin");
    let before = std::fs::read(&ckpt).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_barlow"))
        .args(["train", "--resume", "--out"])
        .arg(dir.path())
        .args(["--set=optim.lr_weights=1e30", "--set=optim.lr_biases=1e30"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{text}");
    assert!(text.contains("the loss became") && text.contains("checkpoint.bin"), "{text}");
    assert_eq!(std::fs::read(&ckpt).unwrap(), before, "the last good checkpoint is kept");
    // And it goes on from there with a sane learning rate.
    run(Command::new(env!("CARGO_BIN_EXE_barlow")).args(["train", "--resume", "--set=optim.lr_weights=0.3", "--out"]).arg(dir.path()));
}

/// A run stopped within an epoch leaves no checkpoint of it, and says so rather than naming a
/// file it did not write (or another run's).
#[test]
fn a_run_stopped_within_an_epoch_says_it_left_no_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("checkpoint.bin");
    let said = |out: Output| String::from_utf8_lossy(&out.stdout).into_owned();
    // 512 images in batches of 64: eight steps an epoch.
    let text = said(run(&mut barlow(dir.path(), &["--set=train.max_steps=3"])));
    assert!(text.contains("no checkpoint (a partial epoch") && !ckpt.exists(), "{text}");
    let text = said(run(&mut barlow(dir.path(), &["--overwrite", "--set=train.max_steps=8"])));
    assert!(text.contains(&format!("; checkpoint {}", ckpt.display())) && ckpt.exists(), "{text}");
    let before = std::fs::read(&ckpt).unwrap();
    let text = said(run(&mut barlow(dir.path(), &["--overwrite", "--set=train.max_steps=3"])));
    assert!(text.contains("the previous run is still in"), "{text}");
    // The overwritten run is restorable, whole, until the new one's first checkpoint.
    let previous = dir.path().join("previous");
    assert_eq!(std::fs::read(previous.join("checkpoint.bin")).unwrap(), before);
    assert!(previous.join("config.toml").exists() && previous.join("metrics.jsonl").exists() && !ckpt.exists());
    run(&mut barlow(dir.path(), &["--overwrite", "--set=train.max_steps=8"]));
    assert!(ckpt.exists() && !previous.exists(), "the first checkpoint of the new run discards the old one");
}

/// Reading the loss back every step or every few steps changes only when the host waits for
/// the device: every step is logged, with the same values, and the weights end the same.
#[test]
fn the_log_interval_changes_neither_the_log_nor_the_weights() {
    let stats = |p: &Path| -> Vec<(usize, f64, f64, f64)> {
        metrics::read(&p.join("metrics.jsonl")).unwrap().iter()
            .filter_map(|r| match r { Record::Step(s) => Some((s.step, s.stats.loss, s.stats.term("on_diag").unwrap(), s.stats.term("off_diag").unwrap())), _ => None })
            .collect()
    };
    let (every, third) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    run(&mut barlow(every.path(), &["--set=optim.epochs=2", "--set=train.log_every=1"]));
    run(&mut barlow(third.path(), &["--set=optim.epochs=2", "--set=train.log_every=3"]));
    let logged = stats(every.path());
    assert_eq!(logged.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=16).collect::<Vec<_>>());
    assert_eq!(stats(third.path()), logged);
    assert_eq!(differing_weights(every.path(), third.path()), Vec::<String>::new());
    // Read back together: steps 2–4, then 5–7, share one measured throughput.
    let rates: Vec<f64> = metrics::read(&third.path().join("metrics.jsonl")).unwrap().iter()
        .filter_map(|r| match r { Record::Step(s) => Some(s.images_per_s), _ => None }).collect();
    assert!(rates[1] == rates[3] && rates[4] == rates[6] && rates[3] != rates[4], "{rates:?}");
}

/// The README's main job, shortened: the quick preset learns features that beat random ones.
#[test]
fn the_quick_preset_learns() {
    let dir = tempfile::tempdir().unwrap();
    let output = run(Command::new(env!("CARGO_BIN_EXE_barlow"))
        .args(["train", "--out"])
        .arg(dir.path())
        .args(["--set=data.limit=3072", "--epochs=2", "--set=optim.warmup_epochs=1"]));
    let knn: Vec<f64> = metrics::read(&dir.path().join("metrics.jsonl")).unwrap().iter()
        .filter_map(|r| match r { Record::Epoch(e) => e.knn_top1, _ => None }).collect();
    assert_eq!(knn.len(), 3, "kNN at initialisation and after each epoch: {knn:?}");
    assert!(knn[2] > knn[0] + 5.0, "kNN top-1 went from {:.1}% to {:.1}%", knn[0], knn[2]);
    assert!(String::from_utf8_lossy(&output.stdout).contains("kNN top-1"));
    for png in ["curves.png", "correlation.png"] {
        let img = image::open(dir.path().join(png)).unwrap();
        assert!(img.width() >= 600 && img.height() >= 400, "{png}");
    }

    // What users do next with the checkpoint.
    let cli = |args: &[&str]| {
        let out = run(Command::new(env!("CARGO_BIN_EXE_barlow")).args(args));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ckpt = dir.path().join("checkpoint.bin");
    let ckpt = ckpt.to_str().unwrap();
    let knn_again = cli(&["eval", "knn", "-k", ckpt]);
    assert!(knn_again.contains(&format!("top-1 {:.2}%", knn[2])), "the same kNN as training's last: {knn_again}");
    let linear = cli(&["eval", "linear", "-k", ckpt, "--epochs", "10"]);
    // An untrained probe is its random initial weights alone: the same seed, the same weights.
    let untrained = || cli(&["eval", "linear", "-k", ckpt, "--epochs", "0"]);
    assert_eq!(untrained(), untrained(), "the same seed, the same probe");
    let top1: f64 = linear.split("top-1 ").nth(1).and_then(|s| s.split('%').next()).unwrap().parse().unwrap();
    assert!(top1 > knn[0], "the linear probe ({top1}%) beats random-feature kNN ({}%)", knn[0]);
    let few = cli(&["eval", "linear", "-k", ckpt, "--epochs", "10", "--labels", "0.1"]);
    let used: usize = few.split("linear probe (").nth(1).and_then(|s| s.split(' ').next()).unwrap().parse().unwrap();
    assert!((590..=610).contains(&used), "10% of 6000 labels, class by class: {few}");
    let tuned = cli(&["eval", "linear", "-k", ckpt, "--finetune", "--epochs", "2", "--labels", "0.1"]);
    let top1: f64 = tuned.split("top-1 ").nth(1).and_then(|s| s.split('%').next()).unwrap().parse().unwrap();
    assert!(top1 > 20.0, "fine-tuning beats chance (10%): {tuned}");
    let npy = dir.path().join("test.npy");
    cli(&["embed", "-k", ckpt, "--out", npy.to_str().unwrap()]);
    assert_eq!(std::fs::read(&npy).unwrap().len(), 128 + 2000 * 128 * 4);
    let ids = std::fs::read_to_string(dir.path().join("test.npy.ids.tsv")).unwrap();
    assert_eq!(ids.lines().count(), 2001);
    let exported = dir.path().join("encoder.safetensors");
    cli(&["export", "-k", ckpt, "--out", exported.to_str().unwrap()]);
    let device = barlow::backend::device("auto").unwrap();
    let (config, _) = barlow::store::checkpoint::load_model(&dir.path().join("checkpoint.bin"), &device).unwrap();
    barlow::store::torchvision::import(config.model().encoder.init(&device), &exported).unwrap();
}
