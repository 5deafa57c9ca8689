//! What makes a config valid: every numeric setting in its range, and the settings that must agree.

use super::{Config, Optimizer};
use crate::optim::TrustRatio;
use super::range::{COUNT, FRACTION, LAYER, NON_NEGATIVE, POSITIVE, Range, layers};
use crate::methods::{Method, Setup};
use anyhow::{Result, bail};

/// `data.size`: crops from 8 px (the stem's strides need some) to 4096 px.
pub const SIZE: Range = Range::closed(8.0, 4096.0);
/// `data.workers`: 0 (all cores) to 1024 threads.
pub const WORKERS: Range = Range::closed(0.0, 1024.0);
/// `data.max_pixels`: a decoded image of 2^32 RGB pixels is 12 GiB.
pub const MAX_PIXELS: Range = Range::closed(1.0, 4294967296.0);
/// `data.local_crops`: DINO trains with 8 to 10.
pub const LOCAL_CROPS: Range = Range::closed(0.0, 64.0);
/// `model.width`: a ResNet's first-stage channels.
pub const WIDTH: Range = Range::closed(1.0, 1024.0);
/// `optim.batch_size`: the loss standardises over the batch, so at least 2.
pub const BATCH: Range = Range::closed(2.0, 1048576.0);
pub const EPOCHS: Range = Range::closed(1.0, 1e6);
/// `optim.warmup_epochs`: more than `optim.epochs` is a run that ends within its warm-up.
pub const WARMUP: Range = Range::closed(0.0, 1e6);
/// `optim.momentum`: 1 or more never forgets a gradient.
pub const MOMENTUM: Range = Range::half_open(0.0, 1.0);

impl Config {
    pub(super) fn validate(&self) -> Result<()> {
        self.check_ranges()?;
        let (o, m) = (&self.optim, &self.model);
        m.settings.check(&Setup { batch_size: o.batch_size, projector: &m.projector })?;
        let d = &self.data;
        if d.local_crops > 0 && !m.method().multi_crop() {
            let takers: Vec<_> = Method::ALL.iter().filter(|m| m.multi_crop()).map(|m| m.name()).collect();
            bail!(
                "data.local_crops = {}, but model.method = \"{}\" compares the two global views only (local crops are \
                 for {}); set data.local_crops = 0",
                d.local_crops,
                m.method(),
                if takers.is_empty() { "no method yet".to_string() } else { takers.join(", ") }
            );
        }
        let lars_only = [("optim.clip_lr", o.clip_lr), ("optim.trust_ratio = \"sum\"", o.trust_ratio == TrustRatio::Sum)];
        if let Some((key, _)) = lars_only.iter().find(|(_, set)| *set && o.optimizer != Optimizer::Lars) {
            bail!("{key} is set, but optim.optimizer = \"sgd\" has no trust ratio: it is a setting of LARS (optim.optimizer = \"lars\")");
        }
        if o.exclude_bias_and_norm == Some(false) && o.optimizer == Optimizer::Lars {
            bail!("optim.exclude_bias_and_norm = false, but LARS here always leaves biases and BatchNorm out of its weight decay and trust ratio, as the official code does");
        }
        if o.fix_predictor_lr && !m.method().traits().predictor {
            bail!("optim.fix_predictor_lr is set, but model.method = \"{}\" has no predictor", m.method());
        }
        Ok(())
    }

