//! Nonsense settings and options: each refused naming the key, the value and its range.

use super::*;

#[test]
fn nonsense_settings_and_options_are_refused_naming_them() {
    let none = "no/such/run";
    for (args, names) in [
        (&["eval", "knn", "-k", none, "--k", "0"][..], "--k"),
        (&["eval", "knn", "-k", none, "--t", "0"], "--t"),
        (&["eval", "knn", "-k", none, "--t=-1"], "--t"),
        (&["eval", "knn", "-k", none, "--t", "nan"], "--t"),
        (&["eval", "linear", "-k", none, "--batch-size", "0"], "--batch-size"),
        (&["eval", "linear", "-k", none, "--labels", "1.5"], "--labels"),
        (&["eval", "knn", "--weights", "w.pth", "--arch", "resnet18", "--width", "0"], "--width"),
        (&["data", "preview", "--count", "1000000"], "--count"),
        (&["train", "--set", "train.knn_limit=0"], "train.knn_limit"),
        (&["train", "--set", "model.projector=[0]"], "model.projector"),
        (&["train", "--set", "model.projector=[128, 0, 128]"], "model.projector[1]"),
        (&["train", "--set", "optim.lr_weights=-0.1"], "optim.lr_weights"),
        (&["train", "--set", "optim.momentum=-0.5"], "optim.momentum"),
        (&["train", "--set", "model.lambda=-1"], "model.lambda"),
        (&["train", "--set", "data.size=100000"], "data.size"),
        (&["train", "--set", "optim.batch_size=100000000"], "optim.batch_size"),
    ] {
        // Were a check missing, the run would stop after a step, in a folder of its own.
        let out = tempfile::tempdir().unwrap();
        let guard = ["--out", out.path().to_str().unwrap(), "--set", "train.max_steps=1"];
        let args = [args, if args[0] == "train" { &guard[..] } else { &[] }].concat();
        let err = refused(&args);
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(err.contains("must lie in") || err.contains("out of range") || err.contains("is not in"), "{args:?}: {err}");
    }
}

