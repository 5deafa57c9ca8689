//! The self-supervised methods, one file each, over one trainer.
//!
//! A method's file owns everything that makes it that method ([`SelfSupervised`]): its
//! settings with their defaults and checks, its heads, its forward pass over the views and its
//! loss, how that loss crosses processes, its extra state (momentum network, queue, centre) and what it
//! does after a step, and its row of the comparison table. The list below is the registry: one
//! line per method, from which [`Method`] (its name), [`Settings`], [`Model`] and [`Carry`] are
//! made. The trainer, checkpoints, the kNN monitor, evaluation, export and plots see only these.

pub mod batchwide;
mod heads;
pub mod method;
pub mod momentum;
mod registry;

pub use batchwide::{Batchwide, Reduce};
pub use method::{Crops, Crossing, MethodSettings, Plot, SelfSupervised, Setup, Stage, Traits};

use crate::loss::Loss;
use crate::model::{ResNet, ResNetConfig};
use burn::module::Module;
use burn::tensor::{Device, Tensor};
use registry::registry;

registry! {
    barlow::BarlowTwins => Barlow,
    simclr::SimClr => Simclr,
    moco::MocoV2 => Moco,
    byol::Byol => Byol,
    simsiam::SimSiam => Simsiam,
    vicreg::VicReg => Vicreg,
    dino::Dino => Dino,
}

/// Everything a [`Model`] is built from.
#[derive(Clone, Debug)]
pub struct MethodConfig {
    pub encoder: ResNetConfig,
    /// Projector (VICReg: expander) widths; the last is the embedding dimension D.
    pub projector: Vec<usize>,
    pub settings: Settings,
}

impl MethodConfig {
    /// Barlow Twins with `projector` widths and λ.
    pub fn barlow(encoder: ResNetConfig, projector: Vec<usize>, lambda: f64) -> MethodConfig {
        MethodConfig { encoder, projector, settings: Settings::Barlow(barlow::Settings { lambda }) }
    }

    pub fn method(&self) -> Method {
        self.settings.method()
    }

    /// The model, with fresh weights.
    pub fn init(&self, device: &Device) -> Model {
        // The encoder ends at the pooled features: the heads replace `fc`.
        let encoder = self.encoder.clone().with_num_classes(None);
        self.settings.init(&encoder, &self.projector, device)
    }
}
