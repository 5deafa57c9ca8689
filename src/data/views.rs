//! The paper's augmentations: each view is a random crop, flip, colour jitter, grayscale, blur
//! and solarisation of the image, then normalised.

use anyhow::{Result, bail};
use rand::{Rng, RngExt};

/// An RGB image, `height × width × 3` values in [0, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<f32>,
}

impl Image {
    /// From interleaved bytes with 1 (gray, repeated to RGB) or 3 channels.
    pub fn from_bytes(bytes: &[u8], width: usize, height: usize, channels: usize) -> Image {
        let pixels = match channels {
            1 => bytes.iter().flat_map(|&v| [v as f32 / 255.0; 3]).collect(),
            _ => bytes.iter().map(|&v| v as f32 / 255.0).collect(),
        };
        Image { width, height, pixels }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.pixels.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }

    fn map(mut self, f: impl Fn([f32; 3]) -> [f32; 3]) -> Image {
        for p in self.pixels.chunks_exact_mut(3) {
            let out = f([p[0], p[1], p[2]]);
            p.copy_from_slice(&out.map(|v| v.clamp(0.0, 1.0)));
        }
        self
    }
}

/// Luma as PIL and torchvision compute it.
pub fn luma([r, g, b]: [f32; 3]) -> f32 {
    0.299 * r + 0.587 * g + 0.114 * b
}

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

/// For each of `out` samples over `[start, start + len)`: the first input index and the weights,
/// widened when shrinking so that it antialiases like PIL.
fn taps(start: usize, len: usize, out: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = len as f64 / out as f64;
    let stretch = scale.max(1.0);
    let support = 2.0 * stretch;
    (0..out)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
            let hi = ((center + support + 0.5).floor() as usize).min(len);
            let w: Vec<f64> = (lo..hi).map(|i| cubic((i as f64 - center + 0.5) / stretch)).collect();
            let sum: f64 = w.iter().sum();
            (start + lo, w.iter().map(|v| (v / sum) as f32).collect())
        })
        .collect()
}

/// The box `(x, y, w, h)` of `img` resized to `out_w × out_h`, bicubic with antialiasing.
pub fn resize_box(img: &Image, (x, y, w, h): (usize, usize, usize, usize), out_w: usize, out_h: usize) -> Image {
    let (tx, ty) = (taps(x, w, out_w), taps(y, h, out_h));
    // Horizontal pass over the rows the box spans, then vertical.
    let mut rows = vec![0f32; h * out_w * 3];
    for r in 0..h {
        let src = &img.pixels[(y + r) * img.width * 3..(y + r + 1) * img.width * 3];
        for (o, (first, ws)) in tx.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, wk) in ws.iter().enumerate() {
                let p = &src[(first + k) * 3..(first + k) * 3 + 3];
                for c in 0..3 {
                    acc[c] += wk * p[c];
                }
            }
            // PIL stores the first pass in bytes, clipping the cubic's overshoot.
            rows[(r * out_w + o) * 3..(r * out_w + o) * 3 + 3].copy_from_slice(&acc.map(|v| v.clamp(0.0, 1.0)));
        }
    }
    let mut pixels = vec![0f32; out_h * out_w * 3];
    for (o, (first, ws)) in ty.iter().enumerate() {
        let out = &mut pixels[o * out_w * 3..(o + 1) * out_w * 3];
        for (k, wk) in ws.iter().enumerate() {
            let row = &rows[(first - y + k) * out_w * 3..(first - y + k + 1) * out_w * 3];
            for (acc, v) in out.iter_mut().zip(row) {
                *acc += wk * v;
            }
        }
    }
    pixels.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
    Image { width: out_w, height: out_h, pixels }
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

pub fn brightness(img: Image, f: f32) -> Image {
    img.map(|p| p.map(|v| v * f))
}

/// Blends with the mean luma of the whole image, as torchvision.
pub fn contrast(img: Image, f: f32) -> Image {
    let n = (img.pixels.len() / 3) as f32;
    let mean = img.pixels.chunks_exact(3).map(|p| luma([p[0], p[1], p[2]])).sum::<f32>() / n;
    img.map(|p| p.map(|v| f * v + (1.0 - f) * mean))
}

/// Blends with the pixel's own luma.
pub fn saturation(img: Image, f: f32) -> Image {
    img.map(|p| {
        let g = luma(p);
        p.map(|v| f * v + (1.0 - f) * g)
    })
}

