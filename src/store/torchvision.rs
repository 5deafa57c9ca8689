//! Encoder weights in and out under torchvision's state-dict names (safetensors; `.pth` import).

use crate::model::ResNet;
use anyhow::{Context, Result, bail};
use burn::store::{
    ApplyError, ApplyResult, BurnToPyTorchAdapter, ChainAdapter, FloatCastAdapter, KeyRemapper, ModuleAdapter,
    ModuleSnapshot, ModuleStore, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};
use burn::tensor::DType;
use std::collections::BTreeMap;
use std::io::Read;
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
    crate::store::checkpoint::write_atomically(path, &out)
}

/// Loads torchvision-named encoder weights into `encoder` (built with the same architecture):
/// a safetensors file or a PyTorch checkpoint (`.pth`, `.pt`, `.pth.tar`), told apart by their
/// contents. A checkpoint's pickle is checked first ([`crate::store::pickle`]) and then read by
/// burn's reader, which rebuilds tensors without executing anything from the file.
///
/// The tensors may be the whole file or under `state_dict` / `model` (a training checkpoint),
/// with a `module.` (DistributedDataParallel) and/or `backbone.` (the official training
/// checkpoint) prefix; `fc.*`, `num_batches_tracked` and anything else beyond the encoder
/// (a projector, optimizer state) are ignored. Every tensor of the encoder must be found, with
/// its shape.
pub fn import(encoder: ResNet, path: &Path) -> Result<ResNet> {
    import_as(encoder, path, "this encoder")
}

/// As [`import`]; `what` names the encoder in the errors for a file that does not fit it
/// (say, "a resnet50 with the imagenet stem and width 64, as --arch/--stem/--width say").
pub fn import_as(mut encoder: ResNet, path: &Path, what: &str) -> Result<ResNet> {
    let remap = KeyRemapper::from_patterns(vec![(r"^module\.", ""), (r"^backbone\.", "")])
        .expect("valid patterns");
    let mut head = [0u8; 9];
    let n = crate::files::open(path)?.read(&mut head).with_context(|| format!("reading {}", path.display()))?;
    // safetensors: a little-endian u64 header length, then the header's JSON.
    let safetensors = n == 9 && u64::from_le_bytes(head[..8].try_into().expect("8 bytes")) < 100_000_000 && head[8] == b'{';
    let result = if safetensors {
        let mut store = SafetensorsStore::from_file(path)
            .with_from_adapter(from_pytorch())
            .remap(remap)
            .allow_partial(true)
            .validate(false);
        encoder.load_from(&mut store).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        crate::store::pickle::check(path)?;
        // A bare state dict first, then the keys training checkpoints keep it under: the first
        // reading that fits some of the encoder wins.
        let mut best: Option<ApplyResult> = None;
        let mut failure = None;
        for key in [None, Some("state_dict"), Some("model")] {
            let mut store = PytorchStore::from_file(path).remap(remap.clone()).allow_partial(true).validate(false);
            if let Some(key) = key {
                store = store.with_top_level_key(key);
            }
            let read = store.get_all_tensors().map(|t| t.values().cloned().collect::<Vec<_>>());
            match read.map(|tensors| encoder.apply(tensors, None, Some(Box::new(from_pytorch())), false)) {
                Ok(r) if !r.applied.is_empty() || !r.errors.is_empty() => {
                    best = Some(r);
                    break;
                }
                Ok(r) => best = best.or(Some(r)),
                Err(e) => failure = failure.or(Some(e.to_string())),
            }
        }
        match (best, failure) {
            (Some(r), _) => r,
            (None, Some(e)) => bail!("{}: cannot be read as a PyTorch checkpoint: {e}", path.display()),
            (None, None) => unreachable!("one reading was tried"),
        }
    };
    check_fit(&encoder, &result, path, what)?;
    crate::store::checkpoint::finite(&encoder).with_context(|| format!("{}: not usable weights", path.display()))?;
    Ok(encoder)
}

/// PyTorch's layout to burn's, and every float tensor to f32: released checkpoints hold f16,
/// bf16 or f64 too, and the encoder's parameters are f32 whatever the training precision.
fn from_pytorch() -> ChainAdapter {
    PyTorchToBurnAdapter.chain(FloatCastAdapter::to(DType::F32))
}

/// torchvision's name for an encoder tensor (burn calls BatchNorm's affine pair gamma/beta).
fn torchvision_name(path: &str) -> String {
    match (path.strip_suffix(".gamma"), path.strip_suffix(".beta")) {
        (Some(p), _) => format!("{p}.weight"),
        (_, Some(p)) => format!("{p}.bias"),
        _ => path.to_string(),
    }
}

/// Errors for a file that does not fit: the first tensor (in the network's order) whose shape
/// differs, else the tensors it lacks.
fn check_fit(encoder: &ResNet, result: &ApplyResult, path: &Path, what: &str) -> Result<()> {
    let order: Vec<String> = encoder.collect(None, None, false).into_iter().map(|t| t.name).collect();
    let position = |p: &str| order.iter().position(|o| o == p).unwrap_or(usize::MAX);
    let first = result.errors.iter().min_by_key(|e| match e {
        ApplyError::ShapeMismatch { path, .. } | ApplyError::DTypeMismatch { path, .. }
        | ApplyError::AdapterError { path, .. } | ApplyError::LoadError { path, .. } => position(path),
    });
    match first {
        Some(ApplyError::ShapeMismatch { path: name, expected, found }) => bail!(
            "{}: `{}` has shape {found} in the file but {expected} in {what}{}",
            path.display(), torchvision_name(name),
            if result.errors.len() > 1 { format!(" ({} tensors differ)", result.errors.len()) } else { String::new() }
        ),
        Some(ApplyError::DTypeMismatch { path: name, found, .. }) => bail!(
            "{}: `{}` holds {found:?} values, where {what} needs floating-point weights (f16, bf16, f32 or f64)",
            path.display(), torchvision_name(name)
        ),
        Some(other) => bail!("{}: {other}", path.display()),
        None => {}
    }
    if result.applied.is_empty() {
        let mut seen: Vec<&str> = result.unused.iter().map(String::as_str).collect();
        seen.sort();
        seen.truncate(4);
        bail!(
            "{}: none of the tensors of {what} are in the file (its tensors are named like {}); \
             expected torchvision's ResNet names such as `conv1.weight`, `layer1.0.bn1.running_mean`",
            path.display(),
            if seen.is_empty() { "nothing: it holds no tensors".into() } else { format!("`{}`", seen.join("`, `")) }
        );
    }
    if !result.missing.is_empty() {
        let mut missing: Vec<&str> = result.missing.iter().map(|(p, _)| p.as_str()).collect();
        missing.sort_by_key(|p| position(p));
        let names: Vec<String> = missing.iter().take(4).map(|p| format!("`{}`", torchvision_name(p))).collect();
        bail!(
            "{}: {} of the {} tensors of {what} are missing from the file: {}{}",
            path.display(), missing.len(), order.len(), names.join(", "),
            if missing.len() > 4 { ", …" } else { "" }
        );
    }
    Ok(())
}
