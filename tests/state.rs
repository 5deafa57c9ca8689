//! The methods' state beside the online network: the momentum copy (its own running statistics,
//! the EMA step after each optimisation step), MoCo's queue, and SimSiam's fixed predictor rate.

mod common;

use barlow::config::Config;
use barlow::methods::momentum::Momentum;
use barlow::methods::{Batchwide, Crops, Model};
use barlow::train::step::Progress;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Distribution, Tensor};
use std::collections::BTreeMap;

fn config(method: &str, extra: &str) -> Config {
    let text = format!(
        r#"
        [data]
        dataset = "fashion-mnist-sample"
        views = "cifar"
        size = 16
        [model]
        method = "{method}"
        arch = "resnet18"
        stem = "cifar"
        width = 4
        projector = [16, 8]
        {extra}
        [optim]
        batch_size = 8
        epochs = 1
        warmup_epochs = 1
        lr_weights = 0.1
        weight_decay = 1e-4
        "#
    );
    Config::parse(&text, &[]).unwrap()
}

/// Every float tensor of a module by path (parameters and running statistics).
fn tensors<M: Module>(module: &M) -> BTreeMap<String, Vec<f32>> {
    struct Collect(Vec<String>, BTreeMap<String, Vec<f32>>);
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.1.insert(self.0.join("."), p.val().into_data().convert::<f32>().try_into_vec::<f32>().unwrap());
        }
    }
    let mut c = Collect(vec![], BTreeMap::new());
    module.valid().visit(&mut c);
    c.1
}

fn views() -> (Tensor<4>, Tensor<4>) {
    let device = common::device();
    let v = || Tensor::<4>::random([8, 3, 16, 16], Distribution::Normal(0.0, 1.0), &device);
    (v(), v())
}

/// The momentum network of a BYOL or MoCo model.
fn momentum(model: &Model) -> &Momentum {
    match model {
        Model::Byol(byol) => &byol.momentum,
        Model::Moco(moco) => &moco.momentum,
        other => panic!("{} has no momentum network", other.method()),
    }
}

fn step(model: Model, config: &Config, lr: f64, step: usize) -> Model {
    let schedule = config.schedule(4);
    let mut optim = config.optimizer(&schedule);
    let (y1, y2) = views();
    let at = Progress { step, total: 4, steps_per_epoch: 4, lr };
    barlow::dist::train_step(&Batchwide::single(), model, &mut optim, Crops::pair(y1, y2), config.train.precision, at).0
}

#[test]
fn the_momentum_network_starts_as_a_copy_with_running_statistics_of_its_own() {
    let config = config("byol", "");
    let device = common::device();
    let _generator = common::seeded(&device, 1);
    let model = config.model().init(&device);
    let (online, target) = (tensors(model.backbone()), tensors(&momentum(&model).backbone));
    assert_eq!(online, target, "the target starts as the online encoder");
    // A training-mode pass of the online encoder alone moves only its own statistics.
    let (y, _) = views();
    let _ = model.backbone().forward(y);
    let (online, target) = (tensors(model.backbone()), tensors(&momentum(&model).backbone));
    assert_ne!(online["bn1.running_mean"], target["bn1.running_mean"]);
}

#[test]
fn an_evaluation_copy_keeps_its_running_statistics_while_training_moves_the_models() {
    // A training pass moves running statistics in place where nothing else holds them; a copy
    // that shares their storage (evaluation, a checkpoint) must not see it.
    let config = config("barlow", "");
    let device = common::device();
    let _generator = common::seeded(&device, 4);
    let model = config.model().init(&device);
    let frozen = model.backbone().valid();
    let before = tensors(&frozen);
    let (y, _) = views();
    for _ in 0..2 {
        let _ = model.backbone().forward(y.clone());
    }
    assert_eq!(tensors(&frozen), before, "the evaluation copy's statistics moved");
    let moved = tensors(model.backbone());
    for stat in ["bn1.running_mean", "bn1.running_var", "layer4.1.bn2.running_var"] {
        assert_ne!(moved[stat], before[stat], "{stat} did not move");
    }
}

