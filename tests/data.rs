//! Dataset readers, the loader and downloads, on small files written by the tests.

use barlow::config::Config;
use barlow::data::{self, Split, datasets, download, loader};
use barlow::data::decode::MAX_PIXELS;
use std::io::Write;
use std::path::Path;

fn err_text<T>(r: anyhow::Result<T>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => format!("{e:#}"),
    }
}

fn cifar_record(label: u8, seed: u8) -> Vec<u8> {
    let mut r = vec![label];
    r.extend((0..3072).map(|i| (i as u8).wrapping_mul(seed)));
    r
}

#[test]
fn cifar_records_become_rgb_pixels_with_labels() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data_batch_1.bin");
    std::fs::write(&file, [cifar_record(3, 1), cifar_record(9, 7)].concat()).unwrap();
    let norm = data::Normalize::gray(0.5, 0.5);
    let classes = datasets::CIFAR10_CLASSES.map(String::from).to_vec();
    let set = datasets::read_cifar("cifar10", std::slice::from_ref(&file), 1, classes.clone(), norm).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.labels().unwrap(), &[3, 9]);
    let img = set.image(1).unwrap();
    // Pixel 5 of image 1: red plane byte 5, green 1024 + 5, blue 2048 + 5, times the seed 7.
    let byte = |i: usize| (i as u8).wrapping_mul(7) as f32 / 255.0;
    assert_eq!(&img.pixels[15..18], &[byte(5), byte(1029), byte(2053)]);

    std::fs::write(&file, &cifar_record(1, 1)[..3000]).unwrap();
    let e = err_text(datasets::read_cifar("cifar10", std::slice::from_ref(&file), 1, classes, norm));
    assert!(e.contains("data_batch_1.bin") && e.contains("3000 bytes"), "{e}");
}

fn idx(magic: u8, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, 8, magic];
    for d in dims {
        v.extend(d.to_be_bytes());
    }
    v.extend(body);
    v
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn config(dataset: &str, root: &Path) -> barlow::config::DataConfig {
    let mut c = Config::load("quick", &[]).unwrap().data;
    c.dataset = dataset.into();
    c.root = Some(root.to_path_buf());
    c
}

#[test]
fn idx_files_read_gzipped_or_plain_and_reject_bad_magic() {
    let dir = tempfile::tempdir().unwrap();
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| i as u8).collect();
    std::fs::write(dir.path().join("train-images-idx3-ubyte.gz"), gz(&idx(3, &[3, 4, 5], &pixels))).unwrap();
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx(1, &[3], &[2, 0, 9])).unwrap();
    let set = data::open(&config("mnist", dir.path()), Split::Train).unwrap();
    assert_eq!((set.len(), set.labels().unwrap()), (3, &[2u32, 0, 9][..]));
    let img = set.image(1).unwrap();
    assert_eq!((img.width, img.height), (5, 4));
    assert_eq!(&img.pixels[..3], &[20.0 / 255.0; 3]);

    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx(3, &[3], &[2, 0, 9])).unwrap();
    let e = err_text(data::open(&config("mnist", dir.path()), Split::Train));
    assert!(e.contains("train-labels-idx1-ubyte") && e.contains("magic"), "{e}");
    std::fs::write(dir.path().join("train-labels-idx1-ubyte"), idx(1, &[4], &[2, 0, 9])).unwrap();
    let e = err_text(data::open(&config("mnist", dir.path()), Split::Train));
    assert!(e.contains("train-labels-idx1-ubyte") && e.contains("need 4 bytes after the 8-byte header"), "{e}");
}

