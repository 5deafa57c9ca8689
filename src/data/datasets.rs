//! The dataset formats: CIFAR binary, IDX (MNIST, Fashion-MNIST), STL-10 binary, image folders.

use super::{Dataset, Image, Images, Normalize};
use super::download;
use crate::config::DataConfig;
use anyhow::{Context, Result, bail};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Which part of a dataset: the pretraining images (STL-10 adds its unlabeled split), or a
/// labeled train / test split for evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Pretrain,
    Train,
    Test,
}

pub const CIFAR10_CLASSES: [&str; 10] =
    ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"];
pub const FASHION_CLASSES: [&str; 10] =
    ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle-boot"];
pub const STL10_CLASSES: [&str; 10] =
    ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"];

/// The names `data.dataset` accepts.
pub const NAMES: [&str; 7] = ["cifar10", "cifar100", "stl10", "mnist", "fashion-mnist", "fashion-mnist-sample", "folder"];

/// Opens `split` of the configured dataset: from `data.root` when given, else from a local copy
/// or the cache, downloading (and verifying) the official files when they are missing.
pub fn open(config: &DataConfig, split: Split) -> Result<Dataset> {
    let root = config.root.clone();
    let train = split != Split::Test;
    match config.dataset.as_str() {
        "cifar10" => {
            let dir = locate(root, "cifar10", "data_batch_1.bin", &["cifar-10-batches-bin"])?;
            let files: Vec<_> = match train {
                true => (1..=5).map(|i| dir.join(format!("data_batch_{i}.bin"))).collect(),
                false => vec![dir.join("test_batch.bin")],
            };
            let classes = CIFAR10_CLASSES.map(String::from).to_vec();
            let norm = Normalize::new([0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]);
            read_cifar("cifar10", &files, 1, classes, norm)
        }
        "cifar100" => {
            let dir = locate(root, "cifar100", "train.bin", &["cifar-100-binary"])?;
            let file = dir.join(if train { "train.bin" } else { "test.bin" });
            let classes = (0..100).map(|i| format!("class{i}")).collect();
            let norm = Normalize::new([0.5071, 0.4865, 0.4409], [0.2673, 0.2564, 0.2762]);
            read_cifar("cifar100", &[file], 2, classes, norm)
        }
        "stl10" => {
            let dir = locate(root, "stl10", "train_X.bin", &["stl10_binary"])?;
            let classes = STL10_CLASSES.map(String::from).to_vec();
            let norm = Normalize::new([0.4467, 0.4398, 0.4066], [0.2603, 0.2566, 0.2713]);
            match split {
                // Pretraining uses the 100k unlabeled images and the 5k labeled ones, as solo-learn.
                Split::Pretrain => {
                    let unlabeled = read_stl10(&dir.join("unlabeled_X.bin"), None, classes.clone(), norm)?;
                    let train = read_stl10(&dir.join("train_X.bin"), None, classes, norm)?;
                    Ok(unlabeled.concat(&train))
                }
                Split::Train => read_stl10(&dir.join("train_X.bin"), Some(&dir.join("train_y.bin")), classes, norm),
                Split::Test => read_stl10(&dir.join("test_X.bin"), Some(&dir.join("test_y.bin")), classes, norm),
            }
        }
        name @ ("mnist" | "fashion-mnist") => {
            let mut candidates = vec![];
            if name == "fashion-mnist" {
                candidates.push(PathBuf::from("/usr/share/datasets/fashion-mnist"));
            }
            let dir = match root {
                Some(root) => root,
                None => candidates
                    .into_iter()
                    .find(|d| d.join("train-images-idx3-ubyte.gz").exists())
                    .map(Ok)
                    .unwrap_or_else(|| locate(None, name, "train-images-idx3-ubyte.gz", &[]))?,
            };
            let (classes, norm) = match name {
                "mnist" => ((0..10).map(|d| d.to_string()).collect(), Normalize::gray(0.1307, 0.3081)),
                _ => (FASHION_CLASSES.map(String::from).to_vec(), Normalize::gray(0.2860, 0.3530)),
            };
            read_idx_pair(name, &dir, train, classes, norm)
        }
        "fashion-mnist-sample" => {
            let classes = FASHION_CLASSES.map(String::from).to_vec();
            let (images, labels): (&[u8], &[u8]) = match train {
                true => (SAMPLE_TRAIN.0, SAMPLE_TRAIN.1),
                false => (SAMPLE_TEST.0, SAMPLE_TEST.1),
            };
            let images = read_idx(images.to_vec(), 3).context("the embedded Fashion-MNIST sample")?;
            let labels = read_idx(labels.to_vec(), 1).context("the embedded Fashion-MNIST sample")?;
            from_idx("fashion-mnist-sample", images, labels, classes, Normalize::gray(0.2860, 0.3530))
        }
        "folder" => {
            let root = root.context("data.dataset = \"folder\" needs data.root (or --data PATH)")?;
            // `root/train` and `root/test` when both exist, else the whole of `root` for every split.
            let (tr, te) = (root.join("train"), root.join("test"));
            let dir = match (tr.is_dir() && te.is_dir(), train) {
                (true, true) => tr,
                (true, false) => te,
                (false, _) => root,
            };
            read_folder(&dir, config.max_pixels)
        }
        other => bail!("unknown dataset `{other}`; expected one of {}", NAMES.join(", ")),
    }
}

