//! `barlow bench`: the time of a training step per backend, a GPU backend's numbers checked
//! against the CPU's, and the loader's throughput.

pub mod check;
pub mod ops;
pub mod step;

pub use check::CheckArgs;
pub use step::{StepArgs, TuneArgs, step, tune};

use crate::config::range::COUNT;
use ops::process_cpu_seconds;
use anyhow::Result;
use std::time::Instant;

#[derive(clap::Args, Debug, Clone)]
pub struct LoaderArgs {
    #[command(flatten)]
    pub config: crate::cli::args::ConfigArgs,
    /// Batches to time (after one untimed batch).
    #[arg(long, default_value_t = 20, value_parser = COUNT.parser::<usize>())]
    pub batches: usize,
}

/// Pairs of views per second that the loader delivers with the config's dataset and batch size.
pub fn loader(args: &LoaderArgs) -> Result<f64> {
    let config = args.config.load("cifar10")?;
    let dataset = crate::data::open_train(&config.data)?;
    let batch = config.optim.batch_size;
    let mut loader = crate::data::Loader::new(&dataset, &config.data, batch, config.train.seed, 0)?;
    loader.next().transpose()?;
    let (started, cpu_before) = (Instant::now(), process_cpu_seconds());
    let mut pairs = 0;
    for b in loader.take(args.batches) {
        pairs += b?.len();
    }
    let rate = pairs as f64 / started.elapsed().as_secs_f64();
    let threads = match config.data.workers {
        0 => rayon::current_num_threads(),
        n => n,
    };
    // Per CPU-second of the whole process: what one core delivers even when others share it.
    let per_core = pairs as f64 / (process_cpu_seconds() - cpu_before);
    println!("loader {} ({} images, views {} at {}px, batch {batch}, {threads} threads): {rate:.0} pairs/s, \
              {per_core:.0} per CPU-second", config.data.dataset, dataset.len(), config.data.views, config.data.size);
    Ok(rate)
}
