//! Resource bombs: files that claim giant sizes, FIFOs and devices, pickles and arrays built to exhaust memory.

use super::*;
use barlow::data::datasets;
use barlow::data::decode::MAX_PIXELS;
use std::process::Stdio;
use std::time::{Duration, Instant};

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


/// An IDX file of unsigned bytes with `dims`, then `body`.
fn idx(dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 0, 0x08, dims.len() as u8];
    b.extend(dims.iter().flat_map(|d| d.to_be_bytes()));
    b.extend(body);
    b
}

#[test]
fn idx_arrays_whose_header_lies_are_refused_before_inflating_or_allocating_what_it_claims() {
    let read = |bytes: Vec<u8>| text(datasets::read_idx(bytes, 3));
    let err = read(idx(&[u32::MAX; 3], &[]));
    assert!(err.contains("needs at least") && err.contains("4294967295"), "{err}");
    let err = read(idx(&[5, 0, 28], &[]));
    assert!(err.contains("[5, 0, 28]") && err.contains("height and a width"), "{err}");
    let err = read(idx(&[60000, 28, 28], &[0; 10]));
    assert!(err.contains("need 47040000 bytes") && err.contains("has 10"), "{err}");
    // A gzip bomb: a header for one 2×2 image, then 256 MiB of zeros in a quarter of a megabyte.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    use std::io::Write;
    gz.write_all(&idx(&[1, 2, 2], &[])).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        gz.write_all(&zeros).unwrap();
    }
    let err = read(gz.finish().unwrap());
    assert!(err.contains("need 4 bytes") && err.contains("has more"), "{err}");
    let honest = datasets::read_idx(idx(&[1, 2, 2], &[1, 2, 3, 4]), 3).unwrap();
    assert_eq!(honest, (vec![1, 2, 2], vec![1, 2, 3, 4]));
}

#[test]
fn a_batch_too_large_for_this_machine_is_refused_naming_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let err = refused(&["train", "--out", dir.path().join("run").to_str().unwrap(), "--set", "optim.batch_size=4096",
        "--set", "data.size=4096", "--set", "train.max_steps=1"]);
    assert!(err.contains("needs at least") && err.contains("optim.batch_size") && err.contains("data.size = 4096"), "{err}");
    assert!(!dir.path().join("run/checkpoint.bin").exists());
}
