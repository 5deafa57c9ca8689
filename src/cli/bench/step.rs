//! `barlow bench step` and `barlow tune`: training steps on random views, after a warm-up that
//! lasts until the step time has settled (GPU kernels are compiled and autotuned on first use).

use crate::backend;
use crate::config::range::{COUNT, NON_NEGATIVE};
use crate::config::range::LAYER;
use crate::config::valid::{BATCH, SIZE, WIDTH};
use crate::dist::train_step;
use crate::loss::Loss;
use crate::methods::barlow::LAMBDA;
use crate::methods::{Batchwide, Crops, MethodConfig, Model};
use crate::model::{Arch, ResNetConfig, Stem};
use crate::ops::precision::Precision;
use crate::optim::LarsConfig;
use crate::train::step::Progress;
use crate::train::StepStats;
use anyhow::Result;
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Distribution, Tensor};
use std::time::Instant;

/// How long to warm up: untimed steps until two in a row take the same time, within bounds.
#[derive(clap::Args, Debug, Clone)]
pub struct WarmupArgs {
    /// Untimed steps at least (allocation, kernel compilation and autotuning happen there);
    /// 0 times from the very first step.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// ...then more, until a step's time is within this fraction of the one before...
    #[arg(long, default_value_t = 0.1, value_parser = NON_NEGATIVE.parser::<f64>())]
    pub steady: f64,
    /// ...or this many untimed steps have run...
    #[arg(long, default_value_t = 10, value_parser = COUNT.parser::<usize>())]
    pub warmup_max: usize,
    /// ...or this many seconds have passed, whichever comes first.
    #[arg(long, default_value_t = 600.0, value_parser = NON_NEGATIVE.parser::<f64>())]
    pub warmup_secs: f64,
}

/// What the warm-up took.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Warmup {
    pub steps: usize,
    pub seconds: f64,
    /// The first step: allocation, compilation and tuning, on a GPU with an empty cache.
    pub first_step_s: f64,
    pub last_step_s: f64,
    /// Whether two consecutive steps agreed before a bound ended the warm-up.
    pub steady: bool,
}

/// Runs `step` (which must wait for its own work and return its seconds) as `args` says.
pub fn warm_up(args: &WarmupArgs, mut step: impl FnMut() -> Result<f64>) -> Result<Warmup> {
    let started = Instant::now();
    let mut w = Warmup::default();
    if args.warmup == 0 {
        return Ok(w);
    }
    loop {
        let secs = step()?;
        if w.steps == 0 {
            w.first_step_s = secs;
        }
        w.steady = w.steps > 0 && (secs - w.last_step_s).abs() <= args.steady * w.last_step_s;
        w.last_step_s = secs;
        w.steps += 1;
        let bounded = w.steps >= args.warmup_max || started.elapsed().as_secs_f64() >= args.warmup_secs;
        if w.steps >= args.warmup && (w.steady || bounded) {
            break;
        }
    }
    w.seconds = started.elapsed().as_secs_f64();
    Ok(w)
}

/// A model, its optimiser and random views, stepping on one device.
pub struct Stepper {
    model: Option<Model>,
    steps: usize,
    precision: Precision,
    optim: ModuleOptimizer,
    device: Device,
    /// Drawn once: in training the views come from the loader's threads, so drawing them is not
    /// part of a step (burn's CPU `random` is single-threaded and would cost a few percent).
    views: Vec<(Tensor<4>, Tensor<4>)>,
    /// The training step of a one-process job.
    one_process: Batchwide,
}

/// Pairs of views the steps take in turn.
const VIEW_PAIRS: usize = 2;

impl Stepper {
    /// `config`'s model, seeded, on `device` (an autodiff device).
    pub fn new(config: &MethodConfig, optim: ModuleOptimizer, batch: usize, size: usize, device: &Device) -> Stepper {
        device.seed(0);
        let model = Some(config.init(device));
        let view = || Tensor::<4>::random([batch, 3, size, size], Distribution::Normal(0.0, 1.0), device);
        let views = (0..VIEW_PAIRS).map(|_| (view(), view())).collect();
        let one_process = Batchwide::single();
        Stepper { model, steps: 0, precision: Precision::F32, optim, device: device.clone(), views, one_process }
    }

    /// Convolutions and matrix products in `precision` from now on.
    pub fn with_precision(mut self, precision: Precision) -> Stepper {
        self.precision = precision;
        self
    }

    /// Queues one training step on the next pair of random views; the loss stays on the device.
    pub fn step(&mut self) -> Loss {
        let (y1, y2) = self.views[self.steps % VIEW_PAIRS].clone();
        let at = Progress { step: self.steps, total: usize::MAX, steps_per_epoch: usize::MAX, lr: 0.1 };
        self.steps += 1;
        let model = self.model.take().expect("a model");
        let (next, loss) = train_step(&self.one_process, model, &mut self.optim, Crops::pair(y1, y2), self.precision, at);
        self.model = Some(next);
        loss
    }

