//! Official dataset downloads into a cache: resumable, verified by SHA-256, renamed into place.

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// One file to fetch: where from, and what it must hash to.
#[derive(Clone, Debug)]
pub struct Remote {
    pub url: String,
    pub sha256: &'static str,
    /// Unpack this `.tar.gz` into the target folder once verified.
    pub unpack: bool,
}

/// Checksums as pinned by tensorflow/datasets (`url_checksums/*.txt`).
pub fn remotes(dataset: &str) -> Vec<Remote> {
    let tar = |url: &str, sha256| Remote { url: url.into(), sha256, unpack: true };
    let idx = |base: &str, files: [(&str, &'static str); 4]| {
        files.iter().map(|(f, sha256)| Remote { url: format!("{base}{f}"), sha256, unpack: false }).collect()
    };
    let mirror = std::env::var("BARLOW_MIRROR").ok();
    let from = |official: &str| match &mirror {
        // A local or institutional mirror holding the same file names.
        Some(m) => format!("{}/{}", m.trim_end_matches('/'), official.rsplit('/').next().unwrap()),
        None => official.to_string(),
    };
    let mut list: Vec<Remote> = match dataset {
        "cifar10" => vec![tar(
            "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        )],
        "cifar100" => vec![tar(
            "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
            "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
        )],
        "stl10" => vec![tar(
            "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
            "f31fd99273a1acb8609c8db427cebb1de3f71de77758cdc0e22956e1289b9866",
        )],
        "mnist" => idx("https://ossci-datasets.s3.amazonaws.com/mnist/", [
            ("train-images-idx3-ubyte.gz", "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
            ("train-labels-idx1-ubyte.gz", "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
            ("t10k-images-idx3-ubyte.gz", "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
            ("t10k-labels-idx1-ubyte.gz", "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
        ]),
        "fashion-mnist" => idx("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/", [
            ("train-images-idx3-ubyte.gz", "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84"),
            ("train-labels-idx1-ubyte.gz", "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845"),
            ("t10k-images-idx3-ubyte.gz", "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073"),
            ("t10k-labels-idx1-ubyte.gz", "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5"),
        ]),
        _ => vec![],
    };
    for r in &mut list {
        r.url = from(&r.url);
    }
    list
}

/// `$BARLOW_CACHE`, else `$XDG_CACHE_HOME/barlow`, else `~/.cache/barlow`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("BARLOW_CACHE") {
        return Ok(dir.into());
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(dir).join("barlow"));
    }
    let home = std::env::var_os("HOME").context("no HOME, BARLOW_CACHE or XDG_CACHE_HOME to cache datasets in")?;
    Ok(PathBuf::from(home).join(".cache/barlow"))
}

/// Fetches, verifies and (for archives) unpacks every file into `dir`.
pub fn fetch_all(remotes: &[Remote], dir: &Path) -> Result<()> {
    if remotes.is_empty() {
        bail!("{}: not found, and this dataset has no official download; pass data.root", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for remote in remotes {
        let file = fetch(remote, dir)?;
        if remote.unpack {
            unpack(&file, dir)?;
        }
    }
    Ok(())
}

/// Downloads `remote` into `dir` unless a verified copy is there. Bytes arrive in `NAME.part`,
/// which a later call continues from; only a file whose SHA-256 matches is renamed to `NAME`.
pub fn fetch(remote: &Remote, dir: &Path) -> Result<PathBuf> {
    let name = remote.url.rsplit('/').next().context("a URL with a file name")?;
    let target = dir.join(name);
    if target.exists() {
        verify(&target, remote.sha256)?;
        return Ok(target);
    }
    let part = dir.join(format!("{name}.part"));
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&part)
        .with_context(|| format!("opening {}", part.display()))?;
    let have = file.metadata()?.len();
    eprintln!("downloading {}{}", remote.url, if have > 0 { format!(" (resuming at {have} bytes)") } else { String::new() });
    let (mut body, restarted) = open_from(&remote.url, have)?;
    if restarted {
        file.set_len(0)?;
    }
    std::io::copy(&mut body, &mut file).with_context(|| format!("downloading {} into {}", remote.url, part.display()))?;
    file.sync_all()?;
    drop(file);
    if let Err(e) = verify(&part, remote.sha256) {
        // A corrupt partial file would poison every retry.
        std::fs::remove_file(&part).ok();
        return Err(e.context(format!("{} was removed; run again to download afresh", part.display())));
    }
    std::fs::rename(&part, &target).with_context(|| format!("renaming {} to {}", part.display(), target.display()))?;
    Ok(target)
}

/// A reader of `url` from byte `offset`, and whether the server ignored the offset (so the
/// download starts over). `file://` URLs read local mirrors.
fn open_from(url: &str, offset: u64) -> Result<(Box<dyn Read>, bool)> {
    if let Some(path) = url.strip_prefix("file://") {
        let mut f = File::open(path).with_context(|| format!("opening {path}"))?;
        f.seek(SeekFrom::Start(offset))?;
        return Ok((Box::new(f), false));
    }
    let mut request = ureq::get(url);
    if offset > 0 {
        request = request.header("Range", format!("bytes={offset}-"));
    }
    let response = request.call().with_context(|| format!("downloading {url}"))?;
    let restarted = offset > 0 && response.status() != 206;
    Ok((Box::new(response.into_body().into_reader()), restarted))
}

/// A file's SHA-256, in hex.
pub fn sha256(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Checks a file's SHA-256; the error names the file and both digests.
pub fn verify(path: &Path, sha256: &str) -> Result<()> {
    let actual = self::sha256(path)?;
    if actual != sha256 {
        bail!("{}: SHA-256 {actual} does not match the expected {sha256}; the file is corrupt or incomplete",
            path.display());
    }
    Ok(())
}

/// Unpacks a `.tar.gz` into `dir` through a temporary folder, so a half-unpacked archive is never
/// mistaken for a dataset.
fn unpack(archive: &Path, dir: &Path) -> Result<()> {
    let tmp = dir.join(".unpacking");
    std::fs::remove_dir_all(&tmp).ok();
    let file = File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    tar::Archive::new(flate2::read::GzDecoder::new(file))
        .unpack(&tmp)
        .with_context(|| format!("unpacking {}", archive.display()))?;
    for entry in std::fs::read_dir(&tmp)? {
        let entry = entry?;
        let dest = dir.join(entry.file_name());
        std::fs::remove_dir_all(&dest).ok();
        std::fs::rename(entry.path(), &dest)?;
    }
    std::fs::remove_dir_all(&tmp).ok();
    let mut done = File::create(dir.join(".unpacked"))?;
    writeln!(done, "{}", archive.display())?;
    Ok(())
}
