//! Checkpoints: model, optimizer state and run position in one file, replaced atomically.

use crate::methods::Model;
use anyhow::{Context, Result, bail};
use burn::optim::ModuleOptimizer;
use burn::store::ModuleSnapshot;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;

/// The file's first bytes; `BARLOW02` files end in the SHA-256 of all that comes before it.
const MAGIC: &[u8; 8] = b"BARLOW02";
const MAGIC_UNCHECKED: &[u8; 8] = b"BARLOW01";

/// Where a run stands: everything besides the tensors that resuming needs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs completed.
    pub epoch: usize,
    /// Optimisation steps completed.
    pub step: usize,
    /// The run's configuration, as TOML.
    pub config: String,
}

/// Saves a checkpoint to `path`, atomically.
pub fn save(path: &Path, state: &RunState, model: &Model, optim: &ModuleOptimizer) -> Result<()> {
    // burn holds a BatchNorm's latest running-statistics update aside until the next forward
    // pass; `valid()` commits it, so the file has the statistics the live model goes on with.
    let model_bytes = pack(&burn::module::Module::valid(model))?;
    let optim_bytes = optim.to_record().into_bytes().context("serialising the optimizer state")?;
    let state_bytes = serde_json::to_vec(state)?;
    let mut bytes = MAGIC.to_vec();
    for part in [&state_bytes[..], &model_bytes[..], &optim_bytes[..]] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part);
    }
    let digest = Sha256::digest(&bytes);
    bytes.extend_from_slice(&digest);
    write_atomically(path, &bytes)
}

/// Writes `path` so that it is either the old file or the new one, never a torn mix:
/// the bytes go to a temporary file beside it, are flushed to disk, then renamed over it.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    // A failed write (a full disk, say) leaves neither a partial temporary file nor a changed `path`.
    let written = write().with_context(|| format!("writing {}", tmp.display()));
    let renamed = written.and_then(|()| std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display())));
    if renamed.is_err() {
        _ = std::fs::remove_file(&tmp);
    }
    renamed
}

/// The bytes after the magic of a file whose SHA-256 at its end matches, without it.
fn verified(bytes: &[u8]) -> Result<&[u8]> {
    let Some(end) = bytes.len().checked_sub(32).filter(|&e| e >= MAGIC.len()) else {
        bail!("truncated: {} bytes, too few for a checkpoint", bytes.len())
    };
    let (body, digest) = bytes.split_at(end);
    if Sha256::digest(body)[..] != *digest {
        bail!(
            "its SHA-256 does not match the one written with it: the file was changed or damaged after it was \
             saved (a copy cut short, a disk error); use another copy"
        );
    }
    Ok(&body[MAGIC.len()..])
}

/// The parts of a checkpoint file, checked but not yet applied.
pub struct Checkpoint {
    pub state: RunState,
    model: Bytes,
    optim: Bytes,
}

impl Checkpoint {
    pub fn read(path: &Path) -> Result<Checkpoint> {
        let bytes = crate::files::read(path).with_context(|| format!("reading checkpoint {}", path.display()))?;
        Self::parse(&bytes).with_context(|| format!("checkpoint {} is not usable", path.display()))
    }

    /// A checkpoint from the bytes of its file.
    pub fn parse(bytes: &[u8]) -> Result<Checkpoint> {
        let mut rest = match bytes.get(..MAGIC.len()) {
            Some(m) if m == MAGIC => verified(bytes)?,
            Some(m) if m == MAGIC_UNCHECKED => &bytes[MAGIC.len()..],
            _ => bail!("not a barlow checkpoint (bad magic bytes)"),
        };
        let mut parts = Vec::new();
        for name in ["run state", "model", "optimizer state"] {
            if rest.len() < 8 {
                bail!("truncated before the {name}");
            }
            let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
            rest = &rest[8..];
            if rest.len() < len {
                bail!("truncated in the {name}: {} of {len} bytes", rest.len());
            }
            parts.push(&rest[..len]);
            rest = &rest[len..];
        }
        if !rest.is_empty() {
            bail!("{} bytes after the optimizer state: not a barlow checkpoint", rest.len());
        }
        let state = serde_json::from_slice(parts[0]).context("the run state is not valid JSON")?;
        Ok(Checkpoint {
            state,
            model: Bytes::from_bytes_vec(parts[1].to_vec()),
            optim: Bytes::from_bytes_vec(parts[2].to_vec()),
        })
    }

    /// Loads the weights into `model` (built from the same config) and the state into `optim`.
    pub fn apply(self, model: Model, optim: ModuleOptimizer) -> Result<(Model, ModuleOptimizer)> {
        let model = load_weights(model, self.model)?;
        finite_state(&self.optim)?;
        // Optimizer state is keyed by parameter id, which the model's burnpack carries across.
        let optim = optim.from_bytes(self.optim).context("loading the optimizer state")?;
        Ok((model, optim))
    }
}

