//! Choosing the device (and so the backend) a run uses, by name.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// The backends compiled into this binary, the default (the measured-fastest CPU one) first.
pub fn available() -> Vec<&'static str> {
    let mut names = vec![];
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "flex") {
        names.push("flex");
    }
    if cfg!(feature = "ndarray") {
        names.push("ndarray");
    }
    if cfg!(feature = "cpu") {
        names.push("cpu");
    }
    if cfg!(feature = "tch") {
        names.push("tch");
    }
    names
}

/// The device for a backend name (`flex`, `ndarray`, `cpu`, `cuda[:i]`, `wgpu`, `tch`), or the
/// first available one for `auto`.
#[allow(deprecated, unreachable_code)] // ndarray and tch are deprecated upstream but still measured
pub fn device(name: &str) -> Result<Device> {
    let name = if name == "auto" {
        *available().first().ok_or_else(|| anyhow::anyhow!("no backend compiled in"))?
    } else {
        name
    };
    let (kind, index) = match name.split_once(':') {
        Some((k, i)) => (k, i.parse::<usize>().map_err(|_| anyhow::anyhow!("bad device index in `{name}`"))?),
        None => (name, 0),
    };
    let _ = index;
    Ok(match kind {
        #[cfg(feature = "flex")]
        "flex" => Device::flex(),
        #[cfg(feature = "ndarray")]
        "ndarray" => Device::ndarray(),
        #[cfg(feature = "cpu")]
        "cpu" => Device::cpu(),
        #[cfg(feature = "cuda")]
        "cuda" => Device::cuda(index),
        #[cfg(feature = "wgpu")]
        "wgpu" => Device::wgpu(Default::default()),
        #[cfg(feature = "tch")]
        "tch" => Device::libtorch(),
        other => bail!(
            "backend `{other}` is not compiled into this binary (available: {}); \
             rebuild with `--features {other}`",
            available().join(", ")
        ),
    })
}