    /// One step, waited for to the end of its weight update: its seconds.
    pub fn synced_step(&mut self) -> Result<f64> {
        let start = Instant::now();
        let loss = self.step();
        StepStats::read(&loss);
        self.device.sync()?;
        Ok(start.elapsed().as_secs_f64())
    }

    pub fn model(&self) -> &Model {
        self.model.as_ref().expect("a model")
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct StepArgs {
    /// Backends to measure, in turn, in this one process.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub backend: Vec<String>,
    #[arg(long, default_value = "resnet18")]
    pub arch: Arch,
    /// Encoder width (64 = the standard ResNet).
    #[arg(long, default_value_t = 64, value_parser = WIDTH.parser::<usize>())]
    pub width: usize,
    #[arg(long, value_delimiter = '-', default_value = "2048-2048-2048", value_parser = LAYER.parser::<usize>())]
    pub projector: Vec<usize>,
    /// Images per view (N).
    #[arg(long, default_value_t = 128, value_parser = BATCH.parser::<usize>())]
    pub batch: usize,
    /// Image side; up to 64 px the CIFAR stem, above it the ImageNet one.
    #[arg(long, default_value_t = 32, value_parser = SIZE.parser::<usize>())]
    pub size: usize,
    #[command(flatten)]
    pub warmup: WarmupArgs,
    /// Timed steps, queued back to back with one wait at the end (as training runs).
    #[arg(long, default_value_t = 3, value_parser = COUNT.parser::<usize>())]
    pub steps: usize,
    /// One JSON object per backend on stdout instead of a sentence.
    #[arg(long)]
    pub json: bool,
    /// Convolutions and matrix products in f32 or bf16 (as `train.precision`).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// After the timed steps, run `--profile-steps` more under PyTorch's profiler and save its
    /// trace as DIR/BACKEND-PRECISION.json (LibTorch backends only; scripts/trace_summary.py).
    #[arg(long, value_name = "DIR")]
    pub profile: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 3)]
    pub profile_steps: usize,
}

/// One backend's measurement.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepResult {
    pub backend: String,
    pub arch: Arch,
    pub width: usize,
    pub projector: Vec<usize>,
    pub batch: usize,
    pub size: usize,
    pub precision: Precision,
    pub s_per_step: f64,
    pub images_per_s: f64,
    pub steps: usize,
    pub warmup: Warmup,
    /// The loss after the timed steps (a finite number shows the steps computed something).
    pub loss: f64,
}

/// Seconds per step of each backend, measured one after the other.
pub fn step(args: &StepArgs) -> Result<Vec<StepResult>> {
    let stem = if args.size <= 64 { Stem::Cifar } else { Stem::Imagenet };
    let encoder = ResNetConfig::new(args.arch).with_stem(stem).with_width(args.width);
    let config = MethodConfig::barlow(encoder, args.projector.clone(), LAMBDA);
    if let Some(other) = args.backend.iter().find(|b| args.profile.is_some() && !b.starts_with("tch")) {
        anyhow::bail!("--profile records PyTorch's profiler, which only the LibTorch backends (tch, tch-cuda) have, not {other}");
    }
    let mut results = vec![];
    for name in &args.backend {
        let device = backend::device(name)?.autodiff();
        let mut stepper =
            Stepper::new(&config, LarsConfig::new().init(), args.batch, args.size, &device).with_precision(args.precision);
        let warmup = warm_up(&args.warmup, || stepper.synced_step())?;
        report_warmup(name, &warmup);
        let start = Instant::now();
        let mut loss = None;
        for _ in 0..args.steps {
            loss = Some(stepper.step());
        }
        let loss = loss.map(|l| StepStats::read(&l).loss).unwrap_or(f64::NAN);
        device.sync()?;
        let mean = start.elapsed().as_secs_f64() / args.steps.max(1) as f64;
        if let Some(dir) = &args.profile {
            profile(dir, name, args, &mut stepper)?;
        }
        let result = StepResult {
            backend: name.clone(),
            arch: args.arch,
            width: args.width,
            projector: args.projector.clone(),
            batch: args.batch,
            size: args.size,
            precision: args.precision,
            s_per_step: mean,
            images_per_s: args.batch as f64 / mean,
            steps: args.steps,
            warmup,
            loss,
        };
        match args.json {
            true => println!("{}", serde_json::to_string(&result)?),
            false => println!(
                "{name:>10}: {mean:.3} s/step  {:.1} images/s  (N={}, {}×{}, {:?}, {} timed steps)",
                result.images_per_s, args.batch, args.size, args.size, args.precision, args.steps
            ),
        }
        results.push(result);
    }
    Ok(results)
}

