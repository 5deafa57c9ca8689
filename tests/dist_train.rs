//! `mpirun -np 2 barlow train` end to end (feature `mpi`): two processes train as one does,
//! rank 0 alone writes, and a run resumes with the same or another number of processes.
#![cfg(feature = "mpi")]

use barlow::train::metrics::{self, Record};
use std::path::Path;
use std::process::Command;

/// As tests/train.rs: the embedded Fashion-MNIST sample, 8 steps of 64 per epoch, 2 epochs.
const TINY: [&str; 9] = [
    "--set=data.limit=512",
    "--set=data.size=16",
    "--set=model.width=8",
    "--set=model.projector=[64, 64]",
    "--set=optim.batch_size=64",
    "--set=optim.epochs=2",
    "--set=optim.warmup_epochs=1",
    "--set=train.knn_every=0",
    "--set=train.seed=5",
];

/// `barlow train --config quick` in `out`, under `mpirun -np ranks` when `ranks > 1`.
fn train(out: &Path, ranks: usize, extra: &[&str]) -> String {
    train_preset("quick", out, ranks, extra)
}

fn train_preset(preset: &str, out: &Path, ranks: usize, extra: &[&str]) -> String {
    let exe = env!("CARGO_BIN_EXE_barlow");
    let mut cmd = match ranks {
        1 => Command::new(exe),
        n => {
            let mut c = Command::new("mpirun");
            c.args(["--allow-run-as-root", "--oversubscribe", "-np", &n.to_string(), exe]);
            c
        }
    };
    cmd.args(["train", "--config", preset, "--out"]).arg(out).args(TINY).args(extra);
    let output = cmd.output().expect("running barlow (and mpirun: apt-get install openmpi-bin)");
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{ranks} process(es) failed:\n{text}");
    text
}

/// The logged loss of every step, in order.
fn losses(out: &Path) -> Vec<(usize, f64)> {
    metrics::read(&out.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|r| match r {
            Record::Step(s) => Some((s.step, s.stats.loss)),
            Record::Epoch(_) => None,
        })
        .collect()
}

/// The largest relative difference between two runs' step losses (which must cover the same steps).
fn loss_difference(a: &Path, b: &Path) -> f64 {
    let (a, b) = (losses(a), losses(b));
    assert_eq!(a.iter().map(|s| s.0).collect::<Vec<_>>(), b.iter().map(|s| s.0).collect::<Vec<_>>());
    a.iter().zip(&b).map(|((_, x), (_, y))| ((x - y) / y).abs()).fold(0.0, f64::max)
}

#[test]
fn two_processes_train_and_resume_as_one_process() {
    let whole = tempfile::tempdir().unwrap();
    train(whole.path(), 1, &[]);

    // Two processes, stopped after the first epoch's checkpoint, then resumed by two...
    let two = tempfile::tempdir().unwrap();
    let text = train(two.path(), 2, &["--set=train.max_steps=8"]);
    assert!(text.contains("global batch 64 = 2 × 32"), "{text}");
    assert_eq!(text.matches("trained 1 epochs").count(), 1, "rank 0 alone reports:\n{text}");
    let mixed = tempfile::tempdir().unwrap();
    for file in ["checkpoint.bin", "config.toml", "metrics.jsonl"] {
        std::fs::copy(two.path().join(file), mixed.path().join(file)).unwrap();
    }
    train(two.path(), 2, &["--resume", "--set=train.max_steps=100"]);
    // ...and by one process (the same global batch of 64).
    train(mixed.path(), 1, &["--resume", "--set=train.max_steps=100"]);

    let steps: Vec<usize> = losses(two.path()).iter().map(|s| s.0).collect();
    assert_eq!(steps, (1..=16).collect::<Vec<_>>(), "one log line per step, written by rank 0 alone");
    for (name, run) in [("two processes", two.path()), ("two, then one", mixed.path())] {
        let diff = loss_difference(run, whole.path());
        println!("{name}: largest relative difference of a step's loss from one process: {diff:.1e}");
        // Float rounding of sums taken in another order, over 16 steps; a wrong shard, statistic
        // or gradient scale moves the loss by percents.
        assert!(diff < 1e-4, "{name}: step losses differ from one process's by {diff:.1e}");
    }
}

/// MoCo end to end: every process enqueues the whole global batch's keys, so two processes
/// train as one does (the loss of each step reads the queue of the steps before it).
#[test]
fn moco_over_two_processes_trains_as_one_process() {
    let moco = ["--set=data.dataset=\"fashion-mnist-sample\"", "--set=model.queue=128", "--set=train.max_steps=8"];
    let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    train_preset("moco-cifar10", one.path(), 1, &moco);
    let text = train_preset("moco-cifar10", two.path(), 2, &moco);
    assert!(text.contains("global batch 64 = 2 × 32"), "{text}");
    let diff = loss_difference(two.path(), one.path());
    println!("MoCo, two processes: largest relative difference of a step's loss from one process: {diff:.1e}");
    assert!(diff < 1e-4, "MoCo's step losses differ from one process's by {diff:.1e}");
}

#[test]
fn a_global_batch_that_does_not_divide_stops_before_training() {
    let out = tempfile::tempdir().unwrap();
    let output = Command::new("mpirun")
        .args(["--allow-run-as-root", "--oversubscribe", "-np", "3", env!("CARGO_BIN_EXE_barlow")])
        .args(["train", "--config", "quick", "--out"])
        .arg(out.path())
        .args(TINY)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(text.contains("optim.batch_size = 64") && text.contains("not a multiple of 3"), "{text}");
    assert!(!out.path().join("checkpoint.bin").exists());
}
