//! [`Kernels`] on burn's `Flex` CPU backend: f32 tensors go to our kernels, anything else
//! (other dtypes, grouped convolutions) to burn's own ops.

use super::batch_norm::{self, BnShape};
use super::conv::{self, ConvShape};
use super::elementwise;
use super::Kernels;
use crate::collective::ChannelSync;
use burn::backend::{DType, TensorMetadata};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::Flex;
use burn::backend::ops::{ActivationOps, ConvOptions, FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Bytes, Shape};

fn is_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// The values of a tensor in row-major order (a copy only when it is a strided view).
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) if t.is_contiguous() => std::borrow::Cow::Borrowed(v),
        _ => std::borrow::Cow::Owned(t.to_contiguous().storage::<f32>().to_vec()),
    }
}

fn tensor(values: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape.into()), DType::F32)
}

fn conv_shape(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> Option<ConvShape> {
    let ([n, c_in, h, w], [c_out, c_in_w, kh, kw]) = (x.shape().dims(), weight.shape().dims());
    (options.groups == 1 && c_in == c_in_w).then_some(ConvShape {
        n,
        c_in,
        h,
        w,
        c_out,
        kh,
        kw,
        stride: options.stride,
        padding: options.padding,
        dilation: options.dilation,
    })
}

fn bn_shape(x: &FlexTensor) -> BnShape {
    let shape = x.shape();
    BnShape { n: shape[0], c: shape[1], s: shape.num_elements() / (shape[0] * shape[1]).max(1) }
}

impl Kernels for Flex {
    fn conv2d_forward(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        match conv_shape(&x, &weight, &options).filter(|_| is_f32(&[&x, &weight])) {
            Some(s) => tensor(conv::forward(&values(&x), &values(&weight), &s), [s.n, s.c_out, s.out_h(), s.out_w()]),
            None => Flex::conv2d(x, weight, None, options),
        }
    }

    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match conv_shape(&x, &weight, &options).filter(|_| is_f32(&[&x, &weight, &output_grad])) {
            Some(s) => tensor(conv::input_grad(&values(&output_grad), &values(&weight), &s), x.shape()),
            None => Flex::conv2d_x_backward(x, weight, output_grad, options),
        }
    }

    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        match conv_shape(&x, &weight, &options).filter(|_| is_f32(&[&x, &weight, &output_grad])) {
            Some(s) => tensor(conv::weight_grad(&values(&x), &values(&output_grad), &s), weight.shape()),
            None => Flex::conv2d_weight_backward(x, weight, output_grad, options),
        }
    }

    fn add_relu(a: FloatTensor<Self>, b: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&a, &b]) || a.shape() != b.shape() {
            return Flex::relu(Flex::float_add(a, b));
        }
        let (va, vb) = (values(&a), values(&b));
        tensor(elementwise::add_relu(&va, &vb), a.shape())
    }

    fn relu_grad(output: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if !is_f32(&[&output, &grad]) || output.shape() != grad.shape() {
            return Flex::relu_backward(output, grad);
        }
        tensor(elementwise::relu_grad(&values(&output), &values(&grad)), grad.shape())
    }

    fn batch_norm_forward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        sync: Option<ChannelSync>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !is_f32(&[&x, &gamma, &beta]) {
            assert!(sync.is_none(), "synchronised BatchNorm needs f32 on the CPU");
            let r = Flex::batch_norm_train(x, gamma, beta, epsilon);
            let output = if relu { Flex::relu(r.output) } else { r.output };
            return (output, r.mean, r.variance);
        }
        let sh = bn_shape(&x);
        let (y, mean, var) =
            batch_norm::forward(&values(&x), &values(&gamma), &values(&beta), epsilon, sh, relu, sync.as_deref());
        (tensor(y, x.shape()), tensor(mean, [sh.c]), tensor(var, [sh.c]))
    }

    fn batch_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        variance: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
        output: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        sync: Option<ChannelSync>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !is_f32(&[&x, &gamma, &mean, &variance, &output, &output_grad]) {
            assert!(sync.is_none(), "synchronised BatchNorm needs f32 on the CPU");
            let grad = if relu { Flex::relu_backward(output, output_grad) } else { output_grad };
            let r = Flex::batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad);
            return (r.x_grad, r.gamma_grad, r.beta_grad);
        }
        let sh = bn_shape(&x);
        let output = relu.then(|| values(&output));
        let (dx, dgamma, dbeta) = batch_norm::backward(
            &values(&x),
            &values(&gamma),
            &values(&mean),
            &values(&variance),
            epsilon,
            &values(&output_grad),
            output.as_deref(),
            sh,
            sync.as_deref(),
        );
        (tensor(dx, x.shape()), tensor(dgamma, [sh.c]), tensor(dbeta, [sh.c]))
    }
}
