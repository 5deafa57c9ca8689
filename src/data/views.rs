//! The paper's augmentations: each view is a random crop, flip, colour jitter, grayscale, blur
//! and solarisation of the image, then normalised.
//!
//! A view is made in the batch's own memory: the crop is resampled straight into the output's
//! channel planes, every other step works on them in place, and the buffers each step needs are
//! kept per thread, so a view allocates nothing.

use super::colour::{self, Blur};
use super::resize::Resampler;
use anyhow::{Result, bail};
use multiversion::multiversion;
use rand::{Rng, RngExt};
use std::cell::Cell;

pub use super::colour::{brightness, contrast, gaussian_blur, gaussian_kernel, grayscale, hue, saturation, solarize};
pub use super::pixels::{Bytes, Image, Pixels, Texel, luma};
use super::pixels::{interleave, planar};
pub use super::resize::{crop_box, crop_box_in, hflip, random_resized_crop, resize_box};

/// This thread's buffers for making views.
#[derive(Default)]
struct Workspace {
    resampler: Resampler,
    blur: Blur,
}

thread_local! {
    static WORKSPACE: Cell<Workspace> = Cell::default();
}

/// Runs `f` with this thread's workspace (taken out meanwhile: a nested call gets a fresh one).
fn with_workspace<R>(f: impl FnOnce(&mut Workspace) -> R) -> R {
    let mut ws = WORKSPACE.take();
    let r = f(&mut ws);
    WORKSPACE.set(ws);
    r
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
        out.copy_from_slice(&planar(img));
        self.apply_planes(out);
    }

    /// Normalises channel planes in place.
    pub fn apply_planes(&self, px: &mut [f32]) {
        normalize_planes(px, self.mean, self.std);
    }
}