static SAMPLE_TRAIN: (&[u8], &[u8]) = (
    include_bytes!("../../assets/fashion-mnist-sample/train-images-idx3-ubyte.gz"),
    include_bytes!("../../assets/fashion-mnist-sample/train-labels-idx1-ubyte.gz"),
);
static SAMPLE_TEST: (&[u8], &[u8]) = (
    include_bytes!("../../assets/fashion-mnist-sample/t10k-images-idx3-ubyte.gz"),
    include_bytes!("../../assets/fashion-mnist-sample/t10k-labels-idx1-ubyte.gz"),
);

/// The folder holding `marker`: `root` (or one of its `subdirs`) when given, else the cache,
/// where the official archive is downloaded and unpacked when missing.
fn locate(root: Option<PathBuf>, name: &str, marker: &str, subdirs: &[&str]) -> Result<PathBuf> {
    let search = |base: &Path| {
        std::iter::once(base.to_path_buf())
            .chain(subdirs.iter().map(|s| base.join(s)))
            .find(|d| d.join(marker).exists())
    };
    if let Some(root) = root {
        return search(&root).with_context(|| {
            format!("{}: no {marker} here (nor in {}); is this the {name} dataset?", root.display(), subdirs.join(", "))
        });
    }
    let cache = download::cache_dir()?.join(name);
    if let Some(dir) = search(&cache) {
        return Ok(dir);
    }
    let remotes = download::remotes(name);
    download::fetch_all(&remotes, &cache)?;
    search(&cache).with_context(|| format!("{}: the download holds no {marker}", cache.display()))
}

/// CIFAR's binary records: `label_bytes` label bytes (CIFAR-100: coarse, fine; the last is
/// used) then 3072 bytes of 32×32 red, green, blue planes.
pub fn read_cifar(
    name: &str,
    files: &[PathBuf],
    label_bytes: usize,
    classes: Vec<String>,
    norm: Normalize,
) -> Result<Dataset> {
    let record = label_bytes + 3072;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for file in files {
        let bytes = crate::files::read(file)?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            bail!("{}: {} bytes is not a whole number of {record}-byte {name} records; \
                   the file is truncated or not {name} binary", file.display(), bytes.len());
        }
        for r in bytes.chunks_exact(record) {
            let label = r[label_bytes - 1] as u32;
            if label as usize >= classes.len() {
                bail!("{}: label {label} out of range for {} classes", file.display(), classes.len());
            }
            labels.push(label);
            let planes = &r[label_bytes..];
            pixels.extend((0..1024).flat_map(|p| [planes[p], planes[1024 + p], planes[2048 + p]]));
        }
    }
    let images = Images::Raw { pixels, height: 32, width: 32, channels: 3 };
    Ok(Dataset::new(name.into(), images, Some(labels), classes, norm))
}

