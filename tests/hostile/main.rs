//! Hostile and odd input, one test per class (README, "When things go wrong"): resource bombs,
//! valid files barlow did not expect, nonsense settings, answers that would be silently wrong,
//! two writers on one run, and messages that must not mislead. Every case is made here.

#[path = "../common/mod.rs"]
mod common;
mod answers;
mod bombs;
mod fuzz;
mod runs;
mod settings;
mod weights;

use std::path::Path;
use std::process::{Command, Output};

pub fn barlow(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_barlow")).args(args).output().expect("barlow runs")
}

/// barlow's error on stderr: a usage error (2) or a failure (1), never a panic or an abort.
pub fn refused(args: &[&str]) -> String {
    let out = barlow(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(matches!(out.status.code(), Some(1 | 2)), "barlow {args:?} exited {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "barlow {args:?} panicked: {err}");
    err
}

pub fn ok(args: &[&str]) -> String {
    let out = barlow(args);
    assert!(out.status.success(), "barlow {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn text<T>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.err().expect("an error"))
}

pub fn write_image(path: &Path, format: image::ImageFormat) {
    let img = image::RgbImage::from_fn(8, 8, |x, y| image::Rgb([(x * 30) as u8, (y * 30) as u8, 90]));
    img.save_with_format(path, format).unwrap();
}

/// The file with the dimensions its header states replaced by `w`×`h` (JPEG's SOF, PNG's IHDR
/// with its CRC made right again): a few hundred bytes that claim a giant picture.
pub fn claim_size(path: &Path, w: u16, h: u16) {
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

/// A tiny run's arguments: 512 images of the embedded sample, 8 steps an epoch.
pub const TINY: [&str; 8] = ["--set=data.limit=512", "--set=data.size=16", "--set=model.width=4",
    "--set=model.projector=[32, 32]", "--set=optim.batch_size=64", "--set=optim.warmup_epochs=0",
    "--set=train.knn_every=0", "--set=optim.epochs=1"];

pub fn train(out: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_barlow"));
    cmd.args(["train", "--out"]).arg(out).args(TINY).args(extra);
    cmd
}
