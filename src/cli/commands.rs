//! What to do with a trained checkpoint: evaluate it, embed images, export weights, draw the run.

use crate::config::Config;
use crate::config::range::{COUNT, FRACTION, NON_NEGATIVE, POSITIVE};
use crate::data::{self, Split, Views};
use crate::eval::features;
use crate::eval::{self, Accuracy, ProbeConfig};
use crate::methods::Model;
use crate::store::checkpoint;
use anyhow::{Context, Result, bail};
use burn::module::Module;
use burn::tensor::Device;
use std::path::{Path, PathBuf};

/// Which encoder a command uses (a run's checkpoint, or a weights file from anywhere) and what
/// may change when using it: where the data lies, the backend.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckpointArgs {
    /// A run's `checkpoint.bin`, or its run directory.
    #[arg(long, short = 'k', value_name = "RUN", required_unless_present = "weights")]
    pub checkpoint: Option<PathBuf>,
    #[command(flatten)]
    pub weights: crate::cli::args::WeightsArgs,
    #[command(flatten)]
    pub overrides: crate::cli::args::Overrides,
    /// flex, ndarray, cuda, wgpu, tch [default: the config's].
    #[arg(long)]
    pub backend: Option<String>,
}

impl CheckpointArgs {
    /// A run's checkpoint.
    pub fn run(path: &Path) -> CheckpointArgs {
        CheckpointArgs {
            checkpoint: Some(path.to_path_buf()),
            weights: Default::default(),
            overrides: Default::default(),
            backend: None,
        }
    }

    /// The checkpoint file (`-k`), or `None` for --weights.
    pub fn path(&self) -> Option<PathBuf> {
        self.checkpoint.as_ref().map(|k| match k.is_dir() {
            true => crate::train::checkpoint_path(k),
            false => k.clone(),
        })
    }

    /// The config (with overrides), the model in eval mode, on the chosen device. With
    /// --weights, the projector is fresh: see [`has_projector`](Self::has_projector).
    pub fn load(&self) -> Result<(Config, Model, Device)> {
        match self.weights.config(&self.overrides.list())? {
            Some((file, config)) => {
                let device = self.device(&config)?;
                let model = self.weights_model(&file, &config, &device)?;
                Ok((config, model.valid(), device))
            }
            None => self.load_with_state().map(|(config, model, device, _)| (config, model, device)),
        }
    }

    /// Whether the model's projector is trained (a run's) rather than fresh (--weights).
    pub fn has_projector(&self) -> bool {
        self.weights.weights.is_none()
    }

    /// The model again, on `device` (fine-tuning trains it on the autodiff device).
    pub fn model_on(&self, config: &Config, device: &Device) -> Result<Model> {
        match (&self.weights.weights, self.path()) {
            (Some(file), _) => self.weights_model(file, config, device),
            (None, Some(path)) => Ok(checkpoint::load_model(&path, device)?.1),
            (None, None) => bail!("name a run with -k or a weights file with --weights"),
        }
    }

    fn weights_model(&self, file: &Path, config: &Config, device: &Device) -> Result<Model> {
        crate::store::weights::model_from(file, config, device, "--arch, --stem and --width")
    }

    fn device(&self, config: &Config) -> Result<Device> {
        crate::backend::device(self.backend.as_deref().unwrap_or(&config.train.backend))
    }

    /// As [`load`](Self::load) for a run (`-k`), also giving its position; the file is read once.
    pub fn load_with_state(&self) -> Result<(Config, Model, Device, checkpoint::RunState)> {
        let path = self.path().context("this needs a run (-k RUN)")?;
        let ckpt = checkpoint::Checkpoint::read(&path)?;
        let state = ckpt.state.clone();
        let config = Config::parse(&state.config, &self.overrides.list())
            .with_context(|| format!("the config saved in {}", path.display()))?;
        let device = self.device(&config)?;
        let model = ckpt.model(&config, &device).with_context(|| format!("loading the model of {}", path.display()))?;
        Ok((config, model.valid(), device, state))
    }
}

/// Encoder features of a labeled split, with its labels.
pub fn knn(args: &CheckpointArgs, k: Option<usize>, t: Option<f64>) -> Result<Accuracy> {
    let (mut config, model, _) = args.load()?;
    let m = eval::frozen::monitor(&config)?;
    config.train.knn_k = k.unwrap_or(config.train.knn_k);
    config.train.knn_t = t.unwrap_or(config.train.knn_t);
    eprintln!("encoding {} + {} images of {}", m.train.len(), m.test.len(), m.train.name());
    let acc = crate::train::report::knn_monitor(&model, &m, &config)?;
    let (k, t) = (config.train.knn_k, config.train.knn_t);
    println!("kNN (k={k}, T={t}) on {}: top-1 {:.2}%  top-5 {:.2}%", m.test.name(), acc.top1, acc.top5);
    Ok(acc)
}