#[multiversion(targets("x86_64+avx+avx2+fma", "x86_64+sse4.1"))]
fn normalize_planes(px: &mut [f32], mean: [f32; 3], std: [f32; 3]) {
    for (c, plane) in px.chunks_exact_mut(px.len() / 3).enumerate() {
        plane.iter_mut().for_each(|v| *v = (*v - mean[c]) / std[c]);
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

/// The views' recipe for one preset and crop size: two global views, and the local crops of
/// multi-crop.
#[derive(Clone, Debug)]
pub struct Views {
    pub size: usize,
    pub a: ViewProbs,
    pub b: ViewProbs,
    /// The area fraction of the global crops (RandomResizedCrop's `scale`).
    pub scale: (f64, f64),
    pub local: LocalCrops,
    /// Evaluation resizes the shorter side to `size / eval_crop` then takes the central crop.
    pub eval_crop: f32,
    pub normalize: Normalize,
}

/// Multi-crop's small views (Caron et al., SwAV and DINO): `count` crops of `size` px each, from
/// `scale` of the area, with the global views' flip, jitter and grayscale and their own blur.
#[derive(Clone, Debug, PartialEq)]
pub struct LocalCrops {
    pub count: usize,
    pub size: usize,
    pub scale: (f64, f64),
    pub probs: ViewProbs,
}

impl Views {
    /// `imagenet`: the paper's (blur 1.0 / 0.1, solarize 0.0 / 0.2); `cifar`: the same without blur.
    pub fn new(preset: &str, size: usize, normalize: Normalize) -> Result<Views> {
        let (blur_a, blur_b, eval_crop) = match preset {
            "imagenet" => (1.0, 0.1, 0.875),
            "cifar" => (0.0, 0.0, 1.0),
            other => bail!("unknown views preset `{other}`; expected imagenet or cifar"),
        };
        // DINO's local crops: blurred half the time where the global views are blurred at all.
        let local_blur = if blur_a > 0.0 { 0.5 } else { 0.0 };
        Ok(Views {
            size,
            a: ViewProbs { blur: blur_a, solarize: 0.0 },
            b: ViewProbs { blur: blur_b, solarize: 0.2 },
            scale: (0.08, 1.0),
            local: LocalCrops { count: 0, size: 96, scale: (0.05, 0.4), probs: ViewProbs { blur: local_blur, solarize: 0.0 } },
            eval_crop,
            normalize,
        })
    }

    /// The training views `config` asks for.
    pub fn for_training(config: &crate::config::DataConfig, normalize: Normalize) -> Result<Views> {
        let pair = |s: [f64; 2]| (s[0], s[1]);
        let views = Views::new(&config.views, config.size, normalize)?;
        Ok(views.with_crops(pair(config.global_scale), config.local_crops, config.local_size, pair(config.local_scale)))
    }

    /// The views with global crops from `scale` of the area and `count` local crops of `size`
    /// px from `local_scale` of it.
    pub fn with_crops(self, scale: (f64, f64), count: usize, size: usize, local_scale: (f64, f64)) -> Views {
        let local = LocalCrops { count, size, scale: local_scale, ..self.local };
        Views { scale, local, ..self }
    }

    /// Views per image: the two global ones and the local crops.
    pub fn count(&self) -> usize {
        2 + self.local.count
    }

    /// Side of view `v` (0 and 1 the global views).
    pub fn side(&self, v: usize) -> usize {
        if v < 2 { self.size } else { self.local.size }
    }

    /// A global view's random choices.
    pub fn plan(&self, img: &impl Pixels, probs: ViewProbs, rng: &mut impl Rng) -> Plan {
        self.plan_in(img, probs, self.scale, rng)
    }

    /// The random choices of a view cropped from `scale` of the area.
    pub fn plan_in(&self, img: &impl Pixels, probs: ViewProbs, scale: (f64, f64), rng: &mut impl Rng) -> Plan {
        let crop = crop_box_in(img.width(), img.height(), scale, rng);
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

    /// Carries out a global view's plan: the augmented image before normalisation.
    pub fn apply(&self, img: &impl Pixels, plan: &Plan) -> Image {
        let mut px = vec![0f32; 3 * self.size * self.size];
        with_workspace(|ws| apply_planes(ws, img, plan, self.size, &mut px));
        interleave(&px, self.size, self.size)
    }

    /// About a tenth of the crop, odd (23 at 224 as in BYOL and solo-learn).
    pub fn blur_kernel(&self) -> usize {
        blur_kernel(self.size)
    }

    /// Both normalised global views of `img`, written into `a` and `b` (`3 × size × size` each).
    pub fn pair(&self, img: &impl Pixels, rng: &mut impl Rng, a: &mut [f32], b: &mut [f32]) {
        self.crops(img, rng, &mut [a, b]);
    }

    /// Every normalised view of `img` ([`count`](Self::count) of them: view `v` is
    /// `3 × side(v) × side(v)`). The random choices are drawn in view order, all before any
    /// pixel is made.
    pub fn crops(&self, img: &impl Pixels, rng: &mut impl Rng, out: &mut [&mut [f32]]) {
        assert_eq!(out.len(), self.count(), "one buffer per view");
        let mut plans = vec![self.plan(img, self.a, rng), self.plan(img, self.b, rng)];
        plans.extend((0..self.local.count).map(|_| self.plan_in(img, self.local.probs, self.local.scale, rng)));
        with_workspace(|ws| {
            for (v, (plan, px)) in plans.iter().zip(out.iter_mut()).enumerate() {
                apply_planes(ws, img, plan, self.side(v), px);
            }
        });
        for px in out.iter_mut() {
            self.normalize.apply_planes(px);
        }
    }

    /// The box of the evaluation view: the central square, `eval_crop` of the shorter side.
    fn eval_box(&self, width: usize, height: usize) -> (usize, usize, usize, usize) {
        // torchvision's Resize(size / crop) + CenterCrop(size), done as one resampling.
        let short = width.min(height);
        let crop = ((short as f32 * self.eval_crop).round() as usize).clamp(1, short);
        ((width - crop) / 2, (height - crop) / 2, crop, crop)
    }

    /// The deterministic evaluation view: the central square (`eval_crop` of the shorter side)
    /// resized to `size` (unnormalised).
    pub fn eval_image(&self, img: &Image) -> Image {
        resize_box(img, self.eval_box(img.width, img.height), self.size, self.size)
    }

    /// RandomResizedCrop and flip only, normalised: the linear probe's training view.
    pub fn crop_flip(&self, img: &impl Pixels, rng: &mut impl Rng, out: &mut [f32]) {
        let crop = crop_box(img.width(), img.height(), rng);
        let flip = rng.random_bool(0.5);
        with_workspace(|ws| ws.resampler.resize(img, crop, (self.size, self.size), flip, out));
        self.normalize.apply_planes(out);
    }

    pub fn eval(&self, img: &impl Pixels, out: &mut [f32]) {
        let b = self.eval_box(img.width(), img.height());
        with_workspace(|ws| ws.resampler.resize(img, b, (self.size, self.size), false, out));
        self.normalize.apply_planes(out);
    }
}

/// Carries out a plan into `out`'s channel planes (`3 × size × size`, unnormalised).
fn apply_planes(ws: &mut Workspace, img: &impl Pixels, plan: &Plan, size: usize, out: &mut [f32]) {
    ws.resampler.resize(img, plan.crop, (size, size), plan.flip, out);
    if let Some((f, order)) = plan.jitter {
        for op in order {
            match op {
                0 => colour::brightness_planes(out, f[0]),
                1 => colour::contrast_planes(out, f[1]),
                2 => colour::saturation_planes(out, f[2]),
                _ => colour::hue_planes(out, f[3]),
            }
        }
    }
    if plan.gray {
        colour::grayscale_planes(out);
    }
    if let Some(sigma) = plan.blur {
        ws.blur.apply(out, size, size, sigma, blur_kernel(size));
    }
    if plan.solarize {
        colour::solarize_planes(out);
    }
}

/// About a tenth of a `size`-px crop, odd.
fn blur_kernel(size: usize) -> usize {
    2 * ((size as f32 * 0.05).round() as usize).max(1) + 1
}
