//! The pictures decode as PNGs and show what they claim: the diagonal where it belongs, in the
//! right colour, and curves that are not blank.

use barlow::plot::{LossLabels, Record, correlation_heatmap, training_curves};
use image::RgbImage;
use std::path::{Path, PathBuf};

/// Set `PLOT_SAMPLES=/some/dir` to keep the pictures for looking at.
fn out_dir(tmp: &tempfile::TempDir) -> PathBuf {
    match std::env::var_os("PLOT_SAMPLES") {
        Some(dir) => {
            std::fs::create_dir_all(&dir).unwrap();
            PathBuf::from(dir)
        }
        None => tmp.path().to_path_buf(),
    }
}

fn load(path: &Path) -> RgbImage {
    image::open(path).unwrap().to_rgb8()
}

fn is_red(p: &image::Rgb<u8>) -> bool {
    p[0] > 140 && p[1] < 90 && p[2] < 90
}

fn is_blue(p: &image::Rgb<u8>) -> bool {
    p[2] > 140 && p[0] < 90 && p[1] < 150
}

/// The matrix lies left of x = 540; the colour bar, which holds every colour, lies right of it.
const MAIN_WIDTH: u32 = 540;

fn matching(img: &RgbImage, pred: fn(&image::Rgb<u8>) -> bool) -> Vec<(u32, u32)> {
    img.enumerate_pixels().filter(|&(x, _, p)| x < MAIN_WIDTH && pred(p)).map(|(x, y, _)| (x, y)).collect()
}

fn identity(d: usize, sign: f32) -> Vec<f32> {
    (0..d * d).map(|n| if n / d == n % d { sign } else { 0.0 }).collect()
}

/// Asserts that `pts` lie along the top-left to bottom-right diagonal of their bounding box,
/// a k×k grid of cells, and returns that box (x0, y0, x1, y1).
fn assert_diagonal(pts: &[(u32, u32)], k: usize) -> (f64, f64, f64, f64) {
    assert!(pts.len() > 200, "too few diagonal pixels: {}", pts.len());
    let x0 = pts.iter().map(|p| p.0).min().unwrap() as f64;
    let x1 = pts.iter().map(|p| p.0).max().unwrap() as f64 + 1.0;
    let y0 = pts.iter().map(|p| p.1).min().unwrap() as f64;
    let y1 = pts.iter().map(|p| p.1).max().unwrap() as f64 + 1.0;
    let (w, h) = (x1 - x0, y1 - y0);
    assert!(w > 300.0 && h > 300.0, "diagonal spans only {w}×{h} px");
    assert!((w - h).abs() <= 3.0, "cells are not square: {w}×{h} px");
    for &(x, y) in pts {
        let (u, v) = ((x as f64 - x0) / w, (y as f64 - y0) / h);
        assert!((u - v).abs() <= 1.5 / k as f64, "pixel ({x}, {y}) is off the diagonal");
    }
    (x0, y0, x1, y1)
}

#[test]
fn identity_heatmap_has_red_diagonal_on_white() {
    let tmp = tempfile::tempdir().unwrap();
    let path = out_dir(&tmp).join("heatmap-identity.png");
    let (d, k) = (32, 16);
    correlation_heatmap(&identity(d, 1.0), d, k, "identity (16×16 of 32)", &path).unwrap();
    let img = load(&path);
    assert_eq!(img.dimensions(), (640, 560));
    assert!(matching(&img, is_blue).is_empty(), "identity has no negative cells");
    let (x0, y0, x1, _) = assert_diagonal(&matching(&img, is_red), k);
    // The centre of every off-diagonal cell in the first row is white.
    let cell = (x1 - x0) / k as f64;
    for j in 1..k {
        let p = img.get_pixel((x0 + (j as f64 + 0.5) * cell) as u32, (y0 + 0.5 * cell) as u32);
        assert!(p.0.iter().all(|&c| c >= 245), "cell (0, {j}) is {p:?}, not white");
    }
    // And diagonal cell centres are strongly red.
    for i in 0..k {
        let c = (x0 + (i as f64 + 0.5) * cell) as u32;
        let p = img.get_pixel(c, (y0 + (i as f64 + 0.5) * cell) as u32);
        assert!(is_red(p), "diagonal cell {i} is {p:?}");
    }
}

#[test]
fn negated_identity_has_blue_diagonal() {
    let tmp = tempfile::tempdir().unwrap();
    let path = out_dir(&tmp).join("heatmap-neg-identity.png");
    correlation_heatmap(&identity(8, -1.0), 8, 64, "−identity (k = 64 clipped to D = 8)", &path).unwrap();
    let img = load(&path);
    assert!(matching(&img, is_red).is_empty(), "−identity has no positive cells");
    assert_diagonal(&matching(&img, is_blue), 8);
}

