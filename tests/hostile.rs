//! Hostile and odd input, one test per class (README, "When things go wrong"): resource bombs,
//! valid files barlow did not expect, nonsense settings, answers that would be silently wrong,
//! two writers on one run, and messages that must not mislead. Every case is made here.

mod common;

use barlow::data::decode::MAX_PIXELS;
use barlow::data::{self, Split, datasets};
use burn::tensor::{DType, TensorData};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn barlow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_barlow")).args(args).output().expect("barlow runs")
}

/// barlow's error on stderr: a usage error (2) or a failure (1), never a panic or an abort.
fn refused(args: &[&str]) -> String {
    let out = barlow(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(matches!(out.status.code(), Some(1 | 2)), "barlow {args:?} exited {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "barlow {args:?} panicked: {err}");
    err
}

fn ok(args: &[&str]) -> String {
    let out = barlow(args);
    assert!(out.status.success(), "barlow {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text<T>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.err().expect("an error"))
}

fn write_image(path: &Path, format: image::ImageFormat) {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 90]));
    img.save_with_format(path, format).unwrap();
}

/// The file with the dimensions its header states replaced by `w`×`h` (JPEG's SOF, PNG's IHDR
/// with its CRC made right again): a few hundred bytes that claim a giant picture.
fn claim_size(path: &Path, w: u16, h: u16) {
    let mut b = std::fs::read(path).unwrap();
    if b.starts_with(&[0xff, 0xd8]) {
        let sof = b.windows(2).position(|m| m == [0xff, 0xc0]).expect("a baseline JPEG");
        b[sof + 5..sof + 7].copy_from_slice(&h.to_be_bytes());
        b[sof + 7..sof + 9].copy_from_slice(&w.to_be_bytes());
    } else {
        b[16..20].copy_from_slice(&(w as u32).to_be_bytes());
        b[20..24].copy_from_slice(&(h as u32).to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&b[12..29]);
        b[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    }
    std::fs::write(path, b).unwrap();
}

#[test]
fn images_claiming_giant_sizes_are_refused_before_their_pixels_are_allocated() {
    let dir = tempfile::tempdir().unwrap();
    for (name, format) in [("bomb.jpg", image::ImageFormat::Jpeg), ("bomb.png", image::ImageFormat::Png)] {
        let path = dir.path().join(name);
        write_image(&path, format);
        assert_eq!(datasets::decode(&path, MAX_PIXELS).unwrap().width, 8, "{name}: the honest file decodes");
        let err = text(datasets::decode(&path, 63));
        assert!(err.contains("data.max_pixels = 63") && err.contains(name), "{err}");
        claim_size(&path, 65500, 65500);
        let err = text(datasets::decode(&path, MAX_PIXELS));
        assert!(err.contains("65500×65500") && err.contains("data.max_pixels") && err.contains(name), "{err}");
    }
    // Through the command line, on an image folder: an error naming the file, no abort.
    let folder = dir.path().join("folder");
    std::fs::create_dir(&folder).unwrap();
    std::fs::rename(dir.path().join("bomb.jpg"), folder.join("a.jpg")).unwrap();
    let err = refused(&["data", "preview", "--count", "1", "--set", "data.dataset=folder", "--data", folder.to_str().unwrap(),
        "--out", dir.path().join("v.png").to_str().unwrap()]);
    assert!(err.contains("a.jpg") && err.contains("data.max_pixels"), "{err}");
}

#[test]
fn a_fifo_or_device_among_the_images_is_refused_by_name_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let class = dir.path().join("cat");
    std::fs::create_dir(&class).unwrap();
    write_image(&class.join("a.png"), image::ImageFormat::Png);
    let fifo = std::ffi::CString::new(class.join("x.png").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    let err = text(datasets::read_folder(dir.path(), MAX_PIXELS));
    assert!(err.contains("x.png") && err.contains("FIFO"), "{err}");
    // The whole command, with a deadline: it must answer, not wait for a writer.
    let mut child = Command::new(env!("CARGO_BIN_EXE_barlow"))
        .args(["train", "--set", "data.dataset=folder", "--data"]).arg(dir.path()).arg("--out").arg(dir.path().join("run"))
        .stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("barlow train waited on a FIFO for a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("x.png"));
    // A FIFO renamed to look like a weights file, or a checkpoint.
    let fifo_pth = std::ffi::CString::new(dir.path().join("w.pth").as_os_str().as_encoded_bytes()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo_pth.as_ptr(), 0o644) }, 0);
    let err = refused(&["export", "--weights", dir.path().join("w.pth").to_str().unwrap(), "--arch", "resnet18"]);
    assert!(err.contains("w.pth") && err.contains("FIFO"), "{err}");
    let err = refused(&["eval", "knn", "-k", "/dev/zero"]);
    assert!(err.contains("/dev/zero") && err.contains("device"), "{err}");
}