/// The model of a checkpoint, built from the config saved inside it, on `device`.
pub fn load_model(path: &Path, device: &burn::tensor::Device) -> Result<(crate::config::Config, Model)> {
    let ckpt = Checkpoint::read(path)?;
    let config = crate::config::Config::parse(&ckpt.state.config, &[])
        .with_context(|| format!("the config saved in {}", path.display()))?;
    let model = ckpt.model(&config, device).with_context(|| format!("loading the model of {}", path.display()))?;
    Ok((config, model))
}

impl Checkpoint {
    /// The saved weights in a model built from `config` (the checkpoint's own) on `device`.
    pub fn model(self, config: &crate::config::Config, device: &burn::tensor::Device) -> Result<Model> {
        load_weights(config.model().init(device), self.model)
    }
}

/// A model's tensors as a burnpack, named by their module paths without the method's variant
/// (`backbone.conv1.weight`, `momentum.projector.out.weight`, `queue.keys`).
pub fn pack<M: ModuleSnapshot>(model: &M) -> Result<Bytes> {
    let tensors = model.collect(None, None, true);
    burn::store::burn_pack::Writer::new(tensors).into_bytes().map_err(|e| anyhow::anyhow!("serialising the model: {e:?}"))
}

pub(crate) fn load_weights(mut model: Model, bytes: Bytes) -> Result<Model> {
    let unreadable = |e: burn::store::burn_pack::Error| anyhow::anyhow!("reading the model weights: {e:?}");
    let tensors = burn::store::burn_pack::Reader::from_bytes(bytes).and_then(|r| r.into_tensors()).map_err(unreadable)?;
    let result = model.apply(tensors, None, None, true);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        bail!("the weights do not fit the config: {result}");
    }
    finite(&model)?;
    Ok(model)
}

/// An error naming the first optimizer-state tensor (a momentum buffer, say) that holds a NaN
/// or an infinity, as resuming from it would carry the damage into every later step, or that
/// names no parameter (which burn's reader would panic on).
fn finite_state(bytes: &[u8]) -> Result<()> {
    let unreadable = |e: burn::store::burn_pack::Error| anyhow::anyhow!("the optimizer state is unreadable: {e:?}");
    let reader = burn::store::burn_pack::Reader::from_bytes(Bytes::from_bytes_vec(bytes.to_vec())).map_err(unreadable)?;
    for tensor in reader.into_tensors().map_err(unreadable)? {
        let (name, dtype, shape, param, bytes) = tensor.into_parts().map_err(unreadable)?;
        if param.is_none() {
            bail!("the optimizer state `{name}` belongs to no parameter: not a state barlow wrote");
        }
        if dtype.is_float() {
            let values = burn::tensor::TensorData::from_bytes(bytes, shape, dtype).convert::<f32>();
            let count = values.as_slice::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?.iter().filter(|v| !v.is_finite()).count();
            if count > 0 {
                bail!("the optimizer state `{name}` holds {count} non-finite values (NaN or ±∞): a diverged or damaged run");
            }
        }
    }
    Ok(())
}

/// An error naming the first tensor of `module` that holds a NaN or an infinity.
pub fn finite<M: ModuleSnapshot>(module: &M) -> Result<()> {
    for tensor in module.collect(None, None, true) {
        if !tensor.dtype.is_float() {
            continue;
        }
        let data = burn::store::bridge::to_data(&tensor).map_err(|e| anyhow::anyhow!("reading `{}`: {e:?}", tensor.name))?;
        let values = data.convert::<f32>().try_into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let count = values.iter().filter(|v| !v.is_finite()).count();
        if count > 0 {
            bail!("`{}` holds {count} non-finite values (NaN or ±∞): a diverged or damaged model", tensor.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::store::burn_pack::{Tensor, Writer};

    fn state(param: Option<u64>, value: f32) -> Bytes {
        let bytes = Bytes::from_bytes_vec(value.to_le_bytes().repeat(2));
        Writer::new(vec![Tensor::new("momentum".into(), burn::tensor::DType::F32, [2], param, bytes)]).into_bytes().unwrap()
    }

    #[test]
    fn optimizer_state_that_names_no_parameter_or_holds_nan_is_refused() {
        assert!(finite_state(&state(Some(7), 0.5)).is_ok());
        let err = finite_state(&state(None, 0.5)).unwrap_err().to_string();
        assert!(err.contains("`momentum` belongs to no parameter"), "{err}");
        let err = finite_state(&state(Some(7), f32::NAN)).unwrap_err().to_string();
        assert!(err.contains("`momentum` holds 2 non-finite"), "{err}");
    }
}
