//! What barlow keeps on disk and reads back as weights: a run's checkpoint, encoders under
//! torchvision's names (safetensors and PyTorch files, the latter's pickle checked first), and the
//! encoder a `--weights` or `--init` file gives.

pub mod checkpoint;
pub mod pickle;
pub mod torchvision;
pub mod weights;
