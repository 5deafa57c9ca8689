//! barlow's CPU kernels against burn's own operations: values and gradients, for the
//! convolution shapes a ResNet has (and awkward ones), and BatchNorm with and without ReLU.

use barlow::ops::{self, Kernels};
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, ConvOptions, ModuleOps};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

#[path = "common/kernel_cases.rs"]
mod kernel_cases;
use kernel_cases::{BN_CASES, CONV_CASES as CASES, ConvCase as Case, pseudo_random};

/// A deterministic pseudo-random tensor on the plain CPU backend.
fn random(shape: &[usize], seed: u64, offset: f32) -> FlexTensor {
    FlexTensor::from_data(pseudo_random(shape, seed, offset))
}

fn values(t: FlexTensor) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

/// max |a − b| relative to the largest |b|: one number for a whole tensor.
fn rel_diff(a: FlexTensor, b: FlexTensor) -> f32 {
    assert_eq!(a.layout().shape(), b.layout().shape());
    kernel_cases::rel_diff(&values(a), &values(b))
}

fn setup(&(n, c_in, h, w, c_out, k, s, [pt, pb, pl, pr], d): &Case, seed: u64) -> (FlexTensor, FlexTensor, FlexTensor, ConvOptions<2>) {
    let options = ConvOptions::new_with_padding([s, s], [(pt, pb), (pl, pr)], [d, d], 1);
    let x = random(&[n, c_in, h, w], seed, 0.0);
    let weight = random(&[c_out, c_in, k, k], seed + 1, 0.0);
    let y = Flex::conv2d(x.clone(), weight.clone(), None, options.clone());
    let dy = random(&y.layout().shape().to_vec(), seed + 2, 0.0);
    (x, weight, dy, options)
}

#[test]
fn conv2d_forward_matches_burn() {
    for (i, case) in CASES.iter().enumerate() {
        let (x, w, _, options) = setup(case, i as u64);
        let ours = <Flex as Kernels>::conv2d_forward(x.clone(), w.clone(), options.clone());
        let theirs = Flex::conv2d(x, w, None, options);
        let err = rel_diff(ours, theirs);
        assert!(err < 1e-5, "case {case:?}: relative difference {err}");
    }
}

#[test]
fn conv2d_input_grad_matches_burn() {
    for (i, case) in CASES.iter().enumerate() {
        let (x, w, dy, options) = setup(case, 10 + i as u64);
        let ours = <Flex as Kernels>::conv2d_input_grad(x.clone(), w.clone(), dy.clone(), options.clone());
        let theirs = Flex::conv2d_x_backward(x, w, dy, options);
        let err = rel_diff(ours, theirs);
        assert!(err < 1e-5, "case {case:?}: relative difference {err}");
    }
}

#[test]
fn conv2d_weight_grad_matches_burn() {
    for (i, case) in CASES.iter().enumerate() {
        let (x, w, dy, options) = setup(case, 20 + i as u64);
        let ours = <Flex as Kernels>::conv2d_weight_grad(x.clone(), w.clone(), dy.clone(), options.clone());
        let theirs = Flex::conv2d_weight_backward(x, w, dy, options);
        let err = rel_diff(ours, theirs);
        assert!(err < 1e-5, "case {case:?}: relative difference {err}");
    }
}

#[test]
fn the_comparison_catches_a_flipped_kernel() {
    // Correlation vs convolution (a kernel flipped in both axes) is the classic bug; the
    // tolerance above must be far below the difference it makes.
    let (x, w, _, options) = setup(&CASES[0], 99);
    let flipped = FlexTensor::from_data(TensorData::new(
        {
            let [co, ci, kh, kw] = w.layout().shape().dims();
            let v = values(w.clone());
            (0..co * ci * kh * kw)
                .map(|i| {
                    let (plane, r) = (i / (kh * kw), i % (kh * kw));
                    v[plane * kh * kw + (kh - 1 - r / kw) * kw + (kw - 1 - r % kw)]
                })
                .collect::<Vec<f32>>()
        },
        w.layout().shape().to_vec(),
    ));
    let ours = <Flex as Kernels>::conv2d_forward(x.clone(), flipped, options.clone());
    let theirs = Flex::conv2d(x, w, None, options);
    assert!(rel_diff(ours, theirs) > 1e-2);
}

#[test]
fn batch_norm_forward_matches_burn() {
    for (i, &(shape, offset)) in BN_CASES.iter().enumerate() {
        let c = shape[1];
        let x = random(shape, 30 + i as u64, offset);
        let (gamma, beta) = (random(&[c], 40 + i as u64, 1.0), random(&[c], 50 + i as u64, 0.0));
        for relu in [false, true] {
            let (y, mean, var) = <Flex as Kernels>::batch_norm_forward(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu, None);
            let r = Flex::batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
            let expected = if relu { Flex::relu(r.output) } else { r.output };
            for (name, ours, theirs) in [("output", y, expected), ("mean", mean, r.mean), ("variance", var, r.variance)] {
                let err = rel_diff(ours, theirs);
                assert!(err < 1e-4, "{shape:?} offset {offset} relu {relu}: {name} differs by {err}");
            }
        }
    }
}

