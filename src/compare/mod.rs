//! `barlow compare`: every method at every batch size on the same data and encoder, each trained
//! by its own recipe, and the kNN accuracy they reach side by side (`compare.md`, `.csv`, `.png`).
//!
//! A comparison file names the methods, the batch sizes and the recipes (`recipes = "cifar10"`:
//! each method's `<method>-cifar10` preset); its `[data]`, `[model]`, `[optim]` and `[train]`
//! tables are laid over every recipe (the data, the encoder, the epochs), and `[method.<name>]`
//! over one method's. Each run is an ordinary run directory under `DIR/runs/`: a finished one is
//! read back, an interrupted one resumed.

mod plot;
pub mod report;

use crate::config::Config;
use crate::eval::ProbeConfig;
use crate::methods::Method;
use crate::store::checkpoint::Checkpoint;
use crate::train::metrics::{self, Record};
use anyhow::{Context, Result, bail};
use burn::module::Module;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The comparisons under `configs/`, compiled in.
pub const COMPARISONS: [(&str, &str); 1] = [("compare-cpu", include_str!("../../configs/compare-cpu.toml"))];

/// What `barlow compare` is asked for (`barlow compare --help` says each).
#[derive(Clone, Debug)]
pub struct Request {
    /// A comparison (preset or file) or a recipe family.
    pub config: String,
    pub methods: Option<Vec<Method>>,
    pub batch_sizes: Option<Vec<usize>>,
    pub epochs: Option<usize>,
    pub out: PathBuf,
    /// Epochs of a linear probe on each finished encoder.
    pub linear: Option<usize>,
    /// `key=value` changes to every run's config.
    pub overrides: Vec<String>,
}

/// A comparison: what to train, and how each run's config is made.
#[derive(Clone, Debug)]
pub struct Comparison {
    pub name: String,
    pub methods: Vec<Method>,
    pub batch_sizes: Vec<usize>,
    /// Each method's recipe is the preset `<method>-<recipes>`.
    pub recipes: String,
    /// Laid over every recipe.
    pub shared: toml::Table,
    /// Laid over one method's recipe.
    pub per_method: BTreeMap<Method, toml::Table>,
}

/// One (method, batch size) run: its config and directory.
#[derive(Clone, Debug)]
pub struct Run {
    pub method: Method,
    pub batch_size: usize,
    pub config: Config,
    pub dir: PathBuf,
}

impl Comparison {
    /// A comparison preset or file by name, or a recipe family (`cifar10`: the recipes as they are).
    pub fn load(name: &str) -> Result<Comparison> {
        let preset = COMPARISONS.iter().find(|(n, _)| *n == name).map(|(_, text)| text.to_string());
        let family = Method::ALL.iter().all(|m| Config::table(&format!("{m}-{name}")).is_ok());
        let text = match (preset, family) {
            (Some(text), _) => text,
            (None, true) => format!("[compare]\nrecipes = {name:?}"),
            (None, false) => std::fs::read_to_string(name).with_context(|| {
                let names: Vec<_> = COMPARISONS.iter().map(|(n, _)| *n).collect();
                format!("comparison `{name}` is neither a preset ({}), a recipe family (cifar10, imagenet) nor a \
                         readable file", names.join(", "))
            })?,
        };
        Self::parse(name, &text).with_context(|| format!("in comparison `{name}`"))
    }

    pub fn parse(name: &str, text: &str) -> Result<Comparison> {
        let mut shared: toml::Table = toml::from_str(text)?;
        let compare = match shared.remove("compare") {
            Some(toml::Value::Table(t)) => t,
            _ => bail!("a comparison needs a [compare] table (methods, batch_sizes, recipes)"),
        };
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Head {
            #[serde(default = "all_methods")]
            methods: Vec<Method>,
            #[serde(default)]
            batch_sizes: Vec<usize>,
            recipes: String,
        }
        fn all_methods() -> Vec<Method> {
            Method::ALL.to_vec()
        }
        let head: Head = compare.try_into().context("in [compare]")?;
        let mut per_method = BTreeMap::new();
        if let Some(value) = shared.remove("method") {
            let toml::Value::Table(methods) = value else { bail!("[method] must hold one table per method") };
            for (key, table) in methods {
                let method: Method = key.parse().map_err(|e: String| anyhow::anyhow!("[method.{key}]: {e}"))?;
                let toml::Value::Table(table) = table else { bail!("[method.{key}] must be a table") };
                per_method.insert(method, table);
            }
        }
        Ok(Comparison { name: name.to_string(), methods: head.methods, batch_sizes: head.batch_sizes, recipes: head.recipes, shared, per_method })
    }