#[test]
fn after_each_step_the_target_moves_towards_the_online_network_by_tau() {
    // SGD at rate 1 so that the online network moves far beyond rounding in one step.
    let config = Config::parse(&config("byol", "ema = [0.9, 1.0]").to_toml(), &["optim.optimizer=\"sgd\"".into()]).unwrap();
    let device = common::device();
    let _generator = common::seeded(&device, 2);
    let before = config.model().init(&device);
    let target_before = tensors(momentum(&before));
    let after = step(before, &config, 1.0, 0);
    let Model::Byol(byol) = &after else { panic!("a BYOL model") };
    let online = tensors(&byol.projector);
    let target = tensors(momentum(&after));
    // τ at step 0 of 4 is the base, 0.9: ξ' = 0.9·ξ + 0.1·θ' (θ' after the optimiser's step).
    // Not `out.bias`: the predictor opens with Linear→BN, which cancels any shift of the
    // projector's output, so that bias's gradient is zero up to rounding.
    for name in ["projector.out.weight", "projector.hidden.0.1.beta", "projector.hidden.0.0.weight"] {
        let theta = &online[name.strip_prefix("projector.").unwrap()];
        let want: Vec<f32> = target_before[name].iter().zip(theta).map(|(x, t)| 0.9 * x + (1.0 - 0.9) * t).collect();
        let max_diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        let (err, moved) = (max_diff(&target[name], &want), max_diff(&target[name], &target_before[name]));
        assert!(moved > 1e-4, "{name} moved by only {moved}");
        assert!(err < 1e-3 * moved, "{name}: off the EMA step by {err} (moved {moved})");
    }
    // Running statistics are the target's own (from its forward passes), not averaged in.
    let stats = "backbone.bn1.running_var";
    let averaged: Vec<f32> = target_before[stats].iter().zip(&tensors(after.backbone())["bn1.running_var"])
        .map(|(x, t)| 0.9 * x + 0.1 * t).collect();
    assert_ne!(target[stats], averaged);
}

