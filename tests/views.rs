//! The augmentations, each against torchvision / PIL goldens and by its statistics.

mod common;

use barlow::data::views::{self, Image, Normalize, Views};
use barlow::data::loader::sample_rng;

fn fixture() -> std::collections::HashMap<String, (Vec<usize>, Vec<f32>)> {
    common::read_safetensors(&common::fixture("views.safetensors"))
}

fn image(f: &std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>, name: &str) -> Image {
    let (shape, pixels) = f[name].clone();
    Image { height: shape[0], width: shape[1], pixels }
}

fn max_diff(a: &Image, b: &Image) -> f32 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.pixels.iter().zip(&b.pixels).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn bicubic_crops_match_pil() {
    let f = fixture();
    let input = image(&f, "input");
    for name in ["crop_up", "crop_down", "crop_full"] {
        let b = &f[&format!("{name}_box")].1;
        let want = image(&f, name);
        let got = views::resize_box(&input, (b[0] as usize, b[1] as usize, b[2] as usize, b[3] as usize), want.width, want.height);
        // PIL rounds to bytes with fixed-point weights: within one step of 1/255 plus rounding.
        assert!(max_diff(&got, &want) <= 1.5 / 255.0, "{name}: {}", max_diff(&got, &want));
    }
}

#[test]
fn colour_ops_match_torchvision() {
    let f = fixture();
    let input = image(&f, "input");
    let cases: Vec<(&str, Image, f32)> = vec![
        ("brightness_1.3", views::brightness(input.clone(), 1.3), 1e-5),
        // torchvision weighs red 0.2989, PIL and barlow 0.299.
        ("contrast_0.7", views::contrast(input.clone(), 0.7), 1e-3),
        ("saturation_1.2", views::saturation(input.clone(), 1.2), 1e-3),
        ("saturation_0", views::saturation(input.clone(), 0.0), 1e-3),
        ("grayscale", views::grayscale(input.clone()), 1e-3),
        ("hue_0.08", views::hue(input.clone(), 0.08), 1e-4),
        ("hue_-0.1", views::hue(input.clone(), -0.1), 1e-4),
        ("blur_5_1.3", views::gaussian_blur(input.clone(), 1.3, 5), 1e-5),
        ("blur_9_0.6", views::gaussian_blur(input.clone(), 0.6, 9), 1e-5),
        ("solarize", views::solarize(input.clone()), 1e-6),
        ("hflip", views::hflip(input.clone()), 0.0),
    ];
    for (name, got, tol) in cases {
        let d = max_diff(&got, &image(&f, name));
        assert!(d <= tol, "{name}: max diff {d} > {tol}");
    }
}

#[test]
fn crop_boxes_follow_the_scale_and_ratio_ranges() {
    let mut rng = sample_rng(1, 2, 3);
    let (w, h) = (200, 160);
    let mut scales = vec![];
    for _ in 0..5000 {
        let (x, y, cw, ch) = views::crop_box(w, h, &mut rng);
        assert!(x + cw <= w && y + ch <= h && cw > 0 && ch > 0);
        let scale = (cw * ch) as f64 / (w * h) as f64;
        let ratio = cw as f64 / ch as f64;
        // Rounding the sides to pixels moves both a little past the nominal bounds.
        assert!((0.07..=1.0).contains(&scale), "scale {scale}");
        assert!((0.72..=1.36).contains(&ratio), "ratio {ratio}");
        scales.push(scale);
    }
    let mean = scales.iter().sum::<f64>() / scales.len() as f64;
    // Uniform on [0.08, 1] less the rejected large crops: well above 0.08, below 0.54.
    assert!((0.35..0.54).contains(&mean), "mean scale {mean}");
    let small = scales.iter().filter(|&&s| s < 0.2).count() as f64 / scales.len() as f64;
    assert!(small > 0.1, "small crops are drawn: {small}");
}

