//! Each method's settings in `[model]`: the paper's values filled in where a config leaves them
//! out, and the settings of other methods refused.

use super::{Method, Setting};
use crate::config::ModelConfig;
use crate::methods;
use anyhow::{Context, Result, bail};

impl ModelConfig {
    /// Fills in the settings of the method that the config leaves out (the paper's values), and
    /// refuses settings of other methods.
    pub(crate) fn resolve(&mut self) -> Result<()> {
        let method = self.method;
        methods::check_settings(method, &[
            Setting { key: "predictor", given: self.predictor.is_some() },
            Setting { key: "lambda", given: self.lambda.is_some() },
            Setting { key: "temperature", given: self.temperature.is_some() },
            Setting { key: "queue", given: self.queue.is_some() },
            Setting { key: "symmetric", given: self.symmetric.is_some() },
            Setting { key: "ema", given: self.ema.is_some() },
            Setting { key: "invariance", given: self.invariance.is_some() },
            Setting { key: "variance", given: self.variance.is_some() },
            Setting { key: "covariance", given: self.covariance.is_some() },
        ])?;
        let vicreg = methods::vicreg::Weights::default();
        let d = *self.projector.last().context("model.projector needs a layer")?;
        match method {
            Method::Barlow => _ = self.lambda.get_or_insert(methods::barlow::LAMBDA),
            Method::Simclr => _ = self.temperature.get_or_insert(methods::simclr::TEMPERATURE),
            Method::Moco => {
                self.temperature.get_or_insert(methods::moco::TEMPERATURE);
                self.queue.get_or_insert(methods::moco::QUEUE);
                self.symmetric.get_or_insert(false);
                self.ema.get_or_insert(methods::moco::EMA);
            }
            Method::Byol => {
                self.predictor.get_or_insert(vec![methods::byol::PREDICTOR_HIDDEN, d]);
                self.ema.get_or_insert(methods::byol::EMA);
            }
            Method::Simsiam => _ = self.predictor.get_or_insert(vec![methods::simsiam::PREDICTOR_HIDDEN, d]),
            Method::Vicreg => {
                self.invariance.get_or_insert(vicreg.invariance);
                self.variance.get_or_insert(vicreg.variance);
                self.covariance.get_or_insert(vicreg.covariance);
            }
        }
        if let Some(p) = &self.predictor
            && p.last() != Some(&d)
        {
            bail!("model.predictor = {p:?} must end at the projector's width {d} (model.projector = {:?})", self.projector);
        }
        Ok(())
    }
}
