//! DINO against the official formulas (scripts/make_dino_fixtures.py: DINOLoss and its centre,
//! DINOHead with its weight-normalised last layer, the temperature and momentum schedules), its
//! clipping and frozen last layer, data-parallel training with local crops as one process, and
//! its settings refused by name.

mod common;

use barlow::config::Config;
use barlow::methods::dino::{self, Dino, DinoHead};
use barlow::methods::{Batchwide, Crops, MethodConfig, Model, SelfSupervised, Stage, momentum};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use common::workers::{trains_over_workers_as_one_process, view};
use common::*;
use std::collections::HashMap;

type Fixture = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn load(name: &str) -> Fixture {
    read_safetensors(&fixture(&format!("dino_{name}.safetensors")))
}

fn t2(f: &Fixture, key: &str) -> Tensor<2> {
    let (shape, values) = &f[key];
    tensor2(shape, values, &device())
}

fn value(f: &Fixture, key: &str) -> f64 {
    f[key].1[0] as f64
}

/// max |a − b| over the largest |b|.
fn scaled_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
    got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max) / scale
}

fn loss_of(f: &Fixture, student: Tensor<2>, center: Tensor<2>, teacher_temp: f64) -> Tensor<1> {
    dino::dino_loss(student, t2(f, "teacher"), center, 2, value(f, "student_temp"), teacher_temp)
}

#[test]
fn the_loss_its_gradient_and_the_centre_match_dino_loss() {
    for case in ["n8_k16", "n4_k32_local4"] {
        let f = load(&format!("loss_{case}"));
        let student = t2(&f, "student").require_grad();
        let loss = loss_of(&f, student.clone(), t2(&f, "center"), value(&f, "teacher_temp"));
        let got = loss.clone().into_scalar::<f32>();
        let want = f["loss"].1[0];
        assert!(((got - want) / want).abs() < 1e-5, "{case}: loss {got}, PyTorch {want}");
        let grads = loss.backward();
        let grad = to_vec(student.grad(&grads).expect("a gradient of the student"));
        assert!(scaled_err(&grad, &f["grad_student"].1) < 1e-4, "{case}: gradient of the student");

        let teacher = t2(&f, "teacher");
        let center = dino::moving_center(t2(&f, "center"), dino::batch_center(teacher, &Batchwide::single()), value(&f, "center_momentum"));
        assert!(scaled_err(&to_vec(center), &f["center_after"].1) < 1e-6, "{case}: the centre after the step");
    }
}

/// The check can fail: without the centre, or with a teacher temperature 1% off, the loss moves.
#[test]
fn a_missing_centre_or_another_temperature_is_caught() {
    let f = load("loss_n4_k32_local4");
    let want = f["loss"].1[0];
    let zeros = Tensor::zeros([1, 32], &device());
    for (what, loss) in [
        ("no centre", loss_of(&f, t2(&f, "student"), zeros, value(&f, "teacher_temp"))),
        ("τ_t × 1.01", loss_of(&f, t2(&f, "student"), t2(&f, "center"), value(&f, "teacher_temp") * 1.01)),
    ] {
        let rel = ((loss.into_scalar::<f32>() - want) / want).abs();
        assert!(rel > 1e-4, "{what}: the loss moves by only {rel:.2e}");
    }
}

/// DINOHead's MLP, normalisation and weight-normalised last layer, forward and backward, from
/// PyTorch's weights (its `out × in` layout, transposed into burn's).
#[test]
fn the_head_matches_dino_head() {
    let f = load("head");
    let device = device();
    let param = |key: &str| Param::from_tensor(t2(&f, key).transpose().require_grad());
    let mut head = DinoHead::init(12, &[10, 10, 5], 9, true, &device);
    for (i, layer) in head.mlp.iter_mut().enumerate() {
        layer.weight = param(&format!("mlp{i}_weight"));
        let (shape, bias) = &f[&format!("mlp{i}_bias")];
        layer.bias = Some(Param::from_tensor(Tensor::from_data(TensorData::new(bias.clone(), [shape[0]]), &device).require_grad()));
    }
    head.last_layer.weight_v = param("weight_v");
    let features = t2(&f, "features").require_grad();
    let out = head.forward(features.clone());
    assert!(scaled_err(&to_vec(out.clone()), &f["output"].1) < 1e-5, "the head's output");
    let grads = (out * t2(&f, "probe")).sum().backward();
    let grad = |t: Tensor<2>| to_vec(t.grad(&grads).expect("a gradient"));
    assert!(scaled_err(&grad(features), &f["grad_features"].1) < 1e-4, "gradient of the features");
    // Back in PyTorch's layout.
    let grad_t = |p: &Param<Tensor<2>>| to_vec(p.val().grad(&grads).expect("a gradient").transpose());
    assert!(scaled_err(&grad_t(&head.last_layer.weight_v), &f["grad_weight_v"].1) < 1e-4, "gradient of weight_v");
    assert!(scaled_err(&grad_t(&head.mlp[0].weight), &f["grad_mlp0_weight"].1) < 1e-4, "gradient of the first Linear");
}

