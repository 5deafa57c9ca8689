//! Two writers on one run, and failures whose messages must not mislead.

use super::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

#[test]
fn a_second_writer_is_refused_naming_the_first_and_a_killed_one_frees_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // A run long enough to be caught in the middle.
    let mut first = train(&run, &["--set=optim.epochs=1000"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = first.id().to_string();
    let lock = run.join("writer.lock");
    let started = Instant::now();
    while std::fs::read_to_string(&lock).map(|t| t.trim() != pid).unwrap_or(true) {
        assert!(started.elapsed() < Duration::from_secs(60), "the run never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    for extra in [&["--resume"][..], &["--overwrite"], &[]] {
        let err = refused(&[&["train", "--out", run.to_str().unwrap()][..], extra, &TINY].concat());
        assert!(err.contains("in use") && err.contains(&format!("PID {pid}")), "{extra:?}: {err}");
    }
    let metrics = run.join("metrics.jsonl");
    assert!(metrics.exists(), "the live run's log is untouched");
    first.kill().unwrap();
    first.wait().unwrap();
    // SIGKILL left the lock file, not the lock.
    let out = train(&run, &["--overwrite", "--set=train.max_steps=1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn failures_say_what_was_kept_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh run that diverges in its first epoch has no checkpoint to name.
    let run = dir.path().join("diverged");
    let out = train(&run, &["--set=optim.lr_weights=1e30", "--set=optim.lr_biases=1e30"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the loss became") && err.contains("wrote no checkpoint") && err.contains("--overwrite"), "{err}");
    assert!(!run.join("checkpoint.bin").exists());
    // A config.toml that cannot be written: the error names it, and no temporary file is left.
    let run = dir.path().join("blocked");
    std::fs::create_dir_all(run.join("config.toml/inside")).unwrap();
    let err = refused(&[&["train", "--out", run.to_str().unwrap()][..], &TINY].concat());
    assert!(err.contains("config.toml"), "{err}");
    assert!(!run.join("config.toml.tmp").exists(), "the temporary file is removed");
}
