//! The data-parallel training step: each worker forwards its shard, the loss is that of the
//! global batch, and every worker applies the same averaged gradients, so the weights stay equal.

use super::loss::{Reduce, cross_correlation};
use crate::collective::ChannelSync;
use crate::collective::Comm;
use crate::collective::meter::{self, Kind};
use crate::collective::tensor::{all_gather, all_reduce_sum};
use crate::loss::Loss;
use crate::methods::barlow::{BarlowLoss, barlow_loss_from_c};
use crate::methods::{Model, Objective, StepState};
use crate::ops::modules::synchronised;
use crate::ops::precision::{Precision, autocast};
use crate::train::Progress;
use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{DType, Device, Tensor, TensorData};

/// How a data-parallel step computes the global batch's loss.
#[derive(Clone, Debug)]
pub struct Parallel {
    pub comm: Comm,
    /// Encoder BatchNorm over the global batch too (the projector's always is).
    pub sync_bn: bool,
    pub reduce: Reduce,
}

impl Parallel {
    pub fn new(comm: Comm, sync_bn: bool) -> Parallel {
        Parallel { comm, sync_bn, reduce: Reduce::Differentiable }
    }

    /// What BatchNorm layers synchronise through: nothing in a one-process job, which then runs
    /// exactly the one-process code.
    fn sync(&self) -> Option<ChannelSync> {
        (self.comm.size() > 1).then(|| self.comm.clone() as ChannelSync)
    }

    /// Projector outputs `z` (`n×D`) of this worker's images, BatchNorm as configured.
    pub fn project(&self, model: &Model, images: Tensor<4>) -> Tensor<2> {
        let encoder_sync = if self.sync_bn { self.sync() } else { None };
        let features = synchronised(encoder_sync, || model.backbone.forward(images));
        synchronised(self.sync(), || model.projector.forward(features))
    }

    /// Barlow Twins' loss and C of the global batch, from this worker's two views.
    fn barlow(&self, model: &Model, y1: Tensor<4>, y2: Tensor<4>, precision: Precision, lambda: f64) -> (BarlowLoss, Tensor<2>) {
        let (z_a, z_b) = autocast(precision, || (self.project(model, y1), self.project(model, y2)));
        let c = cross_correlation(z_a, z_b, &self.comm, self.reduce);
        (barlow_loss_from_c(c.clone(), lambda), c)
    }

    /// The global batch's Barlow Twins loss and C, and the parameter gradients averaged over the
    /// workers (the same on every worker), from this worker's two views.
    pub fn gradients(
        &self,
        model: &Model,
        y1: Tensor<4>,
        y2: Tensor<4>,
        precision: Precision,
    ) -> (BarlowLoss, Tensor<2>, GradientsParams) {
        let Objective::Barlow { lambda } = model.objective else { panic!("Barlow Twins' gradients of a {} model", model.method()) };
        let (loss, c) = self.barlow(model, y1, y2, precision, lambda);
        let grads = GradientsParams::from_grads(loss.total.backward(), model);
        (loss, c, average_gradients(grads, model, &self.comm))
    }

    /// Updates `model` on this worker's share of a batch of two views (`n×3×H×W` each, on the
    /// model's autodiff device), at the schedule's learning-rate factor `at.lr`; convolutions
    /// and matrix products run in `precision` (the weights and the optimiser stay f32). Then the
    /// method's own state is updated (momentum network, queue).
    ///
    /// In a one-process job this is the method's own forward pass, loss and update. With more
    /// workers, each method's loss is one whose gradient, averaged over the workers, is the
    /// global batch's:
    /// - Barlow Twins: C summed over the workers (see [`cross_correlation`]);
    /// - SimCLR, VICReg: every worker gathers all projections and computes the global batch's
    ///   loss (SimCLR's negatives, VICReg's variance and covariance); the gather's backward sums
    ///   the gradient over the workers, as the sum of C does;
    /// - BYOL, SimSiam, MoCo, whose loss is a mean over the images: each worker's shard mean;
    ///   with `sync_bn` every BatchNorm (encoder, heads, momentum network) runs over the global
    ///   batch (the papers' SyncBN), else over each shard. The returned loss is the global mean
    ///   (a detached sum over the workers, for the log). MoCo's queue takes every worker's keys
    ///   in rank order (its `concat_all_gather`), so all workers hold the one process's queue.
    ///
    /// BatchNorm elsewhere as in [`Parallel::project`].
    pub fn train_step(&self, model: Model, optim: &mut ModuleOptimizer, views: [Tensor<4>; 2], precision: Precision, at: Progress)
        -> (Model, Loss) {
        let [y1, y2] = views;
        let single = self.comm.size() == 1;
        let shard_mean = !single && matches!(model.objective, Objective::Byol | Objective::Simsiam | Objective::Moco { .. });
        let (loss, state) = match model.objective {
            _ if single => autocast(precision, || model.forward_step(y1, y2)),
            Objective::Barlow { lambda } => (self.barlow(&model, y1, y2, precision, lambda).0.into(), StepState::none()),
            Objective::Simclr { .. } | Objective::Vicreg(_) => {
                let (z_a, z_b) = autocast(precision, || (self.project(&model, y1), self.project(&model, y2)));
                let (z_a, z_b) = (all_gather(z_a, &self.comm), all_gather(z_b, &self.comm));
                (model.loss_of_projections(z_a, z_b).expect("SimCLR's and VICReg's loss"), StepState::none())
            }
            Objective::Byol | Objective::Simsiam | Objective::Moco { .. } => {
                let sync = if self.sync_bn { self.sync() } else { None };
                let (loss, state) = synchronised(sync, || autocast(precision, || model.forward_step(y1, y2)));
                (loss, state.map_keys(|keys| gather_keys(keys, &self.comm)))
            }
        };
        let grads = average_gradients(GradientsParams::from_grads(loss.total.backward(), &model), &model, &self.comm);
        let model = optim.step(at.lr, model, grads);
        let loss = match shard_mean {
            true => {
                let workers = self.comm.size() as f64;
                let global = |t: Tensor<1>| all_reduce_sum(t.detach(), &self.comm) / workers;
                Loss { total: global(loss.total), terms: loss.terms.into_iter().map(|(n, t)| (n, global(t))).collect() }
            }
            false => loss,
        };
        (model.after_step(state, at.step, at.total), loss)
    }
}