#[test]
fn stl10_planes_are_column_major() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0u8; 2 * 3 * 96 * 96];
    // Image 1, green plane, column x = 2, row y = 7.
    bytes[3 * 96 * 96 + 96 * 96 + 2 * 96 + 7] = 255;
    std::fs::write(dir.path().join("x.bin"), &bytes).unwrap();
    std::fs::write(dir.path().join("y.bin"), [1u8, 10]).unwrap();
    let norm = data::Normalize::gray(0.5, 0.5);
    let classes = datasets::STL10_CLASSES.map(String::from).to_vec();
    let set = datasets::read_stl10(&dir.path().join("x.bin"), Some(&dir.path().join("y.bin")), classes.clone(), norm).unwrap();
    assert_eq!(set.labels().unwrap(), &[0, 9]);
    let img = set.image(1).unwrap();
    assert_eq!(img.pixels[(7 * 96 + 2) * 3 + 1], 1.0);
    assert_eq!(img.pixels.iter().filter(|&&v| v > 0.0).count(), 1);
    // Pretraining reads the unlabeled split and the labeled train split together.
    std::fs::copy(dir.path().join("x.bin"), dir.path().join("train_X.bin")).unwrap();
    std::fs::write(dir.path().join("unlabeled_X.bin"), &bytes[..3 * 96 * 96]).unwrap();
    let pretrain = data::open(&config("stl10", dir.path()), Split::Pretrain).unwrap();
    assert_eq!((pretrain.len(), pretrain.labels()), (3, None));
    assert_eq!(pretrain.image(2).unwrap(), img);
    std::fs::write(dir.path().join("y.bin"), [1u8, 11]).unwrap();
    let e = err_text(datasets::read_stl10(&dir.path().join("x.bin"), Some(&dir.path().join("y.bin")), classes, norm));
    assert!(e.contains("y.bin"), "{e}");
}

fn write_png(path: &Path, shade: u8) {
    image::RgbImage::from_pixel(12, 10, image::Rgb([shade, 255 - shade, 40])).save(path).unwrap();
}

/// `root/train/<class>/` and `root/test/<class>/`, two classes, `n` images each.
fn image_folders(root: &Path, n: usize) {
    for split in ["train", "test"] {
        for (c, class) in ["cat", "ant"].iter().enumerate() {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                write_png(&dir.join(format!("{i:03}.png")), (c * 100 + i) as u8);
            }
        }
    }
}

#[test]
fn image_folders_give_sorted_classes_and_labels() {
    let dir = tempfile::tempdir().unwrap();
    image_folders(dir.path(), 3);
    let set = data::open(&config("folder", dir.path()), Split::Train).unwrap();
    assert_eq!(set.classes(), &["ant", "cat"]);
    assert_eq!(set.labels().unwrap(), &[0, 0, 0, 1, 1, 1]);
    assert_eq!(set.image(4).unwrap().pixels[0], 1.0 / 255.0);
    assert!(set.id(0).unwrap().ends_with("train/ant/000.png"));
    // A flat folder is an unlabeled dataset.
    let flat = datasets::read_folder(&dir.path().join("test/cat"), MAX_PIXELS).unwrap();
    assert_eq!((flat.len(), flat.labels()), (3, None));
    let monitor = data::open_monitor(&config("folder", dir.path())).unwrap().unwrap();
    assert_eq!((monitor.train.len(), monitor.test.len()), (6, 6));
}

#[test]
fn bad_folders_and_images_are_named_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let e = err_text(datasets::read_folder(dir.path(), MAX_PIXELS));
    assert!(e.contains("no images"), "{e}");
    std::fs::create_dir(dir.path().join("empty_class")).unwrap();
    let e = err_text(datasets::read_folder(dir.path(), MAX_PIXELS));
    assert!(e.contains("empty_class") && e.contains("without images"), "{e}");
    write_png(&dir.path().join("stray.png"), 0);
    let e = err_text(datasets::read_folder(dir.path(), MAX_PIXELS));
    assert!(e.contains("mixes images"), "{e}");
    std::fs::remove_file(dir.path().join("stray.png")).unwrap();
    std::fs::create_dir(dir.path().join("empty_class/deeper")).unwrap();
    let e = err_text(datasets::read_folder(dir.path(), MAX_PIXELS));
    assert!(e.contains("deeper") && e.contains("root/<class>/image.jpg"), "{e}");

    let img = dir.path().join("bad.jpg");
    std::fs::write(&img, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let e = err_text(datasets::decode(&img, MAX_PIXELS));
    assert!(e.contains("bad.jpg") && e.contains("cannot decode"), "{e}");
    write_png(&img.with_extension("png"), 9);
    let whole = std::fs::read(img.with_extension("png")).unwrap();
    std::fs::write(&img, &whole[..whole.len() / 2]).unwrap();
    assert!(err_text(datasets::decode(&img, MAX_PIXELS)).contains("bad.jpg"));
}

