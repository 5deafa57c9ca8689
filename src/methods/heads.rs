//! What the methods' heads share: a head of given widths, the encoder drawn after its heads,
//! and the predictor setting of BYOL and SimSiam.

use super::method::Setup;
use crate::config::range::layers;
use crate::model::{ProjectorConfig, ResNet, ResNetConfig};
use anyhow::{Result, bail};
use burn::tensor::Device;

/// A head reading `d_input` features through Linear layers of `sizes`.
pub fn head(d_input: usize, sizes: &[usize]) -> ProjectorConfig {
    ProjectorConfig::new(d_input).with_sizes(sizes.to_vec())
}

/// The encoder and the heads `heads(feature_dim)` builds, with fresh weights. The heads are
/// drawn before the encoder (Barlow Twins' runs have always drawn the projector first).
pub fn draw<H>(encoder: &ResNetConfig, heads: impl FnOnce(usize) -> H, device: &Device) -> (ResNet, H) {
    let heads = heads(encoder.feature_dim());
    (encoder.init(device), heads)
}

/// The predictor's widths: the paper's `[hidden, D]` where the config leaves them out.
pub fn resolve_predictor(predictor: &mut Option<Vec<usize>>, hidden: usize, d: usize) {
    predictor.get_or_insert(vec![hidden, d]);
}

/// A predictor's widths in range and ending at the projector's width D.
pub fn check_predictor(predictor: &Option<Vec<usize>>, run: &Setup) -> Result<()> {
    let Some(p) = predictor else { return Ok(()) };
    layers("model.predictor", p)?;
    if p.last() != Some(&run.d()) {
        bail!("model.predictor = {p:?} must end at the projector's width {} (model.projector = {:?})", run.d(), run.projector);
    }
    Ok(())
}