#[test]
fn the_teacher_temperature_and_momentum_follow_main_dino() {
    let f = load("schedules");
    let &[epochs, warmup, warmup_temp, temp, niter] = &f["settings"].1[..] else { panic!("five settings") };
    let s = dino::Settings {
        warmup_teacher_temp: warmup_temp as f64,
        teacher_temp: temp as f64,
        warmup_teacher_temp_epochs: warmup as usize,
        ..Default::default()
    };
    for (epoch, want) in f["teacher_temps"].1.iter().enumerate() {
        let got = dino::teacher_temp(&s, epoch) as f32;
        assert!((got - want).abs() < 1e-7, "teacher temperature at epoch {epoch}: {got}, main_dino {want}");
    }
    let total = (epochs * niter) as usize;
    assert_eq!(f["momentum"].1.len(), total);
    for (it, want) in f["momentum"].1.iter().enumerate() {
        let got = momentum::tau(dino::EMA, it, total) as f32;
        assert!((got - want).abs() < 1e-7, "teacher momentum at iteration {it}: {got}, main_dino {want}");
    }
}

/// A small DINO from its CIFAR-10 preset.
fn small(extra: &[&str]) -> MethodConfig {
    // The network the checks were sized for: the usual CIFAR stem, residual branches from zero.
    let mut overrides = vec!["model.width=4", "model.projector=[32, 16]", "model.out_dim=24", "model.stem=\"cifar\"", "model.zero_init_residual=true"];
    overrides.extend(extra);
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Config::load("dino-cifar10", &overrides).unwrap_or_else(|e| panic!("{e:#}")).model()
}

fn dino(model: Model) -> Dino {
    match model {
        Model::Dino(d) => d,
        other => panic!("a {} model", other.method()),
    }
}

/// Each gradient's norm, by parameter id.
fn norms(module: &impl Module, grads: &GradientsParams) -> Vec<(burn::module::ParamId, Option<f64>)> {
    struct Norms<'a>(&'a GradientsParams, Vec<(burn::module::ParamId, Option<f64>)>);
    impl ModuleVisitor for Norms<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let norm = self.0.get::<D>(param.id).map(|g| g.square().sum().sqrt().into_scalar::<f64>());
            self.1.push((param.id, norm));
        }
    }
    let mut n = Norms(grads, vec![]);
    module.visit(&mut n);
    n.1
}