    /// The config of `method` at `batch_size`: its recipe, the shared tables, its own table,
    /// then `overrides`.
    pub fn config(&self, method: Method, batch_size: usize, epochs: Option<usize>, overrides: &[String]) -> Result<Config> {
        let recipe = format!("{method}-{}", self.recipes);
        let mut table = Config::table(&recipe).with_context(|| format!("{method}'s recipe"))?;
        merge(&mut table, &self.shared);
        if let Some(own) = self.per_method.get(&method) {
            merge(&mut table, own);
        }
        let mut all = overrides.to_vec();
        all.push(format!("optim.batch_size={batch_size}"));
        if let Some(e) = epochs {
            all.push(format!("optim.epochs={e}"));
        }
        let mut config = Config::from_table(table, &all)
            .with_context(|| format!("the {method} run at batch size {batch_size} (recipe `{recipe}`)"))?;
        // The comparison is of kNN accuracy: at least at the start and at the end.
        if config.train.knn_every == 0 {
            config.train.knn_every = config.optim.epochs;
        }
        Ok(config)
    }
}

/// Lays `over` onto `base`: tables merge key by key, anything else is replaced.
fn merge(base: &mut toml::Table, over: &toml::Table) {
    for (key, value) in over {
        match (base.get_mut(key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            _ => _ = base.insert(key.clone(), value.clone()),
        }
    }
}

/// What one finished run reached, read back from its directory.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub epochs: usize,
    pub steps: usize,
    /// kNN top-1 of the random network and after training (percent).
    pub knn_init: Option<f64>,
    pub knn_top1: Option<f64>,
    pub knn_top5: Option<f64>,
    pub linear_top1: Option<f64>,
    /// Mean loss of the last epoch.
    pub last_loss: Option<f64>,
    /// Training and monitoring time, summed over the epochs.
    pub seconds: f64,
}

/// Trains what is missing, then writes the report; returns every run with what it reached.
pub fn compare(args: &Request) -> Result<Vec<(Run, Outcome)>> {
    let cmp = Comparison::load(&args.config)?;
    let methods = args.methods.clone().unwrap_or(cmp.methods.clone());
    let batch_sizes = args.batch_sizes.clone().unwrap_or(cmp.batch_sizes.clone());
    if methods.is_empty() || batch_sizes.is_empty() {
        bail!("nothing to compare: give --methods and --batch-sizes (comparison `{}` names none)", cmp.name);
    }
    // Every config is made and checked before anything trains.
    let overrides = &args.overrides;
    let mut runs = vec![];
    for &method in &methods {
        for &batch_size in &batch_sizes {
            let config = cmp.config(method, batch_size, args.epochs, overrides)?;
            let dir = args.out.join("runs").join(format!("{method}-b{batch_size}"));
            runs.push(Run { method, batch_size, config, dir });
        }
    }
    let _lock = crate::train::RunLock::acquire(&args.out)?;
    let mut done: Vec<(Run, Outcome)> = vec![];
    for (i, run) in runs.iter().enumerate() {
        let label = format!("[{}/{}] {} at batch size {}", i + 1, runs.len(), run.method.title(), run.batch_size);
        match position(run)? {
            Some(epoch) if epoch >= run.config.optim.epochs => eprintln!("{label}: finished before, read from {}", run.dir.display()),
            Some(epoch) => {
                eprintln!("{label}: resuming {} after epoch {epoch}", run.dir.display());
                train(run, true)?;
            }
            None => {
                eprintln!("{label}: training into {}", run.dir.display());
                train(run, false)?;
            }
        }
        release_memory();
        let mut outcome = outcome(&run.dir)?;
        if let Some(epochs) = args.linear {
            outcome.linear_top1 = Some(linear(run, epochs)?);
        }
        done.push((run.clone(), outcome));
        report::write(&args.out, &cmp, &batch_sizes, &done)?;
    }
    eprintln!("wrote {}, compare.csv and compare.png", args.out.join("compare.md").display());
    Ok(done)
}

