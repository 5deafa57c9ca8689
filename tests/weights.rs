//! Anyone's weights: `--weights` for eval/embed/export, the official release's layouts, the
//! errors for files that do not fit or would run code, and `train --init` with exact resume.

mod common;

use barlow::model::{Arch, ResNet, ResNetConfig};
use std::path::Path;
use std::process::{Command, Output};

fn barlow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_barlow")).args(args).output().expect("barlow runs")
}

fn ok(args: &[&str]) -> String {
    let out = barlow(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "barlow {args:?} failed: {err}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The error barlow prints (status 1, no panic).
fn fails(args: &[&str]) -> String {
    let out = barlow(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "barlow {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn fixture(name: &str) -> String {
    common::fixture(name).to_str().unwrap().to_string()
}

/// Every tensor of a safetensors file: name → (dtype, shape, bytes).
fn tensors(bytes: &[u8]) -> std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let st = safetensors::SafeTensors::deserialize(bytes).unwrap();
    st.tensors().into_iter().map(|(n, v)| (n, (format!("{:?}", v.dtype()), v.shape().to_vec(), v.data().to_vec()))).collect()
}

fn exported(encoder: &ResNet) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("e.safetensors");
    barlow::store::torchvision::export_safetensors(encoder, &path).unwrap();
    std::fs::read(path).unwrap()
}

/// `barlow export --weights FILE --arch resnet18 ...` gives back exactly the tensors of `reference`.
fn export_matches(file: &Path, extra: &[&str], reference: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("y.safetensors");
    ok(&[&["export", "--weights", file.to_str().unwrap(), "--arch", "resnet18", "--out", out.to_str().unwrap()][..], extra]
        .concat());
    let got = tensors(&std::fs::read(&out).unwrap());
    let want = tensors(&std::fs::read(reference).unwrap());
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{}", file.display());
    for (name, w) in &want {
        assert_eq!(&got[name], w, "{}: {name}", file.display());
    }
    assert!(want.contains_key("layer4.1.bn2.num_batches_tracked") && want.len() == 120);
}

/// `torch.save(torchvision.models.resnet18().state_dict())` (scaled to width 2 by
/// scripts/make_weights_fixtures.py) in, safetensors out: every encoder tensor as it was,
/// against the same tensors written by Python's safetensors without `fc` (an encoder has none).
#[test]
fn a_torchvision_resnet18_comes_back_tensor_for_tensor() {
    export_matches(&common::fixture("tv_resnet18_w2.pth"), &["--width", "2"], &common::fixture("tv_resnet18_w2.safetensors"));
}

/// The same at full size, for every container torch.save writes (zip, legacy, protocols 1-4, a
/// `state_dict` entry). Runs where PyTorch is installed; says so and passes where not.
#[test]
fn full_size_torchvision_resnet18_in_every_container_comes_back_tensor_for_tensor() {
    let Some(python) = common::torch_python() else {
        eprintln!("skipped: no python with torch/torchvision (set BARLOW_TORCH_PYTHON or make .venv-ref)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/save_torchvision_resnet18.py");
    let out = Command::new(python).arg(script).arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for file in ["zip.pth", "zip_p4.pth", "legacy.pth", "legacy_p1.pth", "checkpoint.pth.tar"] {
        export_matches(&dir.path().join(file), &[], &dir.path().join("reference.safetensors"));
    }
}

/// The official `resnet50.pth` (bare state dict) and `checkpoint.pth` (`model` entry,
/// `module.backbone.` / `module.projector.` keys, LARS state beside it) give the same encoder.
#[test]
fn the_official_release_layouts_give_the_same_encoder() {
    let device = barlow::backend::device("auto").unwrap();
    let fresh = || ResNetConfig::new(Arch::Resnet50).with_width(2).init(&device);
    let encoder = barlow::store::torchvision::import(fresh(), &common::fixture("official_resnet50_w2.pth")).unwrap();
    let from_checkpoint = barlow::store::torchvision::import(fresh(), &common::fixture("official_checkpoint_w2.pth")).unwrap();
    let (a, b) = (tensors(&exported(&encoder)), tensors(&exported(&from_checkpoint)));
    assert_eq!(a, b);
    assert_eq!(a.len(), 318, "torchvision's ResNet-50 without fc");
    assert_ne!(a, tensors(&exported(&fresh())), "the weights came from the file");
}

#[test]
fn eval_and_embed_take_weights_as_they_take_a_run() {
    // A tiny run, exported: the --weights path must see the same encoder with the same images.
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let run = run.to_str().unwrap();
    let tiny = ["--set=data.limit=256", "--set=data.size=16", "--set=model.width=4", "--set=model.projector=[32, 32]",
        "--set=optim.batch_size=64", "--set=optim.epochs=1", "--set=train.knn_every=0"];
    ok(&[&["train", "--out", run][..], &tiny].concat());
    let weights = dir.path().join("encoder.safetensors");
    let weights = weights.to_str().unwrap();
    ok(&["export", "-k", run, "--out", weights]);
    let from_run = ok(&["eval", "knn", "-k", run]);
    let file = ["--weights", weights, "--arch", "resnet18", "--stem", "cifar", "--width", "4", "--set", "data.size=16"];
    let from_file = ok(&[&["eval", "knn"][..], &file].concat());
    assert!(from_file.contains("kNN (k=200, T=0.1) on fashion-mnist-sample: top-1"), "{from_file}");
    assert_eq!(from_file, from_run);

    let linear = ok(&[&["eval", "linear", "--epochs", "2"][..], &file].concat());
    assert!(linear.contains("linear probe (6000 labeled images"), "{linear}");
    let tuned = ok(&[&["eval", "linear", "--finetune", "--epochs", "1", "--labels", "0.01"][..], &file].concat());
    assert!(tuned.contains("fine-tuning ("), "{tuned}");
    let npy = dir.path().join("e.npy");
    ok(&[&["embed", "--out", npy.to_str().unwrap()][..], &file].concat());
    assert_eq!(std::fs::read(&npy).unwrap().len(), 128 + 2000 * 32 * 4);
    let err = fails(&[&["embed", "--projector", "--out", npy.to_str().unwrap()][..], &file].concat());
    assert!(err.contains("--projector needs a run"), "{err}");
}

#[test]
fn the_official_resnet50_layout_evaluates_on_the_embedded_sample() {
    let out = ok(&["eval", "knn", "--weights", &fixture("official_checkpoint_w2.pth"), "--arch", "resnet50", "--width", "2"]);
    assert!(out.contains("top-1"), "{out}");
}

#[test]
fn a_file_that_does_not_fit_names_the_first_mismatching_tensor_and_both_shapes() {
    let err = fails(&["export", "--weights", &fixture("tv_resnet18_w2.pth"), "--arch", "resnet50", "--width", "2", "--out", "x.safetensors"]);
    assert!(err.contains("tv_resnet18_w2.pth") && err.contains("`layer1.0.conv1.weight` has shape [2, 2, 3, 3] in the file but [2, 2, 1, 1] in a resnet50"), "{err}");
    // torchvision's defaults (imagenet stem, width 64) against a narrow file: conv1 comes first.
    let err = fails(&["eval", "knn", "--weights", &fixture("official_resnet50_w2.pth"), "--arch", "resnet50"]);
    assert!(err.contains("`conv1.weight` has shape [2, 3, 7, 7] in the file but [64, 3, 7, 7]") && err.contains("--width"), "{err}");
    assert!(!Path::new("x.safetensors").exists(), "nothing written on failure");
}

#[test]
fn missing_tensors_are_named() {
    let bytes = std::fs::read(fixture("tv_resnet18_w2.safetensors")).unwrap();
    let all = tensors(&bytes);
    let kept: Vec<(String, safetensors::tensor::TensorView)> = all
        .iter()
        .filter(|(n, _)| !n.starts_with("layer4.1.bn2.running_"))
        .map(|(n, (_, shape, data))| {
            let dtype = safetensors::SafeTensors::deserialize(&bytes).unwrap().tensor(n).unwrap().dtype();
            (n.clone(), safetensors::tensor::TensorView::new(dtype, shape.clone(), data).unwrap())
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partial.safetensors");
    std::fs::write(&path, safetensors::serialize(kept, None).unwrap()).unwrap();
    let device = barlow::backend::device("auto").unwrap();
    let err = barlow::store::torchvision::import(ResNetConfig::new(Arch::Resnet18).with_width(2).init(&device), &path).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("partial.safetensors: 2 of the 100 tensors of this encoder are missing from the file: \
        `layer4.1.bn2.running_mean`, `layer4.1.bn2.running_var`"), "{msg}");
    // Another network's weights altogether: what the file holds instead is shown.
    let err = barlow::store::torchvision::import(ResNetConfig::new(Arch::Resnet18).init(&device), &common::fixture("views.safetensors")).unwrap_err();
    assert!(format!("{err:#}").contains("none of the tensors of this encoder are in the file (its tensors are named like `blur_"), "{err:#}");
}

#[test]
fn a_file_that_is_not_a_checkpoint_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("picture.pth");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\n not weights at all").unwrap();
    let err = fails(&["export", "--weights", png.to_str().unwrap(), "--arch", "resnet18", "--out", "x.safetensors"]);
    assert!(err.contains("picture.pth: not a PyTorch checkpoint"), "{err}");
    let empty = dir.path().join("empty.pt");
    std::fs::write(&empty, b"").unwrap();
    let err = fails(&["export", "--weights", empty.to_str().unwrap(), "--arch", "resnet18", "--out", "x.safetensors"]);
    assert!(err.contains("empty.pt"), "{err}");
    let err = fails(&["export", "--weights", "no/such.pth", "--arch", "resnet18", "--out", "x.safetensors"]);
    assert!(err.contains("no/such.pth"), "{err}");
}

/// A state dict saved beside an object whose unpickling calls `os.system`: burn's reader alone
/// would load the tensors and skip the call silently; barlow refuses the file and says why.
#[test]
fn a_pickle_that_would_run_code_is_refused_with_the_reason() {
    let path = common::fixture("pickle_runs_code.pth");
    let reader = burn::store::pytorch_reader::PytorchReader::with_top_level_key(&path, "state_dict").unwrap();
    assert!(reader.get("conv1.weight").is_some(), "the tensors alone would load");
    let err = fails(&["eval", "knn", "--weights", path.to_str().unwrap(), "--arch", "resnet18", "--width", "2"]);
    assert!(err.contains("pickle_runs_code.pth: refused"), "{err}");
    assert!(err.contains("`posix.system`") && err.contains("would run code"), "{err}");
}

/// `train --init`: the encoder starts from the file, the run records it, a resume does not need
/// it and ends bitwise where an uninterrupted run does, and a changed file is noticed.
#[test]
fn train_init_resumes_bitwise_and_notices_a_changed_file() {
    let dir = tempfile::tempdir().unwrap();
    let init = dir.path().join("start.pth");
    std::fs::copy(fixture("tv_resnet18_w2.pth"), &init).unwrap();
    let tiny = ["--set=data.limit=512", "--set=data.size=16", "--set=model.width=2", "--set=model.stem=\"imagenet\"",
        "--set=model.projector=[32, 32]", "--set=optim.batch_size=64", "--set=optim.epochs=3",
        "--set=optim.warmup_epochs=1", "--set=train.knn_every=0", "--set=train.seed=3"];
    let train = |out: &Path, extra: &[&str]| {
        ok(&[&["train", "--out", out.to_str().unwrap(), "--init", init.to_str().unwrap()][..], &tiny, extra].concat())
    };
    let (whole, broken) = (dir.path().join("whole"), dir.path().join("broken"));
    train(&whole, &[]);
    // 8 steps an epoch: stop 3 steps into the second, after its first checkpoint.
    train(&broken, &["--set=train.max_steps=11"]);
    let config = std::fs::read_to_string(broken.join("config.toml")).unwrap();
    let sha = barlow::data::download::sha256(&init).unwrap();
    assert!(config.contains("[model.init]") && config.contains(&sha), "{config}");

    std::fs::remove_file(&init).unwrap();
    ok(&["train", "--resume", "--out", broken.to_str().unwrap(), "--set=train.max_steps=100"]);
    let weights = |out: &Path| {
        let device = barlow::backend::device("auto").unwrap();
        let (_, model) = barlow::store::checkpoint::load_model(&out.join("checkpoint.bin"), &device).unwrap();
        use burn::store::{ModuleSnapshot, SafetensorsStore};
        let mut store = SafetensorsStore::from_bytes(None);
        model.save_into(&mut store).unwrap();
        tensors(&store.get_bytes().unwrap())
    };
    let (a, b) = (weights(&whole), weights(&broken));
    let differ: Vec<&String> = a.keys().filter(|n| a[*n] != b[*n]).collect();
    assert!(differ.is_empty() && a.len() == b.len(), "resumed weights differ: {differ:?}");

    // A new run from the recorded config checks the file: gone, then changed.
    let again = |out: &str| barlow(&["train", "--config", broken.join("config.toml").to_str().unwrap(), "--out", out]);
    let err = String::from_utf8_lossy(&again(dir.path().join("c").to_str().unwrap()).stderr).into_owned();
    assert!(err.contains("start.pth"), "{err}");
    std::fs::copy(fixture("tv_resnet18_w2.safetensors"), &init).unwrap();
    let err = String::from_utf8_lossy(&again(dir.path().join("d").to_str().unwrap()).stderr).into_owned();
    assert!(err.contains("start.pth") && err.contains(&sha) && err.contains("changed"), "{err}");
}

/// The encoder a run starts from is the file's, tensor for tensor; the projector is fresh.
#[test]
fn the_initial_encoder_is_the_files() {
    let device = barlow::backend::device("auto").unwrap();
    let mut config = barlow::config::Config::load("quick", &["model.width=2".into(), "model.stem=\"imagenet\"".into()]).unwrap();
    config.model.init = Some(barlow::store::weights::record_init(&common::fixture("tv_resnet18_w2.safetensors")).unwrap());
    let model = barlow::store::weights::initial_model(&config, &device).unwrap();
    let want = tensors(&std::fs::read(fixture("tv_resnet18_w2.safetensors")).unwrap());
    let got = tensors(&exported(model.backbone()));
    let floats = |m: &std::collections::BTreeMap<String, (String, Vec<usize>, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        m.iter().filter(|(n, _)| !n.ends_with("num_batches_tracked")).map(|(n, t)| (n.clone(), t.2.clone())).collect()
    };
    assert_eq!(floats(&got), floats(&want));
    config.model.init = None;
    let random = barlow::store::weights::initial_model(&config, &device).unwrap();
    assert_ne!(floats(&tensors(&exported(random.backbone()))), floats(&want));
}

#[test]
fn a_config_with_init_round_trips() {
    let mut config = barlow::config::Config::load("quick", &[]).unwrap();
    config.model.init = Some(barlow::config::InitWeights { path: "/w/resnet50.pth".into(), sha256: "ab".repeat(32) });
    let text = config.to_toml();
    assert_eq!(barlow::config::Config::parse(&text, &[]).unwrap(), config, "{text}");
}

#[test]
fn stems_and_widths_default_to_torchvisions() {
    let err = fails(&["export", "--weights", &fixture("tv_resnet18_w2.pth"), "--arch", "resnet18", "--out", "x.safetensors"]);
    assert!(err.contains("in a resnet18 with the imagenet stem and width 64"), "{err}");
    // Flags that only mean something with --weights, or a run and a file at once, are refused.
    let out = barlow(&["eval", "knn", "-k", "run", "--weights", "x.pth", "--arch", "resnet18"]);
    assert_eq!(out.status.code(), Some(2));
    let out = barlow(&["eval", "knn", "-k", "run", "--width", "8"]);
    assert_eq!(out.status.code(), Some(2));
}