#[test]
fn moco_enqueues_each_steps_keys_at_the_pointer() {
    let config = config("moco", "queue = 24\nsymmetric = true");
    let device = common::device();
    let _generator = common::seeded(&device, 3);
    let mut model = config.model().init(&device);
    let queue = |m: &Model| match m {
        Model::Moco(moco) => tensors(&moco.queue)["keys"].clone(),
        other => panic!("{} has no queue", other.method()),
    };
    let start = queue(&model);
    assert_eq!(start.len(), 2 * 24 * 8, "one queue of 24 keys per view");
    for s in 0..4 {
        let before = queue(&model);
        model = step(model, &config, 0.1, s);
        let after = queue(&model);
        // Step s writes rows [8s mod 24, +8) of both views' queues, and nothing else.
        let row = |i: usize| (i / 8) % 24;
        let ptr = (s * 8) % 24;
        for (i, (a, b)) in after.iter().zip(&before).enumerate() {
            let written = (ptr..ptr + 8).contains(&row(i));
            assert_eq!(a != b, written, "step {s}, element {i} (row {})", row(i));
        }
        // The keys are unit vectors.
        let norm: f32 = after[ptr * 8..ptr * 8 + 8].iter().map(|v| v * v).sum();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}

#[test]
fn simsiams_predictor_keeps_its_rate_while_the_schedule_is_at_zero() {
    let config = Config::parse(&config("simsiam", "predictor = [4, 8]").to_toml(), &[
        "optim.optimizer=\"sgd\"".into(),
        "optim.fix_predictor_lr=true".into(),
    ])
    .unwrap();
    let device = common::device();
    let _generator = common::seeded(&device, 4);
    let before = config.model().init(&device);
    let predictor = |m: &Model| match m {
        Model::Simsiam(simsiam) => tensors(&simsiam.predictor),
        other => panic!("not SimSiam: {}", other.method()),
    };
    let (p0, b0) = (predictor(&before), tensors(before.backbone()));
    // Factor 0: the first warm-up step. Only the fixed-rate group moves.
    let after = step(before, &config, 0.0, 0);
    let (p1, b1) = (predictor(&after), tensors(after.backbone()));
    assert_ne!(p0["out.weight"], p1["out.weight"], "the predictor stayed put");
    assert_eq!(b0["conv1.weight"], b1["conv1.weight"], "the encoder moved at factor 0");
}

/// The values of a float32 `.npy` file as `barlow embed` writes it (format 1.0, little-endian).
fn npy_values(path: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap();
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + header..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

#[test]
fn checkpoints_written_before_keep_loading_resuming_and_encoding_alike() {
    // Made by scripts/make_checkpoint_fixtures.sh: one tiny run per method, and its features.
    for method in ["barlow", "simclr", "moco", "byol", "simsiam", "vicreg"] {
        let dir = common::fixture("checkpoints").join(method);
        let device = common::plain_device();
        let (config, model) = barlow::store::checkpoint::load_model(&dir.join("checkpoint.bin"), &device).unwrap();
        assert_eq!(config.model.method().name(), method);
        let set = barlow::data::open(&config.data, barlow::data::Split::Test).unwrap();
        let views = barlow::data::Views::new(&config.data.views, config.data.size, set.normalize()).unwrap();
        let features = barlow::eval::features::encode(&model.backbone().valid(), &set, &views, &device).unwrap();
        let got = features.into_data().convert::<f32>().try_into_vec::<f32>().unwrap();
        let want = npy_values(&dir.join("features.npy"));
        assert_eq!(got.len(), want.len(), "{method}");
        let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / w.abs().max(1.0)).fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "{method}: features differ from the fixture's by {worst}");
        // And the run goes on from it, optimiser state and all.
        let run = tempfile::tempdir().unwrap();
        std::fs::copy(dir.join("checkpoint.bin"), run.path().join("checkpoint.bin")).unwrap();
        let state = barlow::store::checkpoint::Checkpoint::read(&dir.join("checkpoint.bin")).unwrap().state;
        std::fs::write(run.path().join("config.toml"), &state.config).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_barlow"))
            .args(["train", "--resume", "--set", "optim.epochs=2", "--out"]).arg(run.path())
            .output().unwrap();
        assert!(out.status.success(), "{method}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("trained 2 epochs"), "{method}");
    }
}

/// `model.scale_loss = s`: the logged loss is s times the loss, and with SGD (its first step
/// has no momentum yet; no weight decay) every parameter moves s times as far.
#[test]
fn the_loss_scale_multiplies_the_loss_and_the_first_update() {
    use barlow::dist::{Arithmetic, train_step};
    use common::workers::view;
    let device = common::device();
    let mut config = config("barlow", "");
    config.optim.optimizer = barlow::config::Optimizer::Sgd;
    config.optim.weight_decay = 0.0;
    let _generator = common::seeded(&device, 5);
    let initial = config.model().init(&device);
    let start = tensors(&initial);
    let run = |scale_loss: f64| {
        let mut store = burn::store::BurnpackStore::from_bytes(None);
        burn::store::ModuleSnapshot::save_into(&initial.valid(), &mut store).unwrap();
        let mut model = config.model().init(&device);
        let mut store = burn::store::BurnpackStore::from_bytes(Some(store.get_bytes().unwrap()));
        burn::store::ModuleSnapshot::load_from(&mut model, &mut store).unwrap();
        let mut optim = config.optimizer(&config.schedule(4));
        let crops = Crops::pair(view(0, 0, 16, &device), view(0, 1, 16, &device));
        let at = Progress { step: 0, total: 4, steps_per_epoch: 4, lr: 1.0 };
        let arithmetic = Arithmetic { precision: config.train.precision, scale_loss };
        let (model, loss) = train_step(&Batchwide::single(), model, &mut optim, crops, arithmetic, at);
        (loss.total.into_scalar::<f64>(), tensors(&model))
    };
    let ((loss, plain), (scaled_loss, scaled)) = (run(1.0), run(0.1));
    assert!((scaled_loss / loss - 0.1).abs() < 1e-6, "logged loss {scaled_loss} against {loss}");
    let mut moved = 0;
    for (name, w0) in &start {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            continue;
        }
        let delta = |w: &[f32]| w.iter().zip(w0).map(|(a, b)| (a - b) as f64).collect::<Vec<_>>();
        let (d1, ds) = (delta(&plain[name]), delta(&scaled[name]));
        let norm = d1.iter().map(|v| v * v).sum::<f64>().sqrt();
        let err = d1.iter().zip(&ds).map(|(a, b)| (0.1 * a - b).powi(2)).sum::<f64>().sqrt();
        assert!(err <= 1e-3 * norm + 1e-9, "{name}: the scaled step is not a tenth of the plain one ({err:.2e} of {norm:.2e})");
        moved += (norm > 0.0) as usize;
    }
    assert!(moved > 10, "the step moved {moved} tensors");
}
