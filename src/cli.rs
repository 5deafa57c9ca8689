//! The `barlow` command line.

use crate::config::Config;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "barlow", version, about = "Barlow Twins self-supervised pretraining")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain an encoder with Barlow Twins.
    Train(TrainArgs),
    /// Look at the data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Measure speed.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write a PNG grid of images and their two augmented views.
    Preview(PreviewArgs),
}

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// One training step (two views, loss, backward, LARS), per backend.
    Step(crate::bench::StepArgs),
    /// Loader throughput: pairs of views per second.
    Loader(crate::bench::LoaderArgs),
}

/// Which configuration: a preset or file, with overrides.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A preset (quick, cifar10, imagenet) or a TOML file [default: quick].
    #[arg(long, short)]
    pub config: Option<String>,
    /// Override a config value, e.g. `--set optim.epochs=100 --set data.root=/data/cifar`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Shorthand for `--set data.root=PATH`.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl ConfigArgs {
    fn overrides(&self) -> Vec<String> {
        let mut overrides = self.set.clone();
        if let Some(root) = &self.data {
            overrides.push(format!("data.root={:?}", root.display().to_string()));
        }
        overrides
    }

    /// The named config (or `fallback` when none is named) with the overrides applied.
    pub fn load(&self, fallback: &str) -> Result<Config> {
        Config::load(self.config.as_deref().unwrap_or(fallback), &self.overrides())
    }
}

#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run directory: config.toml, metrics.jsonl, checkpoint.bin.
    #[arg(long, short, default_value = "runs/quick")]
    pub out: PathBuf,
    /// Continue from the run directory's checkpoint (with the run's own config.toml unless
    /// --config is given).
    #[arg(long)]
    pub resume: bool,
    /// Shorthand for `--set train.backend=NAME`.
    #[arg(long)]
    pub backend: Option<String>,
    /// Shorthand for `--set optim.epochs=N`.
    #[arg(long)]
    pub epochs: Option<usize>,
}

#[derive(clap::Args, Debug)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(long, default_value = "views.png")]
    pub out: PathBuf,
    /// Images (rows).
    #[arg(long, default_value_t = 8)]
    pub count: usize,
    /// (view A, view B) pairs per image.
    #[arg(long, default_value_t = 3)]
    pub pairs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Data(DataCommand::Preview(args)) => preview(args),
        Command::Bench(Bench::Step(args)) => crate::bench::step(&args).map(|_| ()),
        Command::Bench(Bench::Loader(args)) => crate::bench::loader(&args).map(|_| ()),
    }
}

fn train(mut args: TrainArgs) -> Result<()> {
    if let Some(backend) = &args.backend {
        args.config.set.push(format!("train.backend={backend:?}"));
    }
    if let Some(epochs) = args.epochs {
        args.config.set.push(format!("optim.epochs={epochs}"));
    }
    // A resumed run continues with its own saved config.
    let fallback = match args.resume {
        true => args.out.join("config.toml").display().to_string(),
        false => "quick".into(),
    };
    let config = args.config.load(&fallback)?;
    let summary = crate::train::train(&config, &args.out, args.resume)?;
    println!(
        "trained {} epochs ({} steps), final loss {:.2}{}; checkpoint {}",
        summary.epochs,
        summary.steps,
        summary.last_loss,
        summary.knn.map(|a| format!(", kNN top-1 {:.2}%", a.top1)).unwrap_or_default(),
        crate::train::checkpoint_path(&args.out).display()
    );
    Ok(())
}

fn preview(args: PreviewArgs) -> Result<()> {
    let config = args.config.load("quick")?;
    let dataset = crate::data::open_train(&config.data)?;
    let views = crate::data::Views::new(&config.data.views, config.data.size, dataset.normalize())?;
    crate::data::preview::write(&dataset, &views, args.count, args.pairs, args.seed, &args.out)?;
    println!("wrote {} ({} images: original, then {} pairs of view A | view B)", args.out.display(),
        args.count.min(dataset.len()), args.pairs);
    Ok(())
}
