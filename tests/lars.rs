//! LARS against steps computed by hand from the official update rule (on the backend
//! `BARLOW_TEST_BACKEND` names, as tests/common says).

mod common;

use barlow::optim::{LarsConfig, LarsState};
use burn::optim::Optimizer;
use burn::tensor::{Tensor, TensorData};

fn t2(v: [[f32; 2]; 1]) -> Tensor<2> {
    Tensor::from_data(TensorData::from(v), &common::plain_device())
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_into_vec::<f32>().unwrap()
}

fn close(a: &[f32], b: &[f32]) {
    for (x, y) in a.iter().zip(b) {
        assert!((x - y).abs() < 1e-6 * (1.0 + y.abs()), "{a:?} vs {b:?}");
    }
}

#[test]
fn weight_step_scales_by_the_trust_ratio() {
    let lars = LarsConfig::new().with_weight_decay(0.0).build();
    // ‖p‖ = 5, ‖g‖ = 1: q = η·5/1 = 0.005; update = lr · 0.2 · q · g.
    let (p, state) = lars.step(1.0, t2([[3.0, 4.0]]), t2([[0.6, 0.8]]), None);
    close(&values(p), &[3.0 - 0.2 * 0.005 * 0.6, 4.0 - 0.2 * 0.005 * 0.8]);
    close(&values(state.unwrap().mu), &[0.005 * 0.6, 0.005 * 0.8]);
}

#[test]
fn weight_decay_enters_before_the_trust_ratio_and_momentum_accumulates() {
    let (wd, eta, lr) = (0.1f32, 0.001f32, 0.5f32);
    let lars = LarsConfig::new().with_weight_decay(wd as f64).build();
    let p0 = [3.0f32, 4.0];
    let g = [1.0f32, -2.0];
    let dp: Vec<f32> = p0.iter().zip(&g).map(|(p, g)| g + wd * p).collect();
    let q = eta * 5.0 / dp.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mu1: Vec<f32> = dp.iter().map(|d| d * q).collect();
    let p1: Vec<f32> = p0.iter().zip(&mu1).map(|(p, m)| p - lr * 0.2 * m).collect();
    let (p, state) = lars.step(lr as f64, t2([p0]), t2([g]), None);
    let got = values(p);
    close(&got, &p1);

    // Second step, same gradient: mu2 = 0.9·mu1 + q'·(g + wd·p1).
    let dp2: Vec<f32> = p1.iter().zip(&g).map(|(p, g)| g + wd * p).collect();
    let norm_p1 = p1.iter().map(|x| x * x).sum::<f32>().sqrt();
    let q2 = eta * norm_p1 / dp2.iter().map(|x| x * x).sum::<f32>().sqrt();
    let mu2: Vec<f32> = mu1.iter().zip(&dp2).map(|(m, d)| 0.9 * m + q2 * d).collect();
    let p2: Vec<f32> = p1.iter().zip(&mu2).map(|(p, m)| p - lr * 0.2 * m).collect();
    let (p, _) = lars.step(lr as f64, t2([[got[0], got[1]]]), t2([g]), state);
    close(&values(p), &p2);
}

#[test]
fn biases_and_norm_parameters_get_neither_decay_nor_trust_ratio() {
    let lars = LarsConfig::new().with_weight_decay(0.5).build();
    let p = Tensor::<1>::from_data(TensorData::from([3.0f32, 4.0]), &common::plain_device());
    let g = Tensor::<1>::from_data(TensorData::from([0.6f32, 0.8]), &common::plain_device());
    let (p, state) = lars.step(2.0, p, g.clone(), None);
    close(&values(p), &[3.0 - 2.0 * 0.0048 * 0.6, 4.0 - 2.0 * 0.0048 * 0.8]);
    let LarsState { mu } = state.unwrap();
    close(&values(mu), &values(g));
}

