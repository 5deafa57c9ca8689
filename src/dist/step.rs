//! The training step, for one process and for W: each process forwards its shard, the loss is
//! that of the global batch, and every process applies the same averaged gradients, so the
//! weights stay equal.

use crate::collective::Comm;
use crate::collective::meter::{self, Kind};
use crate::loss::Loss;
use crate::methods::barlow::BarlowLoss;
use crate::methods::{Batchwide, Crops, Crossing, Model};
use crate::ops::modules::synchronised;
use crate::ops::precision::{Precision, autocast};
use crate::train::Progress;
use anyhow::{Context, Result};
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::store::{BurnpackStore, ModuleSnapshot};
use burn::tensor::{DType, Device, Tensor, TensorData};

/// How a step computes besides the method: the precision of convolutions and matrix products
/// (`train.precision`; the weights and the optimiser stay f32) and the factor on the loss before
/// backward (`model.scale_loss`), which the logged loss carries too, as solo-learn logs it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arithmetic {
    pub precision: Precision,
    pub scale_loss: f64,
}

impl From<Precision> for Arithmetic {
    fn from(precision: Precision) -> Arithmetic {
        Arithmetic { precision, scale_loss: 1.0 }
    }
}

/// The training step, for one process and for W: on this process's share of a batch of views
/// (`n×3×H×W` each, on the model's autodiff device), the method's loss of the global batch
/// (times `model.scale_loss`), its gradients averaged over the processes, the update at the
/// schedule's learning-rate factor `at.lr`, then the method's own state (momentum network,
/// queue, centre).
///
/// How the loss crosses processes is the method's ([`Crossing`]): a `Global` method computes
/// the global batch's loss on every process through [`Batchwide`]'s collectives; a
/// `ShardMean` method's shard means, averaged, are the global mean, its BatchNorm synchronised
/// throughout with `sync_bn` (the papers' SyncBN), and its logged loss is that global mean.
pub fn train_step(batch: &Batchwide, model: Model, optim: &mut ModuleOptimizer, crops: Crops, arithmetic: impl Into<Arithmetic>,
    at: Progress) -> (Model, Loss) {
    let Arithmetic { precision, scale_loss } = arithmetic.into();
    let crossing = model.method().crossing();
    let forward = || autocast(precision, || model.forward(&crops, batch, at.stage()));
    let (loss, carry) = match crossing {
        Crossing::Global => forward(),
        Crossing::ShardMean => synchronised(batch.encoder_sync(), forward),
    };
    let loss = loss.scaled(scale_loss);
    let grads = average_gradients(GradientsParams::from_grads(loss.total.backward(), &model), &model, &batch.comm);
    let grads = model.adjust_gradients(grads, at.stage());
    let model = optim.step(at.lr, model, grads);
    let global = |t| batch.mean(t);
    let loss = match crossing {
        Crossing::Global => loss,
        Crossing::ShardMean => Loss { total: global(loss.total), terms: loss.terms.into_iter().map(|(n, t)| (n, global(t))).collect() },
    };
    (model.after_step(carry, at.stage()), loss)
}

/// Barlow Twins' loss and C of the global batch, and the parameter gradients averaged over the
/// processes (the same on every process), from this process's two views.
pub fn barlow_gradients(batch: &Batchwide, model: &Model, y1: Tensor<4>, y2: Tensor<4>, precision: Precision)
    -> (BarlowLoss, Tensor<2>, GradientsParams) {
    let Model::Barlow(twins) = model else { panic!("Barlow Twins' gradients of a {} model", model.method()) };
    let (loss, c) = autocast(precision, || twins.correlation(&Crops::pair(y1, y2), batch));
    let grads = GradientsParams::from_grads(loss.total.backward(), model);
    (loss, c, average_gradients(grads, model, &batch.comm))
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
