//! 2-D convolution on the CPU (NCHW, f32): forward, input gradient and weight gradient as a
//! few large `gemm` products each (3×3 stride-1 convolutions by Winograd's algorithm instead,
//! see `winograd`).
//!
//! The work is cut into units — a tile of output rows of one image when images are large, a
//! group of whole images when they are small (4×4 at layer 4 of a CIFAR ResNet: a product per
//! image would re-pack the whole weight matrix for 16 columns) — so that every product has
//! about [`COLUMNS`] columns and its operands stay in the core's cache. Rayon tasks own whole
//! units and run their products single-threaded; the weight gradient is summed per task.
//!
//! The layouts are chosen for how `gemm` packs: the right-hand operand of every product is
//! row-major. Hence the weight gradient reads patches as rows of a channels-last copy
//! (`columns::patches`) instead of transposing im2col, and a stride-1 input gradient is the
//! forward convolution of the output gradient with the flipped, transposed kernel (no col2im).

use super::columns::{col2im, im2col, patches, to_channels_last};
pub use super::units::ConvShape;
use super::units::{Unit, for_each_unit, matmul, sum_over_units, units, with_scratch, zeros};
use gemm::Parallelism;
use rayon::prelude::*;

/// Columns (pixels × images) a product aims for: enough for the kernel's peak, few enough for
/// a `k × COLUMNS` operand to stay in a 1–2 MB L2 cache.
const COLUMNS: usize = 256;

/// The units of a call, and whether they run in parallel (else each product uses gemm's
/// threads, for batches too small to share out).
fn plan(s: &ConvShape, whole_images: bool) -> (Vec<Unit>, Parallelism) {
    let rows_per_unit = if whole_images { s.out_h() } else { COLUMNS.div_ceil(s.out_w()) };
    units(s.n, (s.out_h(), s.out_w()), COLUMNS, rows_per_unit)
}

/// `y = conv(x, weight)`, `n×c_out×oh×ow`.
pub fn forward(x: &[f32], weight: &[f32], s: &ConvShape) -> Vec<f32> {
    if super::winograd::applies(s) {
        return super::winograd::forward(x, weight, s);
    }
    let (p, k, co, ow) = (s.p(), s.k(), s.c_out, s.out_w());
    let chw = s.c_in * s.h * s.w;
    let mut y = zeros(s.n * co * p);
    let (units, par) = plan(s, false);
    for_each_unit(&units, par, &mut y, co * p, |unit, y| {
        let images = &x[unit.images.start * chw..unit.images.end * chw];
        let cols = unit.columns(s);
        let single = unit.images.len() == 1;
        if single && s.is_pointwise() {
            let at = unit.rows.start * ow;
            matmul((co, cols, k), (y[at..].as_mut_ptr(), p, 1), (weight.as_ptr(), k, 1), (images[at..].as_ptr(), p, 1), false, par);
            return;
        }
        with_scratch([k * cols, if single { 0 } else { co * cols }, 0], |col, tmp, _| {
            im2col(images, s, unit.rows.clone(), col);
            if single {
                let at = unit.rows.start * ow;
                matmul((co, cols, k), (y[at..].as_mut_ptr(), p, 1), (weight.as_ptr(), k, 1), (col.as_ptr(), cols, 1), false, par);
                return;
            }
            matmul((co, cols, k), (tmp.as_mut_ptr(), cols, 1), (weight.as_ptr(), k, 1), (col.as_ptr(), cols, 1), false, par);
            // The product's columns run over (image, pixel); NCHW wants (image, channel, pixel).
            for b in 0..unit.images.len() {
                for c in 0..co {
                    y[(b * co + c) * p..][..p].copy_from_slice(&tmp[c * cols + b * p..][..p]);
                }
            }
        })
    });
    y
}

/// Gathers the output gradient of a group of images into `c_out × images·p` (columns over
/// image, pixel).
fn gather_grad(dy: &[f32], co: usize, p: usize, out: &mut [f32]) {
    let g = dy.len() / (co * p);
    for b in 0..g {
        for c in 0..co {
            out[c * g * p + b * p..][..p].copy_from_slice(&dy[(b * co + c) * p..][..p]);
        }
    }
}