/// `clip_gradients`: a gradient above the norm comes out at it, one below is untouched; and
/// `cancel_gradients_last_layer`: no gradient for the last layer in its frozen epoch, its
/// gradient back in the next.
#[test]
fn gradients_are_clipped_per_parameter_and_the_last_layer_waits_an_epoch() {
    let device = device();
    let _generator = seeded(&device, 3);
    let model = dino(small(&["model.clip_grad=0.05", "model.freeze_last_layer=1"]).init(&device));
    let crops = Crops { global: vec![view(0, 0, 16, &device), view(0, 1, 16, &device)], local: vec![view(0, 2, 8, &device)] };
    // The same gradients each time: BatchNorm normalises by the batch's statistics.
    let raw = || GradientsParams::from_grads(model.forward(&crops, &Batchwide::single(), Stage::FIRST).0.total.backward(), &model);
    let before = norms(&model, &raw());
    let stage = |epoch: usize| Stage { step: epoch * 10, total: 100, steps_per_epoch: 10 };
    let later = norms(&model, &model.adjust_gradients(raw(), stage(1)));
    let (mut clipped, mut kept) = (0, 0);
    for ((_, b), (_, a)) in before.iter().zip(&later) {
        let (Some(b), Some(a)) = (b, a) else { continue };
        match *b > 0.05 {
            true => {
                assert!((a - 0.05 * b / (b + 1e-6)).abs() < 1e-6, "norm {b} clipped to {a}");
                clipped += 1;
            }
            false => {
                assert_eq!(a, b, "a gradient below the norm is untouched");
                kept += 1;
            }
        }
    }
    assert!(clipped > 0 && kept > 0, "both sides of the norm: {clipped} clipped, {kept} kept");
    let last = |grads: &GradientsParams| norms(&model.head.last_layer, grads).iter().all(|(_, n)| n.is_some());
    assert!(last(&model.adjust_gradients(raw(), stage(1))), "the last layer trains after its frozen epoch");
    let frozen = model.adjust_gradients(raw(), stage(0));
    assert!(norms(&model.head.last_layer, &frozen).iter().all(|(_, n)| n.is_none()), "the last layer waits in epoch 0");
}

/// A step moves the teacher by the EMA towards the student and the centre towards the batch's
/// mean teacher output.
#[test]
fn after_a_step_the_teacher_and_the_centre_follow() {
    let device = device();
    let _generator = seeded(&device, 4);
    let model = dino(small(&["model.ema=[0.9, 0.9]", "model.center_momentum=0.8"]).init(&device));
    let crops = Crops { global: vec![view(1, 0, 16, &device), view(1, 1, 16, &device)], local: vec![] };
    let teacher_out = model.teacher.forward(&crops.global);
    let (_, batch_center) = model.forward(&crops, &Batchwide::single(), Stage::FIRST);
    let before_teacher = to_vec(model.teacher.head.mlp[0].weight.val());
    let student = to_vec(model.head.mlp[0].weight.val());
    let after = model.after_step(batch_center, Stage::FIRST);
    let moved = to_vec(after.teacher.head.mlp[0].weight.val());
    let want: Vec<f32> = before_teacher.iter().zip(&student).map(|(t, s)| 0.9 * t + 0.1 * s).collect();
    assert!(max_rel_err(&moved, &want, 1e-3) < 1e-5, "the teacher's first Linear after the step");
    let mean = to_vec(teacher_out.mean_dim(0));
    let center = to_vec(after.center.val());
    let want: Vec<f32> = mean.iter().map(|m| 0.2 * m).collect();
    assert!(max_rel_err(&center, &want, 1e-3) < 1e-5, "the centre after one step from zero");
}

/// 2 and 4 workers, each with its rows of two global and two local crops, train as one process:
/// the loss, every weight, the teacher and the centre after 3 steps (gradients clipped).
#[test]
fn workers_with_local_crops_train_as_one_process() {
    let config = small(&["model.clip_grad=0.5", "model.freeze_last_layer=0"]);
    let device = device();
    trains_over_workers_as_one_process("dino", &config, |step| Crops {
        global: vec![view(step, 0, 16, &device), view(step, 1, 16, &device)],
        local: vec![view(step, 2, 8, &device), view(step, 3, 8, &device)],
    });
}

/// Settings that cannot work are refused naming the key and what is allowed.
#[test]
fn bad_settings_are_refused_by_name() {
    let cases: [(&[&str], &[&str]); 4] = [
        (&["model.lambda=0.005"], &["model.lambda", "barlow"]),
        (&["model.predictor=[64, 16]"], &["model.predictor", "no predictor"]),
        (&["model.teacher_temperature=0.04"], &["model.teacher_temperature", "teacher_temp"]),
        (&["model.projector=[]"], &["model.projector"]),
    ];
    for (overrides, needles) in cases {
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        let err = format!("{:#}", Config::load("dino-cifar10", &overrides).expect_err(&format!("{overrides:?} taken")));
        for needle in needles {
            assert!(err.contains(needle), "{overrides:?}: the error does not say `{needle}`: {err}");
        }
    }
}