/// Every worker's keys (`views × n × D` each) as one global batch in rank order
/// (`views × W·n × D`), in one all-gather.
fn gather_keys(keys: Tensor<3>, comm: &Comm) -> Tensor<3> {
    if comm.size() == 1 {
        return keys;
    }
    let [views, n, d] = keys.dims();
    let rows = keys.detach().swap_dims(0, 1).reshape([n, views * d]);
    let all = all_gather(rows, comm);
    all.reshape([comm.size() * n, views, d]).swap_dims(0, 1)
}

/// Replaces every parameter gradient by its mean over the workers, in one all-reduce.
///
/// Every worker computes the same (replicated) loss, and the differentiable sums make each
/// worker's gradient its share of the gradient of Σ_workers loss = W·loss: the sum over workers
/// divided by W is the gradient of one process holding the global batch.
pub fn average_gradients<M: Module>(mut grads: GradientsParams, module: &M, comm: &Comm) -> GradientsParams {
    if comm.size() == 1 {
        return grads;
    }
    let mut taken = Take { grads: &mut grads, flat: vec![], parts: vec![] };
    module.visit(&mut taken);
    let (mut flat, parts) = (taken.flat, taken.parts);
    comm.all_reduce_f32(&mut flat);
    let scale = 1.0 / comm.size() as f32;
    let mut offset = 0;
    for part in parts {
        let len = part.shape.iter().product::<usize>();
        let values: Vec<f32> = flat[offset..offset + len].iter().map(|v| v * scale).collect();
        offset += len;
        let data = TensorData::new(values, part.shape.clone()).convert_dtype(part.dtype);
        part.register(&mut grads, data);
    }
    grads
}

/// One parameter's gradient taken out for the all-reduce.
struct Part {
    id: burn::module::ParamId,
    shape: Vec<usize>,
    dtype: DType,
    device: Device,
    dims: usize,
}

impl Part {
    fn register(&self, grads: &mut GradientsParams, data: TensorData) {
        fn put<const D: usize>(grads: &mut GradientsParams, p: &Part, data: TensorData) {
            grads.register::<D>(p.id, Tensor::from_data(data, &p.device));
        }
        match self.dims {
            1 => put::<1>(grads, self, data),
            2 => put::<2>(grads, self, data),
            3 => put::<3>(grads, self, data),
            4 => put::<4>(grads, self, data),
            d => unreachable!("a {d}-dimensional parameter"),
        }
    }
}

struct Take<'a> {
    grads: &'a mut GradientsParams,
    flat: Vec<f32>,
    parts: Vec<Part>,
}

impl ModuleVisitor for Take<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // BatchNorm running statistics and frozen parameters have no gradient.
        let Some(grad) = self.grads.remove::<D>(param.id) else { return };
        let (shape, dtype, device) = (grad.dims().to_vec(), grad.dtype(), grad.device());
        let values = meter::time(Kind::Staging, shape.iter().product::<usize>() * 4, || {
            grad.into_data().convert::<f32>().try_into_vec::<f32>().expect("f32 gradient values")
        });
        self.flat.extend_from_slice(&values);
        self.parts.push(Part { id: param.id, shape, dtype, device, dims: D });
    }
}

/// `module` as rank `root` has it, on every rank (weights, BatchNorm statistics and parameter
/// ids, so that optimiser state keyed by id applies alike everywhere).
pub fn broadcast_module<M: Module>(module: M, comm: &Comm, root: usize) -> Result<M> {
    if comm.size() == 1 {
        return Ok(module);
    }
    let mut bytes = match comm.rank() == root {
        true => {
            let mut store = BurnpackStore::from_bytes(None);
            module.valid().save_into(&mut store).context("serialising the model for the broadcast")?;
            store.get_bytes().context("serialising the model for the broadcast")?.to_vec()
        }
        false => vec![],
    };
    comm.broadcast(&mut bytes, root);
    if comm.rank() == root {
        return Ok(module);
    }
    let mut module = module;
    let mut store = BurnpackStore::from_bytes(Some(burn::tensor::Bytes::from_bytes_vec(bytes)));
    let result = module.load_from(&mut store).context("loading the model broadcast by rank 0")?;
    anyhow::ensure!(result.errors.is_empty() && result.missing.is_empty(), "the model broadcast by rank 0 does not fit: {result}");
    Ok(module)
}
