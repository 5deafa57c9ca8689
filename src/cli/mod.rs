//! The `barlow` command line.

pub mod args;
pub mod bench;
pub mod commands;

use args::ConfigArgs;

use crate::config::Config;
use crate::config::range::{COUNT, POSITIVE, Range};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "barlow", version, about = "Barlow Twins self-supervised pretraining, and SimCLR, MoCo v2, BYOL, SimSiam and VICReg beside it")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain an encoder (Barlow Twins, or model.method = simclr, moco, byol, simsiam, vicreg).
    Train(TrainArgs),
    /// Evaluate an encoder (a run's, or --weights) on a labeled dataset.
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Write an encoder's embeddings of a dataset (.npy or .safetensors, ids alongside).
    Embed(commands::EmbedArgs),
    /// Write an encoder under torchvision's names (loads with strict=True); with --weights, a
    /// converter from .pth to .safetensors.
    Export(ExportArgs),
    /// Redraw a run's pictures: curves.png and correlation.png.
    Plot {
        /// The run directory.
        run: PathBuf,
    },
    /// Look at the data.
    #[command(subcommand)]
    Data(DataCommand),
    /// Measure speed.
    #[command(subcommand)]
    Bench(Bench),
    /// Compile and autotune a config's GPU kernels ahead of training (kept in the kernel cache).
    Tune(bench::TuneArgs),
    /// Train every method at every batch size with its own recipe and compare their kNN accuracy
    /// (DIR/compare.md, .csv, .png); an interrupted comparison continues where it stopped.
    Compare(CompareArgs),
}

#[derive(Subcommand, Debug)]
pub enum EvalCommand {
    /// Weighted kNN (cosine, k=200, T=0.1 unless given) on the test split.
    Knn {
        #[command(flatten)]
        checkpoint: commands::CheckpointArgs,
        /// Neighbours that vote [default: the run's train.knn_k].
        #[arg(long, value_parser = COUNT.parser::<usize>())]
        k: Option<usize>,
        /// Temperature of the votes' weights exp(similarity / T) [default: the run's train.knn_t].
        #[arg(long, value_parser = POSITIVE.parser::<f64>())]
        t: Option<f64>,
    },
    /// A linear classifier on the frozen encoder's features.
    Linear(commands::LinearArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    #[command(flatten)]
    pub checkpoint: commands::CheckpointArgs,
    #[arg(long, default_value = "safetensors")]
    pub format: String,
    #[arg(long, short, default_value = "encoder.safetensors")]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write a PNG grid of images and their two augmented views.
    Preview(PreviewArgs),
}

#[derive(Subcommand, Debug)]
pub enum Bench {
    /// One training step (two views, loss, backward, LARS), per backend.
    Step(bench::StepArgs),
    /// Loader throughput: pairs of views per second.
    Loader(bench::LoaderArgs),
    /// Convolution and BatchNorm of a step, op by op: burn's CPU ops against barlow's.
    #[cfg(feature = "flex")]
    Ops(bench::ops::OpsArgs),
    /// A GPU backend's loss and gradients against the CPU's, on the same weights and batch.
    Check(bench::CheckArgs),
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
    /// Start afresh in a run directory that already holds a checkpoint, replacing it.
    #[arg(long, conflicts_with = "resume")]
    pub overwrite: bool,
    /// Shorthand for `--set train.backend=NAME`.
    #[arg(long)]
    pub backend: Option<String>,
    /// Shorthand for `--set optim.epochs=N`.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Start the encoder from these weights instead of at random (the projector starts fresh):
    /// a torchvision-layout file as `eval --weights` reads, which must fit model.arch, stem and
    /// width. Its path and SHA-256 go into the run's config.toml: --resume does not read it
    /// again, and a new run from that config refuses the file if it has changed.
    #[arg(long, value_name = "FILE", conflicts_with = "resume")]
    pub init: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct PreviewArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(long, default_value = "views.png")]
    pub out: PathBuf,
    /// Images (rows).
    #[arg(long, default_value_t = 8, value_parser = Range::closed(1.0, 256.0).parser::<usize>())]
    pub count: usize,
    /// (view A, view B) pairs per image.
    #[arg(long, default_value_t = 3, value_parser = Range::closed(1.0, 16.0).parser::<usize>())]
    pub pairs: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// `barlow compare`'s arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct CompareArgs {
    /// A comparison (compare-cpu, or a TOML file with a [compare] table), or a recipe family
    /// (cifar10, imagenet: every method's own preset as it is).
    #[arg(long, short)]
    pub config: String,
    /// Methods to train [default: the comparison's].
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<crate::methods::Method>>,
    /// Batch sizes to train each method at [default: the comparison's].
    #[arg(long, value_delimiter = ',', value_parser = crate::config::valid::BATCH.parser::<usize>())]
    pub batch_sizes: Option<Vec<usize>>,
    /// Epochs of every run [default: the comparison's, else each recipe's].
    #[arg(long, value_parser = crate::config::valid::EPOCHS.parser::<usize>())]
    pub epochs: Option<usize>,
    /// Where the runs and the report go.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Also a linear probe on each finished encoder, trained for this many epochs.
    #[arg(long, value_name = "EPOCHS", value_parser = COUNT.parser::<usize>())]
    pub linear: Option<usize>,
    /// Changes to every run's config (`--set train.backend=cuda`, `--data DIR`).
    #[command(flatten)]
    pub overrides: args::Overrides,
}

