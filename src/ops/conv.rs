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
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

/// Columns (pixels × images) a product aims for: enough for the kernel's peak, few enough for
/// a `k × COLUMNS` operand to stay in a 1–2 MB L2 cache.
const COLUMNS: usize = 256;

/// The geometry of one convolution: input `n×c_in×h×w`, weight `c_out×c_in×kh×kw`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub n: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    /// `(begin, end)` padding of height and width.
    pub padding: [(usize, usize); 2],
    pub dilation: [usize; 2],
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        (self.h + self.padding[0].0 + self.padding[0].1 - self.dilation[0] * (self.kh - 1) - 1) / self.stride[0] + 1
    }

    pub fn out_w(&self) -> usize {
        (self.w + self.padding[1].0 + self.padding[1].1 - self.dilation[1] * (self.kw - 1) - 1) / self.stride[1] + 1
    }

    /// Output pixels per image.
    fn p(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// A 1×1, stride-1, unpadded convolution reads the image itself as its column matrix.
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.padding == [(0, 0); 2]
    }

    /// For kernel tap `j` (along width), the output columns `lo..hi` whose input column lies
    /// inside the image, and the input column of output column 0 (possibly negative).
    pub(super) fn valid_cols(&self, j: usize) -> (usize, usize, isize) {
        let (s, pad, d) = (self.stride[1], self.padding[1].0, self.dilation[1]);
        let first = (j * d) as isize - pad as isize;
        let ow = self.out_w();
        let lo = if first >= 0 { 0 } else { ((-first) as usize).div_ceil(s) };
        let hi = if first >= self.w as isize {
            0
        } else {
            (((self.w as isize - 1 - first) as usize) / s + 1).min(ow)
        };
        (lo, hi.max(lo), first)
    }

    pub(super) fn input_row(&self, oy: usize, i: usize) -> Option<usize> {
        let y = (oy * self.stride[0] + i * self.dilation[0]) as isize - self.padding[0].0 as isize;
        (y >= 0 && y < self.h as isize).then_some(y as usize)
    }
}


thread_local! {
    /// Per-thread scratch, reused so that large buffers are not allocated and page-faulted in
    /// every call.
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

pub(super) fn with_scratch<R>(lens: [usize; 3], f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        for (buf, &len) in s.iter_mut().zip(&lens) {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
        }
        let [a, b, c] = &mut *s;
        f(&mut a[..lens[0]], &mut b[..lens[1]], &mut c[..lens[2]])
    })
}

/// `len` zeros, written by every thread: a large `vec![0.0; len]` is zeroed (and its pages
/// first touched) by the calling thread alone while the others wait, 5% of a training step.
pub(super) fn zeros(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0.0f32, len));
    v
}

/// `dst (m×n) = lhs (m×k) · rhs (k×n)`, or `+=` with `accumulate`; each operand given by its
/// pointer, row stride and column stride.
pub(super) fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize, usize),
    lhs: (*const f32, usize, usize),
    rhs: (*const f32, usize, usize),
    accumulate: bool,
    parallelism: Parallelism,
) {
    // SAFETY: every caller passes pointers into slices that hold the whole strided matrices.
    unsafe {
        gemm::gemm(
            m, n, k,
            dst.0, dst.2 as isize, dst.1 as isize, accumulate,
            lhs.0, lhs.2 as isize, lhs.1 as isize,
            rhs.0, rhs.2 as isize, rhs.1 as isize,
            1.0, 1.0, false, false, false, parallelism,
        )
    }
}

/// A unit of work: images `images` (a group) and output rows `rows` of each.
#[derive(Clone, Debug)]
pub(super) struct Unit {
    pub images: Range<usize>,
    pub rows: Range<usize>,
}

impl Unit {
    fn columns(&self, s: &ConvShape) -> usize {
        self.images.len() * self.rows.len() * s.out_w()
    }
}

