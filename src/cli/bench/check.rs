//! `barlow bench check`: does a GPU backend compute the training step that the CPU computes?
//! The same weights and the same two views on each device; the loss terms and every parameter's
//! gradient are compared with the reference backend's.

use crate::backend;
use crate::config::range::POSITIVE;
use crate::config::range::LAYER;
use crate::config::valid::{BATCH, SIZE, WIDTH};
use crate::methods::barlow::LAMBDA;
use crate::methods::MethodConfig;
use crate::methods::{Batchwide, Crops, Model, Stage};
use crate::model::{Arch, ResNetConfig, Stem};
use anyhow::{Context, Result, bail};
use burn::module::{Module, ModuleVisitor, Param};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Gradients, Tensor, TensorData};
use rand::{RngExt, SeedableRng};

#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Backends to check, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub backend: Vec<String>,
    /// The backend whose numbers count as right.
    #[arg(long, default_value = "flex")]
    pub reference: String,
    #[arg(long, default_value = "resnet18")]
    pub arch: Arch,
    #[arg(long, default_value_t = 64, value_parser = WIDTH.parser::<usize>())]
    pub width: usize,
    #[arg(long, value_delimiter = '-', default_value = "2048-2048-2048", value_parser = LAYER.parser::<usize>())]
    pub projector: Vec<usize>,
    /// Images per view (N).
    #[arg(long, default_value_t = 32, value_parser = BATCH.parser::<usize>())]
    pub batch: usize,
    /// Image side; up to 64 px the CIFAR stem, above it the ImageNet one.
    #[arg(long, default_value_t = 32, value_parser = SIZE.parser::<usize>())]
    pub size: usize,
    /// Largest accepted relative error of each loss term.
    #[arg(long, default_value_t = 1e-3, value_parser = POSITIVE.parser::<f64>())]
    pub loss_tol: f64,
    /// Largest accepted relative error ‖g − g_ref‖ / ‖g_ref‖ of any parameter's gradient.
    #[arg(long, default_value_t = 2e-2, value_parser = POSITIVE.parser::<f64>())]
    pub grad_tol: f64,
    /// One JSON object per backend on stdout instead of sentences.
    #[arg(long)]
    pub json: bool,
}

/// What one step computed on one device, read back to the host.
pub struct StepValues {
    /// Total, on-diagonal and off-diagonal terms.
    pub loss: [f64; 3],
    /// Each parameter's gradient, by module path, in the model's order.
    pub grads: Vec<(String, Vec<f32>)>,
}

/// How far a backend's step is from the reference's.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    pub backend: String,
    pub reference: String,
    pub loss: f64,
    pub reference_loss: f64,
    /// The largest relative error of the three loss terms.
    pub loss_rel_err: f64,
    pub gradients: usize,
    pub worst_grad_rel_err: f64,
    pub worst_grad: String,
    pub ok: bool,
}

/// The loss and gradients of one step of `model` (on an autodiff device) on two views.
pub fn step_values(model: &Model, y1: Tensor<4>, y2: Tensor<4>) -> StepValues {
    let loss = model.forward(&Crops::pair(y1, y2), &Batchwide::single(), Stage::FIRST).0;
    let stats = crate::train::StepStats::read(&loss);
    let grads = loss.total.backward();
    let mut collect = Collect { grads: &grads, path: vec![], out: vec![] };
    model.visit(&mut collect);
    let term = |name| stats.term(name).expect("Barlow Twins' terms");
    StepValues { loss: [stats.loss, term("on_diag"), term("off_diag")], grads: collect.out }
}

struct Collect<'a> {
    grads: &'a Gradients,
    path: Vec<String>,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for Collect<'_> {
    // A checkpoint's names: without the method's variant.
    fn enter_module(&mut self, name: &str, container: &str) {
        if !container.starts_with("Enum:") {
            self.path.push(name.to_string());
        }
    }
    fn exit_module(&mut self, _: &str, container: &str) {
        if !container.starts_with("Enum:") {
            self.path.pop();
        }
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // BatchNorm's running statistics have no gradient.
        if let Some(g) = param.val().grad(self.grads) {
            let values = g.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 gradients");
            self.out.push((self.path.join("."), values));
        }
    }
}

/// How far `got` is from `want`: the largest relative error of the loss terms, and of the
/// gradients with the parameter it belongs to.
pub fn compare(got: &StepValues, want: &StepValues) -> Result<(f64, f64, String)> {
    let loss_err = got.loss.iter().zip(&want.loss).map(|(g, w)| rel(*g, *w)).fold(0.0, nan_max);
    if got.grads.len() != want.grads.len() {
        bail!("{} gradients against the reference's {}", got.grads.len(), want.grads.len());
    }
    let (mut worst, mut worst_name) = (f64::NEG_INFINITY, String::new());
    for ((name, g), (want_name, w)) in got.grads.iter().zip(&want.grads) {
        if name != want_name || g.len() != w.len() {
            bail!("gradient `{name}` ({} values) does not match the reference's `{want_name}` ({})", g.len(), w.len());
        }
        let diff: f64 = g.iter().zip(w).map(|(a, b)| (*a as f64 - *b as f64).powi(2)).sum::<f64>().sqrt();
        let norm: f64 = w.iter().map(|b| (*b as f64).powi(2)).sum::<f64>().sqrt();
        let err = if norm > 0.0 { diff / norm } else { diff };
        if !worst.is_nan() && (err.is_nan() || err > worst) {
            (worst, worst_name) = (err, name.clone());
        }
    }
    let worst = if worst == f64::NEG_INFINITY { 0.0 } else { worst };
    Ok((loss_err, worst, worst_name))
}