#[test]
fn zero_weights_or_zero_update_keep_a_trust_ratio_of_one() {
    let lars = LarsConfig::new().with_weight_decay(0.0).build();
    let (p, _) = lars.step(1.0, t2([[0.0, 0.0]]), t2([[1.0, 2.0]]), None);
    close(&values(p), &[-0.2, -0.4]);
    let (p, _) = lars.step(1.0, t2([[1.0, 2.0]]), t2([[0.0, 0.0]]), None);
    close(&values(p), &[1.0, 2.0]);
}

/// solo-learn's LARS (`trust_ratio = "sum"`): q = η‖w‖ / (‖g‖ + λ‖w‖ + ε), the step lr · q ·
/// (g + λw); where the gradient is 0 the weight stays (no weight decay either).
#[test]
fn the_sum_trust_ratio_is_solo_learns() {
    use barlow::optim::TrustRatio;
    let (wd, eta, lr) = (0.1f32, 0.001f32, 0.5f32);
    let lars = LarsConfig::new().with_weight_decay(wd as f64).with_trust_ratio(TrustRatio::Sum).build();
    // ‖w‖ = 5, ‖g‖ = 1: q = η·5 / (1 + 0.1·5 + 1e-8).
    let q = eta * 5.0 / (1.0 + wd * 5.0 + 1e-8);
    let dp = [(0.6 + wd * 3.0) * q, (0.8 + wd * 4.0) * q];
    let (p, state) = lars.step(lr as f64, t2([[3.0, 4.0]]), t2([[0.6, 0.8]]), None);
    close(&values(p), &[3.0 - lr * 0.2 * dp[0], 4.0 - lr * 0.2 * dp[1]]);
    close(&values(state.unwrap().mu), &dp);
    let (p, state) = lars.step(lr as f64, t2([[3.0, 4.0]]), t2([[0.0, 0.0]]), None);
    assert_eq!(values(p), vec![3.0, 4.0], "no gradient: no step, no weight decay");
    assert_eq!(values(state.unwrap().mu), vec![0.0, 0.0]);
    // The official form decays the same weight without a gradient: the forms differ.
    let (p, _) = LarsConfig::new().with_weight_decay(wd as f64).build().step(lr as f64, t2([[3.0, 4.0]]), t2([[0.0, 0.0]]), None);
    assert!(values(p)[0] < 3.0);
}

/// LARC's clipping (`clip_lr`): the rate is min(q, lr), so a trust ratio above the scheduled
/// rate leaves the plain step lr · (g + λw), one below it is kept; at lr = 0 (the warm-up's first
/// step) the momentum takes the unscaled gradient, as min(q / 0, 1) = 1 does in solo-learn.
#[test]
fn clipping_caps_the_trust_ratio_at_the_scheduled_rate() {
    use barlow::optim::TrustRatio;
    let p0 = [3.0f32, 4.0];
    let g = [0.6f32, 0.8];
    for (eta, trust_ratio) in [(1.0f32, TrustRatio::Sum), (0.001, TrustRatio::Sum), (1.0, TrustRatio::Update)] {
        let lars = LarsConfig::new().with_weight_decay(0.0).with_eta(eta as f64).with_trust_ratio(trust_ratio).with_clip_lr(true).build();
        let rate = 1.0 * 0.2; // the schedule's factor times lr_weights
        let q = match trust_ratio {
            TrustRatio::Sum => eta * 5.0 / (1.0 + 1e-8),
            TrustRatio::Update => eta * 5.0,
        };
        let step = if q > rate { rate } else { q }; // min(q / lr, 1) · lr
        let (p, _) = lars.step(1.0, t2([p0]), t2([g]), None);
        close(&values(p), &[3.0 - step * 0.6, 4.0 - step * 0.8]);
    }
    let lars = LarsConfig::new().with_weight_decay(0.0).with_trust_ratio(TrustRatio::Sum).with_clip_lr(true).build();
    let (p, state) = lars.step(0.0, t2([p0]), t2([g]), None);
    assert_eq!(values(p), p0.to_vec(), "lr 0: no step");
    close(&values(state.unwrap().mu), &g);
}