#[test]
fn heatmap_of_a_partly_trained_matrix() {
    // A deterministic stand-in for a real C: strong but imperfect diagonal, small noise elsewhere,
    // a few non-finite entries that must not break drawing.
    let d = 2048;
    let mut state = 0x9e3779b97f4a7c15u64;
    let mut noise = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    };
    let mut c: Vec<f32> =
        (0..d * d).map(|n| if n / d == n % d { 0.8 + 0.3 * noise() } else { 0.3 * noise() }).collect();
    c[5] = f32::NAN;
    c[d + 7] = f32::INFINITY;
    let tmp = tempfile::tempdir().unwrap();
    let path = out_dir(&tmp).join("heatmap-epoch3.png");
    correlation_heatmap(&c, d, 64, "cross-correlation C, epoch 3 (64×64 of 2048)", &path).unwrap();
    assert_eq!(load(&path).dimensions(), (640, 560));
}

#[test]
fn heatmap_rejects_a_matrix_of_the_wrong_size() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.png");
    let err = correlation_heatmap(&[1.0; 5], 2, 2, "bad", &path).unwrap_err();
    assert!(format!("{err:#}").contains("bad.png"), "{err:#}");
    assert!(!path.exists());
}

fn history() -> Vec<Record> {
    let mut records = Vec::new();
    for step in 0..300usize {
        let t = step as f64;
        let on = 900.0 * (-t / 60.0).exp() + 20.0;
        let off = 4000.0 * (-t / 120.0).exp() + 300.0;
        records.push(Record {
            step,
            epoch: step / 100 + 1,
            loss: Some(on + 0.0051 * off),
            terms: vec![("on-diagonal".into(), Some(on)), ("off-diagonal".into(), Some(off))],
            knn_top1: None,
        });
    }
    for (epoch, acc) in [(0usize, 42.5), (1, 61.0), (2, 70.2), (3, 74.8)] {
        records.push(Record { step: epoch * 100, epoch, knn_top1: Some(acc), ..Record::default() });
    }
    records
}

/// Pixels that are clearly of the given colour (within a small tolerance for anti-aliasing).
fn count_colour(img: &RgbImage, rgb: [u8; 3]) -> usize {
    img.pixels().filter(|p| p.0.iter().zip(rgb).all(|(&a, b)| a.abs_diff(b) <= 12)).count()
}

#[test]
fn training_curves_draw_every_series() {
    let tmp = tempfile::tempdir().unwrap();
    let path = out_dir(&tmp).join("curves.png");
    training_curves(&history(), &LossLabels::default(), &path).unwrap();
    let img = load(&path);
    assert_eq!(img.dimensions(), (1200, 450));
    let non_white = img.pixels().filter(|p| p.0.iter().any(|&c| c < 200)).count();
    assert!(non_white > 5000, "picture is nearly blank: {non_white} dark pixels");
    let left = |img: &RgbImage, rgb| {
        let mut sub = img.clone();
        let right = sub.pixels_mut().enumerate().filter(|(n, _)| n % 1200 >= 620);
        right.for_each(|(_, p)| *p = image::Rgb([255; 3]));
        count_colour(&sub, rgb)
    };
    assert!(left(&img, [214, 39, 40]) > 100, "no on-diagonal curve");
    assert!(left(&img, [31, 119, 180]) > 100, "no off-diagonal curve");
    assert!(count_colour(&img, [44, 160, 44]) > 100, "no kNN curve");
}

#[test]
fn training_curves_survive_missing_and_broken_values() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = out_dir(&tmp);
    let labels = LossLabels::default();
    training_curves(&[], &labels, &dir.join("curves-empty.png")).unwrap();
    let mut records: Vec<Record> = history().into_iter().filter(|r| r.knn_top1.is_none()).collect();
    records[3].loss = Some(f64::NAN);
    records[4].terms[0].1 = Some(f64::INFINITY);
    records[5].terms[1].1 = Some(0.0);
    records[6].loss = Some(-1.0);
    let path = dir.join("curves-no-knn.png");
    training_curves(&records, &labels, &path).unwrap();
    assert_eq!(load(&path).dimensions(), (1200, 450));
    let terms = vec![("on".into(), Some(5.0)), ("off".into(), Some(5.0))];
    let single = [Record { step: 7, epoch: 1, loss: Some(5.0), terms, knn_top1: Some(f64::NAN) }];
    training_curves(&single, &labels, &dir.join("curves-single.png")).unwrap();
    // Fractions where percent was meant still land inside the axis rather than off it.
    let fractions = [0.42, 0.61, 0.7].map(|v| Record { knn_top1: Some(v), ..Record::default() });
    training_curves(&fractions, &labels, &dir.join("curves-fractions.png")).unwrap();
}

#[test]
fn errors_name_the_file() {
    let path = Path::new("/nonexistent-dir/x.png");
    let err = training_curves(&history(), &LossLabels::default(), path).unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent-dir/x.png"), "{err:#}");
    let err = correlation_heatmap(&identity(4, 1.0), 4, 4, "x", path).unwrap_err();
    assert!(format!("{err:#}").contains("/nonexistent-dir/x.png"), "{err:#}");
}
