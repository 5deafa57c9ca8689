//! The GPU runtimes (cubecl's CUDA and wgpu): their kernel cache in barlow's cache directory,
//! and devices that report a missing driver or adapter as an error instead of a panic.
//!
//! Autotuning measures candidate kernels for every operation shape the first time it runs, and
//! compiling them takes as long again; cubecl keeps both results in one database per
//! environment. By default it puts that database under the `target/` of whatever Cargo project
//! surrounds the working directory, so a user's cache would follow their `cd`. barlow gives it
//! one stable place instead: `<cache>/cubecl/<environment>.db`, where `<cache>` is barlow's cache
//! directory (`$BARLOW_CACHE`, else `$XDG_CACHE_HOME/barlow`, else `~/.cache/barlow`) and the
//! environment is `default` unless `CUBECL_ENVIRONMENT` names another. Everything else still
//! comes from a `cubecl.toml` and cubecl's `CUBECL_*` variables, as cubecl documents them.

use anyhow::{Result, anyhow, bail};
use burn::tensor::Device;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The directory the kernel cache databases live in.
pub fn cache_root() -> Result<PathBuf> {
    Ok(crate::data::download::cache_dir()?.join("cubecl"))
}

/// Installs barlow's cubecl settings (the cache location, compiled kernels cached too) before
/// any GPU device starts, and returns the database file in use. Idempotent.
pub fn configure() -> Result<PathBuf> {
    static CONFIGURED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    CONFIGURED
        .get_or_init(|| {
            use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig, cache::CacheConfig};
            let root = cache_root().map_err(|e| format!("{e:#}"))?;
            // What a cubecl.toml and the CUBECL_* variables say, as cubecl itself would load it.
            let mut config = CubeClRuntimeConfig::from_current_dir().override_from_env();
            config.environment.path = CacheConfig::Directory(root);
            config.compilation.cache = true;
            if !CubeClRuntimeConfig::try_set(config) {
                eprintln!(
                    "warning: cubecl was configured before barlow could set its cache directory; \
                     kernels are cached in {}",
                    cubecl::environment::path().display()
                );
            }
            Ok(cubecl::environment::path())
        })
        .clone()
        .map_err(|e| anyhow!("setting up the GPU kernel cache: {e}"))
}

/// CUDA device `index`, or an error saying why there is none.
#[cfg(feature = "cuda")]
pub fn cuda(index: usize) -> Result<Device> {
    use burn::tensor::DeviceType;
    configure()?;
    // Asking cubecl to open a device that is not there panics in its runtime thread; counting
    // first only tries to load the driver library.
    let found = Device::enumerate(DeviceType::Cuda).into_vec().len();
    if found == 0 {
        bail!(
            "no CUDA device found: the NVIDIA driver (libcuda.so.1) is not installed or sees no GPU \
             (`nvidia-smi` lists what it sees)"
        );
    }
    if index >= found {
        bail!("cuda:{index} asked for, but the driver sees {found} CUDA device(s): cuda:0 to cuda:{}", found - 1);
    }
    started("cuda", Device::cuda(index))
}

/// The wgpu runtime on its preferred adapter (a high-power GPU first), or an error saying why
/// none could be opened. Initialised once per process.
#[cfg(feature = "wgpu")]
pub fn wgpu() -> Result<Device> {
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    configure()?;
    DEVICE
        .get_or_init(|| match Device::wgpu_options().init() {
            Ok(device) => started("wgpu", device).map_err(|e| format!("{e:#}")),
            Err(e) => Err(format!(
                "no wgpu adapter could be opened ({e}). On Linux, wgpu needs a Vulkan loader \
                 (libvulkan.so.1) and the GPU driver's Vulkan ICD; `vulkaninfo --summary` lists \
                 what Vulkan sees"
            )),
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// Runs one tiny operation on a newly chosen device so that a runtime that cannot start (a
/// driver too old for the generated code, say) is an error here rather than a panic in the
/// first training step; then names the device on stderr, since which card a run used matters.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn started(backend: &str, device: Device) -> Result<Device> {
    use burn::tensor::Tensor;
    let probe = device.clone();
    let sum = std::panic::catch_unwind(move || Tensor::<1>::ones([4], &probe).sum().into_scalar::<f32>());
    match sum {
        Ok(s) if s == 4.0 => {}
        Ok(s) => bail!("{backend}: the device computed 1+1+1+1 = {s}; its runtime is broken"),
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            bail!("{backend}: the GPU runtime failed to start ({why}); see the messages above")
        }
    }
    match device.identity() {
        Some(id) => eprintln!("{backend}: {} ({})", id.name, id.fingerprint),
        None => eprintln!("{backend}: device started"),
    }
    Ok(device)
}