    /// Each numeric key against its range (see [`Config::numeric_keys`] for the full list).
    fn check_ranges(&self) -> Result<()> {
        let (d, m, o, t) = (&self.data, &self.model, &self.optim, &self.train);
        SIZE.check("data.size", d.size)?;
        WORKERS.check("data.workers", d.workers)?;
        MAX_PIXELS.check("data.max_pixels", d.max_pixels)?;
        scale("data.global_scale", d.global_scale)?;
        LOCAL_CROPS.check("data.local_crops", d.local_crops)?;
        SIZE.check("data.local_size", d.local_size)?;
        scale("data.local_scale", d.local_scale)?;
        if let Some(n) = d.limit {
            COUNT.check("data.limit", n)?;
        }
        WIDTH.check("model.width", m.width)?;
        POSITIVE.check("model.scale_loss", m.scale_loss)?;
        layers("model.projector", &m.projector)?;
        BATCH.check("optim.batch_size", o.batch_size)?;
        EPOCHS.check("optim.epochs", o.epochs)?;
        WARMUP.check("optim.warmup_epochs", o.warmup_epochs)?;
        POSITIVE.check("optim.lr_weights", o.lr_weights)?;
        if let Some(v) = o.lr_biases {
            NON_NEGATIVE.check("optim.lr_biases", v)?;
        }
        NON_NEGATIVE.check("optim.weight_decay", o.weight_decay)?;
        let peak = o.peak_lr();
        for (key, rate) in [("optim.warmup_start_lr", o.warmup_start_lr), ("optim.min_lr", o.min_lr)] {
            let Some(rate) = rate else { continue };
            NON_NEGATIVE.check(key, rate)?;
            if rate > peak {
                bail!("{key} = {rate} is above the peak learning rate {peak} (optim.lr_weights = {} scaled to optim.batch_size = {})", o.lr_weights, o.batch_size);
            }
        }
        MOMENTUM.check("optim.momentum", o.momentum)?;
        POSITIVE.check("optim.eta", o.eta)?;
        COUNT.check("train.knn_k", t.knn_k)?;
        POSITIVE.check("train.knn_t", t.knn_t)?;
        if let Some(n) = t.knn_limit {
            COUNT.check("train.knn_limit", n)?;
        }
        if let Some(n) = t.max_steps {
            COUNT.check("train.max_steps", n)?;
        }
        COUNT.check("train.log_every", t.log_every)?;
        Ok(())
    }

    /// Every numeric key a config may hold, each with the range it is checked against (`None`:
    /// any value of its type, as `train.seed`).
    pub fn numeric_keys() -> Vec<(&'static str, Option<Range>)> {
        let mut keys = Self::common_numeric_keys();
        for (key, range) in Method::ALL.iter().flat_map(|m| m.ranges()) {
            if !keys.iter().any(|(k, _)| *k == key) {
                keys.push((key, Some(range)));
            }
        }
        keys
    }

    fn common_numeric_keys() -> Vec<(&'static str, Option<Range>)> {
        vec![
            ("data.size", Some(SIZE)), ("data.workers", Some(WORKERS)), ("data.max_pixels", Some(MAX_PIXELS)),
            ("data.limit", Some(COUNT)), ("data.global_scale", Some(FRACTION)), ("data.local_crops", Some(LOCAL_CROPS)),
            ("data.local_size", Some(SIZE)), ("data.local_scale", Some(FRACTION)),
            ("model.width", Some(WIDTH)), ("model.projector", Some(LAYER)), ("model.scale_loss", Some(POSITIVE)),
            ("optim.batch_size", Some(BATCH)), ("optim.epochs", Some(EPOCHS)),
            // At most optim.epochs: checked against it.
            ("optim.warmup_epochs", None),
            ("optim.lr_weights", Some(POSITIVE)), ("optim.lr_biases", Some(NON_NEGATIVE)),
            ("optim.weight_decay", Some(NON_NEGATIVE)), ("optim.warmup_start_lr", Some(NON_NEGATIVE)),
            ("optim.min_lr", Some(NON_NEGATIVE)), ("optim.momentum", Some(MOMENTUM)),
            ("optim.eta", Some(POSITIVE)), ("train.seed", None), ("train.knn_every", None),
            ("train.knn_k", Some(COUNT)), ("train.knn_t", Some(POSITIVE)), ("train.knn_limit", Some(COUNT)),
            ("train.max_steps", Some(COUNT)), ("train.log_every", Some(COUNT)), ("train.dist_timeout", None),
        ]
    }
}

/// (preset, key, values it takes, values it refuses): a numeric key's hostile cases. `{d}` in
/// a value stands for the preset's projector width, which a predictor must end at.
#[cfg(test)]
pub type KeyCase = (&'static str, &'static str, &'static [&'static str], &'static [&'static str]);