#[test]
fn loader_is_deterministic_shuffled_and_drops_the_last_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    image_folders(dir.path(), 7);
    let mut c = config("folder", dir.path());
    c.size = 8;
    let set = data::open_train(&c).unwrap();
    let batches = |seed, epoch| -> Vec<data::Batch> {
        data::Loader::new(&set, &c, 4, seed, epoch).unwrap().map(|b| b.unwrap()).collect()
    };
    let (one, again, next) = (batches(1, 0), batches(1, 0), batches(1, 1));
    assert_eq!(one.len(), 14 / 4);
    assert_eq!(one[0].views[0].shape, [4, 3, 8, 8]);
    for (x, y) in one.iter().zip(&again) {
        assert_eq!((&x.views[0].pixels, &x.views[1].pixels, &x.indices), (&y.views[0].pixels, &y.views[1].pixels, &y.indices));
    }
    let order = |bs: &[data::Batch]| bs.iter().flat_map(|b| b.indices.clone()).collect::<Vec<_>>();
    assert_ne!(order(&one), order(&next));
    assert_ne!(order(&one), (0..12).collect::<Vec<_>>());
    for b in &one {
        let labels: Vec<u32> = b.indices.iter().map(|&i| set.labels().unwrap()[i]).collect();
        assert_eq!(b.labels.as_ref().unwrap(), &labels);
    }
    // More threads, same batches.
    c.workers = 1;
    let single: Vec<data::Batch> = data::Loader::new(&set, &c, 4, 1, 0).unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(single[2].views[1].pixels, one[2].views[1].pixels);
}

#[test]
fn loader_skips_an_unreadable_image_with_a_count() {
    let dir = tempfile::tempdir().unwrap();
    image_folders(dir.path(), 4);
    let bad = dir.path().join("train/ant/002.png");
    std::fs::write(&bad, b"\x89PNG broken").unwrap();
    let mut c = config("folder", dir.path());
    c.size = 8;
    let set = data::open_train(&c).unwrap();
    let before = loader::skipped_images();
    let batches: Vec<_> = data::Loader::new(&set, &c, 8, 0, 0).unwrap().collect::<anyhow::Result<_>>().unwrap();
    let seen: Vec<usize> = batches.iter().flat_map(|b: &data::Batch| b.indices.clone()).collect();
    assert!(!seen.contains(&2), "the broken image is replaced");
    assert_eq!(loader::skipped_images(), before + 1);
    // Evaluation needs every image, in order: there it is an error naming the file.
    let views = data::Views::new("cifar", 8, set.normalize()).unwrap();
    let e = err_text(data::eval_batches(&set, &views, 3).collect::<anyhow::Result<Vec<_>>>());
    assert!(e.contains("002.png"), "{e}");
}

#[test]
fn the_embedded_sample_needs_no_setup() {
    let c = Config::load("quick", &[]).unwrap().data;
    let train = data::open_train(&c).unwrap();
    let monitor = data::open_monitor(&c).unwrap().unwrap();
    assert_eq!((train.len(), monitor.test.len(), train.num_classes()), (6000, 2000, 10));
}

fn sha(bytes: &[u8]) -> &'static str {
    use sha2::Digest;
    Box::leak(hex::encode(sha2::Sha256::digest(bytes)).into_boxed_str())
}

#[test]
fn downloads_verify_resume_and_replace_atomically() {
    let src = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let body: Vec<u8> = (0..100_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let file = src.path().join("blob.gz");
    std::fs::write(&file, &body).unwrap();
    let remote = download::Remote { url: format!("file://{}", file.display()), sha256: sha(&body), unpack: false };

    // Resume: half the bytes already arrived.
    std::fs::write(cache.path().join("blob.gz.part"), &body[..40_000]).unwrap();
    let got = download::fetch(&remote, cache.path()).unwrap();
    assert_eq!(std::fs::read(&got).unwrap(), body);
    assert!(!cache.path().join("blob.gz.part").exists());

    // A corrupt partial file fails verification, names the file, and is removed.
    std::fs::remove_file(&got).unwrap();
    std::fs::write(cache.path().join("blob.gz.part"), b"garbage").unwrap();
    let e = err_text(download::fetch(&remote, cache.path()));
    assert!(e.contains("blob.gz.part") && e.contains(remote.sha256) && e.contains("SHA-256"), "{e}");
    assert!(!cache.path().join("blob.gz.part").exists() && !cache.path().join("blob.gz").exists());
    download::fetch(&remote, cache.path()).unwrap();

    // A final file that no longer matches is reported, not trusted.
    std::fs::write(&got, b"tampered").unwrap();
    assert!(err_text(download::fetch(&remote, cache.path())).contains("blob.gz"));
}

#[test]
fn archives_unpack_into_a_dataset_folder() {
    let src = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    let record = [cifar_record(4, 3), cifar_record(1, 5)].concat();
    for name in ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin", "test_batch.bin"] {
        let mut header = tar::Header::new_gnu();
        header.set_size(record.len() as u64);
        header.set_mode(0o644);
        tar.append_data(&mut header, format!("cifar-10-batches-bin/{name}"), &record[..]).unwrap();
    }
    let archive = tar.into_inner().unwrap().finish().unwrap();
    let path = src.path().join("cifar-10-binary.tar.gz");
    std::fs::write(&path, &archive).unwrap();
    let remote = download::Remote { url: format!("file://{}", path.display()), sha256: sha(&archive), unpack: true };
    download::fetch_all(&[remote], cache.path()).unwrap();
    let set = data::open(&config("cifar10", cache.path()), Split::Test).unwrap();
    assert_eq!(set.labels().unwrap(), &[4, 1]);
}

