//! Each method end to end on the embedded Fashion-MNIST sample (its loss falls, its kNN accuracy
//! rises above the random network's), exact resume with the momentum network and the queue, and
//! bad method settings refused before training.

mod common;

use barlow::train::metrics::{self, Record};
use std::path::Path;
use std::process::{Command, Output};

/// Each method's CIFAR-10 recipe, shrunk to seconds on the embedded sample.
fn tiny(method: &str) -> Vec<String> {
    let mut args: Vec<String> = [
        "--set=data.dataset=fashion-mnist-sample",
        "--set=data.size=16",
        "--set=model.width=8",
        "--set=optim.batch_size=64",
        "--set=optim.warmup_epochs=1",
        "--set=train.seed=1",
        // The network these checks were sized for: the usual CIFAR stem, residual branches from
        // zero. With torchvision's γ = 1 start (the solo-learn presets') the random network's kNN
        // on 16-px images is already 66%, which 3 short epochs do not beat.
        "--set=model.stem=\"cifar\"",
        "--set=model.zero_init_residual=true",
    ]
    .map(String::from)
    .to_vec();
    args.extend(["--config".into(), format!("{method}-cifar10")]);
    if method == "moco" {
        // The queue turns over after one step, so that the loss is soon against real keys.
        args.push("--set=model.queue=64".into());
    }
    args
}

fn barlow(out: &Path, method: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barlow"));
    cmd.args(["train", "--out"]).arg(out).args(tiny(method)).args(extra);
    cmd
}

fn run(cmd: &mut Command) -> Output {
    let output = cmd.output().expect("barlow runs");
    assert!(output.status.success(), "barlow failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

fn step_losses(run: &Path) -> Vec<f64> {
    metrics::read(&run.join("metrics.jsonl")).unwrap().iter()
        .filter_map(|r| match r { Record::Step(s) => Some(s.stats.loss), _ => None }).collect()
}

fn knn(run: &Path) -> Vec<f64> {
    metrics::read(&run.join("metrics.jsonl")).unwrap().iter()
        .filter_map(|r| match r { Record::Epoch(e) => e.knn_top1, _ => None }).collect()
}

/// 3 epochs of 32 steps: the mean loss of the last 8 steps is below that of the first 8 (for
/// MoCo: the first 8 against a queue of real keys; for DINO: the first 8 once its last layer
/// trains, in the second epoch — its teacher starts as the student, so its first losses sit
/// below those of a student moving away from it), and kNN top-1 gains 5 points on the random
/// network's.
fn learns(method: &str) {
    learns_with(method, &[]);
}

fn learns_with(method: &str, extra: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let args = [&["--set=data.limit=2048", "--epochs=3", "--set=train.knn_every=3"], extra].concat();
    run(&mut barlow(dir.path(), method, &args));
    let losses = step_losses(dir.path());
    assert_eq!(losses.len(), 96, "{method}: every step logged");
    let first = match method {
        "moco" => 1,
        "dino" => 32,
        _ => 0,
    };
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (early, late) = (mean(&losses[first..first + 8]), mean(&losses[88..]));
    assert!(late < early, "{method}: loss went from {early:.4} to {late:.4}");
    let knn = knn(dir.path());
    assert_eq!(knn.len(), 2, "{method}: kNN at initialisation and at the end: {knn:?}");
    assert!(knn[1] > knn[0] + 5.0, "{method}: kNN top-1 went from {:.1}% to {:.1}%", knn[0], knn[1]);
    for png in ["curves.png", "correlation.png"] {
        assert!(dir.path().join(png).exists(), "{method}: {png}");
    }
}

#[test]
fn simclr_learns() {
    learns("simclr");
}

#[test]
fn moco_learns() {
    learns("moco");
}

#[test]
fn byol_learns() {
    learns("byol");
}

#[test]
fn simsiam_learns() {
    learns("simsiam");
}

#[test]
fn vicreg_learns() {
    learns("vicreg");
}

/// With two local crops of 8 px beside the global 16-px views.
#[test]
fn dino_learns_with_local_crops() {
    learns_with("dino", &["--set=data.local_crops=2", "--set=data.local_size=8"]);
}

/// A run stopped in its second epoch (after the first checkpoint, like a killed one) and resumed
/// ends with bit for bit the tensors of an uninterrupted run, the method's state (`parts`: the
/// momentum network, the queue, the centre) included.
fn resumes_exactly(method: &str, parts: &[&str]) {
    let small = ["--set=data.limit=512", "--epochs=3", "--set=train.knn_every=0"];
    let whole = tempfile::tempdir().unwrap();
    run(&mut barlow(whole.path(), method, &small));
    let broken = tempfile::tempdir().unwrap();
    run(&mut barlow(broken.path(), method, &[&small[..], &["--set=train.max_steps=12"]].concat()));
    run(Command::new(env!("CARGO_BIN_EXE_barlow"))
        .args(["train", "--resume", "--set=train.max_steps=1000", "--out"])
        .arg(broken.path()));

    let (a, b) = (common::checkpoint_weights(whole.path()), common::checkpoint_weights(broken.path()));
    let (a, b) = (safetensors::SafeTensors::deserialize(&a).unwrap(), safetensors::SafeTensors::deserialize(&b).unwrap());
    let names = a.names();
    for part in parts {
        assert!(names.contains(part), "{method}: the checkpoint holds {part}");
    }
    let differ: Vec<_> = names.iter()
        .filter(|n| b.tensor(n).map(|t| t.data() != a.tensor(n).unwrap().data()).unwrap_or(true))
        .collect();
    assert!(differ.is_empty(), "{method}: resumed tensors differ from the uninterrupted run's: {differ:?}");
    assert_eq!(step_losses(broken.path()), step_losses(whole.path()), "{method}: the same losses, each step once");
}

/// The momentum network's tensors in a checkpoint.
const MOMENTUM: [&str; 2] = ["momentum.backbone.conv1.weight", "momentum.projector.out.weight"];

#[test]
fn moco_resumes_bit_for_bit() {
    resumes_exactly("moco", &[MOMENTUM[0], MOMENTUM[1], "queue.keys"]);
}

#[test]
fn byol_resumes_bit_for_bit() {
    resumes_exactly("byol", &MOMENTUM);
}

#[test]
fn dino_resumes_bit_for_bit() {
    resumes_exactly("dino", &["teacher.backbone.conv1.weight", "teacher.head.last_layer.weight_v", "center"]);
}

/// Settings that cannot work are refused before anything is written, naming the key.
#[test]
fn bad_method_settings_are_clear_errors_before_training() {
    let cases: [(&str, &[&str], &[&str]); 5] = [
        ("simclr", &["--set=model.method=\"mocov3\""], &["unknown method `mocov3`", "model.method"]),
        ("moco", &["--set=model.queue=100"], &["model.queue = 100", "optim.batch_size = 64"]),
        ("simclr", &["--set=model.predictor=[64, 256]"], &["model.predictor", "simclr", "no predictor", "byol and simsiam"]),
        ("byol", &["--set=model.predictor=[64, 32]"], &["model.predictor", "projector's width 256"]),
        ("vicreg", &["--set=optim.fix_predictor_lr=true"], &["optim.fix_predictor_lr", "no predictor"]),
    ];
    for (method, extra, needles) in cases {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let output = barlow(&out, method, extra).output().unwrap();
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{method} {extra:?} was accepted");
        for needle in needles {
            assert!(text.contains(needle), "{method} {extra:?}: the error does not say `{needle}`: {text}");
        }
        assert!(!out.exists(), "{method} {extra:?}: nothing is written before the config is checked");
    }
}
