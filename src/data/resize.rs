//! RandomResizedCrop's geometry: where the crop is cut (as torchvision) and PIL's antialiased
//! bicubic resampling of the crop, written straight into channel planes.

use super::colour::weighted_sum;
use super::pixels::{Image, Pixels, Texel, interleave};
use multiversion::multiversion;
use rand::{Rng, RngExt};
use std::collections::HashMap;

/// Where RandomResizedCrop cuts: `(x, y, w, h)` covering 8–100% of the area with aspect ratio
/// in [3/4, 4/3] (log-uniform), as torchvision; after ten misses, the largest central crop.
pub fn crop_box(width: usize, height: usize, rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    crop_box_in(width, height, (0.08, 1.0), rng)
}

/// [`crop_box`] with the area fraction drawn from `scale` (`lo < hi`), RandomResizedCrop's
/// `scale` argument.
pub fn crop_box_in(width: usize, height: usize, scale: (f64, f64), rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let area = (width * height) as f64;
    let (lo, hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..scale.1);
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

/// Resampling weights along one axis: output `o` is the weighted sum of the `window` inputs
/// from `first[o]`, with weights `weights[o * window..]`. Every output has the same number of
/// weights (zeros where PIL's filter has fewer taps, which add exactly nothing), so that the
/// loops over them have a fixed length.
#[derive(Default)]
pub(crate) struct Taps {
    first: Vec<usize>,
    weights: Vec<f32>,
    window: usize,
}

impl Taps {
    /// For `out` samples over `len` inputs, widened when shrinking so that it antialiases as PIL.
    fn new(len: usize, out: usize) -> Taps {
        let mut taps = Taps::default();
        let scale = len as f64 / out as f64;
        let stretch = scale.max(1.0);
        let support = 2.0 * stretch;
        let span = |o: usize| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(len);
            (center, lo, hi)
        };
        taps.window = (0..out).map(|o| span(o).2 - span(o).1).max().unwrap_or(0);
        taps.weights.resize(out * taps.window, 0.0);
        for o in 0..out {
            let (center, lo, hi) = span(o);
            // Near the end the window starts earlier; the weights shift along.
            let first = lo.min(len - taps.window);
            let ws = &mut taps.weights[o * taps.window + lo - first..o * taps.window + hi - first];
            let sum: f64 = (lo..hi).map(|i| cubic((i as f64 - center + 0.5) / stretch)).sum();
            for (w, i) in ws.iter_mut().zip(lo..hi) {
                *w = (cubic((i as f64 - center + 0.5) / stretch) / sum) as f32;
            }
            taps.first.push(first);
        }
        taps
    }

    #[inline(always)]
    fn get(&self, o: usize) -> (usize, &[f32]) {
        (self.first[o], &self.weights[o * self.window..(o + 1) * self.window])
    }
}

/// This thread's resampling buffers: the weights of both axes for every size met so far (a
/// dataset has few), the widened source row and the horizontally resampled rows.
#[derive(Default)]
pub(crate) struct Resampler {
    taps: HashMap<(usize, usize), Taps>,
    line: Vec<[f32; 4]>,
    rows: Vec<[f32; 4]>,
}

/// Enough for every crop side of images up to this size; past it the cache starts over.
const MAX_TAPS: usize = 4096;

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
        if self.taps.len() + 2 > MAX_TAPS {
            self.taps.clear();
        }
        for key in [(w, out_w), (h, out_h)] {
            self.taps.entry(key).or_insert_with(|| Taps::new(key.0, key.1));
        }
        let (tx, ty) = (&self.taps[&(w, out_w)], &self.taps[&(h, out_h)]);
        self.rows.resize(h * out_w, [0.0; 4]);
        let (data, src_w, line) = (src.data(), src.width(), &mut self.line);
        match src.channels() {
            1 => horizontal::<_, 1>(data, src_w, (x, y, w, h), tx, flip, out_w, line, &mut self.rows),
            _ => horizontal::<_, 3>(data, src_w, (x, y, w, h), tx, flip, out_w, line, &mut self.rows),
        }
        vertical(&self.rows[..h * out_w], ty, out_w, line, out);
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

