//! GPU builds (`--features cuda` / `wgpu`): where the kernel cache lives, and what a machine
//! without the GPU says. Compiled only in such builds; none of it needs a GPU to run.
#![cfg(feature = "cubecl")]

use std::process::Command;

/// One process of its own, so that nothing has configured cubecl before the test does.
#[test]
fn the_kernel_cache_lives_in_barlows_cache_directory() {
    use cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: this test binary runs this one test, on its own thread, before any other reads.
    unsafe { std::env::set_var("BARLOW_CACHE", dir.path()) };
    let db = barlow::gpu::configure().unwrap();
    assert_eq!(db, dir.path().join("cubecl").join("default.db"));
    assert!(CubeClRuntimeConfig::get().compilation.cache, "compiled kernels are cached too");
    assert_eq!(barlow::gpu::configure().unwrap(), db, "configured once");
    assert_eq!(barlow::backend::kernel_cache(), Some(db));
}

/// A GPU backend either works or says what is missing; it must not panic in a runtime thread.
#[test]
fn a_missing_gpu_is_a_clear_error() {
    let mut backends = vec![];
    if cfg!(feature = "cuda") {
        backends.push(("cuda", "no CUDA device found"));
    }
    if cfg!(feature = "wgpu") {
        backends.push(("wgpu", "no wgpu adapter could be opened"));
    }
    for (backend, missing) in backends {
        let out = Command::new(env!("CARGO_BIN_EXE_barlow"))
            .args(["bench", "step", "--backend", backend, "--width", "8", "--projector", "64-64", "--batch", "8",
                "--size", "16", "--steps", "1"])
            .env("BARLOW_CACHE", tempfile::tempdir().unwrap().path())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        match out.status.success() {
            true => eprintln!("{backend} has a device here: {text}"),
            false => assert!(
                text.contains(missing) && !text.contains("panicked"),
                "{backend} on a machine without it: {text}"
            ),
        }
    }
}
