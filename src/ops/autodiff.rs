//! [`Kernels`] under autodiff: the forward runs on the inner backend and records one backward
//! step that calls the inner backend's gradient kernels.

use super::{Kernels, Running};
use crate::collective::ChannelSync;
use burn::backend::autodiff::{Autodiff, NodeId};
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::{Backend, TensorMetadata};
use burn::backend::ops::ConvOptions;
use burn::backend::tensor::FloatTensor;
use burn::tensor::FloatDType;

type Primitive<B> = <B as burn::backend::BackendTypes>::FloatTensorPrimitive;

#[derive(Debug)]
struct Conv2dBackward;

impl<B: Backend + Kernels> Backward<B, 2> for Conv2dBackward {
    type State = (NodeId, NodeId, ConvOptions<2>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, options) = ops.state;
        let x = checkpointer.retrieve_node_output::<Primitive<B>>(x);
        let weight = checkpointer.retrieve_node_output::<Primitive<B>>(weight);
        if let Some(node) = node_x {
            let dx = B::conv2d_input_grad(x.clone(), weight.clone(), grad.clone(), options.clone());
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_weight {
            grads.register::<B>(node.id, B::conv2d_weight_grad(x, weight, grad, options));
        }
    }
}

#[derive(Debug)]
struct BatchNormBackward;

impl<B: Backend + Kernels> Backward<B, 3> for BatchNormBackward {
    /// Input and gamma (checkpointed), mean, the inner backend's saved spread, epsilon, fused
    /// ReLU, the output (for the ReLU's mask) and the synchronisation.
    type State = (NodeId, NodeId, Primitive<B>, Primitive<B>, f64, bool, Primitive<B>, Option<ChannelSync>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, gamma, mean, saved, epsilon, relu, output, sync) = ops.state;
        let x = checkpointer.retrieve_node_output::<Primitive<B>>(x);
        let gamma = checkpointer.retrieve_node_output::<Primitive<B>>(gamma);
        let (dx, dgamma, dbeta) = B::batch_norm_backward(x, gamma, mean, saved, epsilon, relu, output, grad, sync);
        for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
            if let Some(node) = node {
                grads.register::<B>(node.id, grad);
            }
        }
    }
}

/// A cast and change of layout: the gradient goes back to the input's dtype (the layout does
/// not matter to it).
#[derive(Debug)]
struct LayoutBackward;

impl<B: Backend> Backward<B, 1> for LayoutBackward {
    type State = FloatDType;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<B>(&ops.node);
        if let Some(node) = &ops.parents[0] {
            grads.register::<B>(node.id, B::float_cast(grad, ops.state));
        }
    }
}

#[derive(Debug)]
struct AddReluBackward;

impl<B: Backend + Kernels> Backward<B, 2> for AddReluBackward {
    /// The output: where it is positive the gradient passes to both summands.
    type State = Primitive<B>;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = B::relu_grad(ops.state, grads.consume::<B>(&ops.node));
        for node in ops.parents.into_iter().flatten() {
            grads.register::<B>(node.id, grad.clone());
        }
    }
}