/// The horizontal pass over the `h` rows from `y` into `rows` (`h × out_w` pixels of four
/// floats, the fourth unused). Each source row is first widened to four floats a pixel, so that
/// a tap is one vector multiply-add for all channels and a pixel one vector store.
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
    rows: &mut [[f32; 4]],
) {
    for (r, out) in rows[..h * out_w].chunks_exact_mut(out_w).enumerate() {
        let start = ((y + r) * src_w + x) * C;
        line.clear();
        line.extend(src[start..start + w * C].chunks_exact(C).map(|p| {
            let v = |c: usize| p[c.min(C - 1)].unit();
            [v(0), v(1), v(2), 0.0]
        }));
        for o in 0..out_w {
            let acc = match taps.window {
                4 => resample::<4>(line, taps, o),
                _ => resample_any(line, taps, o),
            };
            out[if flip { out_w - 1 - o } else { o }] = acc.map(|v| v.clamp(0.0, 1.0));
        }
    }
}

/// Output `o` of a widened row, with a window known at compile time (4: every enlargement).
#[inline(always)]
fn resample<const W: usize>(line: &[[f32; 4]], taps: &Taps, o: usize) -> [f32; 4] {
    let (first, ws) = taps.get(o);
    let (ws, px): (&[f32; W], &[[f32; 4]; W]) = (ws.try_into().unwrap(), line[first..first + W].try_into().unwrap());
    let mut acc = [0f32; 4];
    for k in 0..W {
        for c in 0..4 {
            acc[c] += ws[k] * px[k][c];
        }
    }
    acc
}

#[inline(always)]
fn resample_any(line: &[[f32; 4]], taps: &Taps, o: usize) -> [f32; 4] {
    let (first, ws) = taps.get(o);
    let mut acc = [0f32; 4];
    for (&wk, p) in ws.iter().zip(&line[first..first + ws.len()]) {
        for c in 0..4 {
            acc[c] += wk * p[c];
        }
    }
    acc
}

/// The vertical pass: each output row a weighted sum of the rows of four-float pixels, then
/// clipped and split into the three planes, eight pixels at a time so that the split is done
/// with vector shuffles.
#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn vertical(rows: &[[f32; 4]], taps: &Taps, out_w: usize, line: &mut Vec<[f32; 4]>, out: &mut [f32]) {
    let flat = rows.as_flattened();
    let plane = out.len() / 3;
    line.resize(out_w.next_multiple_of(8), [0.0; 4]);
    let (r, gb) = out.split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    for o in 0..plane / out_w {
        let (first, ws) = taps.get(o);
        weighted_sum(&mut line.as_flattened_mut()[..4 * out_w], ws, flat, first * 4 * out_w, 4 * out_w);
        let at = o * out_w..(o + 1) * out_w;
        let (r, g, b) = (&mut r[at.clone()], &mut g[at.clone()], &mut b[at]);
        let whole = out_w / 8 * 8;
        for (x, px) in (0..whole).step_by(8).zip(line.chunks_exact(8)) {
            let px: &[[f32; 4]; 8] = px.try_into().unwrap();
            let mut planes = [[0f32; 8]; 3];
            for (j, p) in px.iter().enumerate() {
                for c in 0..3 {
                    planes[c][j] = p[c].clamp(0.0, 1.0);
                }
            }
            r[x..x + 8].copy_from_slice(&planes[0]);
            g[x..x + 8].copy_from_slice(&planes[1]);
            b[x..x + 8].copy_from_slice(&planes[2]);
        }
        for x in whole..out_w {
            let p = line[x];
            (r[x], g[x], b[x]) = (p[0].clamp(0.0, 1.0), p[1].clamp(0.0, 1.0), p[2].clamp(0.0, 1.0));
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
