//! Choosing the device (and so the backend) a run uses, by name.

use anyhow::{Result, bail};
use burn::tensor::Device;

/// The backends compiled into this binary, GPUs first, then the CPU ones (the default, the
/// measured-fastest, first among those).
pub fn available() -> Vec<&'static str> {
    let mut names = vec![];
    if cfg!(feature = "cuda") {
        names.push("cuda");
    }
    if cfg!(feature = "wgpu") {
        names.push("wgpu");
    }
    if cfg!(feature = "tch") {
        names.push("tch-cuda");
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

/// The device for a backend name: `flex`, `ndarray`, `cpu`, `cuda[:i]`, `wgpu`, `tch` (LibTorch
/// on the CPU), `tch-cuda[:i]` (LibTorch on a GPU); `auto` is a CUDA device when the build has
/// CUDA (`cuda`, else LibTorch's) and the machine a CUDA GPU, else the first CPU backend. A GPU
/// backend whose driver or device is missing is an error that says so.
#[allow(deprecated)] // ndarray and tch are deprecated upstream but still measured
pub fn device(name: &str) -> Result<Device> {
    if name == "auto" {
        return auto();
    }
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
        "cuda" => crate::gpu::cuda(index)
            .map_err(|e| anyhow::anyhow!("{e:#}. Backends in this binary: {}", available().join(", ")))?,
        #[cfg(feature = "wgpu")]
        "wgpu" => crate::gpu::wgpu()?,
        #[cfg(feature = "tch")]
        "tch" => Device::libtorch(),
        #[cfg(feature = "tch")]
        "tch-cuda" => {
            let found = Device::enumerate(burn::tensor::DeviceType::LibTorch).into_vec().len();
            if index >= found {
                bail!("tch-cuda:{index} asked for, but LibTorch sees {found} CUDA device(s) (is it a CPU-only \
                       LibTorch, or is the NVIDIA driver missing?)");
            }
            // f32 means f32, as on every other backend (cuDNN would use TF32 by default).
            crate::ops::libtorch::allow_tf32(false);
            // As the official code: cuDNN times its algorithms for each shape once, then runs the
            // fastest (a step's shapes repeat).
            tch::Cuda::cudnn_set_benchmark(true);
            Device::libtorch_cuda(index)
        }
        other => bail!(
            "backend `{other}` is not compiled into this binary (available: {}); \
             rebuild with `--features {}`",
            available().join(", "),
            other.trim_end_matches("-cuda")
        ),
    })
}

#[allow(deprecated)]
fn auto() -> Result<Device> {
    #[cfg(feature = "cuda")]
    if !Device::enumerate(burn::tensor::DeviceType::Cuda).into_vec().is_empty() {
        return crate::gpu::cuda(0);
    }
    #[cfg(feature = "tch")]
    if tch::Cuda::is_available() {
        return device("tch-cuda");
    }
    match available().into_iter().find(|b| is_cpu_name(b)) {
        Some(cpu) => device(cpu),
        None => device(available().first().ok_or_else(|| anyhow::anyhow!("no backend compiled in"))?),
    }
}

fn is_cpu_name(name: &str) -> bool {
    matches!(name, "flex" | "ndarray" | "cpu" | "tch")
}

/// Whether `device` (with or without autodiff) is one of the CPU backends, which run each
/// operation as it comes and so gain nothing from larger batches or fewer synchronisations.
#[allow(deprecated, clippy::vec_init_then_push)] // each push under its own feature
pub fn is_cpu(device: &Device) -> bool {
    let mut cpus: Vec<Device> = vec![];
    #[cfg(feature = "flex")]
    cpus.push(Device::flex());
    #[cfg(feature = "ndarray")]
    cpus.push(Device::ndarray());
    #[cfg(feature = "cpu")]
    cpus.push(Device::cpu());
    #[cfg(feature = "tch")]
    cpus.push(Device::libtorch());
    // Equality ignores autodiff.
    cpus.contains(device)
}

/// The file where this build's GPU runtimes keep tuned and compiled kernels (`None` in a build
/// without one).
pub fn kernel_cache() -> Option<std::path::PathBuf> {
    #[cfg(feature = "cubecl")]
    return crate::gpu::configure().ok();
    #[cfg(not(feature = "cubecl"))]
    None
}