impl<B: Backend + Kernels, C: CheckpointStrategy> Kernels for Autodiff<B, C> {
    fn conv2d_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        match Conv2dBackward.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let state = (prep.checkpoint(&x), prep.checkpoint(&weight), options.clone());
                let y = B::conv2d_forward(x.into_primitive(), weight.into_primitive(), options);
                prep.finish(state, y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::conv2d_forward(x.into_primitive(), weight.into_primitive(), options)),
        }
    }

    fn channels_last(x: FloatTensor<Self>, dtype: FloatDType) -> FloatTensor<Self> {
        match LayoutBackward.prepare::<C>([x.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let from = x.dtype().into();
                prep.finish(from, B::channels_last(x.into_primitive(), dtype))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::channels_last(x.into_primitive(), dtype)),
        }
    }

    fn upload(like: FloatTensor<Self>, values: &[f32], shape: [usize; 4]) -> FloatTensor<Self> {
        // Images are constants to the gradient.
        FloatTensor::<Self>::new(B::upload(like.into_primitive(), values, shape))
    }

    fn running_update(running: FloatTensor<Self>, batch: FloatTensor<Self>, momentum: f64, scale: f64) -> FloatTensor<Self> {
        // Running statistics are constants to the gradient.
        let (running, batch) = (running.into_primitive(), batch.into_primitive());
        FloatTensor::<Self>::new(B::running_update(running, batch, momentum, scale))
    }

    fn batch_norm_variance(saved: FloatTensor<Self>, epsilon: f64) -> FloatTensor<Self> {
        FloatTensor::<Self>::new(B::batch_norm_variance(saved.into_primitive(), epsilon))
    }

    fn add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        match AddReluBackward.prepare::<C>([a.node(), b.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let y = B::add_relu(a.into_primitive(), b.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::add_relu(a.into_primitive(), b.into_primitive())),
        }
    }

    fn batch_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        sync: Option<ChannelSync>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let forward = |x, gamma, beta, sync| {
            let (y, mean, saved) = B::batch_norm_forward(x, gamma, beta, epsilon, relu, sync);
            (y, mean, saved, ())
        };
        let (y, mean, saved, ()) = record_batch_norm::<B, C, ()>(x, gamma, beta, epsilon, relu, sync, forward);
        (y, mean, saved)
    }

    fn batch_norm_forward_running(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        running: Running<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>, Running<Self>) {
        let Running { mean: running_mean, var: running_var, momentum, unbiased } = running;
        let inner = Running { mean: running_mean.into_primitive(), var: running_var.into_primitive(), momentum, unbiased };
        let forward = |x, gamma, beta, _| B::batch_norm_forward_running(x, gamma, beta, epsilon, relu, inner);
        let (y, mean, saved, moved) = record_batch_norm::<B, C, Running<B>>(x, gamma, beta, epsilon, relu, None, forward);
        // Running statistics are constants to the gradient.
        let moved = Running { mean: FloatTensor::<Self>::new(moved.mean), var: FloatTensor::<Self>::new(moved.var), momentum, unbiased };
        (y, mean, saved, moved)
    }
}

/// `(output, mean, saved, rest)` of [`record_batch_norm`].
type BatchNormOutputs<B, C, R> = (FloatTensor<Autodiff<B, C>>, FloatTensor<Autodiff<B, C>>, FloatTensor<Autodiff<B, C>>, R);

/// A training-mode BatchNorm `forward` on the inner backend, recorded as one backward step
/// (when anything before it is tracked); `R` is whatever else the forward returns.
fn record_batch_norm<B: Backend + Kernels, C: CheckpointStrategy, R>(
    x: FloatTensor<Autodiff<B, C>>,
    gamma: FloatTensor<Autodiff<B, C>>,
    beta: FloatTensor<Autodiff<B, C>>,
    epsilon: f64,
    relu: bool,
    sync: Option<ChannelSync>,
    forward: impl FnOnce(Primitive<B>, Primitive<B>, Primitive<B>, Option<ChannelSync>) -> (Primitive<B>, Primitive<B>, Primitive<B>, R),
) -> BatchNormOutputs<B, C, R> {
    // The autodiff tensor type is only nameable through the backend's associated type.
    type AutodiffTensor<B, C> = FloatTensor<Autodiff<B, C>>;
    match BatchNormBackward.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let (x_state, gamma_state) = (prep.checkpoint(&x), prep.checkpoint(&gamma));
            let (y, mean, saved, rest) = forward(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), sync.clone());
            let state = (x_state, gamma_state, mean.clone(), saved.clone(), epsilon, relu, y.clone(), sync);
            (prep.finish(state, y), AutodiffTensor::<B, C>::new(mean), AutodiffTensor::<B, C>::new(saved), rest)
        }
        OpsKind::UnTracked(prep) => {
            let (y, mean, saved, rest) = forward(x.into_primitive(), gamma.into_primitive(), beta.into_primitive(), sync);
            (prep.finish(y), AutodiffTensor::<B, C>::new(mean), AutodiffTensor::<B, C>::new(saved), rest)
        }
    }
}