/// An IDX array: its dimensions and bytes, checked against the magic (unsigned bytes, `rank`).
/// A gzipped file is inflated only as far as its header says, so a gzip bomb stops there.
pub fn read_idx(raw: Vec<u8>, rank: usize) -> Result<(Vec<usize>, Vec<u8>)> {
    let gzipped = raw.starts_with(&[0x1f, 0x8b]);
    let mut reader: Box<dyn Read> = match gzipped {
        true => Box::new(flate2::read::GzDecoder::new(&raw[..])),
        false => Box::new(&raw[..]),
    };
    let inflate = |e: std::io::Error| match gzipped {
        true => anyhow::anyhow!("corrupt gzip data: {e}"),
        false => anyhow::anyhow!("{e}"),
    };
    let mut magic = [0u8; 4];
    let n = read_up_to(&mut reader, &mut magic).map_err(inflate)?;
    if n < 4 || magic[..3] != [0, 0, 0x08] || magic[3] as usize != rank {
        bail!("not an IDX file of unsigned bytes with {rank} dimensions (magic {:02x?})", &magic[..n]);
    }
    let mut header = vec![0u8; 4 * rank];
    if read_up_to(&mut reader, &mut header).map_err(inflate)? < header.len() {
        bail!("truncated IDX header");
    }
    let dims: Vec<usize> = header.chunks_exact(4).map(|d| u32::from_be_bytes(d.try_into().expect("4 bytes")) as usize).collect();
    if dims.iter().skip(1).any(|&d| d == 0) {
        bail!("dimensions {dims:?}: an image needs a height and a width of at least 1");
    }
    let len = dims.iter().try_fold(1u128, |n, &d| Some(n * d as u128)).expect("three u32 fit in u128");
    crate::memory::ensure_fits(len, &format!("an IDX array of dimensions {dims:?}"), "is this file whole?")?;
    let mut bytes = Vec::new();
    reader.take(len as u64 + 1).read_to_end(&mut bytes).map_err(inflate)?;
    if bytes.len() as u128 != len {
        let found = if bytes.len() as u128 > len { "more".to_string() } else { bytes.len().to_string() };
        bail!("dimensions {dims:?} need {len} bytes after the {}-byte header, the file has {found}", 4 + 4 * rank);
    }
    Ok((dims, bytes))
}

/// Fills as much of `buf` as `reader` has, returning how much.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match reader.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn read_idx_pair(name: &str, dir: &Path, train: bool, classes: Vec<String>, norm: Normalize) -> Result<Dataset> {
    let prefix = if train { "train" } else { "t10k" };
    let read = |file: String, rank| {
        let path = dir.join(&file);
        let path = if path.exists() { path } else { dir.join(file.trim_end_matches(".gz")) };
        let raw = crate::files::read(&path)?;
        read_idx(raw, rank).with_context(|| format!("{}", path.display()))
    };
    let images = read(format!("{prefix}-images-idx3-ubyte.gz"), 3)?;
    let labels = read(format!("{prefix}-labels-idx1-ubyte.gz"), 1)?;
    from_idx(name, images, labels, classes, norm).with_context(|| format!("{}", dir.display()))
}

fn from_idx(
    name: &str,
    (dims, pixels): (Vec<usize>, Vec<u8>),
    (ldims, labels): (Vec<usize>, Vec<u8>),
    classes: Vec<String>,
    norm: Normalize,
) -> Result<Dataset> {
    if dims[0] != ldims[0] {
        bail!("{} images but {} labels", dims[0], ldims[0]);
    }
    if let Some(bad) = labels.iter().find(|&&l| l as usize >= classes.len()) {
        bail!("label {bad} out of range for {} classes", classes.len());
    }
    let images = Images::Raw { pixels, height: dims[1], width: dims[2], channels: 1 };
    Ok(Dataset::new(name.into(), images, Some(labels.into_iter().map(u32::from).collect()), classes, norm))
}

/// STL-10's binary: 96×96 images as three column-major planes; labels 1–10 in a byte file.
pub fn read_stl10(images: &Path, labels: Option<&Path>, classes: Vec<String>, norm: Normalize) -> Result<Dataset> {
    const SIDE: usize = 96;
    const LEN: usize = 3 * SIDE * SIDE;
    let bytes = crate::files::read(images)?;
    if bytes.is_empty() || bytes.len() % LEN != 0 {
        bail!("{}: {} bytes is not a whole number of {LEN}-byte STL-10 images", images.display(), bytes.len());
    }
    let count = bytes.len() / LEN;
    let mut pixels = vec![0u8; bytes.len()];
    for (n, image) in bytes.chunks_exact(LEN).enumerate() {
        let out = &mut pixels[n * LEN..(n + 1) * LEN];
        for c in 0..3 {
            for x in 0..SIDE {
                for y in 0..SIDE {
                    out[(y * SIDE + x) * 3 + c] = image[c * SIDE * SIDE + x * SIDE + y];
                }
            }
        }
    }
    let labels = match labels {
        None => None,
        Some(path) => {
            let raw = crate::files::read(path)?;
            if raw.len() != count || raw.iter().any(|&l| l == 0 || l as usize > classes.len()) {
                bail!("{}: expected {count} labels in 1..={}", path.display(), classes.len());
            }
            Some(raw.into_iter().map(|l| l as u32 - 1).collect())
        }
    };
    let images = Images::Raw { pixels, height: SIDE, width: SIDE, channels: 3 };
    Ok(Dataset::new("stl10".into(), images, labels, classes, norm))
}

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "JPEG"];

