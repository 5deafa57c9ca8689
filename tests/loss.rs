//! The loss against PyTorch's official formulation (golden fixtures) and against finite differences.

mod common;

use barlow::loss::standardize;
use barlow::loss::cross_correlation;
use barlow::methods::barlow::barlow_loss;
use common::*;

const FIXTURES: [&str; 4] = ["loss_n8_d16", "loss_n32_d8", "loss_n64_d64", "loss_n16_d128_l1"];

#[test]
fn loss_and_terms_match_pytorch() {
    let device = device();
    for name in FIXTURES {
        let f = read_safetensors(&fixture(&format!("{name}.safetensors")));
        let (shape, z_a) = &f["z_a"];
        let z_a = tensor2(shape, z_a, &device);
        let z_b = tensor2(shape, &f["z_b"].1, &device);
        let lambda = f["lambda"].1[0] as f64;
        let loss = barlow_loss(z_a, z_b, lambda);
        for (term, t) in [("loss", &loss.total), ("on_diag", &loss.on_diag), ("off_diag", &loss.off_diag)] {
            let got = t.clone().into_scalar::<f32>();
            let want = f[term].1[0];
            let rel = ((got - want) / want).abs();
            assert!(rel < 1e-5, "{name} {term}: got {got}, PyTorch {want} (rel {rel:.2e})");
        }
    }
}

#[test]
fn cross_correlation_matches_pytorch() {
    let device = device();
    for name in FIXTURES {
        let f = read_safetensors(&fixture(&format!("{name}.safetensors")));
        let (shape, z_a) = &f["z_a"];
        let c = cross_correlation(
            standardize(tensor2(shape, z_a, &device)),
            standardize(tensor2(shape, &f["z_b"].1, &device)),
            shape[0],
        );
        let err = max_rel_err(&to_vec(c), &f["c"].1, 1e-2);
        assert!(err < 1e-4, "{name}: C differs by {err:.2e}");
    }
}

#[test]
fn gradients_match_pytorch() {
    let device = device();
    for name in FIXTURES {
        let f = read_safetensors(&fixture(&format!("{name}.safetensors")));
        let (shape, z_a) = &f["z_a"];
        let z_a = tensor2(shape, z_a, &device).require_grad();
        let z_b = tensor2(shape, &f["z_b"].1, &device).require_grad();
        let loss = barlow_loss(z_a.clone(), z_b.clone(), f["lambda"].1[0] as f64);
        let grads = loss.total.backward();
        for (which, z) in [("grad_z_a", &z_a), ("grad_z_b", &z_b)] {
            let got = to_vec(z.grad(&grads).expect("gradient"));
            let want = &f[which].1;
            // Relative to the gradient's scale: single elements may be near zero.
            let scale = want.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max) / scale;
            assert!(err < 1e-4, "{name} {which}: max error {err:.2e} of the gradient's scale");
        }
    }
}

/// Central finite differences in f64 against autodiff, for N < D and N > D.
#[test]
fn gradient_matches_finite_differences() {
    let device = device();
    for (n, d, lambda) in [(6, 10, 0.0051), (12, 5, 0.5)] {
        let mut state = 12345u64 + n as u64;
        let mut rand = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        };
        let a: Vec<f64> = (0..n * d).map(|_| rand()).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 0.3 * rand()).collect();
        let loss_of = |a: &[f64]| {
            let l = barlow_loss(
                tensor2_f64([n, d], a.to_vec(), &device),
                tensor2_f64([n, d], b.clone(), &device),
                lambda,
            );
            l.total.into_scalar::<f64>()
        };
        let z_a = tensor2_f64([n, d], a.clone(), &device).require_grad();
        let l = barlow_loss(z_a.clone(), tensor2_f64([n, d], b.clone(), &device), lambda);
        let grad: Vec<f64> = z_a.grad(&l.total.backward()).unwrap().into_data().try_into_vec::<f64>().unwrap();
        let h = 1e-5;
        for i in (0..n * d).step_by(3) {
            let (mut plus, mut minus) = (a.clone(), a.clone());
            plus[i] += h;
            minus[i] -= h;
            let numeric = (loss_of(&plus) - loss_of(&minus)) / (2.0 * h);
            let err = (numeric - grad[i]).abs() / (numeric.abs() + 1e-3);
            assert!(err < 1e-5, "N={n} D={d} element {i}: autodiff {} vs numeric {numeric}", grad[i]);
        }
    }
}

#[test]
fn perfectly_correlated_views_cost_nothing_on_the_diagonal() {
    let device = device();
    let z: Vec<f32> = (0..64 * 8).map(|i| ((i * 7919) % 101) as f32 / 10.0).collect();
    let l = barlow_loss(tensor2(&[64, 8], &z, &device), tensor2(&[64, 8], &z, &device), 0.0051);
    // C_ii = var/(var+ε) ≈ 1: only ε keeps the invariance term from being exactly zero.
    assert!(l.on_diag.into_scalar::<f32>() < 1e-6);
}
