//! The arguments several commands share: which config, and changes to it.

use crate::config::Config;
use anyhow::Result;
use std::path::PathBuf;

/// Changes to a config on the command line.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct Overrides {
    /// Override a config value, e.g. `--set optim.epochs=100 --set data.root=/data/cifar`.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Shorthand for `--set data.root=PATH`.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

impl Overrides {
    /// The `key.path=value` assignments, `--data` included.
    pub fn list(&self) -> Vec<String> {
        let mut overrides = self.set.clone();
        if let Some(root) = &self.data {
            overrides.push(format!("data.root={:?}", root.display().to_string()));
        }
        overrides
    }
}

/// Which configuration: a preset or file, with overrides.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ConfigArgs {
    /// A preset (quick, cifar10, cifar10-cpu, imagenet, <method>-cifar10, <method>-imagenet) or a
    /// TOML file [default: quick].
    #[arg(long, short)]
    pub config: Option<String>,
    #[command(flatten)]
    pub overrides: Overrides,
}

impl ConfigArgs {
    /// The named config (or `fallback` when none is named) with the overrides applied.
    pub fn load(&self, fallback: &str) -> Result<Config> {
        Config::load(self.config.as_deref().unwrap_or(fallback), &self.overrides.list())
    }
}
