//! BatchNorm in training mode on the CPU (f32): batch statistics, normalisation and gradient in
//! two passes over memory each way, optionally fused with the ReLU that follows it.
//!
//! The layout is `[n, c, s]`: `s` values per channel and sample (H·W after a convolution, 1
//! after a Linear layer). Per-channel sums run in f32 vector lanes along a row and in f64
//! across rows; the variance is summed around a shift (the channel's first value), which keeps
//! the one-pass formula accurate when the mean is large against the spread.

use crate::collective::ChannelSum;
use rayon::prelude::*;

/// Channels per task when `s == 1`: the sums then run along rows, across channels.
const CHANNEL_BLOCK: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BnShape {
    pub n: usize,
    pub c: usize,
    pub s: usize,
}

impl BnShape {
    fn row(&self, n: usize, c: usize) -> std::ops::Range<usize> {
        let start = (n * self.c + c) * self.s;
        start..start + self.s
    }
}

// Per-channel sums run in sixteen f32 lanes (vector registers), then in f64 for the lanes and
// the tail. The lanes and the order of every addition are fixed, so the sums are the same bits
// on every instruction set. The loops are compiled once per instruction set (`multiversion`,
// chosen at run time): the default build targets baseline x86-64. Within a block the two sums
// have separate lane loops: one fused loop gets vectorised across (a, b) pairs instead.

/// The f64 total of the lanes `s1`, `s2` and the tail's pairs.
fn total(s1: [f32; 16], s2: [f32; 16], tail: impl Iterator<Item = (f32, f32)>) -> (f64, f64) {
    let lanes = s1.iter().zip(&s2).map(|(&a, &b)| (a, b));
    lanes.chain(tail).fold((0.0, 0.0), |(a, b), (x, y)| (a + x as f64, b + y as f64))
}

/// Σ (v − shift) and Σ (v − shift)² over a row.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma"))]
fn shifted_sums(row: &[f32], shift: f32) -> (f64, f64) {
    let (mut s1, mut s2) = ([0.0f32; 16], [0.0f32; 16]);
    let blocks = row.chunks_exact(16);
    let tail = blocks.remainder();
    for v in blocks {
        for l in 0..16 {
            s1[l] += v[l] - shift;
        }
        for l in 0..16 {
            s2[l] += (v[l] - shift) * (v[l] - shift);
        }
    }
    total(s1, s2, tail.iter().map(|&v| (v - shift, (v - shift) * (v - shift))))
}

/// Σ g and Σ g·(x − mean) over a row, where g is `dy` masked by `y > 0` under a fused ReLU.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma"))]
fn grad_sums(dy: &[f32], x: &[f32], y: Option<&[f32]>, mean: f32) -> (f64, f64) {
    let (n, dy) = (x.len(), &dy[..x.len()]);
    let (mut s1, mut s2) = ([0.0f32; 16], [0.0f32; 16]);
    let (xb, db) = (x.chunks_exact(16), dy.chunks_exact(16));
    let tail = (xb.remainder(), db.remainder());
    let mask = |y: f32, g: f32| if y > 0.0 { g } else { 0.0 };
    match y {
        Some(y) => {
            let yb = y[..n].chunks_exact(16);
            let y_tail = yb.remainder();
            for ((x, dy), y) in xb.zip(db).zip(yb) {
                for l in 0..16 {
                    s1[l] += mask(y[l], dy[l]);
                }
                for l in 0..16 {
                    s2[l] += mask(y[l], dy[l]) * (x[l] - mean);
                }
            }
            let tail = tail.0.iter().zip(tail.1).zip(y_tail).map(|((&x, &g), &y)| (mask(y, g), mask(y, g) * (x - mean)));
            total(s1, s2, tail)
        }
        None => {
            for (x, dy) in xb.zip(db) {
                for l in 0..16 {
                    s1[l] += dy[l];
                }
                for l in 0..16 {
                    s2[l] += dy[l] * (x[l] - mean);
                }
            }
            total(s1, s2, tail.0.iter().zip(tail.1).map(|(&x, &g)| (g, g * (x - mean))))
        }
    }
}

