//! `train --overwrite`: the previous run's files set aside in `DIR/previous/` until the new run
//! writes its first checkpoint, so that an overwrite stopped early loses nothing.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The files a run writes into its directory.
const FILES: [&str; 6] = ["checkpoint.bin", "config.toml", "metrics.jsonl", "curves.png", "correlation.png", "linear.json"];

/// Where a run directory keeps the run an overwrite replaces.
pub fn previous_dir(out: &Path) -> PathBuf {
    out.join("previous")
}

/// Moves the run in `out` (if it has a checkpoint) into `out/previous/`, replacing an older one
/// there; returns the folder when something was moved.
pub fn set_aside(out: &Path) -> Result<Option<PathBuf>> {
    if !super::checkpoint_path(out).exists() {
        return Ok(None);
    }
    let previous = previous_dir(out);
    if previous.exists() {
        std::fs::remove_dir_all(&previous).with_context(|| format!("removing {}", previous.display()))?;
    }
    std::fs::create_dir(&previous).with_context(|| format!("creating {}", previous.display()))?;
    for name in FILES {
        let from = out.join(name);
        if from.exists() {
            let to = previous.join(name);
            std::fs::rename(&from, &to).with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(Some(previous))
}

/// Removes `out/previous/` once the run in `out` has a checkpoint of its own.
pub fn discard(out: &Path) -> Result<()> {
    let previous = previous_dir(out);
    match previous.exists() {
        true => std::fs::remove_dir_all(&previous).with_context(|| format!("removing {}", previous.display())),
        false => Ok(()),
    }
}