/// The larger of two errors, where NaN (a backend that computed garbage) is the largest.
fn nan_max(a: f64, b: f64) -> f64 {
    if !a.is_nan() && (b.is_nan() || b > a) { b } else { a }
}

fn rel(got: f64, want: f64) -> f64 {
    (got - want).abs() / want.abs().max(f64::MIN_POSITIVE)
}

/// Runs the check for every backend of `args`; an error if any is off.
pub fn check(args: &CheckArgs) -> Result<Vec<Comparison>> {
    let stem = if args.size <= 64 { Stem::Cifar } else { Stem::Imagenet };
    let encoder = ResNetConfig::new(args.arch).with_stem(stem).with_width(args.width);
    let config = MethodConfig::barlow(encoder, args.projector.clone(), LAMBDA);
    let reference = backend::device(&args.reference)?.autodiff();
    reference.seed(0);
    let model = config.init(&reference);
    let mut store = BurnpackStore::from_bytes(None);
    model.save_into(&mut store).context("serialising the reference weights")?;
    let weights = store.get_bytes().context("serialising the reference weights")?;
    let shape = [args.batch, 3, args.size, args.size];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let mut view = || -> Vec<f32> { (0..shape.iter().product()).map(|_| rng.random_range(-2.0..2.0f32)).collect() };
    let views = [view(), view()];
    let on = |device: &Device, model: &Model| {
        let y = |v: &Vec<f32>| Tensor::<4>::from_data(TensorData::new(v.clone(), shape), device);
        step_values(model, y(&views[0]), y(&views[1]))
    };
    let want = on(&reference, &model);
    let mut results = vec![];
    let mut failed = vec![];
    for name in &args.backend {
        let device = backend::device(name)?.autodiff();
        let copy = crate::store::checkpoint::load_weights(config.init(&device), weights.clone())?;
        let got = on(&device, &copy);
        let (loss_err, worst, worst_grad) = compare(&got, &want)?;
        let ok = loss_err <= args.loss_tol && worst <= args.grad_tol;
        let c = Comparison {
            backend: name.clone(),
            reference: args.reference.clone(),
            loss: got.loss[0],
            reference_loss: want.loss[0],
            loss_rel_err: loss_err,
            gradients: got.grads.len(),
            worst_grad_rel_err: worst,
            worst_grad,
            ok,
        };
        match args.json {
            true => println!("{}", serde_json::to_string(&c)?),
            false => println!(
                "{name} against {}: loss {:.6} vs {:.6} (terms within {:.1e}); {} gradients, the worst \
                 {:.1e} off ({}): {}",
                c.reference, c.loss, c.reference_loss, c.loss_rel_err, c.gradients, c.worst_grad_rel_err,
                c.worst_grad, if ok { "OK" } else { "FAIL" }
            ),
        }
        if !ok {
            failed.push(name.clone());
        }
        results.push(c);
    }
    if !failed.is_empty() {
        bail!(
            "{} computed the step differently from {} (tolerances: loss {:.0e}, gradients {:.0e})",
            failed.join(", "), args.reference, args.loss_tol, args.grad_tol
        );
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(loss: f64, grads: &[(&str, &[f32])]) -> StepValues {
        StepValues { loss: [loss, loss / 2.0, loss * 2.0], grads: grads.iter().map(|(n, g)| (n.to_string(), g.to_vec())).collect() }
    }

    #[test]
    fn the_worst_gradient_is_found_and_named() {
        let want = values(10.0, &[("a", &[3.0, 4.0]), ("b", &[1.0, 0.0])]);
        let (loss, worst, name) = compare(&want, &want).unwrap();
        assert_eq!((loss, worst), (0.0, 0.0));
        // ‖(0, 0.5)‖ / ‖(3, 4)‖ = 0.1 for `a`, 0.2 / 1 for `b`.
        let got = values(10.1, &[("a", &[3.0, 4.5]), ("b", &[1.2, 0.0])]);
        let (loss, worst, name2) = compare(&got, &want).unwrap();
        assert!((loss - 0.01).abs() < 1e-9, "{loss}");
        assert!((worst - 0.2).abs() < 1e-6 && name2 == "b", "{worst} {name2} {name}");
    }

    #[test]
    fn nan_counts_as_the_worst_error() {
        let want = values(10.0, &[("a", &[3.0, 4.0]), ("b", &[1.0, 0.0])]);
        let got = values(f64::NAN, &[("a", &[f32::NAN, 4.0]), ("b", &[100.0, 0.0])]);
        let (loss, worst, name) = compare(&got, &want).unwrap();
        assert!(loss.is_nan() && worst.is_nan() && name == "a", "{loss} {worst} {name}");
    }

    #[test]
    fn mismatched_parameters_are_an_error() {
        let want = values(1.0, &[("a", &[1.0])]);
        assert!(compare(&values(1.0, &[("c", &[1.0])]), &want).is_err());
        assert!(compare(&values(1.0, &[("a", &[1.0, 2.0])]), &want).is_err());
        assert!(compare(&values(1.0, &[]), &want).is_err());
    }
}