/// `out = x·a + b`, then the ReLU when asked.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma"))]
fn normalise_row(out: &mut [f32], x: &[f32], a: f32, b: f32, relu: bool) {
    let x = &x[..out.len()];
    match relu {
        true => out.iter_mut().zip(x).for_each(|(o, &v)| *o = (v * a + b).max(0.0)),
        false => out.iter_mut().zip(x).for_each(|(o, &v)| *o = v * a + b),
    }
}

/// `out = a·g + b·x + k`, g being `dy` masked by `y > 0` under a fused ReLU.
#[multiversion::multiversion(targets("x86_64+avx+avx2+fma"))]
fn gradient_row(out: &mut [f32], dy: &[f32], x: &[f32], y: Option<&[f32]>, (a, b, k): (f32, f32, f32)) {
    let (dy, x) = (&dy[..out.len()], &x[..out.len()]);
    match y {
        Some(y) => {
            let y = &y[..out.len()];
            for (o, ((&g, &x), &y)) in out.iter_mut().zip(dy.iter().zip(x).zip(y)) {
                *o = a * (if y > 0.0 { g } else { 0.0 }) + b * x + k;
            }
        }
        None => {
            for (o, (&g, &x)) in out.iter_mut().zip(dy.iter().zip(x)) {
                *o = a * g + b * x + k;
            }
        }
    }
}

/// Per-channel sums of `f(n, c)` over the batch, by channel (`s > 1`) or by row (`s == 1`).
fn channel_sums(sh: BnShape, f: impl Fn(usize, usize) -> (f64, f64) + Sync) -> Vec<(f64, f64)> {
    if sh.s > 1 {
        return (0..sh.c)
            .into_par_iter()
            .map(|c| (0..sh.n).map(|n| f(n, c)).fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1)))
            .collect();
    }
    (0..sh.c.div_ceil(CHANNEL_BLOCK))
        .into_par_iter()
        .flat_map_iter(|block| {
            let channels = block * CHANNEL_BLOCK..((block + 1) * CHANNEL_BLOCK).min(sh.c);
            let mut sums = vec![(0.0, 0.0); channels.len()];
            for n in 0..sh.n {
                for (acc, c) in sums.iter_mut().zip(channels.clone()) {
                    let (a, b) = f(n, c);
                    acc.0 += a;
                    acc.1 += b;
                }
            }
            sums
        })
        .collect()
}

/// Writes `out[n, c, :] = f(c, n, c-row index range)` for every row, in parallel over rows.
fn map_rows(sh: BnShape, out: &mut [f32], f: impl Fn(usize, usize, &mut [f32]) + Sync) {
    if sh.s > 1 {
        out.par_chunks_mut(sh.s).enumerate().for_each(|(r, row)| f(r / sh.c, r % sh.c, row));
    } else {
        // One sample's row of channels per task; `f` is then called per element.
        out.par_chunks_mut(sh.c).with_min_len(8).enumerate().for_each(|(n, row)| {
            for (c, v) in row.iter_mut().enumerate() {
                f(n, c, std::slice::from_mut(v));
            }
        });
    }
}

/// Per channel, the shift and the sums Σ(x − shift), Σ(x − shift)², and the element count —
/// over this process's batch, or the global batch when `sync` is given.
fn statistics(x: &[f32], sh: BnShape, sync: Option<&dyn ChannelSum>) -> (Vec<f32>, Vec<(f64, f64)>, f64) {
    let count = (sh.n * sh.s) as f64;
    let Some(sync) = sync else {
        let shifts: Vec<f32> = (0..sh.c).map(|c| x[sh.row(0, c)][0]).collect();
        let sums = channel_sums(sh, |n, c| shifted_sums(&x[sh.row(n, c)], shifts[c]));
        return (shifts, sums, count);
    };
    // Workers must shift by the same value: the global mean, summed first (two passes).
    let mut totals: Vec<f64> = channel_sums(sh, |n, c| shifted_sums(&x[sh.row(n, c)], 0.0)).iter().map(|s| s.0).collect();
    totals.push(count);
    sync.sum(&mut totals);
    let count = totals[sh.c];
    let shifts: Vec<f32> = totals[..sh.c].iter().map(|s| (s / count) as f32).collect();
    let sums = channel_sums(sh, |n, c| shifted_sums(&x[sh.row(n, c)], shifts[c]));
    let mut flat: Vec<f64> = sums.iter().flat_map(|&(a, b)| [a, b]).collect();
    sync.sum(&mut flat);
    (shifts, flat.chunks_exact(2).map(|p| (p[0], p[1])).collect(), count)
}