#[test]
fn resizing_keeps_constants_and_antialiases() {
    let flat = Image { width: 17, height: 9, pixels: vec![0.25; 17 * 9 * 3] };
    let up = views::resize_box(&flat, (2, 1, 10, 7), 32, 32);
    assert!(up.pixels.iter().all(|v| (v - 0.25).abs() < 1e-6));
    // A one-pixel checkerboard shrunk 4× is grey everywhere when the filter widens with the scale.
    let board = Image {
        width: 32,
        height: 32,
        pixels: (0..32 * 32).flat_map(|i| [((i / 32 + i % 32) % 2) as f32; 3]).collect(),
    };
    let small = views::resize_box(&board, (0, 0, 32, 32), 8, 8);
    assert!(small.pixels.iter().all(|v| (v - 0.5).abs() < 0.05), "{:?}", &small.pixels[..6]);
}

#[test]
fn blur_kernel_is_normalised_and_a_tenth_of_the_size() {
    let k = views::gaussian_kernel(1.7, 23);
    assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    assert!(k[11] > k[10] && (k[10] - k[12]).abs() < 1e-7);
    let v = |size| Views::new("imagenet", size, Normalize::gray(0.5, 0.5)).unwrap().blur_kernel();
    assert_eq!((v(224), v(96), v(32)), (23, 11, 5));
}

#[test]
fn views_differ_as_the_paper_says() {
    let n = 4000;
    let img = Image { width: 8, height: 8, pixels: vec![0.5; 8 * 8 * 3] };
    let stats = |preset: &str| {
        let views = Views::new(preset, 8, Normalize::gray(0.5, 0.5)).unwrap();
        let mut counts = [[0usize; 5]; 2];
        for i in 0..n {
            let mut rng = sample_rng(7, 0, i as u64);
            for (v, probs) in [views.a, views.b].into_iter().enumerate() {
                let p = views.plan(&img, probs, &mut rng);
                let hits = [p.flip, p.jitter.is_some(), p.gray, p.blur.is_some(), p.solarize];
                for (c, hit) in counts[v].iter_mut().zip(hits) {
                    *c += hit as usize;
                }
                if let Some(sigma) = p.blur {
                    assert!((0.1..2.0).contains(&sigma));
                }
                if let Some((f, order)) = p.jitter {
                    assert!((0.6..1.4).contains(&f[0]) && (0.6..1.4).contains(&f[1]));
                    assert!((0.8..1.2).contains(&f[2]) && (-0.1..0.1).contains(&f[3]));
                    let mut o = order;
                    o.sort();
                    assert_eq!(o, [0, 1, 2, 3]);
                }
            }
        }
        counts.map(|c| c.map(|k| k as f64 / n as f64))
    };
    let near = |x: f64, p: f64| (x - p).abs() < 0.03;
    let [a, b] = stats("imagenet");
    // flip, jitter, grayscale, blur, solarize
    for (got, want) in a.iter().zip([0.5, 0.8, 0.2, 1.0, 0.0]).chain(b.iter().zip([0.5, 0.8, 0.2, 0.1, 0.2])) {
        assert!(near(*got, want), "imagenet: {a:?} {b:?}");
    }
    let [a, b] = stats("cifar");
    assert!(a[3] == 0.0 && b[3] == 0.0 && a[4] == 0.0 && near(b[4], 0.2), "cifar: {a:?} {b:?}");
}

#[test]
fn the_same_seed_gives_the_same_views() {
    let f = fixture();
    let input = image(&f, "input");
    let views = Views::new("imagenet", 16, Normalize::new([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])).unwrap();
    let pair = |seed| {
        let (mut a, mut b) = (vec![0.0; 3 * 16 * 16], vec![0.0; 3 * 16 * 16]);
        views.pair(&input, &mut sample_rng(seed, 0, 5), &mut a, &mut b);
        (a, b)
    };
    let (a1, b1) = pair(3);
    let (a2, b2) = pair(3);
    let (a3, _) = pair(4);
    assert_eq!((&a1, &b1), (&a2, &b2));
    assert_ne!(a1, b1);
    assert_ne!(a1, a3);
}

#[test]
fn normalise_writes_channel_planes() {
    let img = Image { width: 2, height: 1, pixels: vec![0.5, 0.2, 1.0, 0.1, 0.6, 0.0] };
    let norm = Normalize::new([0.5, 0.4, 0.5], [0.5, 0.2, 0.25]);
    let mut out = vec![0.0; 6];
    norm.apply(&img, &mut out);
    let want = [0.0, -0.8, -1.0, 1.0, 2.0, -2.0];
    assert!(out.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6), "{out:?}");
}

