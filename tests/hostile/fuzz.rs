//! Fuzz targets, one per parser: seeded mutations of the committed corpus (`tests/fuzz/corpus/`)
//! fed to each reader for a bounded time, which must answer with a value or an error, never a
//! panic. `BARLOW_FUZZ_SECONDS` (default 3 per target) runs longer; `BARLOW_FUZZ_SEED` another
//! sequence. An input that panics is saved under `target/fuzz/<target>/` to be added to the corpus.

use super::*;
use barlow::data::{Normalize, datasets};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// xorshift64*: a reproducible stream of choices.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Values that sit on the edges parsers get wrong: zero, one, signs, and the widths' limits.
const EDGES: [u64; 8] = [0, 1, 0x7f, 0x80, 0xff, 0x7fff_ffff, 0xffff_ffff, u64::MAX];

/// `seed` with one to four edits: flipped bits, edge values, cut, inserted, repeated or deleted
/// runs. Half the edits land in the first 64 bytes, where the headers are.
fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut b = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = b.len().max(1);
        let at = if rng.below(2) == 0 { rng.below(len.min(64)) } else { rng.below(len) }.min(b.len());
        match rng.below(7) {
            0 if at < b.len() => b[at] ^= 1 << rng.below(8),
            1 => {
                let value = EDGES[rng.below(EDGES.len())].to_le_bytes();
                let width = [1, 2, 4, 8][rng.below(4)];
                let end = (at + width).min(b.len());
                let value = if rng.below(2) == 0 { value } else { u64::from_le_bytes(value).swap_bytes().to_le_bytes() };
                b[at..end].copy_from_slice(&value[..end - at]);
            }
            2 => b.truncate(at),
            3 => b.splice(at..at, (0..1 + rng.below(16)).map(|_| rng.next() as u8)).for_each(drop),
            4 => {
                let run = b[at..(at + 1 + rng.below(256)).min(b.len())].to_vec();
                b.splice(at..at, run.iter().cycle().take(run.len() * (1 + rng.below(8))).copied()).for_each(drop);
            }
            5 => _ = b.drain(at..(at + 1 + rng.below(32)).min(b.len())),
            _ if at < b.len() => b[at] = rng.next() as u8,
            _ => {}
        }
    }
    b
}

/// Every file of `tests/fuzz/corpus/<target>/` and of `extra`.
fn corpus(target: &str, extra: &[PathBuf]) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).map(|d| d.map(|e| e.unwrap().path()).collect()).unwrap_or_default();
    files.sort();
    files.extend_from_slice(extra);
    let seeds: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    assert!(!seeds.is_empty(), "no seeds for {target} in {}", dir.display());
    seeds
}

/// Runs `parse` on each seed, then on mutations of them for `BARLOW_FUZZ_SECONDS`; fails naming
/// the saved inputs that panicked.
fn fuzz(target: &str, seeds: &[Vec<u8>], parse: impl Fn(&[u8])) {
    let seconds: f64 = std::env::var("BARLOW_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let seed: u64 = std::env::var("BARLOW_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed);
    let (runs, panics) = run(target, seeds, Budget::Time(Duration::from_secs_f64(seconds)), seed, parse);
    eprintln!("fuzz {target}: {runs} inputs, {} panicked", panics.len());
    let saved: Vec<String> = panics.iter().map(|p| p.display().to_string()).collect();
    assert!(panics.is_empty(), "{target}: {} of {runs} inputs panicked, saved as {}", panics.len(), saved.join(", "));
}

/// How long a target runs: for a time (CI's share), or for a number of inputs (whatever the
/// machine's speed).
enum Budget {
    Time(Duration),
    Inputs(usize),
}

/// The inputs tried, and the files the panicking ones were saved to.
fn run(target: &str, seeds: &[Vec<u8>], budget: Budget, seed: u64, parse: impl Fn(&[u8])) -> (usize, Vec<PathBuf>) {
    let mut rng = Rng(seed ^ target.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, c| (h ^ c as u64).wrapping_mul(0x100_0000_01b3)));
    let started = Instant::now();
    let (mut runs, mut panics) = (0usize, Vec::new());
    let more = |runs: usize| match budget {
        Budget::Time(time) => started.elapsed() < time,
        Budget::Inputs(n) => runs < n,
    };
    while runs < seeds.len() || more(runs) {
        let input = match runs < seeds.len() {
            true => seeds[runs].clone(),
            false => mutate(&seeds[rng.below(seeds.len())], &mut rng),
        };
        runs += 1;
        if catch_unwind(AssertUnwindSafe(|| parse(&input))).is_err() {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz").join(target);
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("panic-{runs}"));
            std::fs::write(&path, &input).unwrap();
            panics.push(path);
        }
    }
    (runs, panics)
}

