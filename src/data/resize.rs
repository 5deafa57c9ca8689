//! RandomResizedCrop's geometry: where the crop is cut (as torchvision) and PIL's antialiased
//! bicubic resampling of the crop, written straight into channel planes.

use super::colour::weighted_sum;
use super::views::{Image, Pixels, Texel, interleave};
use multiversion::multiversion;
use rand::{Rng, RngExt};

/// Where RandomResizedCrop cuts: `(x, y, w, h)` covering 8–100% of the area with aspect ratio
/// in [3/4, 4/3] (log-uniform), as torchvision; after ten misses, the largest central crop.
pub fn crop_box(width: usize, height: usize, rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let area = (width * height) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..1.0);
        let ratio = rng.random_range(lo..hi).exp();
        let w = (target * ratio).sqrt().round() as usize;
        let h = (target / ratio).sqrt().round() as usize;
        if w > 0 && h > 0 && w <= width && h <= height {
            let y = rng.random_range(0..=height - h);
            let x = rng.random_range(0..=width - w);
            return (x, y, w, h);
        }
    }
    let ratio = width as f64 / height as f64;
    let (w, h) = if ratio < 3.0 / 4.0 {
        (width, (width as f64 / (3.0 / 4.0)).round() as usize)
    } else if ratio > 4.0 / 3.0 {
        ((height as f64 * 4.0 / 3.0).round() as usize, height)
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// Bicubic kernel (a = −0.5, as PIL).
fn cubic(x: f64) -> f64 {
    let (a, x) = (-0.5, x.abs());
    if x < 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * a
    } else {
        0.0
    }
}

/// Resampling weights along one axis: output `o` is the weighted sum of the `count[o]` inputs
/// from `first[o]`, with weights `weights[o * window..]`. Kept between calls to reuse the memory.
#[derive(Default)]
pub(crate) struct Taps {
    first: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<f32>,
    window: usize,
}

impl Taps {
    /// For `out` samples over `len` inputs, widened when shrinking so that it antialiases as PIL.
    fn compute(&mut self, len: usize, out: usize) {
        let scale = len as f64 / out as f64;
        let stretch = scale.max(1.0);
        let support = 2.0 * stretch;
        self.window = support.ceil() as usize * 2 + 2;
        self.first.clear();
        self.count.clear();
        self.weights.clear();
        self.weights.resize(out * self.window, 0.0);
        for o in 0..out {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(len);
            let ws = &mut self.weights[o * self.window..(o + 1) * self.window];
            let mut sum = 0.0;
            for i in lo..hi {
                sum += cubic((i as f64 - center + 0.5) / stretch);
            }
            for (w, i) in ws.iter_mut().zip(lo..hi) {
                *w = (cubic((i as f64 - center + 0.5) / stretch) / sum) as f32;
            }
            self.first.push(lo);
            self.count.push(hi - lo);
        }
    }

    #[inline(always)]
    fn get(&self, o: usize) -> (usize, &[f32]) {
        (self.first[o], &self.weights[o * self.window..o * self.window + self.count[o]])
    }
}

/// This thread's resampling buffers: the weights of both axes and the horizontally resampled rows.
#[derive(Default)]
pub(crate) struct Resampler {
    tx: Taps,
    ty: Taps,
    line: Vec<[f32; 4]>,
    rows: Vec<f32>,
}

impl Resampler {
    /// Resizes the box `(x, y, w, h)` of `src` to `out_w × out_h` into `out` (three planes),
    /// mirrored left–right when `flip`: PIL's bicubic with antialiasing, horizontal pass first,
    /// both passes clipped to [0, 1] as PIL's bytes are.
    pub fn resize<P: Pixels + ?Sized>(
        &mut self,
        src: &P,
        (x, y, w, h): (usize, usize, usize, usize),
        (out_w, out_h): (usize, usize),
        flip: bool,
        out: &mut [f32],
    ) {
        assert!(x + w <= src.width() && y + h <= src.height() && w > 0 && h > 0, "crop box out of the image");
        assert_eq!(out.len(), 3 * out_w * out_h);
        if (w, h) == (out_w, out_h) {
            // Unit scale: the weights are exactly 0 and 1, so a copy gives the same values.
            return self.copy(src, (x, y, w, h), flip, out);
        }
        self.tx.compute(w, out_w);
        self.ty.compute(h, out_h);
        self.rows.resize(3 * h * out_w, 0.0);
        let (data, src_w, line) = (src.data(), src.width(), &mut self.line);
        match src.channels() {
            1 => horizontal::<_, 1>(data, src_w, (x, y, w, h), &self.tx, flip, out_w, line, &mut self.rows),
            _ => horizontal::<_, 3>(data, src_w, (x, y, w, h), &self.tx, flip, out_w, line, &mut self.rows),
        }
        vertical(&self.rows, &self.ty, out_w, out);
    }

