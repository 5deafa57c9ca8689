//! Momentum networks: a copy of online modules (MoCo's and BYOL's encoder and projector, DINO's
//! teacher) that takes no gradient and follows them after every step, ξ ← τ·ξ + (1 − τ)·θ.
//!
//! τ goes from a base to a final value by a cosine over training (BYOL's schedule, solo-learn's
//! `MomentumUpdater`); MoCo v2's constant m is base = final. Only parameters follow the online
//! network — the BatchNorm running statistics are the momentum network's own, from its own
//! forward passes, as in the references (which zip `parameters()`, not buffers).

use crate::config::range::Range;
use crate::model::{Projector, ResNet};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;
use std::collections::VecDeque;

/// `model.ema`: τ of a momentum network.
pub const TAU: Range = Range::closed(0.0, 1.0);

/// The momentum encoder and projector (MoCo's key encoder, BYOL's target network).
#[derive(Module, Debug)]
pub struct Momentum {
    pub backbone: ResNet,
    pub projector: Projector,
    /// τ at the first step and at the last.
    #[module(skip)]
    pub tau: [f64; 2],
}

impl Momentum {
    /// A copy of the online `backbone` and `projector` (weights and running statistics) that
    /// requires no gradient and has parameter ids of its own.
    pub fn copy_of(backbone: &ResNet, projector: &Projector, tau: [f64; 2]) -> Momentum {
        fresh_copy(&Momentum { backbone: backbone.clone(), projector: projector.clone(), tau })
    }

    /// The momentum network's projection of `images`, with no gradient. BatchNorm runs in
    /// training mode (batch statistics), as the references' key and target networks do.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.projector.forward(self.backbone.forward(images)).detach()
    }

    /// One step towards the online network after optimisation step `step` (0-based) of `total`.
    pub fn follow(self, backbone: &ResNet, projector: &Projector, step: usize, total: usize) -> Momentum {
        let online = Online::default().read(backbone).read(projector);
        let tau_now = tau(self.tau, step, total);
        let (backbone, online) = online.move_towards(self.backbone, tau_now);
        let (projector, online) = online.move_towards(self.projector, tau_now);
        assert!(online.is_empty(), "the momentum network has the online network's shape");
        Momentum { backbone, projector, tau: self.tau }
    }
}

/// A copy of `module` (weights and running statistics) that requires no gradient and has
/// parameter ids of its own.
pub fn fresh_copy<M: Module>(module: &M) -> M {
    // `valid()` then `train()` gives tensors and running-statistics cells of its own (a plain
    // clone would share the running statistics with the online network).
    module.valid().train().no_grad().map(&mut FreshIds)
}

/// The online network's parameters (not its running statistics), flattened, in visiting order:
/// what a momentum copy of it moves towards.
#[derive(Default)]
pub struct Online {
    values: VecDeque<Tensor<1>>,
}

impl Online {
    /// These parameters followed by `module`'s.
    pub fn read<M: Module>(mut self, module: &M) -> Online {
        let mut floats = Floats::default();
        module.visit(&mut floats);
        self.values.extend(floats.values);
        self
    }

    /// `target` one EMA step (ξ ← τ·ξ + (1 − τ)·θ) towards the next parameters, of its shapes.
    pub fn move_towards<M: Module>(mut self, target: M, tau: f64) -> (M, Online) {
        let mut mapper = Follow { leaf: String::new(), online: &mut self.values, tau };
        // Mapped parameters come back tracked by autodiff: without `no_grad` every forward of the
        // momentum network would record graph nodes that no backward ever consumes (memory that
        // grows per step, and under MPI the communicator they hold, so MPI never finalises).
        let moved = target.map(&mut mapper).no_grad();
        (moved, self)
    }

    /// Whether every parameter read has been followed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// τ after step `k` of `total`: τ_k = τ_end − (τ_end − τ_base)·(cos(πk/K) + 1)/2 (BYOL, eq. in §3.2).
pub fn tau([base, end]: [f64; 2], step: usize, total: usize) -> f64 {
    let t = step.min(total) as f64 / total.max(1) as f64;
    end - (end - base) * ((std::f64::consts::PI * t).cos() + 1.0) / 2.0
}

/// ξ ← τ·ξ + (1 − τ)·θ, as solo-learn's `MomentumUpdater.update` and MoCo's
/// `_momentum_update_key_encoder` compute it.
pub fn ema<const D: usize>(target: Tensor<D>, online: Tensor<D>, tau: f64) -> Tensor<D> {
    target.mul_scalar(tau) + online.mul_scalar(1.0 - tau)
}

fn is_running_stat(leaf: &str) -> bool {
    matches!(leaf, "running_mean" | "running_var")
}

/// The online parameters (not the running statistics), flattened, in visiting order.
#[derive(Default)]
struct Floats {
    leaf: String,
    values: Vec<Tensor<1>>,
}

impl ModuleVisitor for Floats {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.leaf = name.to_string();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if !is_running_stat(&self.leaf) {
            self.values.push(param.val().detach().flatten(0, D - 1));
        }
    }
}

/// Moves each momentum parameter towards its online twin, visited in the same order.
struct Follow<'a> {
    leaf: String,
    online: &'a mut VecDeque<Tensor<1>>,
    tau: f64,
}

impl ModuleMapper for Follow<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.leaf = name.to_string();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if is_running_stat(&self.leaf) {
            return param;
        }
        let online = self.online.pop_front().expect("the momentum network has the online network's shape");
        let tau = self.tau;
        param.map(|target| {
            let shape = target.shape();
            ema(target, online.reshape(shape), tau)
        })
    }
}

/// Gives every parameter a new id, so that the optimiser never mistakes one for its online twin.
struct FreshIds;

impl ModuleMapper for FreshIds {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (_, value, mapper) = param.consume();
        Param::from_mapped_value(ParamId::new(), value, mapper)
    }
}
