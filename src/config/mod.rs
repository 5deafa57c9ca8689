//! Run configuration: TOML presets embedded in the binary, files, and `--set key=value` overrides.
//!
//! The tables a config holds are in `sections`, what it builds (model, optimiser, schedule) in
//! `build`; here, where it comes from and what makes it valid.

mod build;
mod model;
pub mod range;
mod sections;
pub mod valid;

pub use model::{InitWeights, ModelConfig};
pub use sections::*;

use anyhow::{Context, Result};

/// The presets under `configs/`, compiled in so that `--config NAME` works from anywhere.
/// `<method>-cifar10` and `<method>-imagenet` are each method's recipes (Barlow Twins' are
/// `cifar10` and `imagenet`, also under `barlow-...`).
pub const PRESETS: [(&str, &str); 18] = [
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
    ("dino-cifar10", include_str!("../../configs/dino-cifar10.toml")),
    ("dino-imagenet", include_str!("../../configs/dino-imagenet.toml")),
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
            None => crate::files::read_to_string(std::path::Path::new(name_or_path)).with_context(|| {
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
        let config: Config = table.try_into()?;
        config.validate()?;
        Ok(config)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a config serialises")
    }

    /// The settings in which `self` and `other` differ, as `key = this vs that`, for errors.
    pub fn differences(&self, other: &Config) -> Vec<String> {
        let (a, b) = (leaves(self), leaves(other));
        let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
        let show = |m: &std::collections::BTreeMap<String, String>, k: &String| m.get(k).cloned().unwrap_or("unset".into());
        keys.into_iter().filter(|k| a.get(*k) != b.get(*k)).map(|k| format!("{k} = {} vs {}", show(&a, k), show(&b, k))).collect()
    }
}

/// A config's values by dotted key, as TOML writes them.
fn leaves(config: &Config) -> std::collections::BTreeMap<String, String> {
    fn walk(prefix: &str, table: &toml::Table, out: &mut std::collections::BTreeMap<String, String>) {
        for (key, value) in table {
            let key = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            match value {
                toml::Value::Table(t) => walk(&key, t, out),
                v => _ = out.insert(key, v.to_string()),
            }
        }
    }
    let mut out = Default::default();
    walk("", &toml::from_str(&config.to_toml()).expect("a config reads back"), &mut out);
    out
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
    fn local_crops_need_a_method_that_compares_them() {
        let err = format!("{:#}", Config::load("quick", &["data.local_crops=2".into()]).unwrap_err());
        assert!(err.contains("data.local_crops = 2") && err.contains("model.method = \"barlow\""), "{err}");
        let err = format!("{:#}", Config::load("quick", &["data.local_scale=[0.4, 0.05]".into()]).unwrap_err());
        assert!(err.contains("data.local_scale") && err.contains("below the upper"), "{err}");
    }

    #[test]
    fn a_model_key_no_method_has_is_named_with_the_keys_there_are() {
        let err = format!("{:#}", Config::load("quick", &["model.lamda=0.1".into()]).unwrap_err());
        assert!(err.contains("model.lamda is not a setting") && err.contains("lambda") && err.contains("projector"), "{err}");
        let err = format!("{:#}", Config::load("quick", &["model.queue=256".into()]).unwrap_err());
        assert!(err.contains("model.queue") && err.contains("moco"), "{err}");
    }

    #[test]
    fn round_trips_through_toml() {
        for name in ["imagenet", "moco-cifar10", "byol-cifar10", "vicreg-imagenet"] {
            let c = Config::load(name, &[]).unwrap();
            assert_eq!(Config::parse(&c.to_toml(), &[]).unwrap(), c, "{name}");
        }
    }
}