/// Hands the heap's free pages back to the kernel after a run. The binary keeps freed memory
/// for reuse (`main.rs`), which suits one run per process; runs of other shapes one after the
/// other fragment that heap (the first compare-cpu run grew to 22 GB over 15 runs and was
/// killed for memory).
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the kernel; nothing live is touched.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Epochs a run directory's checkpoint has finished, or `None` when it has none. A checkpoint
/// made with other settings is refused, naming them: its results are not this run's.
fn position(run: &Run) -> Result<Option<usize>> {
    let path = crate::train::checkpoint_path(&run.dir);
    if !path.exists() {
        return Ok(None);
    }
    let ckpt = Checkpoint::read(&path)?;
    let saved = Config::parse(&ckpt.state.config, &[]).with_context(|| format!("the config saved in {}", path.display()))?;
    // How long a run may go and how often it logs change no result.
    let results = |d: &String| !["train.max_steps ", "train.log_every ", "train.dist_timeout "].iter().any(|k| d.starts_with(k));
    let changed: Vec<String> = saved.differences(&run.config).into_iter().filter(results).collect();
    if !changed.is_empty() {
        bail!(
            "{} was trained with other settings than this comparison gives it ({}; the run's vs now): remove \
             that run directory to retrain it with the new ones, or compare into another --out",
            run.dir.display(), changed.join(", ")
        );
    }
    Ok(Some(ckpt.state.epoch))
}

fn train(run: &Run, resume: bool) -> Result<()> {
    crate::train::train(&run.config, &run.dir, resume).map(|_| ()).with_context(|| {
        format!("{} at batch size {} ({}); a run made with other settings is resumed only with the same \
                 ones: use another --out, or remove that run directory", run.method, run.batch_size, run.dir.display())
    })
}

/// What a run directory's `metrics.jsonl` says it reached.
pub fn outcome(dir: &Path) -> Result<Outcome> {
    let mut o = Outcome::default();
    for record in metrics::read(&dir.join("metrics.jsonl"))? {
        match record {
            Record::Epoch(e) if e.epoch == 0 => {
                o.knn_init = e.knn_top1;
                o.seconds += e.seconds;
            }
            Record::Epoch(e) => {
                o.epochs = e.epoch;
                o.steps = e.step;
                o.last_loss = e.loss;
                o.seconds += e.seconds;
                if e.knn_top1.is_some() {
                    (o.knn_top1, o.knn_top5) = (e.knn_top1, e.knn_top5);
                }
            }
            Record::Step(_) => {}
        }
    }
    Ok(o)
}

/// The linear probe's top-1 on a finished run, kept in `linear.json` beside it.
fn linear(run: &Run, epochs: usize) -> Result<f64> {
    let path = run.dir.join("linear.json");
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Saved {
        epochs: usize,
        top1: f64,
    }
    if let Ok(text) = std::fs::read_to_string(&path)
        && let Ok(saved) = serde_json::from_str::<Saved>(&text)
        && saved.epochs == epochs
    {
        return Ok(saved.top1);
    }
    let device = crate::backend::device(&run.config.train.backend)?;
    let (config, model) = crate::store::checkpoint::load_model(&crate::train::checkpoint_path(&run.dir), &device)?;
    let acc = crate::eval::frozen::linear(&model.valid(), &config, ProbeConfig::new().with_epochs(epochs), &device)?;
    println!("linear probe of {} ({epochs} epochs): top-1 {:.2}%  top-5 {:.2}%", run.dir.display(), acc.top1, acc.top5);
    let top1 = acc.top1;
    crate::store::checkpoint::write_atomically(&path, serde_json::to_string(&Saved { epochs, top1 })?.as_bytes())?;
    Ok(top1)
}
