//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod workers;

use burn::tensor::{DType, Device, Tensor, TensorData};
use std::path::PathBuf;

/// The default backend's device, with autodiff; `BARLOW_TEST_BACKEND` names another (`tch`
/// in a `--features tch` build runs the same tests on LibTorch).
pub fn device() -> Device {
    plain_device().autodiff()
}

/// [`device`] without autodiff: where optimisers do their arithmetic.
pub fn plain_device() -> Device {
    let name = std::env::var("BARLOW_TEST_BACKEND").unwrap_or_else(|_| "auto".into());
    barlow::backend::device(&name).expect("a backend")
}

/// Seeds the device's random generator and holds it until the guard drops: the generator is
/// one for the whole process, so tests running side by side would otherwise draw from each
/// other's seeds and a seeded test would not repeat.
pub fn seeded(device: &Device, seed: u64) -> std::sync::MutexGuard<'static, ()> {
    static GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    device.seed(seed);
    guard
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Reads every tensor of a safetensors file as (shape, f32 values).
pub fn read_safetensors(path: &PathBuf) -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("valid safetensors");
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (view.shape().to_vec(), values))
        })
        .collect()
}

pub fn tensor2(shape: &[usize], values: &[f32], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values.to_vec(), [shape[0], shape[1]]), device)
}

pub fn tensor2_f64(shape: [usize; 2], values: Vec<f64>, device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), (device, DType::F64))
}

pub fn to_vec(t: Tensor<2>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_into_vec::<f32>().unwrap()
}

/// max |a−b| / (|b| + floor), elementwise.
pub fn max_rel_err(a: &[f32], b: &[f32], floor: f32) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() / (y.abs() + floor)).fold(0.0, f32::max)
}

/// The python interpreter with torch and torchvision: `$BARLOW_TORCH_PYTHON`, `.venv-ref`, or none.
pub fn torch_python() -> Option<std::path::PathBuf> {
    let candidates = [
        std::env::var_os("BARLOW_TORCH_PYTHON").map(Into::into),
        Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-ref/bin/python")),
    ];
    candidates.into_iter().flatten().find(|p: &std::path::PathBuf| {
        std::process::Command::new(p)
            .args(["-c", "import torch, torchvision, safetensors"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Every tensor of the model in a run directory's checkpoint — encoder, heads, momentum network
/// and queue — as safetensors bytes (the checkpoint file itself also holds random parameter ids).
pub fn checkpoint_weights(out: &std::path::Path) -> Vec<u8> {
    use burn::store::{ModuleSnapshot, SafetensorsStore};
    let device = barlow::backend::device("auto").unwrap();
    let (_, model) = barlow::store::checkpoint::load_model(&out.join("checkpoint.bin"), &device).unwrap();
    // Named as the checkpoint names them: without the method's variant.
    let mut store = SafetensorsStore::from_bytes(None).skip_enum_variants(true);
    model.save_into(&mut store).unwrap();
    store.get_bytes().unwrap()
}