#[derive(clap::Args, Debug, Clone)]
pub struct LinearArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// Epochs of training the classifier (0: its random initial weights, a baseline).
    #[arg(long, default_value_t = 100, value_parser = NON_NEGATIVE.parser::<usize>())]
    pub epochs: usize,
    #[arg(long, default_value_t = 256, value_parser = COUNT.parser::<usize>())]
    pub batch_size: usize,
    /// The classifier's learning rate.
    #[arg(long, default_value_t = 0.3, value_parser = POSITIVE.parser::<f64>())]
    pub lr: f64,
    #[arg(long, default_value_t = 1e-6, value_parser = NON_NEGATIVE.parser::<f64>())]
    pub weight_decay: f64,
    /// Train on this fraction of the labels, class-balanced (0.01 and 0.1 as the paper).
    #[arg(long, default_value_t = 1.0, value_parser = FRACTION.parser::<f64>())]
    pub labels: f64,
    /// Random crop and flip of the training images each epoch (re-encoding them), as the
    /// official evaluate.py; without it, features are computed once.
    #[arg(long)]
    pub augment: bool,
    /// Train the encoder too (on cropped and flipped images), with --lr-backbone.
    #[arg(long)]
    pub finetune: bool,
    #[arg(long, default_value_t = 0.005, value_parser = NON_NEGATIVE.parser::<f64>())]
    pub lr_backbone: f64,
    /// Seeds the label subset, the classifier's initial weights and the order of its batches.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn linear(args: &LinearArgs) -> Result<Accuracy> {
    if !(args.labels > 0.0 && args.labels <= 1.0) {
        bail!("--labels must be a fraction in (0, 1], got {}", args.labels);
    }
    let (config, model, device) = args.checkpoint.load()?;
    // The classifier's initial weights come from the device's generator: the same --seed, the
    // same accuracy.
    device.seed(args.seed);
    let m = eval::frozen::monitor(&config)?;
    let views = Views::new(&config.data.views, config.data.size, m.train.normalize())?;
    let subset = eval::label_subset(m.train.labels().context("labels")?, args.labels, args.seed);
    let train_set = m.train.subset(&subset);
    let mode = format!(
        "{} labeled images, {:.0}% of the labels, {} epochs{}",
        train_set.len(), args.labels * 100.0, args.epochs,
        if args.finetune { ", fine-tuned" } else if args.augment { ", crop+flip" } else { "" }
    );
    if args.finetune {
        let model = args.checkpoint.model_on(&config, &device.clone().autodiff())?;
        let config = eval::finetune::FinetuneConfig {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr_head: args.lr,
            lr_backbone: args.lr_backbone,
            weight_decay: args.weight_decay,
            seed: args.seed,
        };
        let acc = eval::finetune::finetune(model.backbone().clone(), &train_set, &m.test, &views, &config, &device.autodiff())?;
        println!("fine-tuning ({mode}) on {}: top-1 {:.2}%  top-5 {:.2}%", m.test.name(), acc.top1, acc.top5);
        return Ok(acc);
    }
    let (train, train_labels) = eval::frozen::labeled_features(&model, &train_set, &views, &device)?;
    let (test, test_labels) = eval::frozen::labeled_features(&model, &m.test, &views, &device)?;
    let probe_config = ProbeConfig::new()
        .with_epochs(args.epochs)
        .with_batch_size(args.batch_size)
        .with_lr(args.lr)
        .with_weight_decay(args.weight_decay)
        .with_seed(args.seed);
    let [_, dim] = train.dims();
    let train_device = device.clone().autodiff();
    let mut probe = eval::LinearProbe::new(dim, m.train.num_classes(), probe_config, &train_device);
    for epoch in 0..args.epochs {
        let features = match args.augment {
            true => features::encode_crop_flip(model.backbone(), &train_set, &views, args.seed, epoch, &device)?,
            false => train.clone(),
        };
        let loss = probe.fit_epoch(&features, &train_labels, epoch);
        if (epoch + 1) % 10 == 0 || epoch + 1 == args.epochs {
            eprintln!("linear probe epoch {}/{}: loss {loss:.4}", epoch + 1, args.epochs);
        }
    }
    let acc = probe.accuracy(&test, &test_labels);
    println!("linear probe ({mode}) on {}: top-1 {:.2}%  top-5 {:.2}%", m.test.name(), acc.top1, acc.top5);
    Ok(acc)
}

