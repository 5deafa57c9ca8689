//! Colour jitter, grayscale, Gaussian blur and solarisation as torchvision computes them, on
//! channel planes (`3 × H × W`, values in [0, 1]) so that every pass is a plain loop over
//! contiguous values that the compiler vectorises.

use super::pixels::{Image, interleave, planar};
use multiversion::multiversion;

// Each kernel below is compiled for AVX2 and SSE4.1 as well and chosen at run time
// (`multiversion`); they form no fused multiply-adds, so every CPU computes the same values.

#[inline(always)]
fn luma(r: f32, g: f32, b: f32) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

/// The red, green and blue planes.
#[inline(always)]
fn rgb(px: &mut [f32]) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let n = px.len() / 3;
    let (r, gb) = px.split_at_mut(n);
    let (g, b) = gb.split_at_mut(n);
    (r, g, b)
}

#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
pub(crate) fn brightness_planes(px: &mut [f32], f: f32) {
    px.iter_mut().for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
}

/// Blends with the mean luma of the whole image, as torchvision.
#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
pub(crate) fn contrast_planes(px: &mut [f32], f: f32) {
    let mean = mean_luma(px);
    px.iter_mut().for_each(|v| *v = (f * *v + (1.0 - f) * mean).clamp(0.0, 1.0));
}

/// Eight running f32 sums per block of 1024 pixels (vectorised), blocks added in f64.
#[inline(always)]
fn mean_luma(px: &mut [f32]) -> f32 {
    let (r, g, b) = rgb(px);
    let mut total = 0f64;
    for ((r, g), b) in r.chunks(1024).zip(g.chunks(1024)).zip(b.chunks(1024)) {
        let mut lanes = [0f32; 8];
        for ((r, g), b) in r.chunks_exact(8).zip(g.chunks_exact(8)).zip(b.chunks_exact(8)) {
            let (r, g, b): (&[f32; 8], &[f32; 8], &[f32; 8]) = (r.try_into().unwrap(), g.try_into().unwrap(), b.try_into().unwrap());
            for l in 0..8 {
                lanes[l] += luma(r[l], g[l], b[l]);
            }
        }
        total += lanes.iter().map(|&v| v as f64).sum::<f64>();
        let whole = r.len() / 8 * 8;
        total += (whole..r.len()).map(|i| luma(r[i], g[i], b[i]) as f64).sum::<f64>();
    }
    (total / (px.len() / 3) as f64) as f32
}

/// Blends with the pixel's own luma.
#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
pub(crate) fn saturation_planes(px: &mut [f32], f: f32) {
    let (r, g, b) = rgb(px);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let l = (1.0 - f) * luma(*r, *g, *b);
        (*r, *g, *b) = ((f * *r + l).clamp(0.0, 1.0), (f * *g + l).clamp(0.0, 1.0), (f * *b + l).clamp(0.0, 1.0));
    }
}

/// Rotates the hue by `shift` turns (in [−0.5, 0.5]) in HSV space. Written as selects, without
/// branches or remainders (hue in sixths of a turn, wrapped by comparisons; HSV → RGB by the
/// min/max formula), so that it vectorises; equal to torchvision's up to float rounding.
#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
pub(crate) fn hue_planes(px: &mut [f32], shift: f32) {
    let (r, g, b) = rgb(px);
    let shift = 6.0 * shift;
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (rv, gv, bv) = (*r, *g, *b);
        let max = max(max(rv, gv), bv);
        let chroma = max - min(min(rv, gv), bv);
        let inv = 1.0 / if chroma > 0.0 { chroma } else { 1.0 };
        let hr = (gv - bv) * inv;
        let hr = hr + if hr < 0.0 { 6.0 } else { 0.0 };
        let hg = (bv - rv) * inv + 2.0;
        let hb = (rv - gv) * inv + 4.0;
        let h = if max == rv { hr } else if max == gv { hg } else { hb };
        let h = h + shift;
        let h = h + if h < 0.0 { 6.0 } else { 0.0 } - if h >= 6.0 { 6.0 } else { 0.0 };
        // Channel n of hue h: max − chroma · clamp(min(k, 4 − k), 0, 1), k = (n + h) mod 6.
        let channel = |n: f32, old: f32| {
            let k = n + h;
            let k = k - if k >= 6.0 { 6.0 } else { 0.0 };
            let v = unit(max - chroma * unit(min(k, 4.0 - k)));
            // Grays have no hue and stay as they are.
            if chroma > 0.0 { v } else { old }
        };
        (*r, *g, *b) = (channel(5.0, rv), channel(3.0, gv), channel(1.0, bv));
    }
}

