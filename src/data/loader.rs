//! Batches of views — two global ones, and multi-crop's local ones — made by rayon in a
//! background thread while the model trains.
//!
//! Every random choice of sample `i` in epoch `e` comes from its own generator seeded by
//! `(seed, e, i)`, so the batches depend on the seed alone, not on thread timing, and a resumed
//! run sees exactly the batches an uninterrupted one would.

use super::{Bytes, Dataset, Views};
use crate::config::DataConfig;
use anyhow::{Context, Result, bail};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::sync::mpsc::{Receiver, sync_channel};
use std::thread::JoinHandle;

/// The views of `N` images, with the images' labels when known: the two global views first,
/// then the local crops. Dropping it hands its memory back to the loader that made it.
pub struct Batch {
    pub views: Vec<View>,
    pub labels: Option<Vec<u32>>,
    pub indices: Vec<usize>,
    pool: Pool,
}

/// One view of every image of a batch: `shape` = `N × 3 × H × W`.
pub struct View {
    pub pixels: Vec<f32>,
    pub shape: [usize; 4],
}

impl Batch {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

/// View buffers of dropped batches, reused by the next ones: fresh memory costs a page fault
/// and a zeroing per 4 KiB, about a tenth of the loader's time at 224 px.
type Pool = Arc<Mutex<Vec<Vec<f32>>>>;

/// Batches whose buffers a pool keeps at most: those in flight.
const BATCHES_POOLED: usize = PREFETCH + 2;

impl Drop for Batch {
    fn drop(&mut self) {
        let kept = BATCHES_POOLED * self.views.len();
        if let Ok(mut pool) = self.pool.lock() {
            for v in self.views.drain(..) {
                if pool.len() < kept {
                    pool.push(v.pixels);
                }
            }
        }
    }
}

/// Bytes the loader's buffers hold at most, for batches of `local` images made by `views`.
pub fn loader_bytes(local: usize, views: &Views) -> u128 {
    let per_image: u128 = (0..views.count()).map(|v| 3 * 4 * (views.side(v) * views.side(v)) as u128).sum();
    BATCHES_POOLED as u128 * local as u128 * per_image
}

/// A buffer of `len` values from the pool (its contents are all overwritten), or a new one.
fn buffer(pool: &Pool, len: usize) -> Vec<f32> {
    let reused = pool.lock().ok().and_then(|mut p| {
        let i = p.iter().position(|v| v.len() == len)?;
        Some(p.swap_remove(i))
    });
    reused.unwrap_or_else(|| vec![0f32; len])
}

/// Batches the model trains on ahead of time.
const PREFETCH: usize = 2;
/// Consecutive unreadable images after which the loader gives up.
const MAX_SKIPS: usize = 16;

/// Files that failed to decode in this process (warned about once each).
static SKIPPED: Mutex<BTreeSet<usize>> = Mutex::new(BTreeSet::new());

/// How many distinct images the loaders skipped because they could not be read.
pub fn skipped_images() -> usize {
    SKIPPED.lock().map(|s| s.len()).unwrap_or(0)
}

/// One epoch's batches: a seeded shuffle, `drop_last`, made ahead in a background thread.
pub struct Loader {
    rx: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
}

/// A generator for `(seed, epoch, index)`; SplitMix64 spreads nearby integers apart.
pub fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut z = seed;
    for v in [epoch, index] {
        z = (z ^ v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    ChaCha8Rng::seed_from_u64(z)
}

/// The epoch's order of `len` images: a permutation fixed by `(seed, epoch)`.
pub fn epoch_order(len: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.shuffle(&mut sample_rng(seed, epoch as u64, u64::MAX));
    order
}

impl Loader {
    pub fn new(dataset: &Dataset, config: &DataConfig, batch: usize, seed: u64, epoch: usize) -> Result<Loader> {
        Self::shard(dataset, config, batch, seed, epoch, 0, 1)
    }

    /// Worker `rank` of `workers`' share of each global batch of `batch` images (which they
    /// divide): every worker shuffles alike and takes its own consecutive `batch / workers`,
    /// so together they see exactly the batches, and views, of one process.
    pub fn shard(
        dataset: &Dataset,
        config: &DataConfig,
        batch: usize,
        seed: u64,
        epoch: usize,
        rank: usize,
        workers: usize,
    ) -> Result<Loader> {
        if workers == 0 || !batch.is_multiple_of(workers) || rank >= workers {
            bail!("a global batch of {batch} images cannot be split evenly over {workers} workers");
        }
        let local = batch / workers;
        let views = Views::for_training(config, dataset.normalize())?;
        let bytes = loader_bytes(local, &views);
        let what = format!(
            "loading batches of {local} images at data.size = {} ({} views each, {BATCHES_POOLED} batches in flight)",
            config.size,
            views.count()
        );
        crate::memory::ensure_fits(bytes, &what, "lower optim.batch_size, data.size or data.local_crops")?;
        let pool = match config.workers {
            0 => None,
            n => Some(rayon::ThreadPoolBuilder::new().num_threads(n).build().context("starting loader threads")?),
        };
        let order = epoch_order(dataset.len(), seed, epoch);
        let dataset = dataset.clone();
        let (tx, rx) = sync_channel(PREFETCH);
        let buffers = Pool::default();
        let worker = std::thread::spawn(move || {
            for global in order.chunks_exact(batch) {
                let indices = &global[rank * local..(rank + 1) * local];
                let make = || make_batch(&dataset, &views, indices, seed, epoch as u64, &buffers);
                let made = match &pool {
                    Some(pool) => pool.install(make),
                    None => make(),
                };
                let failed = made.is_err();
                // A closed channel means the trainer stopped early: nothing more to make.
                if tx.send(made).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Loader { rx: Some(rx), worker: Some(worker) })
    }
}

impl Iterator for Loader {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.rx.take();
        if let Some(w) = self.worker.take() {
            w.join().ok();
        }
    }
}

fn make_batch(dataset: &Dataset, views: &Views, indices: &[usize], seed: u64, epoch: u64, pool: &Pool) -> Result<Batch> {
    let n = indices.len();
    let len = |v: usize| 3 * views.side(v) * views.side(v);
    let mut buffers: Vec<Vec<f32>> = (0..views.count()).map(|v| buffer(pool, n * len(v))).collect();
    // Image i's slice of every view's buffer.
    let mut per_image: Vec<Vec<&mut [f32]>> = (0..n).map(|_| Vec::with_capacity(views.count())).collect();
    for (v, buf) in buffers.iter_mut().enumerate() {
        for (image, chunk) in per_image.iter_mut().zip(buf.chunks_mut(len(v))) {
            image.push(chunk);
        }
    }
    let used: Vec<usize> = per_image
        .into_par_iter()
        .zip(indices.par_iter())
        .map(|(mut out, &i)| {
            let mut rng = sample_rng(seed, epoch, i as u64);
            view_or_skip(dataset, i, |px| views.crops(&px, &mut rng, &mut out))
        })
        .collect::<Result<_>>()?;
    let labels = dataset.labels().map(|l| used.iter().map(|&i| l[i]).collect());
    let made = buffers.into_iter().enumerate().map(|(v, pixels)| View { pixels, shape: [n, 3, views.side(v), views.side(v)] });
    Ok(Batch { views: made.collect(), labels, indices: used, pool: pool.clone() })
}

/// Runs `view` on image `i`, or when it cannot be read, on the next readable one (warning once
/// per file): one corrupt file in a large folder should not end a long run. The substitute is
/// fixed, so batches stay deterministic. Returns the index used.
fn view_or_skip(dataset: &Dataset, i: usize, view: impl FnOnce(Bytes<'_>)) -> Result<usize> {
    let mut view = Some(view);
    let mut last = None;
    for k in 0..MAX_SKIPS.min(dataset.len()) {
        let j = (i + k) % dataset.len();
        match dataset.with_pixels(j, |px| view.take().expect("called once")(px)) {
            Ok(()) => return Ok(j),
            Err(e) => {
                if SKIPPED.lock().map(|mut s| s.insert(j)).unwrap_or(false) {
                    eprintln!("warning: skipping an unreadable image: {e:#}");
                }
                last = Some(e);
            }
        }
    }
    let e = last.expect("at least one attempt");
    bail!("{MAX_SKIPS} consecutive images could not be read, the last: {e:#}")
}

/// Evaluation images in dataset order, `N × 3 × size × size`, with labels when known.
pub struct EvalBatch {
    pub images: Vec<f32>,
    pub labels: Option<Vec<u32>>,
    pub shape: [usize; 4],
}

/// The whole dataset in order through the deterministic evaluation view. Unlike training, an
/// unreadable image is an error: features must stay aligned with labels and ids.
pub fn eval_batches<'a>(dataset: &'a Dataset, views: &'a Views, batch: usize) -> impl Iterator<Item = Result<EvalBatch>> + 'a {
    ordered_batches(dataset, views, batch, move |img, _, out| views.eval(img, out))
}

/// The whole dataset in order, each image randomly cropped and flipped (fixed by `seed`,
/// `epoch`), as the official linear evaluation trains its classifier.
pub fn crop_flip_batches<'a>(
    dataset: &'a Dataset,
    views: &'a Views,
    batch: usize,
    seed: u64,
    epoch: usize,
) -> impl Iterator<Item = Result<EvalBatch>> + 'a {
    ordered_batches(dataset, views, batch, move |img, i, out| {
        views.crop_flip(img, &mut sample_rng(seed, epoch as u64, i as u64), out)
    })
}

fn ordered_batches<'a>(
    dataset: &'a Dataset,
    views: &'a Views,
    batch: usize,
    view: impl Fn(&Bytes<'_>, usize, &mut [f32]) + Sync + 'a,
) -> impl Iterator<Item = Result<EvalBatch>> + 'a {
    let len = 3 * views.size * views.size;
    (0..dataset.len()).step_by(batch.max(1)).map(move |start| {
        let end = (start + batch).min(dataset.len());
        let mut images = vec![0f32; (end - start) * len];
        images.par_chunks_mut(len).zip(start..end).try_for_each(|(out, i)| dataset.with_pixels(i, |px| view(&px, i, out)))?;
        let labels = dataset.labels().map(|l| l[start..end].to_vec());
        Ok(EvalBatch { images, labels, shape: [end - start, 3, views.size, views.size] })
    })
}