impl CompareArgs {
    fn request(self) -> crate::compare::Request {
        let overrides = self.overrides.list();
        let CompareArgs { config, methods, batch_sizes, epochs, out, linear, .. } = self;
        crate::compare::Request { config, methods, batch_sizes, epochs, out, linear, overrides }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => train(args),
        Command::Eval(EvalCommand::Knn { checkpoint, k, t }) => commands::knn(&checkpoint, k, t).map(|_| ()),
        Command::Eval(EvalCommand::Linear(args)) => commands::linear(&args).map(|_| ()),
        Command::Embed(args) => commands::embed(&args),
        Command::Export(args) => commands::export(&args.checkpoint, &args.format, &args.out),
        Command::Plot { run } => commands::plot(&run),
        Command::Data(DataCommand::Preview(args)) => preview(args),
        Command::Bench(Bench::Step(args)) => bench::step(&args).map(|_| ()),
        Command::Bench(Bench::Loader(args)) => bench::loader(&args).map(|_| ()),
        #[cfg(feature = "flex")]
        Command::Bench(Bench::Ops(args)) => bench::ops::run(&args),
        Command::Bench(Bench::Check(args)) => bench::check::check(&args).map(|_| ()),
        Command::Tune(args) => bench::tune(&args),
        Command::Compare(args) => crate::compare::compare(&args.request()).map(|_| ()),
    }
}

fn train(mut args: TrainArgs) -> Result<()> {
    if let Some(backend) = &args.backend {
        args.config.overrides.set.push(format!("train.backend={backend:?}"));
    }
    if let Some(epochs) = args.epochs {
        args.config.overrides.set.push(format!("optim.epochs={epochs}"));
    }
    // One process, or one worker of an `mpirun`/`srun` job; a failure on any worker ends them all.
    let comm = crate::collective::world()?;
    let (config, _lock) = hold_and_configure(&args, &comm)?;
    let existing = crate::train::checkpoint_path(&args.out);
    if !args.resume && !args.overwrite && existing.exists() {
        anyhow::bail!(
            "{} already holds a run ({}); continue it with --resume, start afresh with --overwrite, \
             or choose another --out",
            args.out.display(),
            existing.display()
        );
    }
    if args.overwrite
        && comm.rank() == 0
        && let Some(previous) = crate::train::previous::set_aside(&args.out)?
    {
        eprintln!(
            "the previous run is kept in {} until this run's first checkpoint (move its files back to restore it)",
            previous.display()
        );
    }
    let job = crate::dist::conclude(&comm, crate::dist::Job::new(comm.clone(), &config, &args.out))?;
    let summary = crate::dist::conclude(&comm, crate::train::train_in(&job, &config, &args.out, args.resume))?;
    if !job.writes() {
        return Ok(());
    }
    let path = crate::train::checkpoint_path(&args.out);
    let previous = crate::train::previous::previous_dir(&args.out);
    let checkpoint = match (summary.saved, args.resume, previous.exists()) {
        (true, _, _) => format!("checkpoint {}", path.display()),
        (false, true, _) => format!("checkpoint {} unchanged (a partial epoch is not checkpointed)", path.display()),
        (false, false, true) => format!(
            "no checkpoint of this run yet (a partial epoch is not checkpointed); the previous run is still in {}",
            previous.display()
        ),
        (false, false, false) => "no checkpoint (a partial epoch is not checkpointed)".into(),
    };
    println!(
        "trained {} epochs ({} steps), final loss {:.2}{}; {checkpoint}",
        summary.epochs,
        summary.steps,
        summary.last_loss,
        summary.knn.map(|a| format!(", kNN top-1 {:.2}%", a.top1)).unwrap_or_default(),
    );
    Ok(())
}

/// The run's config, with its directory held by rank 0 until the guard drops: a resumed run from
/// before its config is read (a run still starting is never resumed under itself), a fresh one
/// once its config is known to be valid (nothing is written for a config that is not).
fn hold_and_configure(args: &TrainArgs, comm: &crate::collective::Comm) -> Result<(Config, Option<crate::train::RunLock>)> {
    let nothing_to_resume =
        || anyhow::anyhow!("{} holds no run to resume (no config.toml); start one without --resume", args.out.display());
    if args.resume && !args.out.is_dir() {
        return Err(nothing_to_resume());
    }
    let hold = || match comm.rank() {
        0 => crate::train::RunLock::acquire(&args.out).map(Some),
        _ => Ok(None),
    };
    let resumed = if args.resume { hold()? } else { None };
    if args.resume && !args.out.join("config.toml").exists() {
        return Err(nothing_to_resume());
    }
    // A resumed run continues with its own saved config.
    let fallback = match args.resume {
        true => args.out.join("config.toml").display().to_string(),
        false => "quick".into(),
    };
    let mut config = args.config.load(&fallback)?;
    if let Some(file) = &args.init {
        config.model.init = Some(crate::store::weights::record_init(file)?);
    }
    let lock = if args.resume { resumed } else { hold()? };
    Ok((config, lock))
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