fn is_image(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// A folder's entries in sorted order, hidden ones left out, each with whether it is a folder
/// (links followed). An image's name on something that is no file (a FIFO, a device, a broken
/// link) is an error naming it: reading it would block or never end.
fn sorted_entries(dir: &Path) -> Result<Vec<(PathBuf, bool)>> {
    let reading = || format!("reading folder {}", dir.display());
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(reading)? {
        let entry = entry.with_context(reading)?;
        let path = entry.path();
        if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
            continue;
        }
        let mut t = entry.file_type().with_context(reading)?;
        if t.is_symlink() {
            t = std::fs::metadata(&path).with_context(|| format!("{}: a link to nothing readable", path.display()))?.file_type();
        }
        if !t.is_dir() && !t.is_file() {
            if is_image(&path) {
                bail!("{} is {}, not an image file", path.display(), crate::files::kind(t));
            }
            continue;
        }
        entries.push((path, t.is_dir()));
    }
    entries.sort();
    Ok(entries)
}

/// `dir/<class>/*.jpg|png` (labeled, classes in sorted order) or `dir/*.jpg|png` (unlabeled).
/// Images are decoded when used; see [`decode`].
pub fn read_folder(dir: &Path, max_pixels: u64) -> Result<Dataset> {
    let (dirs, files): (Vec<_>, Vec<_>) = sorted_entries(dir)?.into_iter().partition(|(_, is_dir)| *is_dir);
    let dirs: Vec<PathBuf> = dirs.into_iter().map(|(p, _)| p).collect();
    let images: Vec<PathBuf> = files.into_iter().map(|(p, _)| p).filter(|p| is_image(p)).collect();
    let norm = Normalize::new([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    match (dirs.is_empty(), images.is_empty()) {
        (true, true) => bail!("{}: no images (.jpg, .jpeg, .png) and no class folders", dir.display()),
        (true, false) => return Ok(Dataset::new(name, Images::Files { paths: images, max_pixels }, None, vec![], norm)),
        (false, false) => bail!(
            "{}: mixes images ({}) with folders ({}); use either root/<class>/image.jpg or a flat folder of images",
            dir.display(), images[0].display(), dirs[0].display()
        ),
        (false, true) => {}
    }
    let (mut paths, mut labels, mut classes) = (Vec::new(), Vec::new(), Vec::new());
    for class_dir in dirs {
        let entries = sorted_entries(&class_dir)?;
        if let Some((nested, _)) = entries.iter().find(|(_, is_dir)| *is_dir) {
            bail!("{}: class folders must hold images, not folders ({}); expected root/<class>/image.jpg",
                class_dir.display(), nested.display());
        }
        let found: Vec<_> = entries.into_iter().map(|(p, _)| p).filter(|p| is_image(p)).collect();
        if found.is_empty() {
            bail!("{}: class folder without images (.jpg, .jpeg, .png)", class_dir.display());
        }
        labels.extend(std::iter::repeat_n(classes.len() as u32, found.len()));
        paths.extend(found);
        classes.push(class_dir.file_name().unwrap().to_string_lossy().into_owned());
    }
    Ok(Dataset::new(name, Images::Files { paths, max_pixels }, Some(labels), classes, norm))
}

/// Decodes one image file of at most `max_pixels` pixels; a truncated, corrupt or too large
/// file is an error naming it.
pub fn decode(path: &Path, max_pixels: u64) -> Result<Image> {
    super::decode::with_file(path, max_pixels, |b| Image::from_bytes(b.data, b.width, b.height, b.channels))
}