#[test]
fn grayscale_inputs_become_three_channels() {
    let img = Image::from_bytes(&[0, 255, 51], 3, 1, 1);
    assert_eq!(img.pixels, vec![0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.2, 0.2, 0.2]);
}

#[test]
fn views_from_bytes_equal_views_from_the_decoded_image() {
    // The loader makes views from the stored or decoded bytes; they must be the very values the
    // float image gives, for colour and gray sources, enlarged, shrunk or copied.
    let (w, h) = (61, 47);
    let rgb: Vec<u8> = (0..w * h * 3).map(|i| ((i * 37) % 251) as u8).collect();
    let gray: Vec<u8> = (0..w * h).map(|i| ((i * 13) % 255) as u8).collect();
    for (bytes, channels) in [(&rgb, 3), (&gray, 1)] {
        let src = views::Bytes { data: bytes, width: w, height: h, channels };
        let img = Image::from_bytes(bytes, w, h, channels);
        for size in [24, 45, 96] {
            let views = Views::new("imagenet", size, Normalize::new([0.4, 0.5, 0.6], [0.2, 0.25, 0.3])).unwrap();
            for i in 0..20 {
                let len = 3 * size * size;
                let (mut a1, mut b1, mut a2, mut b2) = (vec![0.0; len], vec![0.0; len], vec![1.0; len], vec![1.0; len]);
                views.pair(&src, &mut sample_rng(9, 0, i), &mut a1, &mut b1);
                views.pair(&img, &mut sample_rng(9, 0, i), &mut a2, &mut b2);
                assert!(a1 == a2 && b1 == b2, "channels {channels}, size {size}, sample {i}");
                views.eval(&src, &mut a1);
                views.eval(&img, &mut a2);
                assert!(a1 == a2, "eval: channels {channels}, size {size}");
            }
        }
    }
}

#[test]
fn blur_equals_the_plain_sum_with_all_taps() {
    // Reference: torchvision's definition summed directly in f64 (reflected borders, 23 taps).
    let (w, h, kernel) = (45, 30, 23);
    let input = Image { width: w, height: h, pixels: (0..w * h * 3).map(|i| ((i * 7919) % 1000) as f32 / 999.0).collect() };
    for sigma in [0.1f32, 0.7, 1.3, 1.99] {
        let k = views::gaussian_kernel(sigma, kernel);
        let reflect = |i: isize, n: usize| {
            let i = i.unsigned_abs();
            if i >= n { 2 * (n - 1) - i } else { i }
        };
        let pass = |src: &[f64], horizontal: bool| -> Vec<f64> {
            let mut out = vec![0.0; src.len()];
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        out[(y * w + x) * 3 + c] = (0..kernel)
                            .map(|t| {
                                let d = t as isize - 11;
                                let (sx, sy) = match horizontal {
                                    true => (reflect(x as isize + d, w), y),
                                    false => (x, reflect(y as isize + d, h)),
                                };
                                k[t] as f64 * src[(sy * w + sx) * 3 + c]
                            })
                            .sum();
                    }
                }
            }
            out
        };
        let want = pass(&pass(&input.pixels.iter().map(|&v| v as f64).collect::<Vec<_>>(), true), false);
        let got = views::gaussian_blur(input.clone(), sigma, kernel);
        let d = got.pixels.iter().zip(&want).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
        assert!(d < 1e-6, "sigma {sigma}: max diff {d}");
    }
}

/// Quantiles of the area fraction, log aspect ratio and centre of `draws` boxes of ours.
fn box_quantiles(scale: (f64, f64), quantiles: &[f32], draws: usize) -> [Vec<f64>; 4] {
    let (w, h) = (200usize, 160usize);
    let mut rng = sample_rng(11, 0, 0);
    let mut stats: [Vec<f64>; 4] = Default::default();
    for _ in 0..draws {
        let (x, y, cw, ch) = views::crop_box_in(w, h, scale, &mut rng);
        let values = [(cw * ch) as f64 / (w * h) as f64, (cw as f64 / ch as f64).ln(),
            (x as f64 + cw as f64 / 2.0) / w as f64, (y as f64 + ch as f64 / 2.0) / h as f64];
        for (s, v) in stats.iter_mut().zip(values) {
            s.push(v);
        }
    }
    stats.map(|mut s| {
        s.sort_by(f64::total_cmp);
        // numpy's default (linear) quantile.
        quantiles.iter().map(|&q| {
            let pos = q as f64 * (s.len() - 1) as f64;
            let (lo, t) = (pos.floor() as usize, pos.fract());
            s[lo] + t * (s[(lo + 1).min(s.len() - 1)] - s[lo])
        }).collect()
    })
}

