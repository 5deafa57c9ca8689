//! Each method's loss and gradients against its reference code (scripts/make_method_fixtures.py,
//! float64), against finite differences, and the methods' state updates (EMA, queue).

mod common;

use barlow::loss::normalize;
use barlow::methods::{byol, moco, momentum, simclr, simsiam, vicreg};
use burn::tensor::{Tensor, TensorData};
use common::*;
use std::collections::HashMap;

type Fixture = HashMap<String, (Vec<usize>, Vec<f32>)>;

fn load(name: &str) -> Fixture {
    read_safetensors(&fixture(&format!("method_{name}.safetensors")))
}

fn t2(f: &Fixture, key: &str) -> Tensor<2> {
    let (shape, values) = &f[key];
    tensor2(shape, values, &device()).require_grad()
}

fn t3(f: &Fixture, key: &str) -> Tensor<3> {
    let (shape, values) = &f[key];
    Tensor::from_data(TensorData::new(values.clone(), [shape[0], shape[1], shape[2]]), &device())
}

fn scalar(t: Tensor<1>) -> f32 {
    t.into_scalar::<f32>()
}

fn assert_loss(name: &str, got: f32, want: f32) {
    let rel = ((got - want) / want).abs();
    assert!(rel < 1e-5, "{name}: loss {got}, PyTorch {want} (rel {rel:.2e})");
}

