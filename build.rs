//! Compiles barlow's LibTorch kernels (`src/ops/libtorch.cpp`) when the `tch` feature is on,
//! against the libtorch that torch-sys found (it reports its library directory to us).

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    #[cfg(feature = "tch")]
    libtorch_kernels();
}

#[cfg(feature = "tch")]
fn libtorch_kernels() {
    println!("cargo:rerun-if-changed=src/ops/libtorch.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_INCLUDE");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let lib = std::path::PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report libtorch's library directory (it does on Linux and macOS, where the tch feature builds)"),
    );
    // Both a libtorch download and a PyTorch wheel keep `include/` beside `lib/`.
    let root = match std::env::var("LIBTORCH_INCLUDE") {
        Ok(dir) => std::path::PathBuf::from(dir),
        Err(_) => lib.parent().expect("libtorch's lib directory has a parent").to_path_buf(),
    };
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("src/ops/libtorch.cpp")
        .compile("barlow_libtorch");
}