/// `min`, `max` and clamping to [0, 1] for values that are never NaN: one instruction each,
/// without `f32::min`'s NaN handling.
#[inline(always)]
fn min(a: f32, b: f32) -> f32 {
    if a < b { a } else { b }
}

#[inline(always)]
fn max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

#[inline(always)]
fn unit(v: f32) -> f32 {
    min(max(v, 0.0), 1.0)
}

#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
pub(crate) fn grayscale_planes(px: &mut [f32]) {
    let (r, g, b) = rgb(px);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let l = luma(*r, *g, *b).clamp(0.0, 1.0);
        (*r, *g, *b) = (l, l, l);
    }
}

/// Values at or above 128/255 inverted, as PIL's `solarize(threshold=128)`.
#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
pub(crate) fn solarize_planes(px: &mut [f32]) {
    px.iter_mut().for_each(|v| *v = if *v >= 128.0 / 255.0 { 1.0 - *v } else { *v }.clamp(0.0, 1.0));
}

/// A normalised Gaussian of odd length `kernel`.
pub fn gaussian_kernel(sigma: f32, kernel: usize) -> Vec<f32> {
    let mut w = vec![];
    gaussian_into(sigma, kernel, &mut w);
    w
}

fn gaussian_into(sigma: f32, kernel: usize, w: &mut Vec<f32>) {
    let half = (kernel / 2) as f32;
    w.clear();
    w.extend((0..kernel).map(|i| (-((i as f32 - half).powi(2)) / (2.0 * sigma * sigma)).exp()));
    let sum: f32 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= sum);
}

/// Weights below this are left out of the blur: all of them together move a value in [0, 1]
/// by less than f32's resolution at 1/2 (3·10⁻⁸). Small sigmas then cost a few taps, not 23.
const NEGLIGIBLE: f32 = 1e-9;

/// Index `i` reflected into `0..n` (torchvision pads with `reflect`).
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let i = if i < 0 { -i } else { i };
    (if i >= n { 2 * (n - 1) - i } else { i }).clamp(0, n - 1) as usize
}

/// This thread's buffers for the blur: the kernel, the rows each output row reads, and one
/// plane blurred along the columns with room for the reflected borders of each row.
#[derive(Default)]
pub(crate) struct Blur {
    kernel: Vec<f32>,
    padded: Vec<f32>,
    starts: Vec<usize>,
}

impl Blur {
    /// Separable Gaussian blur of each `width × height` plane, in place (torchvision's
    /// `gaussian_blur`: reflected borders; here the vertical pass first, so that it reads the
    /// plane as it is and no copy of it is needed).
    pub fn apply(&mut self, px: &mut [f32], width: usize, height: usize, sigma: f32, kernel: usize) {
        let half = kernel / 2;
        gaussian_into(sigma, kernel, &mut self.kernel);
        let k = &self.kernel;
        let radius = (0..half).find(|&d| k[half - d - 1] < NEGLIGIBLE && k[half + d + 1] < NEGLIGIBLE).unwrap_or(half);
        // The symmetric kernel's centre and one side: the sum pairs the taps at ±d.
        let side = &k[half..=half + radius];
        for plane in px.chunks_exact_mut(width * height) {
            blur_plane(plane, width, height, side, &mut self.padded, &mut self.starts);
        }
    }
}

#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn blur_plane(plane: &mut [f32], width: usize, height: usize, side: &[f32], padded: &mut Vec<f32>, starts: &mut Vec<usize>) {
    let radius = side.len() - 1;
    let stride = width + 2 * radius;
    padded.resize(stride * height, 0.0);
    // Columns: each output row a weighted sum of whole input rows, written between its borders.
    for (y, row) in padded.chunks_exact_mut(stride).enumerate() {
        starts.clear();
        starts.extend((0..=2 * radius).map(|t| reflect(y as isize + t as isize - radius as isize, height) * width));
        symmetric_sum(&mut row[radius..radius + width], side, plane, starts);
    }
    // Rows: each padded row's reflected borders filled in, then a weighted sum of shifted copies.
    for (row, out) in padded.chunks_exact_mut(stride).zip(plane.chunks_exact_mut(width)) {
        for d in 0..radius {
            row[d] = row[radius + reflect(d as isize - radius as isize, width)];
            row[radius + width + d] = row[radius + reflect((width + d) as isize, width)];
        }
        starts.clear();
        starts.extend(0..=2 * radius);
        symmetric_sum(out, side, row, starts);
    }
}

