//! The data-parallel check of any method: W workers (threads), each with its rows of every
//! view, train as one process holding the global batch.

use barlow::collective::{Comm, Single, ThreadGroup};
use barlow::dist::train_step;
use barlow::methods::{Batchwide, Crops, MethodConfig, Model, Reduce};
use barlow::ops::precision::Precision;
use barlow::optim::LarsConfig;
use barlow::train::Progress;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{Device, Tensor, TensorData};
use std::sync::Arc;

/// Images in the global batch, and LARS steps taken.
pub const N: usize = 16;
pub const STEPS: usize = 3;
pub const TOLERANCE: f64 = 1e-5;

/// View `v` of step `step`'s global batch (`N×3×side×side`), the same on every worker (from a
/// hash, not the device's generator, which threads would share).
pub fn view(step: usize, v: usize, side: usize, device: &Device) -> Tensor<4> {
    let shape = [N, 3, side, side];
    let values = (0..shape.iter().product::<usize>())
        .map(|i| {
            let h = ((i * 7919 + step * 104_729 + v * 1_299_709) as f32 * 0.618_034).sin() * 43_758.547;
            2.0 * (h - h.floor()) - 1.0
        })
        .collect::<Vec<f32>>();
    Tensor::from_data(TensorData::new(values, shape), device)
}

pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// Every float of `module` (or its gradient, where there is one) by path.
pub fn collect<M: Module>(module: &M, grads: Option<&GradientsParams>) -> Vec<(String, Vec<f32>)> {
    struct Collect<'a> {
        path: Vec<String>,
        grads: Option<&'a GradientsParams>,
        out: Vec<(String, Vec<f32>)>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let value = match self.grads {
                Some(g) => match g.get::<D>(param.id) {
                    Some(grad) => grad,
                    None => return,
                },
                None => param.val(),
            };
            self.out.push((self.path.join("."), values(value)));
        }
    }
    let mut c = Collect { path: vec![], grads, out: vec![] };
    module.visit(&mut c);
    c.out
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(1e-30)).sqrt()
}

/// Each view's rows of worker `rank` of `size`.
fn shard(crops: Crops, rank: usize, size: usize) -> Crops {
    let rows = |t: Tensor<4>| {
        let n = t.dims()[0] / size;
        t.narrow(0, rank * n, n)
    };
    Crops { global: crops.global.into_iter().map(rows).collect(), local: crops.local.into_iter().map(rows).collect() }
}

/// The losses of [`STEPS`] steps and every float of the model after them.
type Outcome = (Vec<f64>, Vec<(String, Vec<f32>)>);

/// `config`'s model, trained for [`STEPS`] LARS steps on `crops(step)` (the global batch's
/// views), by 2 and 4 workers with synchronised BatchNorm and by 2 without, against one process:
/// with it every step's global loss and every weight after the last agree within
/// [`TOLERANCE`], the method's state (momentum network, queue, centre) included; without it
/// they differ (each shard's statistics), so the check can fail. No worker keeps the
/// communicator once training is done.
pub fn trains_over_workers_as_one_process(name: &str, config: &MethodConfig, crops: impl Fn(usize) -> Crops + Sync) {
    let device = super::device();
    let _generator = super::seeded(&device, 7);
    let initial = config.init(&device);
    let fresh = || -> Model {
        let mut store = BurnpackStore::from_bytes(None);
        initial.valid().save_into(&mut store).unwrap();
        let mut store = BurnpackStore::from_bytes(Some(store.get_bytes().unwrap()));
        let mut model = config.init(&device);
        model.load_from(&mut store).unwrap();
        model
    };
    let run = |par: &Batchwide, mut model: Model| -> Outcome {
        let (rank, size) = (par.comm.rank(), par.comm.size());
        let mut optim = LarsConfig::new().init();
        let mut losses = vec![];
        for step in 0..STEPS {
            let at = Progress { step, total: STEPS, steps_per_epoch: STEPS, lr: 1.0 };
            let (next, loss) = train_step(par, model, &mut optim, shard(crops(step), rank, size), Precision::F32, at);
            losses.push(loss.total.into_scalar::<f64>());
            model = next;
        }
        (losses, collect(&model.valid(), None))
    };
    let whole = run(&Batchwide::new(Arc::new(Single), true), fresh());
    for (size, sync_bn) in [(2, true), (4, true), (2, false)] {
        let models: Vec<Model> = (0..size).map(|_| fresh()).collect();
        let outcomes: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = ThreadGroup::new(size)
                .into_iter()
                .zip(models)
                .map(|(worker, model)| {
                    let run = &run;
                    let comm: Comm = Arc::new(worker);
                    let par = Batchwide { comm: comm.clone(), sync_bn, reduce: Reduce::Differentiable };
                    scope.spawn(move || {
                        let outcome = run(&par, model);
                        drop(par);
                        (outcome, Arc::strong_count(&comm))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (rank, (outcome, holders)) in outcomes.iter().enumerate() {
            // Nothing keeps the communicator once training is done: autodiff nodes that no
            // backward consumes (a momentum network's forward, if it were tracked) would.
            assert_eq!(*holders, 1, "{name}: the communicator is still held {} more times", holders - 1);
            let worst = largest_error(outcome, &whole);
            match sync_bn {
                true => assert!(worst <= TOLERANCE, "{name}, {size} workers, rank {rank}: relative error {worst:.2e}"),
                false => assert!(worst > 1e-3, "{name}: BatchNorm per process must differ ({worst:.2e})"),
            }
            println!("{name}, {size} workers (sync_bn {sync_bn}), rank {rank}: largest relative error {worst:.1e}");
        }
    }
}

/// The largest relative error of a worker's losses and weights against one process's.
fn largest_error((losses, weights): &Outcome, (whole_losses, whole_weights): &Outcome) -> f64 {
    let mut worst = 0f64;
    for (a, b) in losses.iter().zip(whole_losses) {
        worst = worst.max(((a - b) / b).abs());
    }
    assert_eq!(weights.len(), whole_weights.len());
    // SimSiam's predictor sees BatchNorm outputs through a Linear without bias: its BatchNorm's
    // running mean is zero up to rounding (1e-9), compared absolutely.
    let floored = |a: &[f32], b: &[f32]| {
        let rms = (b.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / b.len() as f64).sqrt();
        rel_err(a, b) * rms.max(1e-30) / rms.max(1e-3)
    };
    for ((_, a), (_, b)) in weights.iter().zip(whole_weights) {
        worst = worst.max(floored(a, b));
    }
    worst
}