/// Each gradient within 1e-4 of the golden gradient's largest element.
fn assert_grads(name: &str, grads: &burn::tensor::Gradients, pairs: &[(&Tensor<2>, &[f32])]) {
    for (i, (t, want)) in pairs.iter().enumerate() {
        let got = t.grad(grads).map(to_vec).unwrap_or_else(|| vec![0.0; want.len()]);
        let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
        let err = got.iter().zip(*want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        if scale == 0.0 {
            assert!(err == 0.0, "{name} gradient {i}: should be zero, is up to {err:.2e}");
        } else {
            assert!(err / scale < 1e-4, "{name} gradient {i}: max error {:.2e} of the gradient's scale", err / scale);
        }
    }
}

#[test]
fn simclr_nt_xent_matches_pytorch() {
    for case in ["n8_d16", "n32_d8"] {
        let f = load(&format!("simclr_{case}"));
        let (z_a, z_b) = (t2(&f, "z_a"), t2(&f, "z_b"));
        let loss = simclr::nt_xent(z_a.clone(), z_b.clone(), f["temperature"].1[0] as f64);
        assert_loss(case, scalar(loss.clone()), f["loss"].1[0]);
        let grads = loss.backward();
        assert_grads(case, &grads, &[(&z_a, &f["grad_z_a"].1), (&z_b, &f["grad_z_b"].1)]);
    }
}

#[test]
fn moco_infonce_matches_pytorch_asymmetric_and_symmetric() {
    for case in ["n8_d16_asym", "n16_d8_sym"] {
        let f = load(&format!("moco_{case}"));
        let (q_a, q_b) = (t2(&f, "q_a"), t2(&f, "q_b"));
        let (k_a, k_b) = (normalize(t2(&f, "k_a")), normalize(t2(&f, "k_b")));
        let queue = t3(&f, "queue");
        let symmetric = f["symmetric"].1[0] == 1.0;
        let t = f["temperature"].1[0] as f64;
        let negatives = |v: usize| {
            let [_, k, d] = queue.dims();
            queue.clone().narrow(0, v, 1).reshape([k, d])
        };
        let loss = match symmetric {
            true => (moco::infonce(normalize(q_a.clone()), k_b, negatives(1), t)
                + moco::infonce(normalize(q_b.clone()), k_a, negatives(0), t))
            .div_scalar(2.0),
            false => moco::infonce(normalize(q_a.clone()), k_b, negatives(0), t),
        };
        assert_loss(case, scalar(loss.clone()), f["loss"].1[0]);
        let grads = loss.backward();
        assert_grads(case, &grads, &[(&q_a, &f["grad_q_a"].1), (&q_b, &f["grad_q_b"].1)]);
    }
}

#[test]
fn byol_loss_matches_pytorch_and_stops_the_target_gradient() {
    for case in ["n8_d16", "n32_d4"] {
        let f = load(&format!("byol_{case}"));
        let (p_a, p_b, t_a, t_b) = (t2(&f, "p_a"), t2(&f, "p_b"), t2(&f, "t_a"), t2(&f, "t_b"));
        let loss = byol::byol_loss(p_a.clone(), p_b.clone(), t_a.clone(), t_b.clone());
        assert_loss(case, scalar(loss.clone()), f["loss"].1[0]);
        let grads = loss.backward();
        let zero = vec![0.0; f["t_a"].1.len()];
        assert_grads(case, &grads, &[(&p_a, &f["grad_p_a"].1), (&p_b, &f["grad_p_b"].1), (&t_a, &zero), (&t_b, &zero)]);
    }
}

#[test]
fn simsiam_loss_matches_pytorch_with_the_stop_gradient() {
    for case in ["n8_d16", "n32_d4"] {
        let f = load(&format!("simsiam_{case}"));
        let (p_a, p_b, z_a, z_b) = (t2(&f, "p_a"), t2(&f, "p_b"), t2(&f, "z_a"), t2(&f, "z_b"));
        let loss = simsiam::simsiam_loss(p_a.clone(), p_b.clone(), z_a.clone(), z_b.clone());
        assert_loss(case, scalar(loss.clone()), f["loss"].1[0]);
        let grads = loss.backward();
        assert!(f["grad_z_a"].1.iter().all(|g| *g == 0.0), "PyTorch's stop-gradient leaves z without gradient");
        assert_grads(case, &grads, &[
            (&p_a, &f["grad_p_a"].1),
            (&p_b, &f["grad_p_b"].1),
            (&z_a, &f["grad_z_a"].1),
            (&z_b, &f["grad_z_b"].1),
        ]);
    }
}

#[test]
fn vicreg_loss_and_terms_match_pytorch() {
    for case in ["n8_d16", "n32_d8_w"] {
        let f = load(&format!("vicreg_{case}"));
        let w = &f["weights"].1;
        let weights = vicreg::Weights { invariance: w[0] as f64, variance: w[1] as f64, covariance: w[2] as f64 };
        let (z_a, z_b) = (t2(&f, "z_a"), t2(&f, "z_b"));
        let loss = vicreg::vicreg_loss(z_a.clone(), z_b.clone(), weights);
        assert_loss(case, scalar(loss.total.clone()), f["loss"].1[0]);
        for (term, value) in &loss.terms {
            let want = f[*term].1[0];
            let got = scalar(value.clone());
            assert!(((got - want) / want).abs() < 1e-5, "{case} {term}: {got} vs PyTorch {want}");
        }
        let grads = loss.total.backward();
        assert_grads(case, &grads, &[(&z_a, &f["grad_z_a"].1), (&z_b, &f["grad_z_b"].1)]);
    }
}

/// The variance hinge really is active in one fixture and not in the other, so the goldens
/// cover both sides of it.
#[test]
fn the_vicreg_fixtures_cover_both_sides_of_the_hinge() {
    let variance = |case: &str| load(&format!("vicreg_{case}"))["variance"].1[0];
    assert!(variance("n32_d8_w") > 0.1 && variance("n8_d16") < variance("n32_d8_w"));
}

/// Central differences in f64 against autodiff, for the two losses with the most structure.
#[test]
fn nt_xent_and_vicreg_gradients_match_finite_differences() {
    let device = device();
    let (n, d) = (6, 5);
    let mut state = 99u64;
    let mut rand = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let a: Vec<f64> = (0..n * d).map(|_| rand()).collect();
    let b: Vec<f64> = a.iter().map(|x| 0.8 * x + 0.4 * rand()).collect();
    type Loss = fn(Tensor<2>, Tensor<2>) -> Tensor<1>;
    let losses: [(&str, Loss); 2] = [
        ("nt_xent", |a, b| simclr::nt_xent(a, b, 0.3)),
        ("vicreg", |a, b| vicreg::vicreg_loss(a, b, vicreg::Weights::default()).total),
    ];
    for (name, loss) in losses {
        let at = |a: &[f64]| loss(tensor2_f64([n, d], a.to_vec(), &device), tensor2_f64([n, d], b.clone(), &device));
        let z = tensor2_f64([n, d], a.clone(), &device).require_grad();
        let l = loss(z.clone(), tensor2_f64([n, d], b.clone(), &device));
        let grad: Vec<f64> = z.grad(&l.backward()).unwrap().into_data().try_into_vec::<f64>().unwrap();
        let h = 1e-6;
        for i in 0..n * d {
            let (mut plus, mut minus) = (a.clone(), a.clone());
            plus[i] += h;
            minus[i] -= h;
            let numeric = (at(&plus).into_scalar::<f64>() - at(&minus).into_scalar::<f64>()) / (2.0 * h);
            let err = (numeric - grad[i]).abs() / (numeric.abs() + 1e-3);
            assert!(err < 1e-5, "{name} element {i}: autodiff {} vs numeric {numeric}", grad[i]);
        }
    }
}

#[test]
fn the_ema_schedule_and_step_match_solo_learn() {
    let f = load("state");
    for (step, want) in f["tau_steps"].1.iter().zip(&f["tau_values"].1) {
        let got = momentum::tau([0.99, 1.0], *step as usize, 100);
        assert!((got as f32 - want).abs() < 1e-7, "τ at step {step}: {got} vs {want}");
    }
    let online = t2(&f, "ema_online").detach();
    let target = t2(&f, "ema_target").detach();
    let got = to_vec(momentum::ema(target, online, f["ema_tau"].1[0] as f64));
    assert!(max_rel_err(&got, &f["ema_result"].1, 1e-3) < 1e-6);
}

#[test]
fn the_queue_replaces_the_oldest_keys_as_moco_does() {
    let f = load("state");
    let mut queue = t3(&f, "queue_start");
    let keys = t3(&f, "queue_keys");
    let [steps, n, d] = keys.dims();
    for step in 0..steps {
        let k = keys.clone().narrow(0, step, 1).reshape([1, n, d]);
        queue = moco::enqueue(queue, k, step);
    }
    let got = queue.into_data().try_into_vec::<f32>().unwrap();
    assert_eq!(got, f["queue_end"].1, "after {steps} steps of {n} keys in a queue of 6");
}

/// The checks above can fail: a slightly different temperature, or a loss without the
/// stop-gradient, is caught.
#[test]
fn a_wrong_temperature_or_a_missing_stop_gradient_is_caught() {
    let f = load("simclr_n8_d16");
    let t = f["temperature"].1[0] as f64;
    let loss = simclr::nt_xent(t2(&f, "z_a"), t2(&f, "z_b"), t * 1.01);
    let rel = ((scalar(loss) - f["loss"].1[0]) / f["loss"].1[0]).abs();
    assert!(rel > 1e-4, "τ off by 1% moves the loss by only {rel:.2e}");

    let f = load("simsiam_n8_d16");
    let (p_a, z_b) = (t2(&f, "p_a"), t2(&f, "z_b"));
    let no_stop = -barlow::loss::cosine(p_a, z_b.clone()).mean();
    let grads = no_stop.backward();
    let g = to_vec(z_b.grad(&grads).expect("a gradient without the stop-gradient"));
    assert!(g.iter().any(|v| v.abs() > 1e-3), "the stop-gradient check would not notice its absence");
}