/// The largest difference of our boxes' quantiles from torchvision's at `name`'s scale, per
/// statistic relative to its spread (the golden's 5%–95% range).
fn worst_quantile_gap(f: &std::collections::HashMap<String, (Vec<usize>, Vec<f32>)>, name: &str, scale: (f64, f64)) -> f64 {
    let ours = box_quantiles(scale, &f["quantiles"].1, 20_000);
    let mut worst = 0f64;
    for (stat, ours) in ["area", "log_ratio", "centre_x", "centre_y"].iter().zip(&ours) {
        let theirs = &f[&format!("{name}.{stat}")].1;
        let spread = (theirs[theirs.len() - 1] - theirs[0]) as f64;
        for (a, b) in ours.iter().zip(theirs) {
            worst = worst.max((a - *b as f64).abs() / spread);
        }
    }
    worst
}

#[test]
fn multi_crop_boxes_follow_torchvisions_random_resized_crop_at_each_scale() {
    // Goldens by scripts/make_multicrop_fixtures.py: torchvision's own `get_params`, 20,000 draws.
    let f = common::read_safetensors(&common::fixture("multicrop.safetensors"));
    for name in ["dino_local", "resnet_local", "resnet_global"] {
        let s = &f[&format!("{name}.scale")].1;
        let scale = (s[0] as f64, s[1] as f64);
        let gap = worst_quantile_gap(&f, name, scale);
        assert!(gap < 0.03, "{name} {scale:?}: a quantile is {gap:.4} of the spread away from torchvision's");
    }
    // The check can fail: the global views' default scale is not the local crops'.
    let gap = worst_quantile_gap(&f, "dino_local", (0.08, 1.0));
    assert!(gap > 0.3, "boxes at (0.08, 1) pass for DINO's local crops: {gap}");
}

#[test]
fn a_local_crop_resampled_to_96_px_matches_torchvision() {
    let f = common::read_safetensors(&common::fixture("multicrop.safetensors"));
    let input = image(&f, "image");
    let b = &f["local_box"].1;
    let want = image(&f, "local_96");
    let got = views::resize_box(&input, (b[0] as usize, b[1] as usize, b[2] as usize, b[3] as usize), 96, 96);
    assert!(max_diff(&got, &want) <= 1.5 / 255.0, "{}", max_diff(&got, &want));
}

#[test]
fn local_crops_leave_the_global_views_as_they_were() {
    let img = Image { width: 40, height: 30, pixels: (0..40 * 30 * 3).map(|i| ((i * 37) % 255) as f32 / 255.0).collect() };
    let plain = Views::new("imagenet", 16, Normalize::gray(0.5, 0.25)).unwrap();
    let multi = plain.clone().with_crops((0.08, 1.0), 3, 8, (0.05, 0.4));
    assert_eq!(multi.count(), 5);
    let (mut a, mut b) = (vec![0f32; 3 * 16 * 16], vec![0f32; 3 * 16 * 16]);
    plain.pair(&img, &mut sample_rng(1, 2, 3), &mut a, &mut b);
    let mut bufs: Vec<Vec<f32>> = (0..5).map(|v| vec![0f32; 3 * multi.side(v) * multi.side(v)]).collect();
    let mut out: Vec<&mut [f32]> = bufs.iter_mut().map(|v| &mut v[..]).collect();
    multi.crops(&img, &mut sample_rng(1, 2, 3), &mut out);
    assert_eq!((&bufs[0], &bufs[1]), (&a, &b), "the global views changed");
    assert_eq!(bufs[2].len(), 3 * 8 * 8);
    assert!(bufs[2] != bufs[3] && bufs[3] != bufs[4], "local crops are drawn apart");
}
