//! Answers that would be silently wrong: misaligned class lists, ids that names break, damaged checkpoints.

use super::*;
use barlow::data::{self, Split};
use burn::tensor::TensorData;
use std::path::PathBuf;

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
    // A name that is not UTF-8 would be written with U+FFFD for its bytes: refused instead.
    use std::os::unix::ffi::OsStrExt;
    write_image(&folder.join(std::ffi::OsStr::from_bytes(b"caf\xe9.png")), image::ImageFormat::Png);
    let err = refused(&["embed", "--weights", &common::fixture("tv_resnet18_w2.safetensors").display().to_string(), "--arch",
        "resnet18", "--width", "2", "--set", "data.dataset=folder", "--data", folder.to_str().unwrap(), "--out",
        dir.path().join("f.npy").to_str().unwrap()]);
    assert!(err.contains("caf") && err.contains("not UTF-8"), "{err}");
    assert!(!dir.path().join("f.npy").exists() && !dir.path().join("f.npy.ids.tsv").exists(), "nothing half-written");
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
    let (config, mut model) = barlow::store::checkpoint::load_model(&path, &device).unwrap();
    use burn::store::ModuleSnapshot;
    let first = model.collect(None, None, true).into_iter().find(|t| t.dtype.is_float()).unwrap();
    let n: usize = first.shape.iter().product();
    let nan = TensorData::new(vec![f32::NAN; n], first.shape.clone());
    let name = first.name.clone();
    model.apply(vec![burn::store::bridge::from_data(nan, name.clone(), None)], None, None, true);
    let state = barlow::store::checkpoint::Checkpoint::read(&path).unwrap().state;
    let optim = config.optimizer(&config.schedule(8));
    barlow::store::checkpoint::save(&path, &state, &model, &optim).unwrap();
    for args in [&k[..], &["train", "--resume", "--out", run.to_str().unwrap()]] {
        let err = refused(args);
        assert!(err.contains("checkpoint.bin") && err.contains(&format!("`{name}` holds")) && err.contains("non-finite"),
            "{args:?}: {err}");
    }
}