/// Rotates the hue by `shift` turns (in [−0.5, 0.5]) in HSV space.
pub fn hue(img: Image, shift: f32) -> Image {
    img.map(|[r, g, b]| {
        let max = r.max(g).max(b);
        let min = r.min(g).min(b);
        let chroma = max - min;
        if chroma <= 0.0 {
            return [r, g, b];
        }
        let h = if max == r {
            ((g - b) / chroma).rem_euclid(6.0)
        } else if max == g {
            (b - r) / chroma + 2.0
        } else {
            (r - g) / chroma + 4.0
        } / 6.0;
        let h = (h + shift).rem_euclid(1.0) * 6.0;
        let x = chroma * (1.0 - (h % 2.0 - 1.0).abs());
        let (r1, g1, b1) = match h as u32 {
            0 => (chroma, x, 0.0),
            1 => (x, chroma, 0.0),
            2 => (0.0, chroma, x),
            3 => (0.0, x, chroma),
            4 => (x, 0.0, chroma),
            _ => (chroma, 0.0, x),
        };
        let m = max - chroma;
        [r1 + m, g1 + m, b1 + m]
    })
}

pub fn grayscale(img: Image) -> Image {
    img.map(|p| [luma(p); 3])
}

/// Pixels at or above 128/255 inverted, as PIL's `solarize(threshold=128)`.
pub fn solarize(img: Image) -> Image {
    img.map(|p| p.map(|v| if v >= 128.0 / 255.0 { 1.0 - v } else { v }))
}

/// A normalised Gaussian of odd length `kernel`.
pub fn gaussian_kernel(sigma: f32, kernel: usize) -> Vec<f32> {
    let half = (kernel / 2) as f32;
    let w: Vec<f32> = (0..kernel).map(|i| (-((i as f32 - half).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let sum: f32 = w.iter().sum();
    w.into_iter().map(|v| v / sum).collect()
}

/// Separable Gaussian blur with reflected borders (torchvision's `gaussian_blur`).
pub fn gaussian_blur(img: Image, sigma: f32, kernel: usize) -> Image {
    let k = gaussian_kernel(sigma, kernel);
    let half = (kernel / 2) as isize;
    let (w, h) = (img.width as isize, img.height as isize);
    let reflect = |i: isize, n: isize| {
        let i = if i < 0 { -i } else { i };
        (if i >= n { 2 * (n - 1) - i } else { i }).clamp(0, n - 1) as usize
    };
    let pass = |src: &[f32], horizontal: bool| {
        let mut out = vec![0f32; src.len()];
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0f32; 3];
                for (t, kt) in k.iter().enumerate() {
                    let d = t as isize - half;
                    let (sx, sy) = if horizontal { (reflect(x + d, w), y as usize) } else { (x as usize, reflect(y + d, h)) };
                    let p = (sy * w as usize + sx) * 3;
                    for c in 0..3 {
                        acc[c] += kt * src[p + c];
                    }
                }
                let o = (y * w + x) as usize * 3;
                out[o..o + 3].copy_from_slice(&acc);
            }
        }
        out
    };
    let pixels = pass(&pass(&img.pixels, true), false);
    Image { pixels, ..img }
}

/// Per-channel statistics; `apply` gives the `3 × H × W` network input.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Normalize {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    pub fn new(mean: [f32; 3], std: [f32; 3]) -> Self {
        Normalize { mean, std }
    }

    pub fn gray(mean: f32, std: f32) -> Self {
        Normalize { mean: [mean; 3], std: [std; 3] }
    }

    pub fn apply(&self, img: &Image, out: &mut [f32]) {
        let plane = img.width * img.height;
        for (i, p) in img.pixels.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * plane + i] = (p[c] - self.mean[c]) / self.std[c];
            }
        }
    }
}

/// The probabilities that differ between the two views.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ViewProbs {
    pub blur: f64,
    pub solarize: f64,
}

/// The random choices of one view, drawn before any pixel is touched.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub crop: (usize, usize, usize, usize),
    pub flip: bool,
    /// Brightness, contrast, saturation, hue factors and the order (indices into them).
    pub jitter: Option<([f32; 4], [usize; 4])>,
    pub gray: bool,
    pub blur: Option<f32>,
    pub solarize: bool,
}

/// Both views' recipe for one preset and crop size.
#[derive(Clone, Debug)]
pub struct Views {
    pub size: usize,
    pub a: ViewProbs,
    pub b: ViewProbs,
    /// Evaluation resizes the shorter side to `size / eval_crop` then takes the central crop.
    pub eval_crop: f32,
    pub normalize: Normalize,
}