/// A crop's area fraction `[lo, hi]`: each in (0, 1], lo below hi.
fn scale(key: &str, [lo, hi]: [f64; 2]) -> Result<()> {
    FRACTION.check(key, lo)?;
    FRACTION.check(key, hi)?;
    if lo >= hi {
        bail!("{key} = [{lo}, {hi}]: the lower bound must be below the upper");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// Every key of [`Config::numeric_keys`] besides the methods' own (theirs are in their
    /// files, [`crate::methods::KEY_CASES`]).
    const TABLE: &[KeyCase] = &[
        ("quick", "data.size", &["8", "4096"], &["7", "4097", "100000"]),
        ("quick", "data.workers", &["0", "1024"], &["1025", "1000000000"]),
        ("quick", "data.max_pixels", &["1", "4294967296"], &["0", "4294967297"]),
        ("quick", "data.limit", &["1", "100"], &["0"]),
        ("quick", "data.global_scale", &["[0.14, 1.0]", "[0.08, 1]"], &["[0.0, 1.0]", "[0.5, 0.5]", "[0.9, 0.2]", "[0.1, 1.5]", "[nan, 1]"]),
        ("quick", "data.local_crops", &["0"], &["65", "100000"]),
        ("quick", "data.local_size", &["8", "96"], &["7", "4097"]),
        ("quick", "data.local_scale", &["[0.05, 0.14]"], &["[0.0, 0.4]", "[0.4, 0.05]"]),
        ("quick", "model.width", &["1", "8"], &["0", "1025"]),
        ("quick", "model.scale_loss", &["1", "0.0625", "0.024"], &["0", "-0.1", "nan", "inf"]),
        ("quick", "model.projector", &["[64, 32]", "[8]"], &["[0]", "[128, 0, 128]", "[40000]", "[]"]),
        ("quick", "optim.batch_size", &["2", "4096"], &["0", "1", "2000000"]),
        ("quick", "optim.epochs", &["1", "1000"], &["0", "2000000"]),
        ("quick", "optim.warmup_epochs", &["0", "10"], &["2000000"]),
        ("quick", "optim.lr_weights", &["0.2", "1e-9"], &["0", "-0.1", "nan", "inf"]),
        ("quick", "optim.lr_biases", &["0", "0.0048"], &["-1", "nan"]),
        ("quick", "optim.weight_decay", &["0", "1.5e-6"], &["-1e-6", "nan", "inf"]),
        ("quick", "optim.warmup_start_lr", &["0", "3e-5"], &["-1e-5", "nan"]),
        ("quick", "optim.min_lr", &["0", "1e-6"], &["-1", "inf"]),
        ("quick", "optim.momentum", &["0", "0.99"], &["1", "1.5", "-0.1", "nan"]),
        ("quick", "optim.eta", &["0.02", "1"], &["0", "-1", "nan"]),
        ("quick", "train.seed", &["0", "9223372036854775807"], &[]),
        ("quick", "train.knn_every", &["0", "5"], &[]),
        ("quick", "train.knn_k", &["1", "200"], &["0"]),
        ("quick", "train.knn_t", &["0.07", "1"], &["0", "-1", "nan", "inf"]),
        ("quick", "train.knn_limit", &["1", "1000"], &["0"]),
        ("quick", "train.max_steps", &["1", "7"], &["0"]),
        ("quick", "train.log_every", &["1", "100"], &["0"]),
        ("quick", "train.dist_timeout", &["0", "86400"], &[]),
    ];

    fn load(preset: &str, key: &str, value: &str) -> Result<Config> {
        let d = Config::load(preset, &[]).unwrap().model.projector.last().copied().unwrap();
        Config::load(preset, &[format!("{key}={}", value.replace("{d}", &d.to_string()))])
    }

    fn cases() -> impl Iterator<Item = &'static KeyCase> {
        TABLE.iter().chain(crate::methods::KEY_CASES.iter().flat_map(|cases| cases.iter()))
    }

    #[test]
    fn every_numeric_key_takes_its_range_and_refuses_the_rest_by_name() {
        for &(preset, key, good, bad) in cases() {
            for v in good {
                load(preset, key, v).unwrap_or_else(|e| panic!("{preset}: {key} = {v} refused: {e:#}"));
            }
            for v in bad {
                let err = format!("{:#}", load(preset, key, v).expect_err(&format!("{preset}: {key} = {v} taken")));
                assert!(err.contains(key), "{key} = {v}: the error does not name the key: {err}");
                let range = Config::numeric_keys().into_iter().find(|(k, _)| k == &key).unwrap().1;
                if let Some(range) = range.filter(|_| !v.starts_with('[') && *v != "[]") {
                    assert!(err.contains(&range.to_string()), "{key} = {v}: the error does not give {range}: {err}");
                }
            }
        }
    }

    /// LARS's own settings are refused under SGD (they would change nothing), and a trust ratio
    /// that is neither form is refused naming the key and the forms.
    #[test]
    fn lars_settings_name_their_key_where_they_cannot_apply() {
        for (preset, set, needles) in [
            ("simsiam-cifar10", "optim.clip_lr=true", &["optim.clip_lr", "sgd", "LARS"][..]),
            ("simsiam-cifar10", "optim.trust_ratio=\"sum\"", &["optim.trust_ratio", "sgd"]),
            ("cifar10", "optim.trust_ratio=\"paper\"", &["optim.trust_ratio", "`update` or `sum`"]),
            ("cifar10", "optim.clip_lr=1", &["optim.clip_lr", "boolean"]),
            ("cifar10", "optim.exclude_bias_and_norm=false", &["optim.exclude_bias_and_norm", "LARS"]),
        ] {
            let err = format!("{:#}", Config::load(preset, &[set.to_string()]).expect_err(set));
            for needle in needles {
                assert!(err.contains(needle), "{set}: the error does not say `{needle}`: {err}");
            }
        }
        for set in ["optim.min_lr=1000", "optim.warmup_start_lr=0.4"] {
            let err = format!("{:#}", Config::load("cifar10", &[set.to_string()]).expect_err(set));
            assert!(err.contains(set.split('=').next().unwrap()) && err.contains("above the peak learning rate 0.3"), "{set}: {err}");
        }
        for set in ["optim.clip_lr=true", "optim.trust_ratio=\"sum\""] {
            Config::load("cifar10", &[set.to_string()]).unwrap_or_else(|e| panic!("{set} refused under LARS: {e:#}"));
        }
    }

    /// A value of the wrong kind for a `[model]` key, common or a method's, is refused naming the
    /// key and what it takes.
    #[test]
    fn a_bad_model_value_names_its_key() {
        for (preset, set, needles) in [
            ("cifar10", "model.stem=\"cifar-pad3\"", &["`stem`", "cifar-pad2"][..]),
            ("cifar10", "model.zero_init_residual=2", &["`zero_init_residual`", "boolean"]),
            ("dino-cifar10", "model.norm_last_layer=1", &["`norm_last_layer`", "boolean"]),
        ] {
            let err = format!("{:#}", Config::load(preset, &[set.to_string()]).expect_err(set));
            for needle in needles {
                assert!(err.contains(needle), "{set}: the error does not say {needle}: {err}");
            }
        }
    }

    /// The numeric leaves of a config's TOML, as `section.key`.
    fn numeric_leaves(config: &Config, out: &mut BTreeSet<String>) {
        let table: toml::Table = toml::from_str(&config.to_toml()).unwrap();
        for (section, keys) in &table {
            for (key, value) in keys.as_table().unwrap() {
                let number = |v: &toml::Value| v.is_integer() || v.is_float();
                if number(value) || value.as_array().is_some_and(|a| a.iter().all(number)) {
                    out.insert(format!("{section}.{key}"));
                }
            }
        }
    }

    #[test]
    fn the_table_covers_every_numeric_key_a_config_can_hold() {
        let mut found = BTreeSet::new();
        let full = ["data.limit=10", "train.knn_limit=10", "train.max_steps=5", "optim.lr_biases=0.1"];
        let presets = crate::methods::Method::ALL.map(|m| format!("{m}-cifar10"));
        for preset in std::iter::once("quick").chain(presets.iter().map(String::as_str)) {
            let overrides: Vec<String> = full.iter().map(|s| s.to_string()).collect();
            numeric_leaves(&Config::load(preset, &overrides).unwrap(), &mut found);
        }
        let listed: BTreeSet<String> = Config::numeric_keys().into_iter().map(|(k, _)| k.to_string()).collect();
        let tested: BTreeSet<String> = cases().map(|r| r.1.to_string()).collect();
        assert_eq!(found, listed, "Config::numeric_keys() differs from the keys a config holds");
        assert_eq!(tested, listed, "the test table differs from Config::numeric_keys()");
    }
}
