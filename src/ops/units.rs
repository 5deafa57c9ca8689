//! What the CPU convolutions share: a convolution's geometry, the units its work is cut into
//! (see `conv`), per-thread scratch buffers and the `gemm` product they are all made of.

use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;
use std::ops::Range;

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
    pub(super) fn p(&self) -> usize {
        self.out_h() * self.out_w()
    }

    /// Rows of the im2col matrix: one per (input channel, kernel row, kernel column).
    pub(super) fn k(&self) -> usize {
        self.c_in * self.kh * self.kw
    }

    /// A 1×1, stride-1, unpadded convolution reads the image itself as its column matrix.
    pub(super) fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.padding == [(0, 0); 2]
    }

    /// For kernel tap `j` (along width), the output columns `lo..hi` whose input column lies
    /// inside the image, and the input column of output column 0 (possibly negative).
    pub fn valid_cols(&self, j: usize) -> (usize, usize, isize) {
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

    pub fn input_row(&self, oy: usize, i: usize) -> Option<usize> {
        let y = (oy * self.stride[0] + i * self.dilation[0]) as isize - self.padding[0].0 as isize;
        (y >= 0 && y < self.h as isize).then_some(y as usize)
    }
}


thread_local! {
    /// Per-thread scratch, reused so that large buffers are not allocated and page-faulted in
    /// every call.
    static SCRATCH: RefCell<[Vec<f32>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };
}

pub fn with_scratch<R>(lens: [usize; 3], f: impl FnOnce(&mut [f32], &mut [f32], &mut [f32]) -> R) -> R {
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
pub fn zeros(len: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(len);
    v.par_extend(rayon::iter::repeat_n(0.0f32, len));
    v
}

/// `dst (m×n) = lhs (m×k) · rhs (k×n)`, or `+=` with `accumulate`; each operand given by its
/// pointer, row stride and column stride.
pub fn matmul(
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
pub struct Unit {
    pub images: Range<usize>,
    pub rows: Range<usize>,
}

impl Unit {
    pub fn columns(&self, s: &ConvShape) -> usize {
        self.images.len() * self.rows.len() * s.out_w()
    }
}

/// Units of about `target` columns over `n` images of `rows × per_row` columns each: bands of
/// `rows_per_unit` rows of one image when an image has `target` columns or more, else groups of
/// whole images; with the parallelism that goes with them.
pub fn units(n: usize, (rows, per_row): (usize, usize), target: usize, rows_per_unit: usize) -> (Vec<Unit>, Parallelism) {
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
pub fn for_each_unit(units: &[Unit], parallelism: Parallelism, out: &mut [f32], per_image: usize, task: impl Fn(&Unit, &mut [f32]) + Sync) {
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
pub fn sum_over_units(units: &[Unit], par: Parallelism, len: usize, unit_grad: impl Fn(Vec<f32>, &Unit) -> Vec<f32> + Sync) -> Vec<f32> {
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