#[test]
fn a_pickle_built_to_exhaust_memory_is_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.pth");
    let mut bomb = b"\x80\x02X\x00\x01\x00\x00".to_vec();
    bomb.extend([b'a'; 256]);
    bomb.extend(std::iter::repeat_n(b'2', 4_000_000));
    bomb.push(b'.');
    std::fs::write(&path, bomb).unwrap();
    let err = refused(&["export", "--weights", path.to_str().unwrap(), "--arch", "resnet18"]);
    assert!(err.contains("bomb.pth") && err.contains("exhaust memory"), "{err}");
}

/// The fixture's tensors with every f32 one stored as `dtype` (and, with `int`, `conv1.weight`
/// as int64), written as a new safetensors file.
fn recast(dtype: DType, int: bool, out: &Path) {
    let bytes = std::fs::read(common::fixture("tv_resnet18_w2.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut owned = vec![];
    for (name, view) in st.tensors() {
        if view.dtype() != safetensors::Dtype::F32 {
            owned.push((name, view.dtype(), view.shape().to_vec(), view.data().to_vec()));
            continue;
        }
        let values: Vec<f32> = view.data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
        let (target, st_dtype) = match (int && name == "conv1.weight", dtype) {
            (true, _) => (DType::I64, safetensors::Dtype::I64),
            (false, DType::F16) => (DType::F16, safetensors::Dtype::F16),
            (false, DType::BF16) => (DType::BF16, safetensors::Dtype::BF16),
            _ => (DType::F64, safetensors::Dtype::F64),
        };
        let data = TensorData::new(values, view.shape().to_vec()).convert_dtype(target);
        owned.push((name, st_dtype, view.shape().to_vec(), data.into_bytes().to_vec()));
    }
    let views: Vec<_> = owned.iter()
        .map(|(n, d, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(out, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn weights_in_f16_bf16_or_f64_load_as_f32_and_integer_weights_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("f32.safetensors");
    let arch = ["--arch", "resnet18", "--width", "2"];
    ok(&[&["export", "--weights", &common::fixture("tv_resnet18_w2.safetensors").display().to_string(), "--out",
        reference.to_str().unwrap()][..], &arch].concat());
    let want = common::read_safetensors(&reference);
    for (dtype, eps) in [(DType::F16, 1e-3f32), (DType::BF16, 8e-3), (DType::F64, 0.0)] {
        let file = dir.path().join(format!("{dtype:?}.safetensors"));
        recast(dtype, false, &file);
        let out = dir.path().join("out.safetensors");
        ok(&[&["export", "--weights", file.to_str().unwrap(), "--out", out.to_str().unwrap()][..], &arch].concat());
        for (name, (shape, got)) in common::read_safetensors(&out) {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            let (want_shape, want) = &want[&name];
            assert_eq!(&shape, want_shape, "{dtype:?} {name}");
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= eps * w.abs().max(1e-3), "{dtype:?} {name}: {g} vs {w}");
            }
        }
    }
    // The encoder from a bf16 file evaluates: the step that panicked on a dtype mismatch.
    let bf16 = dir.path().join("BF16.safetensors");
    let knn = ok(&[&["eval", "knn", "--weights", bf16.to_str().unwrap(), "--set", "train.knn_limit=200"][..], &arch].concat());
    assert!(knn.contains("top-1"), "{knn}");
    let ints = dir.path().join("ints.safetensors");
    recast(DType::F32, true, &ints);
    let err = refused(&[&["export", "--weights", ints.to_str().unwrap()][..], &arch].concat());
    assert!(err.contains("`conv1.weight` holds I64") && err.contains("floating-point"), "{err}");
}

#[test]
fn nonsense_settings_and_options_are_refused_naming_them() {
    let none = "no/such/run";
    for (args, names) in [
        (&["eval", "knn", "-k", none, "--k", "0"][..], "--k"),
        (&["eval", "knn", "-k", none, "--t", "0"], "--t"),
        (&["eval", "knn", "-k", none, "--t=-1"], "--t"),
        (&["eval", "knn", "-k", none, "--t", "nan"], "--t"),
        (&["eval", "linear", "-k", none, "--batch-size", "0"], "--batch-size"),
        (&["eval", "linear", "-k", none, "--labels", "1.5"], "--labels"),
        (&["eval", "knn", "--weights", "w.pth", "--arch", "resnet18", "--width", "0"], "--width"),
        (&["data", "preview", "--count", "1000000"], "--count"),
        (&["train", "--set", "train.knn_limit=0"], "train.knn_limit"),
        (&["train", "--set", "model.projector=[0]"], "model.projector"),
        (&["train", "--set", "model.projector=[128, 0, 128]"], "model.projector[1]"),
        (&["train", "--set", "optim.lr_weights=-0.1"], "optim.lr_weights"),
        (&["train", "--set", "optim.momentum=-0.5"], "optim.momentum"),
        (&["train", "--set", "model.lambda=-1"], "model.lambda"),
        (&["train", "--set", "data.size=100000"], "data.size"),
        (&["train", "--set", "optim.batch_size=100000000"], "optim.batch_size"),
    ] {
        // Were a check missing, the run would stop after a step, in a folder of its own.
        let out = tempfile::tempdir().unwrap();
        let guard = ["--out", out.path().to_str().unwrap(), "--set", "train.max_steps=1"];
        let args = [args, if args[0] == "train" { &guard[..] } else { &[] }].concat();
        let err = refused(&args);
        assert!(err.contains(names), "{args:?}: {err}");
        assert!(err.contains("must lie in") || err.contains("out of range") || err.contains("is not in"), "{args:?}: {err}");
    }
}

/// `root/{train,test}/<class>/img.png` with the given class lists.
fn splits(root: &Path, train: &[&str], test: &[&str]) {
    for (split, classes) in [("train", train), ("test", test)] {
        for class in classes {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            write_image(&dir.join("0.png"), image::ImageFormat::Png);
        }
    }
}

#[test]
fn splits_with_different_class_lists_keep_their_labels_aligned_or_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = barlow::config::Config::load("quick", &[]).unwrap().data;
    config.dataset = "folder".into();
    config.root = Some(dir.path().join("a"));
    splits(&dir.path().join("a"), &["ant", "cat", "dog"], &["cat", "dog"]);
    let m = data::open_monitor(&config).unwrap().unwrap();
    assert_eq!(m.test.classes(), m.train.classes());
    assert_eq!(m.test.labels().unwrap(), &[1, 2], "cat and dog keep the train split's labels");
    config.root = Some(dir.path().join("b"));
    splits(&dir.path().join("b"), &["ant", "cat"], &["cat", "eel"]);
    let err = text(data::open_monitor(&config));
    assert!(err.contains("eel") && err.contains("train split does not"), "{err}");
    assert_eq!(data::open(&config, Split::Test).unwrap().labels().unwrap(), &[0, 1], "each split alone still reads");
}

/// A minimal reader of quoted TSV (as pandas and Python's csv read it): rows of fields.
fn read_tsv(text: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut field, mut quoted, mut chars) = (vec![], vec![], String::new(), false, text.chars().peekable());
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => _ = (chars.next(), field.push('"')),
            ('"', _) => quoted = !quoted,
            ('\t', false) => row.push(std::mem::take(&mut field)),
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    rows
}

#[test]
fn embedding_ids_survive_file_names_with_tabs_newlines_and_quotes() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("imgs");
    std::fs::create_dir(&folder).unwrap();
    let names = ["a\tb.png", "c\nd.png", "e\"f.png", "plain.png"];
    for name in names {
        write_image(&folder.join(name), image::ImageFormat::Png);
    }
    let out = dir.path().join("e.npy");
    ok(&["embed", "--weights", &common::fixture("tv_resnet18_w2.safetensors").display().to_string(), "--arch", "resnet18",
        "--width", "2", "--set", "data.dataset=folder", "--data", folder.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    let rows = read_tsv(&std::fs::read_to_string(dir.path().join("e.npy.ids.tsv")).unwrap());
    assert_eq!(rows.len(), 1 + names.len(), "{rows:?}");
    let mut sorted: Vec<PathBuf> = names.iter().map(|n| folder.join(n)).collect();
    sorted.sort();
    for (row, path) in rows[1..].iter().zip(&sorted) {
        assert_eq!(row.len(), 3, "{row:?}");
        assert_eq!(row[1], path.display().to_string());
    }
}

/// A tiny run's arguments: 512 images of the embedded sample, 8 steps an epoch.
const TINY: [&str; 8] = ["--set=data.limit=512", "--set=data.size=16", "--set=model.width=4",
    "--set=model.projector=[32, 32]", "--set=optim.batch_size=64", "--set=optim.warmup_epochs=0",
    "--set=train.knn_every=0", "--set=optim.epochs=1"];

fn train(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barlow"));
    cmd.args(["train", "--out"]).arg(out).args(TINY).args(extra);
    cmd
}

#[test]
fn damaged_or_non_finite_checkpoints_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    assert!(train(&run, &[]).status().unwrap().success());
    let path = run.join("checkpoint.bin");
    let good = std::fs::read(&path).unwrap();
    let k = ["eval", "knn", "-k", run.to_str().unwrap(), "--set", "train.knn_limit=100"];
    ok(&k);
    // One flipped bit in the middle of the weights.
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    for args in [&k[..], &["train", "--resume", "--out", run.to_str().unwrap()]] {
        let err = refused(args);
        assert!(err.contains("checkpoint.bin") && err.contains("SHA-256 does not match"), "{args:?}: {err}");
    }
    // A NaN in the weights, in a file whose checksum is right: the file says what it holds.
    std::fs::write(&path, &good).unwrap();
    let device = common::plain_device();
    let (config, mut model) = barlow::checkpoint::load_model(&path, &device).unwrap();
    use burn::store::ModuleSnapshot;
    let first = model.collect(None, None, false).into_iter().find(|t| t.dtype.is_float()).unwrap();
    let n: usize = first.shape.iter().product();
    let nan = TensorData::new(vec![f32::NAN; n], first.shape.clone());
    let name = first.name.clone();
    model.apply(vec![burn::store::bridge::from_data(nan, name.clone(), None)], None, None, false);
    let state = barlow::checkpoint::Checkpoint::read(&path).unwrap().state;
    let optim = config.optimizer(&config.schedule(8));
    barlow::checkpoint::save(&path, &state, &model, &optim).unwrap();
    for args in [&k[..], &["train", "--resume", "--out", run.to_str().unwrap()]] {
        let err = refused(args);
        assert!(err.contains("checkpoint.bin") && err.contains(&format!("`{name}` holds")) && err.contains("non-finite"),
            "{args:?}: {err}");
    }
}

#[test]
fn a_second_writer_is_refused_naming_the_first_and_a_killed_one_frees_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    // A run long enough to be caught in the middle.
    let mut first = train(&run, &["--set=optim.epochs=1000"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let pid = first.id().to_string();
    let lock = run.join("writer.lock");
    let started = Instant::now();
    while std::fs::read_to_string(&lock).map(|t| t.trim() != pid).unwrap_or(true) {
        assert!(started.elapsed() < Duration::from_secs(60), "the run never took its lock");
        std::thread::sleep(Duration::from_millis(20));
    }
    for extra in [&["--resume"][..], &["--overwrite"], &[]] {
        let err = refused(&[&["train", "--out", run.to_str().unwrap()][..], extra, &TINY].concat());
        assert!(err.contains("in use") && err.contains(&format!("PID {pid}")), "{extra:?}: {err}");
    }
    let metrics = run.join("metrics.jsonl");
    assert!(metrics.exists(), "the live run's log is untouched");
    first.kill().unwrap();
    first.wait().unwrap();
    // SIGKILL left the lock file, not the lock.
    let out = train(&run, &["--overwrite", "--set=train.max_steps=1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn failures_say_what_was_kept_and_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh run that diverges in its first epoch has no checkpoint to name.
    let run = dir.path().join("diverged");
    let out = train(&run, &["--set=optim.lr_weights=1e30", "--set=optim.lr_biases=1e30"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the loss became") && err.contains("wrote no checkpoint") && err.contains("--overwrite"), "{err}");
    assert!(!run.join("checkpoint.bin").exists());
    // A config.toml that cannot be written: the error names it, and no temporary file is left.
    let run = dir.path().join("blocked");
    std::fs::create_dir_all(run.join("config.toml/inside")).unwrap();
    let err = refused(&[&["train", "--out", run.to_str().unwrap()][..], &TINY].concat());
    assert!(err.contains("config.toml"), "{err}");
    assert!(!run.join("config.toml.tmp").exists(), "the temporary file is removed");
}