#[test]
fn batch_norm_backward_matches_burn() {
    for (i, &(shape, offset)) in BN_CASES.iter().enumerate() {
        let c = shape[1];
        let x = random(shape, 60 + i as u64, offset);
        let (gamma, beta) = (random(&[c], 70 + i as u64, 1.0), random(&[c], 80 + i as u64, 0.0));
        let dy = random(shape, 90 + i as u64, 0.0);
        for relu in [false, true] {
            let (y, mean, var) = <Flex as Kernels>::batch_norm_forward(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu, None);
            let ours = <Flex as Kernels>::batch_norm_backward(
                x.clone(), gamma.clone(), mean.clone(), var.clone(), 1e-5, relu, y.clone(), dy.clone(), None,
            );
            let grad = if relu { Flex::relu_backward(y, dy.clone()) } else { dy.clone() };
            let r = Flex::batch_norm_train_backward(x.clone(), gamma.clone(), mean, var, 1e-5, grad);
            for (name, a, b) in [("x", ours.0, r.x_grad), ("gamma", ours.1, r.gamma_grad), ("beta", ours.2, r.beta_grad)] {
                let err = rel_diff(a, b);
                assert!(err < 1e-4, "{shape:?} offset {offset} relu {relu}: grad of {name} differs by {err}");
            }
        }
    }
}

/// The autodiff path (what a training step runs): gradients of a weighted sum of the output
/// through `ops::conv2d` and `ops::batch_norm_train` against burn's differentiable ops.
#[test]
fn gradients_through_autodiff_match_burn() {
    let device = Device::flex().autodiff();
    let tensor = |t: FlexTensor| Tensor::<4>::from_data(t.into_data(), &device);
    let x = tensor(random(&[6, 4, 7, 7], 1, 0.0)).require_grad();
    let w = tensor(random(&[8, 4, 3, 3], 2, 0.0)).require_grad();
    let gamma = Tensor::<1>::random([8], Distribution::Uniform(0.5, 1.5), &device).require_grad();
    let beta = Tensor::<1>::random([8], Distribution::Uniform(-0.5, 0.5), &device).require_grad();
    let probe = tensor(random(&[6, 8, 4, 4], 3, 0.0));
    let options = ConvOptions::new([2, 2], [1, 1], [1, 1], 1);

    let ours = ops::batch_norm_train(ops::conv2d(x.clone(), w.clone(), options.clone()), gamma.clone(), beta.clone(), 1e-5, true, None);
    let grads_ours = (ours.output * probe.clone()).sum().backward();
    let conv = burn::tensor::module::conv2d(x.clone(), w.clone(), None, options);
    let bn = burn::tensor::module::batch_norm_train(conv, gamma.clone(), beta.clone(), 1e-5);
    let grads_burn = (burn::tensor::activation::relu(bn.output) * probe).sum().backward();

    let flat = |t: Tensor<1>| FlexTensor::from_data(t.into_data());
    let pairs = [
        ("x", flat(x.grad(&grads_ours).unwrap().flatten(0, 3)), flat(x.grad(&grads_burn).unwrap().flatten(0, 3))),
        ("weight", flat(w.grad(&grads_ours).unwrap().flatten(0, 3)), flat(w.grad(&grads_burn).unwrap().flatten(0, 3))),
        ("gamma", flat(gamma.grad(&grads_ours).unwrap()), flat(gamma.grad(&grads_burn).unwrap())),
        ("beta", flat(beta.grad(&grads_ours).unwrap()), flat(beta.grad(&grads_burn).unwrap())),
    ];
    for (name, a, b) in pairs {
        let err = rel_diff(a, b);
        assert!(err < 1e-4, "gradient of {name} differs by {err}");
    }
}

/// A residual block's end, `relu(a + b)`, through autodiff: the same values and gradients (to
/// both summands) as burn's add and ReLU, over more values than one task takes and with sums
/// that are exactly zero (where the ReLU's gradient is 0 on both sides).
#[test]
fn residual_add_relu_matches_burn() {
    let device = Device::flex().autodiff();
    let tensor = |t: FlexTensor| Tensor::<4>::from_data(t.into_data(), &device);
    let shape = [3, 16, 33, 35];
    let a = tensor(random(&shape, 7, 0.0));
    // b = −a in the first image: a + b = 0 exactly there.
    let b = Tensor::cat(vec![a.clone().narrow(0, 0, 1).neg(), tensor(random(&shape, 8, 0.0)).narrow(0, 1, 2)], 0);
    let (a, b) = (a.require_grad(), b.require_grad());
    let probe = tensor(random(&shape, 9, 0.0));

    let ours = ops::add_relu(a.clone(), b.clone());
    let theirs = burn::tensor::activation::relu(a.clone() + b.clone());
    let flat = |t: Tensor<4>| FlexTensor::from_data(t.into_data());
    assert_eq!(rel_diff(flat(ours.clone()), flat(theirs.clone())), 0.0, "values");
    let grads_ours = (ours * probe.clone()).sum().backward();
    let grads_burn = (theirs * probe).sum().backward();
    for (name, t) in [("a", &a), ("b", &b)] {
        let (g_ours, g_burn) = (flat(t.grad(&grads_ours).unwrap()), flat(t.grad(&grads_burn).unwrap()));
        assert_eq!(rel_diff(g_ours, g_burn), 0.0, "gradient of {name}");
    }
}