// The sums below fill their output block by block: an array of 32 values (then 8, then single
// ones for the rest) stays in registers while all the terms are added, instead of a pass over
// memory per term. They are plain generic functions, inlined into the multiversioned callers
// so that they are compiled for the callers' instruction sets.

/// `out[x] = side[0] · s(r)[x] + Σ_d side[d] · (s(r − d)[x] + s(r + d)[x])` where `s(t)` is `src`
/// from `starts[t]`: a symmetric kernel of radius `r`, half the multiplications of the plain
/// sum.
#[inline(always)]
fn symmetric_sum(out: &mut [f32], side: &[f32], src: &[f32], starts: &[usize]) {
    let (r, n) = (side.len() - 1, out.len());
    assert!(starts.len() == 2 * r + 1 && starts.iter().all(|&s| s + n <= src.len()));
    let mut x = 0;
    while x + 32 <= n {
        out[x..x + 32].copy_from_slice(&symmetric_block::<32>(x, side, src, starts));
        x += 32;
    }
    while x + 8 <= n {
        out[x..x + 8].copy_from_slice(&symmetric_block::<8>(x, side, src, starts));
        x += 8;
    }
    for (x, out) in out.iter_mut().enumerate().skip(x) {
        *out = symmetric_block::<1>(x, side, src, starts)[0];
    }
}

#[inline(always)]
fn symmetric_block<const B: usize>(x: usize, side: &[f32], src: &[f32], starts: &[usize]) -> [f32; B] {
    let r = side.len() - 1;
    let at = |t: usize| -> &[f32; B] { src[starts[t] + x..][..B].try_into().unwrap() };
    let centre = at(r);
    let mut acc = [0f32; B];
    for j in 0..B {
        acc[j] = side[0] * centre[j];
    }
    for (d, &w) in side.iter().enumerate().skip(1) {
        let (lo, hi) = (at(r - d), at(r + d));
        for j in 0..B {
            acc[j] += w * (lo[j] + hi[j]);
        }
    }
    acc
}

/// `out[x] = Σ_t weights[t] · src[start + t · stride + x]`, summed in the order of `t`.
#[inline(always)]
pub(crate) fn weighted_sum(out: &mut [f32], weights: &[f32], src: &[f32], start: usize, stride: usize) {
    let n = out.len();
    assert!(weights.is_empty() || start + (weights.len() - 1) * stride + n <= src.len());
    let mut x = 0;
    while x + 32 <= n {
        out[x..x + 32].copy_from_slice(&weighted_block::<32>(start + x, weights, src, stride));
        x += 32;
    }
    while x + 8 <= n {
        out[x..x + 8].copy_from_slice(&weighted_block::<8>(start + x, weights, src, stride));
        x += 8;
    }
    for (x, out) in out.iter_mut().enumerate().skip(x) {
        *out = weighted_block::<1>(start + x, weights, src, stride)[0];
    }
}

#[inline(always)]
fn weighted_block<const B: usize>(at: usize, weights: &[f32], src: &[f32], stride: usize) -> [f32; B] {
    let mut acc = [0f32; B];
    for (t, &w) in weights.iter().enumerate() {
        let s: &[f32; B] = src[at + t * stride..][..B].try_into().unwrap();
        for j in 0..B {
            acc[j] += w * s[j];
        }
    }
    acc
}

fn on_planes(img: Image, f: impl FnOnce(&mut [f32])) -> Image {
    let mut px = planar(&img);
    f(&mut px);
    interleave(&px, img.width, img.height)
}

pub fn brightness(img: Image, f: f32) -> Image {
    on_planes(img, |px| brightness_planes(px, f))
}

pub fn contrast(img: Image, f: f32) -> Image {
    on_planes(img, |px| contrast_planes(px, f))
}

pub fn saturation(img: Image, f: f32) -> Image {
    on_planes(img, |px| saturation_planes(px, f))
}

pub fn hue(img: Image, shift: f32) -> Image {
    on_planes(img, |px| hue_planes(px, shift))
}

pub fn grayscale(img: Image) -> Image {
    on_planes(img, grayscale_planes)
}

pub fn solarize(img: Image) -> Image {
    on_planes(img, solarize_planes)
}

pub fn gaussian_blur(img: Image, sigma: f32, kernel: usize) -> Image {
    let (w, h) = (img.width, img.height);
    on_planes(img, |px| Blur::default().apply(px, w, h, sigma, kernel))
}
