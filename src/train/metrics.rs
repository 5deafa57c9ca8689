//! Metrics as JSON lines: one record per step and one per epoch, appended as training goes.

use super::step::StepStats;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub epoch: usize,
    pub step: usize,
    pub lr_factor: f64,
    pub images_per_s: f64,
    #[serde(flatten)]
    pub stats: StepStats,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub step: usize,
    pub loss: Option<f64>,
    pub knn_top1: Option<f64>,
    pub knn_top5: Option<f64>,
    pub seconds: f64,
}

/// One line of `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Record {
    Step(StepRecord),
    Epoch(EpochRecord),
}

pub struct Metrics {
    path: PathBuf,
    file: std::fs::File,
}

impl Metrics {
    /// Opens the log; a fresh run starts it anew, a resumed one keeps what came before.
    pub fn open(path: &Path, append: bool) -> Result<Metrics> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(append)
            .write(true)
            .truncate(!append)
            .open(path)
            .with_context(|| format!("opening metrics log {}", path.display()))?;
        Ok(Metrics { path: path.to_path_buf(), file })
    }

    pub fn step(&mut self, r: &StepRecord) -> Result<()> {
        self.write(&Record::Step(r.clone()))
    }

    pub fn epoch(&mut self, r: &EpochRecord) -> Result<()> {
        self.write(&Record::Epoch(r.clone()))
    }

    fn write(&mut self, r: &Record) -> Result<()> {
        let line = serde_json::to_string(r)?;
        writeln!(self.file, "{line}").with_context(|| format!("writing {}", self.path.display()))
    }
}

/// Reads a metrics log back (for plots), skipping a torn last line from a killed run.
pub fn read(path: &Path) -> Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

/// Drops the records after `step` (keeping the epoch record written at `step`), atomically.
pub fn truncate_after(path: &Path, step: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let old = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut text = String::new();
    for line in old.lines() {
        let keep = match serde_json::from_str::<Record>(line) {
            Ok(Record::Step(s)) => s.step <= step,
            Ok(Record::Epoch(e)) => e.step <= step,
            Err(_) => false,
        };
        if keep {
            text.push_str(line);
            text.push('\n');
        }
    }
    crate::store::checkpoint::write_atomically(path, text.as_bytes())
}