/// Two workers summing through memory, as MPI would between processes (a test double).
#[derive(Debug)]
struct TwoWorkers {
    total: std::sync::Mutex<Vec<f64>>,
    barrier: std::sync::Barrier,
}

impl barlow::collective::ChannelSum for TwoWorkers {
    fn sum(&self, values: &mut [f64]) {
        {
            let mut total = self.total.lock().unwrap();
            total.resize(values.len(), 0.0);
            total.iter_mut().zip(values.iter()).for_each(|(t, v)| *t += v);
        }
        self.barrier.wait();
        values.copy_from_slice(&self.total.lock().unwrap());
        if self.barrier.wait().is_leader() {
            self.total.lock().unwrap().clear();
        }
        self.barrier.wait();
    }
}

/// Synchronised BatchNorm: two workers holding half a batch each compute exactly what one
/// worker computes on the whole batch — outputs, statistics, input gradients — and their
/// gamma/beta gradients add up to the whole batch's.
#[test]
fn synchronised_batch_norm_over_two_halves_is_batch_norm_over_the_whole() {
    use std::sync::Arc;
    for (shape, relu) in [(vec![8usize, 5, 3, 4], true), (vec![12, 7], false)] {
        let c = shape[1];
        let x = random(&shape, 5, 0.3);
        let (gamma, beta, dy) = (random(&[c], 6, 1.0), random(&[c], 7, 0.0), random(&shape, 8, 0.0));
        let (y, mean, var) = <Flex as Kernels>::batch_norm_forward(x.clone(), gamma.clone(), beta.clone(), 1e-5, relu, None);
        let (dx, dgamma, dbeta) = <Flex as Kernels>::batch_norm_backward(
            x.clone(), gamma.clone(), mean.clone(), var.clone(), 1e-5, relu, y.clone(), dy.clone(), None,
        );
        let half = shape[0] / 2;
        let part = |t: &FlexTensor, i: usize| t.narrow(0, i * half, half).to_contiguous();
        let sync: Arc<TwoWorkers> = Arc::new(TwoWorkers { total: Default::default(), barrier: std::sync::Barrier::new(2) });
        let workers: Vec<_> = (0..2)
            .map(|i| {
                let (x, dy, gamma, beta) = (part(&x, i), part(&dy, i), gamma.clone(), beta.clone());
                let sync: barlow::collective::ChannelSync = sync.clone();
                std::thread::spawn(move || {
                    let (y, mean, var) = <Flex as Kernels>::batch_norm_forward(
                        x.clone(), gamma.clone(), beta, 1e-5, relu, Some(sync.clone()),
                    );
                    let grads = <Flex as Kernels>::batch_norm_backward(x, gamma, mean.clone(), var.clone(), 1e-5, relu, y.clone(), dy, Some(sync));
                    (y, mean, var, grads)
                })
            })
            .collect::<Vec<_>>() // both running before either is waited for
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        for (i, (y_i, mean_i, var_i, (dx_i, _, _))) in workers.iter().enumerate() {
            for (name, ours, whole) in [("output", y_i, part(&y, i)), ("input gradient", dx_i, part(&dx, i))] {
                let err = rel_diff(ours.clone(), whole);
                assert!(err < 1e-5, "{shape:?} worker {i}: {name} differs by {err}");
            }
            assert!(rel_diff(mean_i.clone(), mean.clone()) < 1e-5 && rel_diff(var_i.clone(), var.clone()) < 1e-5);
        }
        let add = |a: &FlexTensor, b: &FlexTensor| {
            FlexTensor::from_data(TensorData::new(values(a.clone()).iter().zip(values(b.clone())).map(|(a, b)| a + b).collect::<Vec<f32>>(), vec![c]))
        };
        assert!(rel_diff(add(&workers[0].3.1, &workers[1].3.1), dgamma) < 1e-5, "{shape:?}: gamma gradients");
        assert!(rel_diff(add(&workers[0].3.2, &workers[1].3.2), dbeta) < 1e-5, "{shape:?}: beta gradients");
        // Without synchronisation each half normalises with its own statistics: the check bites.
        let (alone, _, _) = <Flex as Kernels>::batch_norm_forward(part(&x, 0), gamma.clone(), beta.clone(), 1e-5, relu, None);
        assert!(rel_diff(alone, part(&y, 0)) > 1e-3);
    }
}
