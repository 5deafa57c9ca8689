//! Encoder weights in and out under torchvision's state-dict names (safetensors; `.pth` import).

use crate::model::ResNet;
use anyhow::{Context, Result, bail};
use burn::store::{
    BurnToPyTorchAdapter, KeyRemapper, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use std::collections::BTreeMap;
use std::path::Path;

/// Writes the encoder so that `torchvision.models.resnetNN()` (with `fc = nn.Identity()`, and for
/// the CIFAR stem a 3×3 `conv1` and `maxpool = nn.Identity()`) loads it with `strict=True`.
///
/// burn's PyTorch adapter renames BatchNorm's gamma/beta to weight/bias; torchvision also
/// expects each BatchNorm's `num_batches_tracked` counter, which burn does not keep, so it is
/// added here (as 0: PyTorch only reads it when BN momentum is None).
pub fn export_safetensors(encoder: &ResNet, path: &Path) -> Result<()> {
    let mut store = SafetensorsStore::from_bytes(None).with_to_adapter(BurnToPyTorchAdapter);
    encoder.save_into(&mut store).context("collecting the encoder's tensors")?;
    let bytes = store.get_bytes().context("serialising the encoder")?;
    let st = safetensors::SafeTensors::deserialize(&bytes).context("re-reading the serialised encoder")?;
    let counter = 0i64.to_le_bytes();
    let mut tensors: BTreeMap<String, (safetensors::Dtype, Vec<usize>, &[u8])> = BTreeMap::new();
    for (name, view) in st.tensors() {
        if let Some(bn) = name.strip_suffix(".running_mean") {
            tensors.insert(format!("{bn}.num_batches_tracked"), (safetensors::Dtype::I64, vec![], &counter[..]));
        }
        tensors.insert(name, (view.dtype(), view.shape().to_vec(), view.data()));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .into_iter()
        .map(|(name, (dtype, shape, data))| Ok((name, safetensors::tensor::TensorView::new(dtype, shape, data)?)))
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    let out = safetensors::serialize(views, None).context("serialising the encoder")?;
    crate::checkpoint::write_atomically(path, &out)
}

/// Loads torchvision-named encoder weights into `encoder` (built with the same architecture):
/// a `.safetensors` file, or a PyTorch `.pth`/`.pt` read by burn's pickle reader, which
/// rebuilds tensors without executing any code from the file.
///
/// Keys may carry a `module.` (DistributedDataParallel) or `backbone.` (the official
/// training checkpoint) prefix; `fc.*` and `num_batches_tracked` entries are ignored.
pub fn import(mut encoder: ResNet, path: &Path) -> Result<ResNet> {
    let remap = KeyRemapper::from_patterns(vec![(r"^module\.", ""), (r"^backbone\.", "")])
        .expect("valid patterns");
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let result = match ext {
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .remap(remap)
                .allow_partial(true);
            encoder.load_from(&mut store).map_err(|e| anyhow::anyhow!("{e}"))
        }
        "pth" | "pt" | "tar" => {
            // A bare state dict, or a training checkpoint holding it under `state_dict` / `model`.
            let mut last = None;
            for key in [None, Some("state_dict"), Some("model")] {
                let mut store = PytorchStore::from_file(path).remap(remap.clone()).allow_partial(true);
                if let Some(key) = key {
                    store = store.with_top_level_key(key);
                }
                match encoder.load_from(&mut store) {
                    Ok(r) if r.applied.is_empty() => last = Some(Ok(r)),
                    Ok(r) => {
                        last = Some(Ok(r));
                        break;
                    }
                    Err(e) => last = Some(Err(anyhow::anyhow!("{e}"))),
                }
            }
            last.expect("at least one attempt")
        }
        _ => bail!("{}: expected a .safetensors, .pth or .pt file", path.display()),
    }
    .with_context(|| format!("loading encoder weights from {}", path.display()))?;
    if !result.errors.is_empty() {
        bail!("{}: weights do not fit this encoder: {result}", path.display());
    }
    if !result.missing.is_empty() {
        let missing: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).take(5).collect();
        bail!(
            "{}: {} of the encoder's tensors are not in the file (e.g. {}); is it the same architecture?",
            path.display(),
            result.missing.len(),
            missing.join(", ")
        );
    }
    Ok(encoder)
}
