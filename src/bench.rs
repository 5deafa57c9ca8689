//! `barlow bench step`: the time of one training step, per backend, side by side.

use crate::backend;
use crate::model::{Arch, BarlowTwinsConfig, ResNetConfig, Stem};
use crate::optim::LarsConfig;
use crate::train::{StepStats, train_step};
use anyhow::Result;
use burn::tensor::{Distribution, Tensor};
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct StepArgs {
    /// Backends to measure, in turn, in this one process.
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub backend: Vec<String>,
    #[arg(long, default_value = "resnet18")]
    pub arch: Arch,
    /// Encoder width (64 = the standard ResNet).
    #[arg(long, default_value_t = 64)]
    pub width: usize,
    #[arg(long, value_delimiter = '-', default_value = "2048-2048-2048")]
    pub projector: Vec<usize>,
    /// Images per view (N).
    #[arg(long, default_value_t = 128)]
    pub batch: usize,
    #[arg(long, default_value_t = 32)]
    pub size: usize,
    /// Untimed steps first (allocation, autotuning).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    #[arg(long, default_value_t = 3)]
    pub steps: usize,
}

/// Seconds per step of each backend, measured one after the other.
pub fn step(args: &StepArgs) -> Result<Vec<(String, f64)>> {
    let stem = if args.size <= 64 { Stem::Cifar } else { Stem::Imagenet };
    let config = BarlowTwinsConfig::new(ResNetConfig::new(args.arch).with_stem(stem).with_width(args.width))
        .with_projector(args.projector.clone());
    let mut results = vec![];
    for name in &args.backend {
        let device = backend::device(name)?.autodiff();
        device.seed(0);
        let mut model = config.init(&device);
        let mut optim = LarsConfig::new().init();
        let shape = [args.batch, 3, args.size, args.size];
        let mut times = vec![];
        for i in 0..args.warmup + args.steps {
            let y1 = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let y2 = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            let start = Instant::now();
            let (next, loss) = train_step(model, &mut optim, y1, y2, 0.1);
            model = next;
            // Reading the loss waits for the step; the updated weights are synced with it.
            let stats = StepStats::read(&loss);
            device.sync()?;
            let secs = start.elapsed().as_secs_f64();
            if i >= args.warmup {
                times.push(secs);
            }
            eprintln!("{name}: step {i} {:.3}s loss {:.1}", secs, stats.loss);
        }
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        println!(
            "{name:>10}: {:.3} s/step  {:.1} images/s  (N={}, {}×{}, {} timed steps)",
            mean,
            args.batch as f64 / mean,
            args.batch,
            args.size,
            args.size,
            times.len()
        );
        results.push((name.clone(), mean));
    }
    Ok(results)
}

#[derive(clap::Args, Debug, Clone)]
pub struct LoaderArgs {
    #[command(flatten)]
    pub config: crate::cli::ConfigArgs,
    /// Batches to time (after one untimed batch).
    #[arg(long, default_value_t = 20)]
    pub batches: usize,
}

/// Pairs of views per second that the loader delivers with the config's dataset and batch size.
pub fn loader(args: &LoaderArgs) -> Result<f64> {
    let config = args.config.load("cifar10")?;
    let dataset = crate::data::open_train(&config.data)?;
    let batch = config.optim.batch_size;
    let mut loader = crate::data::Loader::new(&dataset, &config.data, batch, config.train.seed, 0)?;
    loader.next().transpose()?;
    let (started, cpu_before) = (Instant::now(), cpu_seconds());
    let mut pairs = 0;
    for b in loader.take(args.batches) {
        pairs += b?.shape[0];
    }
    let rate = pairs as f64 / started.elapsed().as_secs_f64();
    let threads = match config.data.workers {
        0 => rayon::current_num_threads(),
        n => n,
    };
    // Per CPU-second of the whole process: what one core delivers even when others share it.
    let per_core = match (cpu_before, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => format!(", {:.0} per CPU-second", pairs as f64 / (b - a)),
        _ => String::new(),
    };
    println!("loader {} ({} images, views {} at {}px, batch {batch}, {threads} threads): {rate:.0} pairs/s{per_core}",
        config.data.dataset, dataset.len(), config.data.views, config.data.size);
    Ok(rate)
}

/// User + system time of this process so far (Linux: `/proc/self/stat`, in USER_HZ = 1/100 s).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}