#[derive(clap::Args, Debug, Clone)]
pub struct EmbedArgs {
    #[command(flatten)]
    pub checkpoint: CheckpointArgs,
    /// `.npy` or `.safetensors`; image ids (and labels) go to `<out>.ids.tsv` (tab-separated;
    /// an id holding a tab, line break or quote is quoted as CSV readers expect).
    #[arg(long, short)]
    pub out: PathBuf,
    /// pretrain (the training images), train or test.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Projector outputs instead of the encoder's features.
    #[arg(long)]
    pub projector: bool,
}

pub fn embed(args: &EmbedArgs) -> Result<()> {
    if args.projector && !args.checkpoint.has_projector() {
        bail!("--projector needs a run (-k RUN): a --weights file gives barlow only the encoder");
    }
    let (config, model, device) = args.checkpoint.load()?;
    let split = match args.split.as_str() {
        "pretrain" => Split::Pretrain,
        "train" => Split::Train,
        "test" => Split::Test,
        other => bail!("--split must be pretrain, train or test, not `{other}`"),
    };
    let format = args.out.extension().and_then(|e| e.to_str()).filter(|e| ["npy", "safetensors"].contains(e));
    let Some(format) = format else { bail!("{}: the output must end in .npy or .safetensors", args.out.display()) };
    let set = data::open(&config.data, split)?;
    // The ids first: a name that cannot be one is refused before the encoding is paid for.
    let mut ids = String::from("index\tid\tlabel\n");
    for i in 0..set.len() {
        let label = set.labels().map(|l| l[i].to_string()).unwrap_or_default();
        ids.push_str(&format!("{i}\t{}\t{label}\n", tsv_field(&set.id(i)?)));
    }
    let views = Views::new(&config.data.views, config.data.size, set.normalize())?;
    let e = match args.projector {
        true => features::project(&model, &set, &views, &device)?,
        false => features::encode(model.backbone(), &set, &views, &device)?,
    };
    let [n, d] = e.dims();
    let values = e.into_data().convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let bytes = match format {
        "npy" => npy(&values, n, d),
        _ => {
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![n, d], &bytes)?;
            safetensors::serialize([("embeddings", view)], None)?
        }
    };
    checkpoint::write_atomically(&args.out, &bytes)?;
    let ids_path = PathBuf::from(format!("{}.ids.tsv", args.out.display()));
    checkpoint::write_atomically(&ids_path, ids.as_bytes())?;
    println!("wrote {n}×{d} embeddings to {} and their ids to {}", args.out.display(), ids_path.display());
    Ok(())
}

/// A field of a tab-separated file, quoted as CSV readers expect (pandas' `read_csv(sep="\t")`,
/// Python's `csv`) when it holds a tab, a line break or a quote: in double quotes, quotes doubled.
pub fn tsv_field(s: &str) -> std::borrow::Cow<'_, str> {
    match s.contains(['\t', '\n', '\r', '"']) {
        true => format!("\"{}\"", s.replace('"', "\"\"")).into(),
        false => s.into(),
    }
}

/// A NumPy `.npy` file (format 1.0) holding a little-endian `n×d` float32 array.
pub fn npy(values: &[f32], n: usize, d: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    // Magic, version and length take 10 bytes; the header ends in a newline at a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    out
}

pub fn export(args: &CheckpointArgs, format: &str, out: &Path) -> Result<()> {
    if format != "safetensors" {
        bail!("--format {format} is not supported; use safetensors");
    }
    let (config, model, _) = args.load()?;
    crate::store::torchvision::export_safetensors(model.backbone(), out)?;
    let m = &config.model;
    let name = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    println!(
        "wrote the {} encoder ({} stem, width {}) under torchvision names to {}",
        name(&m.arch), name(&m.stem), m.width, out.display()
    );
    Ok(())
}

/// Redraws a run's `curves.png` and `correlation.png`.
pub fn plot(run: &Path) -> Result<()> {
    let args = CheckpointArgs::run(run);
    let (config, model, _, state) = args.load_with_state()?;
    println!("wrote {}", crate::train::plots::curves(run, config.model.method())?.display());
    let set = data::open_train(&config.data)?;
    if let Some(sample) = crate::train::plots::sample_batch(&set, &config)? {
        println!("wrote {}", crate::train::plots::correlation(run, &model, &sample, state.epoch)?.display());
    }
    Ok(())
}