impl Views {
    /// `imagenet`: the paper's (blur 1.0 / 0.1, solarize 0.0 / 0.2); `cifar`: the same without blur.
    pub fn new(preset: &str, size: usize, normalize: Normalize) -> Result<Views> {
        let (blur_a, blur_b, eval_crop) = match preset {
            "imagenet" => (1.0, 0.1, 0.875),
            "cifar" => (0.0, 0.0, 1.0),
            other => bail!("unknown views preset `{other}`; expected imagenet or cifar"),
        };
        Ok(Views {
            size,
            a: ViewProbs { blur: blur_a, solarize: 0.0 },
            b: ViewProbs { blur: blur_b, solarize: 0.2 },
            eval_crop,
            normalize,
        })
    }

    pub fn plan(&self, img: &Image, probs: ViewProbs, rng: &mut impl Rng) -> Plan {
        let crop = crop_box(img.width, img.height, rng);
        let flip = rng.random_bool(0.5);
        let jitter = rng.random_bool(0.8).then(|| {
            let f = [rng.random_range(0.6..1.4), rng.random_range(0.6..1.4), rng.random_range(0.8..1.2),
                rng.random_range(-0.1..0.1)];
            let mut order = [0, 1, 2, 3];
            for i in (1..4).rev() {
                order.swap(i, rng.random_range(0..=i));
            }
            (f, order)
        });
        let gray = rng.random_bool(0.2);
        let blur = rng.random_bool(probs.blur).then(|| rng.random_range(0.1..2.0));
        let solarize = rng.random_bool(probs.solarize);
        Plan { crop, flip, jitter, gray, blur, solarize }
    }

    /// Carries out a plan: the augmented image before normalisation.
    pub fn apply(&self, img: &Image, plan: &Plan) -> Image {
        let mut out = resize_box(img, plan.crop, self.size, self.size);
        if plan.flip {
            out = hflip(out);
        }
        if let Some((f, order)) = plan.jitter {
            for op in order {
                out = match op {
                    0 => brightness(out, f[0]),
                    1 => contrast(out, f[1]),
                    2 => saturation(out, f[2]),
                    _ => hue(out, f[3]),
                };
            }
        }
        if plan.gray {
            out = grayscale(out);
        }
        if let Some(sigma) = plan.blur {
            out = gaussian_blur(out, sigma, self.blur_kernel());
        }
        if plan.solarize {
            out = solarize(out);
        }
        out
    }

    /// About a tenth of the crop, odd (23 at 224 as in BYOL and solo-learn).
    pub fn blur_kernel(&self) -> usize {
        2 * ((self.size as f32 * 0.05).round() as usize).max(1) + 1
    }

    /// Both normalised views of `img`, written into `a` and `b` (`3 × size × size` each).
    pub fn pair(&self, img: &Image, rng: &mut impl Rng, a: &mut [f32], b: &mut [f32]) {
        let plan_a = self.plan(img, self.a, rng);
        let plan_b = self.plan(img, self.b, rng);
        self.normalize.apply(&self.apply(img, &plan_a), a);
        self.normalize.apply(&self.apply(img, &plan_b), b);
    }

    /// The deterministic evaluation view: the central square (`eval_crop` of the shorter side)
    /// resized to `size` (unnormalised).
    pub fn eval_image(&self, img: &Image) -> Image {
        // torchvision's Resize(size / crop) + CenterCrop(size), done as one resampling.
        let short = img.width.min(img.height);
        let crop = ((short as f32 * self.eval_crop).round() as usize).clamp(1, short);
        let b = ((img.width - crop) / 2, (img.height - crop) / 2, crop, crop);
        if crop == self.size {
            return crop_exact(img, b);
        }
        resize_box(img, b, self.size, self.size)
    }

    /// RandomResizedCrop and flip only, normalised: the linear probe's training view.
    pub fn crop_flip(&self, img: &Image, rng: &mut impl Rng, out: &mut [f32]) {
        let mut view = random_resized_crop(img, self.size, rng);
        if rng.random_bool(0.5) {
            view = hflip(view);
        }
        self.normalize.apply(&view, out);
    }

    pub fn eval(&self, img: &Image, out: &mut [f32]) {
        self.normalize.apply(&self.eval_image(img), out);
    }
}

fn crop_exact(img: &Image, (x, y, w, h): (usize, usize, usize, usize)) -> Image {
    let pixels = (y..y + h).flat_map(|r| img.pixels[(r * img.width + x) * 3..(r * img.width + x + w) * 3].iter().copied()).collect();
    Image { width: w, height: h, pixels }
}
