//! Data: datasets on disk, downloads, the paper's two-view augmentations and the parallel loader.

mod colour;
pub mod datasets;
pub mod decode;
pub mod download;
pub mod loader;
mod pixels;
pub mod preview;
mod resize;
pub mod views;

pub use datasets::{Split, open};
pub use loader::{Batch, EvalBatch, Loader, crop_flip_batches, eval_batches, loader_bytes};
pub use views::{Bytes, Image, Normalize, Pixels, Views};

use crate::config::DataConfig;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::sync::Arc;

/// A set of images with optional labels. Cheap to clone: the pixels are shared.
#[derive(Clone)]
pub struct Dataset {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    images: Images,
    labels: Option<Vec<u32>>,
    classes: Vec<String>,
    normalize: Normalize,
}

/// Where the pixels are: decoded in memory (the binary formats) or files decoded on demand.
#[derive(Clone)]
pub(crate) enum Images {
    /// `count × height × width × channels` bytes, channels 1 or 3.
    Raw { pixels: Vec<u8>, height: usize, width: usize, channels: usize },
    /// Image files, each refused when larger than `max_pixels` (`data.max_pixels`).
    Files { paths: Vec<PathBuf>, max_pixels: u64 },
}

impl Dataset {
    pub(crate) fn new(
        name: String,
        images: Images,
        labels: Option<Vec<u32>>,
        classes: Vec<String>,
        normalize: Normalize,
    ) -> Dataset {
        Dataset { inner: Arc::new(Inner { name, images, labels, classes, normalize }) }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn len(&self) -> usize {
        match &self.inner.images {
            Images::Raw { pixels, height, width, channels } => pixels.len() / (height * width * channels),
            Images::Files { paths, .. } => paths.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn labels(&self) -> Option<&[u32]> {
        self.inner.labels.as_deref()
    }

    pub fn classes(&self) -> &[String] {
        &self.inner.classes
    }

    pub fn num_classes(&self) -> usize {
        self.inner.classes.len()
    }

    /// The per-channel statistics used to normalise this dataset's views.
    pub fn normalize(&self) -> Normalize {
        self.inner.normalize
    }

    /// A name for image `i` in messages and embedding files: its path (refused when not UTF-8),
    /// or `name[i]`.
    pub fn id(&self, i: usize) -> Result<String> {
        match &self.inner.images {
            Images::Files { paths, .. } => match paths[i].to_str() {
                Some(id) => Ok(id.to_string()),
                // Shown with U+FFFD in place of its bytes, it could not be told from another.
                None => bail!(
                    "{}: the file name is not UTF-8, so it cannot be written as an id that names only this file; \
                     rename it (convmv, say, converts a folder of Latin-1 names)",
                    paths[i].display()
                ),
            },
            Images::Raw { .. } => Ok(format!("{}[{i}]", self.inner.name)),
        }
    }

    /// Image `i` as RGB in [0, 1]; grayscale becomes three equal channels.
    pub fn image(&self, i: usize) -> Result<Image> {
        match &self.inner.images {
            Images::Raw { pixels, height, width, channels } => {
                let len = height * width * channels;
                Ok(Image::from_bytes(&pixels[i * len..(i + 1) * len], *width, *height, *channels))
            }
            Images::Files { paths, max_pixels } => datasets::decode(&paths[i], *max_pixels),
        }
    }

    /// Calls `f` with image `i`'s pixels as stored or decoded: a slice of the dataset's memory,
    /// or the file decoded into a buffer this thread reuses.
    pub fn with_pixels<R>(&self, i: usize, f: impl FnOnce(Bytes<'_>) -> R) -> Result<R> {
        match &self.inner.images {
            Images::Raw { pixels, height, width, channels } => {
                let len = height * width * channels;
                let data = &pixels[i * len..(i + 1) * len];
                Ok(f(Bytes { data, width: *width, height: *height, channels: *channels }))
            }
            Images::Files { paths, max_pixels } => decode::with_file(&paths[i], *max_pixels, f),
        }
    }

    /// The images at `indices`, in that order.
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let inner = &self.inner;
        let images = match &inner.images {
            Images::Raw { pixels, height, width, channels } => {
                let len = height * width * channels;
                Images::Raw {
                    pixels: indices.iter().flat_map(|&i| &pixels[i * len..(i + 1) * len]).copied().collect(),
                    height: *height,
                    width: *width,
                    channels: *channels,
                }
            }
            Images::Files { paths, max_pixels } => {
                Images::Files { paths: indices.iter().map(|&i| paths[i].clone()).collect(), max_pixels: *max_pixels }
            }
        };
        let labels = inner.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect());
        Dataset::new(inner.name.clone(), images, labels, inner.classes.clone(), inner.normalize)
    }

    /// Both datasets' images, unlabeled; both must hold decoded images of one size.
    pub fn concat(&self, other: &Dataset) -> Dataset {
        let images = match (&self.inner.images, &other.inner.images) {
            (Images::Raw { pixels: a, height, width, channels }, Images::Raw { pixels: b, .. }) => {
                Images::Raw { pixels: [&a[..], &b[..]].concat(), height: *height, width: *width, channels: *channels }
            }
            (Images::Files { paths: a, max_pixels }, Images::Files { paths: b, .. }) => {
                Images::Files { paths: [&a[..], &b[..]].concat(), max_pixels: *max_pixels }
            }
            _ => unreachable!("datasets of one format are concatenated"),
        };
        let inner = &self.inner;
        Dataset::new(inner.name.clone(), images, None, inner.classes.clone(), inner.normalize)
    }

    /// These images labeled by `classes` (another split's class list), so that a class has
    /// the same label in both splits; a class that `classes` lacks is an error naming it.
    pub fn relabeled(&self, classes: &[String]) -> Result<Dataset> {
        let inner = &self.inner;
        if inner.classes == classes {
            return Ok(self.clone());
        }
        let unknown: Vec<&str> = inner.classes.iter().filter(|c| !classes.contains(c)).map(String::as_str).collect();
        if !unknown.is_empty() {
            bail!(
                "{} holds classes that the train split does not ({}): a classifier of the train split's {} \
                 classes cannot name them; give both splits the same class folders",
                inner.name, unknown.join(", "), classes.len()
            );
        }
        let to: Vec<u32> = inner.classes.iter().map(|c| classes.iter().position(|k| k == c).unwrap() as u32).collect();
        let labels = inner.labels.as_ref().map(|l| l.iter().map(|&y| to[y as usize]).collect());
        Ok(Dataset::new(inner.name.clone(), inner.images.clone(), labels, classes.to_vec(), inner.normalize))
    }

    /// `n` images spread evenly over the dataset (all when `n` is larger), so that a limit on
    /// a class-sorted folder still sees every class.
    pub fn spread(&self, n: usize) -> Dataset {
        if n >= self.len() {
            return self.clone();
        }
        let indices: Vec<usize> = (0..n).map(|k| k * self.len() / n).collect();
        self.subset(&indices)
    }
}

/// The labeled splits the kNN monitor and the linear probe use.
pub struct Monitor {
    pub train: Dataset,
    pub test: Dataset,
}

/// The pretraining set (labels, when present, are ignored by training).
pub fn open_train(config: &DataConfig) -> Result<Dataset> {
    let set = open(config, Split::Pretrain)?;
    Ok(match config.limit {
        Some(n) => set.spread(n),
        None => set,
    })
}

/// Labeled train and test splits, or `None` when the dataset has no labels.
pub fn open_monitor(config: &DataConfig) -> Result<Option<Monitor>> {
    let train = open(config, Split::Train).context("opening the kNN monitor's train split")?;
    if train.labels().is_none() {
        return Ok(None);
    }
    let test = match open(config, Split::Test) {
        Ok(test) if test.labels().is_some() => {
            let root = config.root.as_ref().map(|r| r.display().to_string()).unwrap_or_else(|| config.dataset.clone());
            test.relabeled(train.classes()).with_context(|| format!("the test split of {root}"))?
        }
        Ok(_) => return Ok(None),
        Err(e) => return Err(e.context("opening the kNN monitor's test split")),
    };
    Ok(Some(Monitor { train, test }))
}
