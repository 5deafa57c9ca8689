//! barlow's LibTorch kernels (src/ops/libtorch.rs: PyTorch's own convolution gradients and
//! BatchNorm) against burn's generic ops on the same backend, through autodiff as a training
//! step runs them. Only in `--features tch` builds, run with libtorch on the library path
//! (DEVELOPERS.md, "LibTorch").
#![cfg(feature = "tch")]

#[path = "common/kernel_cases.rs"]
mod kernel_cases;

use barlow::ops;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, FloatDType, Tensor, TensorData};
use kernel_cases::{BN_CASES, CONV_CASES, ConvCase, pseudo_random, rel_diff};

#[allow(deprecated)]
fn device() -> Device {
    Device::libtorch().autodiff()
}

fn tensor<const D: usize>(data: TensorData, device: &Device) -> Tensor<D> {
    Tensor::from_data(data, device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// `(x, weight, probe, options)`: the probe weighs the output into the scalar that is
/// differentiated, so its gradient is the output gradient the kernels receive.
fn conv_setup(&(n, c_in, h, w, c_out, k, s, [pt, pb, pl, pr], d): &ConvCase, seed: u64) -> (Tensor<4>, Tensor<4>, Tensor<4>, ConvOptions<2>) {
    let device = device();
    let options = ConvOptions::new_with_padding([s, s], [(pt, pb), (pl, pr)], [d, d], 1);
    let x = tensor::<4>(pseudo_random(&[n, c_in, h, w], seed, 0.0), &device).require_grad();
    let weight = tensor::<4>(pseudo_random(&[c_out, c_in, k, k], seed + 1, 0.0), &device).require_grad();
    let out = burn::tensor::module::conv2d(x.clone().detach(), weight.clone().detach(), None, options.clone());
    let probe = tensor(pseudo_random(&out.dims(), seed + 2, 0.0), &device);
    (x, weight, probe, options)
}

/// The output, and the gradients of x and the weight, through barlow's kernels or burn's ops.
fn conv_values(x: &Tensor<4>, weight: &Tensor<4>, probe: &Tensor<4>, options: &ConvOptions<2>, ours: bool) -> [Vec<f32>; 3] {
    let out = match ours {
        true => ops::conv2d(x.clone(), weight.clone(), options.clone()),
        false => burn::tensor::module::conv2d(x.clone(), weight.clone(), None, options.clone()),
    };
    let grads = (out.clone() * probe.clone()).sum().backward();
    [values(out), values(x.grad(&grads).unwrap()), values(weight.grad(&grads).unwrap())]
}

#[test]
fn convolutions_and_their_gradients_match_burns_ops() {
    for (i, case) in CONV_CASES.iter().enumerate() {
        let (x, weight, probe, options) = conv_setup(case, 10 * i as u64);
        let ours = conv_values(&x, &weight, &probe, &options, true);
        let burns = conv_values(&x, &weight, &probe, &options, false);
        for (name, a, b) in [("output", &ours[0], &burns[0]), ("x gradient", &ours[1], &burns[1]), ("weight gradient", &ours[2], &burns[2])] {
            let err = rel_diff(a, b);
            assert!(err < 1e-5, "case {case:?}: {name} differs by {err}");
        }
    }
}

#[test]
fn the_comparison_catches_a_gradient_one_pixel_off() {
    // An output gradient shifted by one column (an off-by-one in the padding) must fail the
    // tolerance above by far.
    let (x, weight, probe, options) = conv_setup(&CONV_CASES[0], 7);
    let shifted = Tensor::cat(vec![probe.clone().narrow(3, 1, probe.dims()[3] - 1), probe.clone().narrow(3, 0, 1)], 3);
    let ours = conv_values(&x, &weight, &shifted, &options, true);
    let burns = conv_values(&x, &weight, &probe, &options, false);
    assert!(rel_diff(&ours[1], &burns[1]) > 1e-2 && rel_diff(&ours[2], &burns[2]) > 1e-2);
}

/// Training-mode BatchNorm (then ReLU): output, mean, biased variance, and the gradients of x,
/// gamma and beta, through barlow's kernels or burn's ops.
fn bn_values(shape: &[usize], offset: f32, seed: u64, relu: bool, ours: bool) -> Vec<(&'static str, Vec<f32>)> {
    let device = device();
    let c = shape[1];
    let x = tensor::<4>(pseudo_random(shape, seed, offset), &device).require_grad();
    let gamma = tensor::<1>(pseudo_random(&[c], seed + 1, 1.0), &device).require_grad();
    let beta = tensor::<1>(pseudo_random(&[c], seed + 2, 0.0), &device).require_grad();
    let probe = tensor::<4>(pseudo_random(shape, seed + 3, 0.0), &device);
    let (out, mean, variance) = match ours {
        true => {
            let r = ops::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu, None);
            (r.output, r.mean, r.variance)
        }
        false => {
            let r = burn::tensor::module::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
            let out = if relu { burn::tensor::activation::relu(r.output) } else { r.output };
            (out, r.mean, r.variance)
        }
    };
    let grads = (out.clone() * probe).sum().backward();
    vec![
        ("output", values(out)),
        ("mean", values(mean)),
        ("variance", values(variance)),
        ("x gradient", values(x.grad(&grads).unwrap())),
        ("gamma gradient", values(gamma.grad(&grads).unwrap())),
        ("beta gradient", values(beta.grad(&grads).unwrap())),
    ]
}

#[test]
fn batch_norm_and_its_gradients_match_burns_ops() {
    for (i, &(shape, offset)) in BN_CASES.iter().enumerate() {
        // Rank 4 throughout: a [N, C] case becomes [N, C, 1, 1].
        let shape: Vec<usize> = shape.iter().copied().chain(std::iter::repeat(1)).take(4).collect();
        for relu in [false, true] {
            let ours = bn_values(&shape, offset, 30 + 10 * i as u64, relu, true);
            let burns = bn_values(&shape, offset, 30 + 10 * i as u64, relu, false);
            for ((name, a), (_, b)) in ours.iter().zip(&burns) {
                let err = rel_diff(a, b);
                assert!(err < 1e-4, "{shape:?} offset {offset} relu {relu}: {name} differs by {err}");
            }
        }
    }
}

/// The output and the running statistics after one batch, through LibTorch's BatchNorm (which
/// moves them inside its kernels) or through burn's ops and the formula.
fn running_values(shape: &[usize], ours: bool) -> [Vec<f32>; 3] {
    let device = device();
    let c = shape[1];
    let x = tensor::<4>(pseudo_random(shape, 5, 0.5), &device).require_grad();
    let (gamma, beta) = (tensor::<1>(pseudo_random(&[c], 6, 1.0), &device), tensor::<1>(pseudo_random(&[c], 7, 0.0), &device));
    let running = (tensor::<1>(pseudo_random(&[c], 8, 0.0), &device), tensor::<1>(pseudo_random(&[c], 9, 2.0), &device));
    let count = (shape.iter().product::<usize>() / c) as f64;
    let unbiased = count / (count.max(2.0) - 1.0);
    let (output, (mean, var)) = match ours {
        true => ops::batch_norm_running(x, gamma, beta, 1e-5, false, None, running, 0.1, unbiased),
        false => {
            let r = burn::tensor::module::batch_norm_train(x, gamma, beta, 1e-5);
            let mean = running.0.mul_scalar(0.9) + r.mean.mul_scalar(0.1);
            let var = running.1.mul_scalar(0.9) + r.variance.mul_scalar(0.1 * unbiased);
            (r.output, (mean, var))
        }
    };
    [values(output), values(mean), values(var)]
}

#[test]
fn running_statistics_move_as_pytorchs_do() {
    // [1, C, 1, 1]: one value per channel, where LibTorch's own n/(n − 1) would divide by zero.
    for shape in [[8, 3, 5, 5], [6, 4, 1, 1], [1, 3, 1, 1]] {
        let ours = running_values(&shape, true);
        let burns = running_values(&shape, false);
        for (name, a, b) in [("output", &ours[0], &burns[0]), ("running mean", &ours[1], &burns[1]), ("running variance", &ours[2], &burns[2])] {
            let err = rel_diff(a, b);
            assert!(err < 1e-5, "{shape:?}: {name} differs by {err}");
        }
    }
}

#[test]
fn running_statistics_held_elsewhere_move_on_copies() {
    // Unshared, LibTorch moves the statistics in place; a copy that shares their storage (an
    // evaluation model, a checkpoint being written) must keep its values.
    let device = device();
    let x = tensor::<4>(pseudo_random(&[8, 3, 5, 5], 5, 0.5), &device).require_grad();
    let (gamma, beta) = (tensor::<1>(pseudo_random(&[3], 6, 1.0), &device), tensor::<1>(pseudo_random(&[3], 7, 0.0), &device));
    let running = (tensor::<1>(pseudo_random(&[3], 8, 0.0), &device), tensor::<1>(pseudo_random(&[3], 9, 2.0), &device));
    let held = running.clone();
    let before = [values(held.0.clone()), values(held.1.clone())];
    let (_, (mean, var)) = ops::batch_norm_running(x, gamma, beta, 1e-5, false, None, running, 0.1, 200.0 / 199.0);
    assert_eq!([values(held.0), values(held.1)], before, "a shared running statistic moved");
    assert_ne!([values(mean), values(var)], before, "the running statistics did not move");
}

#[test]
fn channels_last_keeps_values_and_gradients() {
    // bf16 training lays the images out channels-last: the convolution must not notice.
    let (x, weight, probe, options) = conv_setup(&CONV_CASES[1], 3);
    let nhwc = ops::channels_last(x.clone(), FloatDType::F32);
    assert_eq!(values(nhwc.clone()), values(x.clone()));
    let out = ops::conv2d(nhwc, weight.clone(), options.clone());
    let grads = (out.clone() * probe.clone()).sum().backward();
    let want = conv_values(&x, &weight, &probe, &options, true);
    let got = [values(out), values(x.grad(&grads).unwrap()), values(weight.grad(&grads).unwrap())];
    for (name, a, b) in [("output", &got[0], &want[0]), ("x gradient", &got[1], &want[1]), ("weight gradient", &got[2], &want[2])] {
        assert!(rel_diff(a, b) < 1e-5, "{name} differs by {}", rel_diff(a, b));
    }
}

#[test]
fn channels_last_in_bfloat16_casts_as_burns_cast_does() {
    // A bf16 convolution's weight: cast and re-laid out in one copy; its gradient reaches the
    // f32 weight in f32, as through burn's cast.
    let (x, _, _, _) = conv_setup(&CONV_CASES[1], 4);
    let probe = tensor::<4>(pseudo_random(&x.dims(), 5, 1.0), &x.device());
    let run = |fused: bool| {
        let x = x.clone().detach().require_grad();
        let y = match fused {
            true => ops::channels_last(x.clone(), FloatDType::BF16),
            false => x.clone().cast(FloatDType::BF16),
        };
        assert_eq!(y.dtype(), DType::BF16);
        let grads = (y.clone().cast(FloatDType::F32) * probe.clone()).sum().backward();
        let grad = x.grad(&grads).unwrap();
        assert_eq!(grad.dtype(), DType::F32, "the gradient of an f32 tensor");
        [values(y), values(grad)]
    };
    assert_eq!(run(true), run(false));
}

/// A whole Barlow Twins step (ResNet, projector, loss, gradients of every parameter) on
/// LibTorch matches the CPU's: `bench check` fails unless every gradient is within tolerance.
#[test]
fn a_training_step_on_libtorch_matches_the_cpu() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_barlow"))
        .args(["bench", "check", "--backend", "tch"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("OK"), "{text}");
}

#[test]
#[allow(deprecated)]
fn an_uploaded_batch_holds_the_values_burns_from_data_makes() {
    // Training's views reach LibTorch through the shim's one copy (pinned on a GPU).
    let shape = [2, 3, 4, 5];
    let data = pseudo_random(&shape, 6, 0.0);
    let host = data.clone().try_to_vec::<f32>().unwrap();
    for device in [device(), Device::libtorch()] {
        let up = ops::upload(&host[..], shape, &device);
        assert_eq!(up.dims(), shape);
        assert_eq!(up.device(), device);
        assert_eq!(values(up.clone()), values(tensor::<4>(data.clone(), &device)));
    }
    // Under autodiff, a constant to the gradient, as from_data's tensor is.
    let up = ops::upload(host, shape, &device());
    let w = tensor::<4>(pseudo_random(&[2, 3, 3, 3], 7, 0.0), &device()).require_grad();
    let grads = ops::conv2d(up.clone(), w.clone(), ConvOptions::new([1, 1], [1, 1], [1, 1], 1)).sum().backward();
    assert!(w.grad(&grads).is_some() && up.grad(&grads).is_none());
}