/// The units of a call, and whether they run in parallel (else each product uses gemm's
/// threads, for batches too small to share out).
fn plan(s: &ConvShape, whole_images: bool) -> (Vec<Unit>, Parallelism) {
    let rows_per_unit = if whole_images { s.out_h() } else { COLUMNS.div_ceil(s.out_w()) };
    units(s.n, (s.out_h(), s.out_w()), COLUMNS, rows_per_unit)
}

/// Units of about `target` columns over `n` images of `rows × per_row` columns each: bands of
/// `rows_per_unit` rows of one image when an image has `target` columns or more, else groups of
/// whole images; with the parallelism that goes with them.
pub(super) fn units(n: usize, (rows, per_row): (usize, usize), target: usize, rows_per_unit: usize) -> (Vec<Unit>, Parallelism) {
    let mut units = vec![];
    if rows * per_row >= target {
        let band = rows_per_unit.min(rows);
        for image in 0..n {
            for r in (0..rows).step_by(band) {
                units.push(Unit { images: image..image + 1, rows: r..(r + band).min(rows) });
            }
        }
    } else {
        let g = target.div_ceil(rows * per_row).min(n);
        for image in (0..n).step_by(g) {
            units.push(Unit { images: image..(image + g).min(n), rows: 0..rows });
        }
    }
    let threads = rayon::current_num_threads();
    let parallelism = match units.len() >= 2 * threads {
        true => Parallelism::None,
        false => Parallelism::Rayon(threads),
    };
    (units, parallelism)
}

/// Runs `task` over units that own disjoint chunks of `out` (`per_image` values per image).
pub(super) fn for_each_unit(units: &[Unit], parallelism: Parallelism, out: &mut [f32], per_image: usize, task: impl Fn(&Unit, &mut [f32]) + Sync) {
    // Units of one image share its output chunk: hand out chunks by image, then the image's units.
    let run = |(chunk_start, chunk): (usize, &mut [f32])| {
        for unit in units.iter().filter(|u| u.images.start == chunk_start) {
            task(unit, &mut *chunk);
        }
    };
    let mut chunks = vec![];
    let mut rest = out;
    let mut starts: Vec<(usize, usize)> = units.iter().map(|u| (u.images.start, u.images.len())).collect();
    starts.dedup();
    for (start, len) in starts {
        let (chunk, tail) = rest.split_at_mut(len * per_image);
        chunks.push((start, chunk));
        rest = tail;
    }
    match parallelism {
        Parallelism::None => chunks.into_par_iter().for_each(run),
        _ => chunks.into_iter().for_each(run),
    }
}

/// Σ over units of what `unit_grad` adds to a `len`-long sum (a weight gradient), split into
/// one contiguous run of units per thread and summed in order: the result does not depend on
/// how rayon schedules (bitwise resume needs that).
pub(super) fn sum_over_units(units: &[Unit], par: Parallelism, len: usize, unit_grad: impl Fn(Vec<f32>, &Unit) -> Vec<f32> + Sync) -> Vec<f32> {
    let tasks = match par {
        Parallelism::None => rayon::current_num_threads().min(units.len()),
        _ => 1,
    };
    let mut parts: Vec<Vec<f32>> = (0..tasks)
        .into_par_iter()
        .map(|t| units[t * units.len() / tasks..(t + 1) * units.len() / tasks].iter().fold(vec![0.0f32; len], &unit_grad))
        .collect();
    let (mut sum, rest) = parts.split_first_mut().map(|(s, r)| (std::mem::take(s), r)).expect("at least one unit");
    // The same additions in the same order in every chunk, whichever thread runs it.
    const CHUNK: usize = 1 << 14;
    sum.par_chunks_mut(CHUNK).enumerate().for_each(|(i, sum)| {
        for part in &*rest {
            sum.iter_mut().zip(&part[i * CHUNK..]).for_each(|(a, b)| *a += b);
        }
    });
    sum
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