#[test]
fn the_harness_mutates_and_catches_and_saves_a_panic() {
    let seed = b"BARLOW fuzz seed".to_vec();
    let (runs, panics) = run("self-test", std::slice::from_ref(&seed), Budget::Inputs(200), 1, |b| assert_eq!(b, &seed[..]));
    assert!(runs == 200 && !panics.is_empty() && panics.len() < runs, "{runs} inputs, {} panicked", panics.len());
    assert_ne!(std::fs::read(&panics[0]).unwrap(), seed, "the saved input is the mutated one");
}

/// The file a path-reading parser is given, rewritten for each input.
fn scratch(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    (dir, path)
}

#[test]
fn fuzz_the_pickle_scanner() {
    let fixtures = ["tv_resnet18_w2.pth", "pickle_runs_code.pth"].map(common::fixture);
    let (_dir, path) = scratch("x.pth");
    fuzz("pickle", &corpus("pickle", &fixtures), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        _ = barlow::store::pickle::check(&path);
    });
}

#[test]
fn fuzz_the_safetensors_and_pth_readers() {
    let device = common::plain_device();
    let encoder = barlow::model::ResNetConfig::new(barlow::model::Arch::Resnet18).with_width(2).init(&device);
    let fixtures = ["tv_resnet18_w2.safetensors", "tv_resnet18_w2.pth"].map(common::fixture);
    let (_dir, path) = scratch("w");
    fuzz("weights", &corpus("pickle", &fixtures), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        _ = barlow::store::torchvision::import(encoder.clone(), &path);
    });
}

#[test]
fn fuzz_the_idx_reader() {
    fuzz("idx", &corpus("idx", &[]), |bytes| {
        for rank in [1, 3] {
            _ = datasets::read_idx(bytes.to_vec(), rank);
        }
    });
}

#[test]
fn fuzz_the_cifar_reader() {
    let (_dir, path) = scratch("data_batch_1.bin");
    fuzz("cifar", &corpus("cifar", &[]), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        for label_bytes in [1, 2] {
            let classes = (0..10 * label_bytes).map(|i| i.to_string()).collect();
            _ = datasets::read_cifar("cifar", std::slice::from_ref(&path), label_bytes, classes, Normalize::gray(0.5, 0.5));
        }
    });
}

#[test]
fn fuzz_the_image_decoders() {
    let (_dir, path) = scratch("x");
    fuzz("image", &corpus("image", &[]), |bytes| {
        std::fs::write(&path, bytes).unwrap();
        _ = datasets::decode(&path, 1 << 16);
    });
}

#[test]
fn fuzz_the_config_loader() {
    let presets = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(presets).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    fuzz("config", &corpus("config", &files), |bytes| {
        let text = String::from_utf8_lossy(bytes);
        _ = barlow::config::Config::parse(&text, &[]);
        // The same text as `--set` assignments, one a line, over the quick preset.
        let lines: Vec<String> = text.lines().map(String::from).collect();
        _ = barlow::config::Config::load("quick", &lines);
    });
}

#[test]
fn fuzz_the_checkpoint_reader() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let made = train(&run, &[]).output().unwrap();
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let seed = std::fs::read(run.join("checkpoint.bin")).unwrap();
    let config = barlow::config::Config::load(run.join("config.toml").to_str().unwrap(), &[]).unwrap();
    let device = common::plain_device().autodiff();
    let model = config.model().init(&device);
    // The checksum made right after each mutation: a file crafted to pass it, not one damaged.
    fuzz("checkpoint", &[seed], |bytes| {
        let mut sealed = bytes.to_vec();
        if sealed.len() > 40 {
            let body = sealed.len() - 32;
            let digest = <sha2::Sha256 as sha2::Digest>::digest(&sealed[..body]);
            sealed[body..].copy_from_slice(&digest);
        }
        if let Ok(ckpt) = barlow::store::checkpoint::Checkpoint::parse(&sealed) {
            _ = ckpt.apply(model.clone(), config.optimizer(&config.schedule(8)));
        }
    });
}