/// `--profile-steps` steps under PyTorch's profiler, the trace in `dir`.
fn profile(dir: &std::path::Path, name: &str, args: &StepArgs, stepper: &mut Stepper) -> Result<()> {
    #[cfg(feature = "tch")]
    {
        use anyhow::Context;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let precision = format!("{:?}", args.precision).to_lowercase();
        let path = dir.join(format!("{}-{precision}.json", name.replace(':', "_")));
        let device = stepper.device.clone();
        crate::ops::libtorch::profile(&path, name.starts_with("tch-cuda"), || -> Result<()> {
            for _ in 0..args.profile_steps {
                StepStats::read(&stepper.step());
            }
            device.sync()?;
            Ok(())
        })??;
        eprintln!("{name}: {} steps profiled: {}", args.profile_steps, path.display());
    }
    let _ = (dir, name, args, stepper);
    Ok(())
}

fn report_warmup(name: &str, w: &Warmup) {
    eprintln!(
        "{name}: warm-up {} steps in {:.1}s (first {:.3}s, last {:.3}s){}",
        w.steps,
        w.seconds,
        w.first_step_s,
        w.last_step_s,
        if w.steady || w.steps == 0 { "" } else { ", stopped by its bound before two steps agreed" }
    );
}

#[derive(clap::Args, Debug, Clone)]
pub struct TuneArgs {
    #[command(flatten)]
    pub config: crate::cli::args::ConfigArgs,
    /// The backend to tune [default: the config's].
    #[arg(long)]
    pub backend: Option<String>,
    #[command(flatten)]
    pub warmup: WarmupArgs,
}

/// Compiles and autotunes the kernels of a config's training step and evaluation pass on its
/// GPU, so that training starts at full speed; the results land in the kernel cache.
pub fn tune(args: &TuneArgs) -> Result<()> {
    let config = args.config.load("quick")?;
    let name = args.backend.clone().unwrap_or(config.train.backend.clone());
    let device = backend::device(&name)?;
    if backend::is_cpu(&device) {
        println!("{name} is a CPU backend: it has no kernels to tune");
        return Ok(());
    }
    let (batch, size) = (config.optim.batch_size, config.data.size);
    eprintln!("tuning {name} for {:?} at N={batch}, {size}×{size}: training step", config.model.arch);
    let optim = config.optimizer(&config.schedule(1));
    let mut stepper = Stepper::new(&config.model(), optim, batch, size, &device.clone().autodiff());
    let warmup = warm_up(&args.warmup, || stepper.synced_step())?;
    report_warmup(&name, &warmup);
    let eval = crate::eval::features::batch_size(&device, size);
    eprintln!("tuning {name}: evaluation pass, {eval} images per batch");
    let started = Instant::now();
    let encoder = burn::module::Module::valid(stepper.model().backbone());
    let images = Tensor::<4>::random([eval, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
    encoder.forward(images).into_data();
    let seconds = warmup.seconds + started.elapsed().as_secs_f64();
    println!(
        "tuned {name} in {seconds:.0}s ({} training steps, then {:.3}s per step); kernel cache: {}",
        warmup.steps,
        warmup.last_step_s,
        backend::kernel_cache().map(|p| p.display().to_string()).unwrap_or_else(|| "none in this build".into())
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(times: &[f64], args: WarmupArgs) -> Warmup {
        let mut times = times.iter();
        warm_up(&args, || Ok(*times.next().expect("the warm-up stopped in time"))).unwrap()
    }

    fn args(warmup: usize, warmup_max: usize) -> WarmupArgs {
        WarmupArgs { warmup, steady: 0.1, warmup_max, warmup_secs: 600.0 }
    }

    #[test]
    fn warm_up_lasts_until_two_steps_agree() {
        // Tuning makes the first step slow, compilation of a late kernel the second.
        let w = run(&[85.0, 3.0, 0.5, 0.52, 9.9], args(1, 10));
        assert_eq!((w.steps, w.steady, w.first_step_s, w.last_step_s), (4, true, 85.0, 0.52));
        // The minimum holds even when the first two agree.
        assert_eq!(run(&[1.0, 1.0, 1.0, 1.0, 9.9], args(3, 10)).steps, 3);
    }

    #[test]
    fn warm_up_is_bounded() {
        let w = run(&[1.0, 2.0, 1.0, 2.0, 1.0, 9.9], args(1, 5));
        assert_eq!((w.steps, w.steady), (5, false));
        let w = warm_up(&WarmupArgs { warmup_secs: 0.0, ..args(2, 10) }, || Ok(1.0 + rand::random::<f64>())).unwrap();
        assert_eq!(w.steps, 2, "past its time bound after the minimum");
        assert_eq!(run(&[], args(0, 10)).steps, 0);
    }
}
