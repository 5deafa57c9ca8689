//! Run configuration: TOML presets embedded in the binary, files, and `--set key=value` overrides.
//!
//! The tables a config holds are in `sections`, what it builds (model, optimiser, schedule) in
//! `build`; here, where it comes from and what makes it valid.

mod build;
mod sections;

pub use sections::*;

use anyhow::{Context, Result, bail};

/// The presets under `configs/`, compiled in so that `--config NAME` works from anywhere.
/// `<method>-cifar10` and `<method>-imagenet` are each method's recipes (Barlow Twins' are
/// `cifar10` and `imagenet`, also under `barlow-...`).
pub const PRESETS: [(&str, &str); 16] = [
    ("quick", include_str!("../../configs/quick.toml")),
    ("cifar10", include_str!("../../configs/cifar10.toml")),
    ("cifar10-cpu", include_str!("../../configs/cifar10-cpu.toml")),
    ("imagenet", include_str!("../../configs/imagenet.toml")),
    ("barlow-cifar10", include_str!("../../configs/cifar10.toml")),
    ("barlow-imagenet", include_str!("../../configs/imagenet.toml")),
    ("simclr-cifar10", include_str!("../../configs/simclr-cifar10.toml")),
    ("simclr-imagenet", include_str!("../../configs/simclr-imagenet.toml")),
    ("moco-cifar10", include_str!("../../configs/moco-cifar10.toml")),
    ("moco-imagenet", include_str!("../../configs/moco-imagenet.toml")),
    ("byol-cifar10", include_str!("../../configs/byol-cifar10.toml")),
    ("byol-imagenet", include_str!("../../configs/byol-imagenet.toml")),
    ("simsiam-cifar10", include_str!("../../configs/simsiam-cifar10.toml")),
    ("simsiam-imagenet", include_str!("../../configs/simsiam-imagenet.toml")),
    ("vicreg-cifar10", include_str!("../../configs/vicreg-cifar10.toml")),
    ("vicreg-imagenet", include_str!("../../configs/vicreg-imagenet.toml")),
];


impl Config {
    /// A preset by name, or a TOML file by path, with `key.path=value` overrides applied.
    pub fn load(name_or_path: &str, overrides: &[String]) -> Result<Config> {
        let table = Self::table(name_or_path)?;
        Self::from_table(table, overrides).with_context(|| format!("in config `{name_or_path}`"))
    }

    /// The TOML of a preset or file, unparsed.
    pub fn table(name_or_path: &str) -> Result<toml::Table> {
        let text = match PRESETS.iter().find(|(name, _)| *name == name_or_path) {
            Some((_, text)) => text.to_string(),
            None => std::fs::read_to_string(name_or_path).with_context(|| {
                let names: Vec<_> = PRESETS.iter().map(|(n, _)| *n).collect();
                format!("config `{name_or_path}` is neither a preset ({}) nor a readable file", names.join(", "))
            })?,
        };
        toml::from_str(&text).with_context(|| format!("config `{name_or_path}` is not valid TOML"))
    }

    pub fn parse(text: &str, overrides: &[String]) -> Result<Config> {
        Self::from_table(toml::from_str(text)?, overrides)
    }

    /// The config of a TOML table, with overrides applied, the method's defaults filled in and
    /// everything checked.
    pub fn from_table(mut table: toml::Table, overrides: &[String]) -> Result<Config> {
        for o in overrides {
            set(&mut table, o)?;
        }
        let mut config: Config = table.try_into()?;
        config.model.resolve()?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config serialises")
    }

    fn validate(&self) -> Result<()> {
        let o = &self.optim;
        if o.batch_size < 2 {
            bail!("optim.batch_size must be at least 2: the loss standardises over the batch");
        }
        if o.epochs == 0 {
            bail!("optim.epochs must be positive");
        }
        if self.model.projector.is_empty() || self.model.width == 0 || self.data.size < 8 {
            bail!("model.projector needs a layer, model.width and data.size must be positive (size ≥ 8)");
        }
        if self.train.log_every == 0 {
            bail!("train.log_every must be at least 1");
        }
        let m = &self.model;
        if let Some(k) = m.queue
            && (k == 0 || k % o.batch_size != 0)
        {
            bail!(
                "model.queue = {k} is not a multiple of optim.batch_size = {}: MoCo replaces a whole batch of keys at \
                 a time (make the queue a multiple of every batch size you train with)",
                o.batch_size
            );
        }
        if o.fix_predictor_lr && m.predictor.is_none() {
            bail!("optim.fix_predictor_lr is set, but model.method = \"{}\" has no predictor", m.method);
        }
        Ok(())
    }
}

/// Applies one `a.b.c=value` override; the value is read as TOML (numbers, booleans, arrays),
/// or as a string when it is not valid TOML.
fn set(table: &mut toml::Table, assignment: &str) -> Result<()> {
    let (path, raw) = assignment
        .split_once('=')
        .with_context(|| format!("override `{assignment}` is not of the form key.path=value"))?;
    let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()));
    let keys: Vec<&str> = path.trim().split('.').collect();
    let (last, parents) = keys.split_last().expect("split yields one key");
    let mut node = table;
    for key in parents {
        node = node
            .entry(key.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .with_context(|| format!("override `{assignment}`: `{key}` is not a section"))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for (name, _) in PRESETS {
            Config::load(name, &[]).unwrap();
        }
    }

    #[test]
    fn overrides_reach_nested_keys_with_types() {
        let c = Config::load("cifar10", &["optim.epochs=3".into(), "model.projector=[64, 32]".into(),
            "train.backend=flex".into()])
        .unwrap();
        assert_eq!(c.optim.epochs, 3);
        assert_eq!(c.model.projector, vec![64, 32]);
        assert_eq!(c.train.backend, "flex");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        assert!(Config::load("quick", &["optim.epoch=3".into()]).is_err());
        assert!(Config::load("quick", &["optim.batch_size=1".into()]).is_err());
        assert!(Config::load("quick", &["epochs".into()]).is_err());
        let err = Config::load("no/such/file.toml", &[]).unwrap_err();
        assert!(format!("{err:#}").contains("no/such/file.toml"));
    }

    #[test]
    fn round_trips_through_toml() {
        let c = Config::load("imagenet", &[]).unwrap();
        assert_eq!(Config::parse(&c.to_toml(), &[]).unwrap(), c);
    }
}