/// The gradient of the loss with respect to `x`, given the gradient `dy` of the output.
pub fn input_grad(dy: &[f32], weight: &[f32], s: &ConvShape) -> Vec<f32> {
    if let Some((flipped, t)) = transposed(weight, s) {
        return forward(dy, &flipped, &t);
    }
    let (p, k, co) = (s.p(), s.k(), s.c_out);
    let chw = s.c_in * s.h * s.w;
    let mut dx = zeros(s.n * chw);
    let (units, par) = plan(s, true);
    for_each_unit(&units, par, &mut dx, chw, |unit, dx| {
        let cols = unit.columns(s);
        let dy = &dy[unit.images.start * co * p..unit.images.end * co * p];
        with_scratch([k * cols, if unit.images.len() == 1 { 0 } else { co * cols }, 0], |col, gathered, _| {
            let dy_m = match unit.images.len() {
                1 => dy,
                _ => {
                    gather_grad(dy, co, p, gathered);
                    &*gathered
                }
            };
            // Wᵀ (k × c_out): element (r, c) of W is at c·k + r.
            matmul((k, cols, co), (col.as_mut_ptr(), cols, 1), (weight.as_ptr(), 1, k), (dy_m.as_ptr(), cols, 1), false, par);
            col2im(col, s, dx);
        })
    });
    dx
}

/// For a stride-1 convolution, the convolution whose forward pass is its input gradient: the
/// kernel flipped in both axes with input and output channels swapped, padded so that the
/// output has the input's size. `None` when that padding would be negative or strides differ.
fn transposed(weight: &[f32], s: &ConvShape) -> Option<(Vec<f32>, ConvShape)> {
    let pad = |k: usize, d: usize, (begin, end): (usize, usize)| {
        let full = (k - 1) * d;
        (begin <= full && end <= full).then(|| (full - begin, full - end))
    };
    if s.stride != [1, 1] {
        return None;
    }
    let padding = [pad(s.kh, s.dilation[0], s.padding[0])?, pad(s.kw, s.dilation[1], s.padding[1])?];
    let (kh, kw) = (s.kh, s.kw);
    let mut flipped = zeros(weight.len());
    flipped.par_chunks_mut(s.c_out * kh * kw).enumerate().for_each(|(c, flipped)| {
        for co in 0..s.c_out {
            for i in 0..kh {
                for j in 0..kw {
                    flipped[(co * kh + kh - 1 - i) * kw + kw - 1 - j] = weight[((co * s.c_in + c) * kh + i) * kw + j];
                }
            }
        }
    });
    let t = ConvShape { c_in: s.c_out, h: s.out_h(), w: s.out_w(), c_out: s.c_in, padding, ..*s };
    Some((flipped, t))
}

/// The gradient of the loss with respect to `weight` (`c_out × c_in·kh·kw`), given `dy`.
pub fn weight_grad(x: &[f32], dy: &[f32], s: &ConvShape) -> Vec<f32> {
    if super::winograd::applies(s) {
        return super::winograd::weight_grad(x, dy, s);
    }
    let (p, k, co, ow) = (s.p(), s.k(), s.c_out, s.out_w());
    let (hw, chw) = (s.h * s.w, s.c_in * s.h * s.w);
    let (units, par) = plan(s, false);
    // Patches come in (i, j, channel) order; the sum is reordered to (channel, i, j) at the end.
    let unit_grad = |mut dw: Vec<f32>, unit: &Unit| -> Vec<f32> {
        let cols = unit.columns(s);
        let g = unit.images.len();
        with_scratch([cols * k, hw * s.c_in, if g == 1 { 0 } else { co * cols }], |rows, hwc, gathered| {
            let tile = unit.rows.len() * ow;
            // Only the input rows this unit's output rows read (a tile of a large image reads a
            // band of it).
            let (first, last) = (unit.rows.start, unit.rows.end - 1);
            let top = (first * s.stride[0]).saturating_sub(s.padding[0].0).min(s.h);
            let bottom = (last * s.stride[0] + (s.kh - 1) * s.dilation[0] + 1).saturating_sub(s.padding[0].0).min(s.h);
            for (b, n) in unit.images.clone().enumerate() {
                to_channels_last(&x[n * chw..][..chw], s.c_in, hw, top * s.w..bottom.max(top) * s.w, hwc);
                patches(hwc, s, unit.rows.clone(), &mut rows[b * tile * k..][..tile * k]);
            }
            let dy = &dy[unit.images.start * co * p..unit.images.end * co * p];
            let (dy_m, stride) = match g {
                1 => (&dy[unit.rows.start * ow..], p),
                _ => {
                    gather_grad(dy, co, p, gathered);
                    (&*gathered, cols)
                }
            };
            matmul((co, k, cols), (dw.as_mut_ptr(), k, 1), (dy_m.as_ptr(), stride, 1), (rows.as_ptr(), k, 1), true, par);
        });
        dw
    };
    let dw_hwc = sum_over_units(&units, par, co * k, unit_grad);
    let (c, taps) = (s.c_in, s.kh * s.kw);
    let mut dw = zeros(co * k);
    dw.par_chunks_mut(k).zip(dw_hwc.par_chunks(k)).for_each(|(dw, hwc)| {
        for t in 0..taps {
            for ch in 0..c {
                dw[ch * taps + t] = hwc[t * c + ch];
            }
        }
    });
    dw
}