/// Training-mode BatchNorm: `(y, mean, biased variance)`, with `y = relu(...)` when asked; with
/// `sync`, the statistics are those of every worker's batch together.
pub fn forward(
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    epsilon: f64,
    sh: BnShape,
    relu: bool,
    sync: Option<&dyn ChannelSum>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (shifts, sums, count) = statistics(x, sh, sync);
    let mut mean = Vec::with_capacity(sh.c);
    let mut var = Vec::with_capacity(sh.c);
    let mut scale = Vec::with_capacity(sh.c);
    let mut offset = Vec::with_capacity(sh.c);
    for c in 0..sh.c {
        let (s1, s2) = sums[c];
        let m = s1 / count;
        let v = (s2 / count - m * m).max(0.0);
        let mean_c = shifts[c] as f64 + m;
        let a = gamma[c] as f64 / (v + epsilon).sqrt();
        mean.push(mean_c as f32);
        var.push(v as f32);
        scale.push(a as f32);
        offset.push((beta[c] as f64 - mean_c * a) as f32);
    }
    let mut y = super::units::zeros(x.len());
    map_rows(sh, &mut y, |n, c, row| {
        normalise_row(row, &x[(n * sh.c + c) * sh.s..], scale[c], offset[c], relu);
    });
    (y, mean, var)
}

/// Gradients `(dx, dgamma, dbeta)` of [`forward`], given its input `x`, statistics and the
/// output gradient `dy`; `y` is the forward output when the ReLU was fused. With `sync` (as in
/// the forward pass) the sums that `dx` needs run over every worker's batch; `dgamma` and
/// `dbeta` stay this worker's share, to be summed with every other parameter gradient.
#[allow(clippy::too_many_arguments)]
pub fn backward(
    x: &[f32],
    gamma: &[f32],
    mean: &[f32],
    var: &[f32],
    epsilon: f64,
    dy: &[f32],
    y: Option<&[f32]>,
    sh: BnShape,
    sync: Option<&dyn ChannelSum>,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let local = channel_sums(sh, |n, c| {
        let r = sh.row(n, c);
        grad_sums(&dy[r.clone()], &x[r.clone()], y.map(|y| &y[r]), mean[c])
    });
    let (mut sums, mut count) = (local.clone(), (sh.n * sh.s) as f64);
    if let Some(sync) = sync {
        let mut flat: Vec<f64> = local.iter().flat_map(|&(a, b)| [a, b]).chain([count]).collect();
        sync.sum(&mut flat);
        count = flat[2 * sh.c];
        sums = flat[..2 * sh.c].chunks_exact(2).map(|p| (p[0], p[1])).collect();
    }
    // dx = γσ⁻¹ (g − Σg/M − x̂ Σg·x̂/M) = A·g + B·x + C per channel.
    let mut dgamma = Vec::with_capacity(sh.c);
    let mut dbeta = Vec::with_capacity(sh.c);
    let mut coef = Vec::with_capacity(sh.c);
    for c in 0..sh.c {
        let (sg, sgx) = sums[c];
        let inv_std = 1.0 / (var[c] as f64 + epsilon).sqrt();
        dbeta.push(local[c].0 as f32);
        dgamma.push((local[c].1 * inv_std) as f32);
        let a = gamma[c] as f64 * inv_std;
        let b = -a * inv_std * inv_std * sgx / count;
        let k = -a * sg / count - b * mean[c] as f64;
        coef.push((a as f32, b as f32, k as f32));
    }
    let mut dx = super::units::zeros(x.len());
    map_rows(sh, &mut dx, |n, c, row| {
        let start = (n * sh.c + c) * sh.s;
        gradient_row(row, &dy[start..], &x[start..], y.map(|y| &y[start..]), coef[c]);
    });
    (dx, dgamma, dbeta)
}