    fn copy<P: Pixels + ?Sized>(&mut self, src: &P, (x, y, w, h): (usize, usize, usize, usize), flip: bool, out: &mut [f32]) {
        let (data, ch, plane) = (src.data(), src.channels(), w * h);
        for r in 0..h {
            let line = &data[((y + r) * src.width() + x) * ch..((y + r) * src.width() + x + w) * ch];
            for (o, p) in line.chunks_exact(ch).enumerate() {
                let dst = r * w + if flip { w - 1 - o } else { o };
                for c in 0..3 {
                    out[c * plane + dst] = p[c.min(ch - 1)].unit();
                }
            }
        }
    }
}

/// The horizontal pass over the `h` rows from `y`: `rows` gets three planes of `h × out_w`.
/// Each source row is first widened to four floats a pixel, so that a tap is one vector
/// multiply-add for all channels.
#[allow(clippy::too_many_arguments)]
#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn horizontal<T: Texel, const C: usize>(
    src: &[T],
    src_w: usize,
    (x, y, w, h): (usize, usize, usize, usize),
    taps: &Taps,
    flip: bool,
    out_w: usize,
    line: &mut Vec<[f32; 4]>,
    rows: &mut [f32],
) {
    let plane = h * out_w;
    for r in 0..h {
        let start = ((y + r) * src_w + x) * C;
        line.clear();
        line.extend(src[start..start + w * C].chunks_exact(C).map(|p| {
            let v = |c: usize| p[c.min(C - 1)].unit();
            [v(0), v(1), v(2), 0.0]
        }));
        for o in 0..out_w {
            let (first, ws) = taps.get(o);
            let mut acc = [0f32; 4];
            for (&wk, p) in ws.iter().zip(&line[first..]) {
                for c in 0..4 {
                    acc[c] += wk * p[c];
                }
            }
            let dst = r * out_w + if flip { out_w - 1 - o } else { o };
            for c in 0..3 {
                rows[c * plane + dst] = acc[c].clamp(0.0, 1.0);
            }
        }
    }
}

/// The vertical pass: each output row of each plane a weighted sum of rows, clipped.
#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn vertical(rows: &[f32], taps: &Taps, out_w: usize, out: &mut [f32]) {
    let h = rows.len() / 3 / out_w;
    for (c, dst) in out.chunks_exact_mut(out.len() / 3).enumerate() {
        let rows = &rows[c * h * out_w..(c + 1) * h * out_w];
        for (o, line) in dst.chunks_exact_mut(out_w).enumerate() {
            let (first, ws) = taps.get(o);
            weighted_sum(line, ws, rows, first * out_w, out_w);
            line.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        }
    }
}

/// The box `(x, y, w, h)` of `img` resized to `out_w × out_h`, bicubic with antialiasing.
pub fn resize_box(img: &Image, b: (usize, usize, usize, usize), out_w: usize, out_h: usize) -> Image {
    let mut planes = vec![0f32; 3 * out_w * out_h];
    Resampler::default().resize(img, b, (out_w, out_h), false, &mut planes);
    interleave(&planes, out_w, out_h)
}

pub fn random_resized_crop(img: &Image, size: usize, rng: &mut impl Rng) -> Image {
    let b = crop_box(img.width, img.height, rng);
    resize_box(img, b, size, size)
}

pub fn hflip(mut img: Image) -> Image {
    let w = img.width;
    for row in img.pixels.chunks_exact_mut(w * 3) {
        for x in 0..w / 2 {
            for c in 0..3 {
                row.swap(x * 3 + c, (w - 1 - x) * 3 + c);
            }
        }
    }
    img
}
