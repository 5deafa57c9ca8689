//! `barlow data preview`: a PNG grid of images and their two views, to see the augmentations.

use super::loader::sample_rng;
use super::{Dataset, Image, Views};
use anyhow::{Context, Result};
use std::path::Path;

/// Pixels between tiles.
const GAP: usize = 4;

/// Writes a grid: one row per image, its evaluation view then `pairs` (view A, view B) pairs,
/// each from its own draw. Small images are enlarged (nearest neighbour) to about 96 pixels.
pub fn write(dataset: &Dataset, views: &Views, count: usize, pairs: usize, seed: u64, out: &Path) -> Result<()> {
    let count = count.min(dataset.len());
    let zoom = (96 / views.size).max(1);
    let tile = views.size * zoom;
    let cols = 1 + 2 * pairs;
    let (w, h) = (cols * (tile + GAP) + (pairs + 1) * GAP, count * (tile + GAP) + GAP);
    let mut canvas = image::RgbImage::from_pixel(w as u32, h as u32, image::Rgb([255, 255, 255]));
    let order = super::loader::epoch_order(dataset.len(), seed, 0);
    for (row, &i) in order.iter().take(count).enumerate() {
        let img = dataset.image(i)?;
        let mut tiles = vec![views.eval_image(&img)];
        for p in 0..pairs {
            let mut rng = sample_rng(seed, p as u64 + 1, i as u64);
            let a = views.plan(&img, views.a, &mut rng);
            let b = views.plan(&img, views.b, &mut rng);
            tiles.push(views.apply(&img, &a));
            tiles.push(views.apply(&img, &b));
        }
        for (col, t) in tiles.iter().enumerate() {
            // A wider gap between pairs makes the A/B grouping visible.
            let x = GAP + col * (tile + GAP) + GAP * col.div_ceil(2);
            blit(&mut canvas, t, zoom, x, GAP + row * (tile + GAP));
        }
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    canvas.save(out).with_context(|| format!("writing {}", out.display()))
}

fn blit(canvas: &mut image::RgbImage, img: &Image, zoom: usize, x0: usize, y0: usize) {
    let bytes = img.to_bytes();
    for y in 0..img.height * zoom {
        for x in 0..img.width * zoom {
            let p = ((y / zoom) * img.width + x / zoom) * 3;
            let (cx, cy) = ((x0 + x) as u32, (y0 + y) as u32);
            if cx < canvas.width() && cy < canvas.height() {
                canvas.put_pixel(cx, cy, image::Rgb([bytes[p], bytes[p + 1], bytes[p + 2]]));
            }
        }
    }
}