#[test]
fn official_downloads_are_pinned() {
    for name in ["cifar10", "cifar100", "stl10", "mnist", "fashion-mnist"] {
        let remotes = download::remotes(name);
        assert!(!remotes.is_empty());
        for r in remotes {
            assert_eq!(r.sha256.len(), 64, "{}", r.url);
            assert!(r.url.starts_with("http"), "{}", r.url);
        }
    }
}

/// Debian's `dataset-fashion-mnist` (which .ci/run installs) is found without `data.root`.
#[test]
fn the_debian_fashion_mnist_is_found_first() {
    if !Path::new("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists() {
        eprintln!("skipped: install dataset-fashion-mnist to run this test");
        return;
    }
    let mut c = Config::load("quick", &[]).unwrap().data;
    c.dataset = "fashion-mnist".into();
    let train = data::open(&c, Split::Train).unwrap();
    let test = data::open(&c, Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (60000, 10000));
    let counts = (0..10).map(|k| train.labels().unwrap().iter().filter(|&&l| l == k).count());
    assert!(counts.into_iter().all(|n| n == 6000));
}

#[test]
fn jpegs_decode_to_the_pixels_the_image_crate_gives() {
    // The loader decodes JPEGs with zune-jpeg into reused buffers; the pixels must be exactly
    // those of `image::open` (same decoder, same options), colour and gray, one after another.
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = (67u32, 41u32);
    let rgb = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 3) as u8, (y * 5) as u8, ((x * y) % 256) as u8]));
    let gray = image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x + 2 * y) * 2) as u8]));
    rgb.save(dir.path().join("a.jpg")).unwrap();
    gray.save(dir.path().join("b.jpg")).unwrap();
    rgb.save(dir.path().join("c.png")).unwrap();
    for name in ["a.jpg", "b.jpg", "c.png", "a.jpg"] {
        let path = dir.path().join(name);
        let want = image::open(&path).unwrap().to_rgb8();
        let got = datasets::decode(&path, MAX_PIXELS).unwrap();
        assert_eq!((got.width, got.height), (w as usize, h as usize));
        assert_eq!(got.to_bytes(), want.as_raw().as_slice(), "{name}");
    }
}

#[test]
fn reused_batch_memory_gives_the_same_batches() {
    // Batches dropped while the loader runs hand their memory to later ones; the views must not
    // depend on what that memory held.
    let dir = tempfile::tempdir().unwrap();
    image_folders(dir.path(), 12);
    let mut c = config("folder", dir.path());
    c.size = 8;
    let set = data::open_train(&c).unwrap();
    let kept: Vec<data::Batch> = data::Loader::new(&set, &c, 2, 5, 0).unwrap().map(|b| b.unwrap()).collect();
    let mut streamed = 0;
    for (b, k) in data::Loader::new(&set, &c, 2, 5, 0).unwrap().zip(&kept) {
        let b = b.unwrap();
        assert_eq!((&b.views[0].pixels, &b.views[1].pixels, &b.indices), (&k.views[0].pixels, &k.views[1].pixels, &k.indices));
        streamed += 1;
    }
    assert_eq!(streamed, 24 / 2);
}
