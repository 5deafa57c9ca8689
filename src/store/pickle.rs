//! Refuses PyTorch checkpoints whose pickle would run code under `torch.load`, naming what it calls.
//!
//! barlow never runs a pickle: burn's reader rebuilds tensors in Rust and keeps any other call
//! (`os.system`, say) as an inert placeholder, loading the tensors around it without a word. A
//! file like that is not a weights file, though, and whoever sent it meant it to be loaded by
//! Python. So before reading, every pickle in the file is walked opcode by opcode and each global
//! it names is checked against what a tensor checkpoint needs: the same policy as
//! `torch.load(weights_only=True)`, whose allowlist this follows.

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;

/// Largest pickle read into memory from a ZIP checkpoint (burn's reader has the same limit).
const MAX_PICKLE: u64 = 100 << 20;
/// What the walk holds at most: values on the stacks, nested MARKs, memo entries. A checkpoint
/// of thousands of tensors needs a few thousand of each; these bound the walk to ~200 MB.
const MAX_VALUES: usize = 1 << 20;
const MAX_MARKS: usize = 1 << 16;
const MAX_MEMO: usize = 1 << 22;

/// Checks every pickle of the PyTorch file at `path` (ZIP, legacy, TAR or plain pickle).
pub fn check(path: &Path) -> Result<()> {
    let file = crate::files::open(path)?;
    let mut head = Vec::new();
    file.take(262).read_to_end(&mut head)?;
    let open = || crate::files::open(path);
    let refuse = |e: anyhow::Error| e.context(format!("{}: refused", path.display()));
    // The legacy format's magic number: a LONG1 from pickle protocol 2 on, decimal text before.
    let window = &head[..head.len().min(64)];
    let magic: [&[u8]; 2] = [&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19], b"119547037146038801333356"];
    let legacy = magic.iter().any(|m| window.windows(m.len()).any(|w| w == *m));
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        let mut zip = zip::ZipArchive::new(open()?).with_context(|| format!("{}: not a readable ZIP archive", path.display()))?;
        for i in 0..zip.len() {
            let entry = zip.by_index(i)?;
            let name = entry.name()?.to_string();
            if name.ends_with(".pkl") {
                let mut bytes = Vec::new();
                entry.take(MAX_PICKLE).read_to_end(&mut bytes)?;
                scan(&mut &bytes[..]).with_context(|| format!("in {name}")).map_err(refuse)?;
            }
        }
    } else if head.get(257..262) == Some(b"ustar") {
        // The pre-2017 TAR container: its object and system-info pickles. The per-storage
        // metadata pickles inside `storages` and `tensors` are not walked.
        let mut tar = tar::Archive::new(BufReader::new(open()?));
        for entry in tar.entries()? {
            let entry = entry?;
            let name = entry.path()?.to_string_lossy().trim_start_matches("./").to_string();
            if name == "pickle" || name == "sys_info" {
                scan(&mut BufReader::new(entry)).with_context(|| format!("in {name}")).map_err(refuse)?;
            }
        }
    } else if legacy || matches!(head.first(), Some(0x80 | b'(' | b'}' | b']' | b'c')) {
        // The legacy stream (magic, protocol, system info, the object, storage keys, then raw
        // storage bytes) or a plain pickle: five pickles back to back, or one.
        let mut reader = BufReader::new(open()?);
        for _ in 0..if legacy { 5 } else { 1 } {
            scan(&mut reader).map_err(refuse)?;
        }
    } else {
        bail!("{}: not a PyTorch checkpoint (no ZIP, legacy or pickle header) nor a safetensors file", path.display());
    }
    Ok(())
}

/// Whether a checkpoint may name `module.name`: tensor rebuilding, storages, dtypes, containers.
fn allowed(module: &str, name: &str) -> bool {
    // Protocol 4 resolves dotted names attribute by attribute (`UntypedStorage.from_file`).
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return false;
    }
    const TORCH: [&str; 30] = [
        "Size", "Tensor", "device", "strided", "sparse_coo", "float64", "float32", "float16", "bfloat16", "int64",
        "int32", "int16", "int8", "uint8", "bool", "complex64", "complex128", "double", "float", "half", "long",
        "int", "short", "per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric",
        "per_channel_affine_float_qparams", "float8_e4m3fn", "float8_e5m2",
    ];
    match module {
        "torch" => TORCH.contains(&name) || name.ends_with("Storage"),
        "torch.cuda" => name.ends_with("Storage"),
        "torch.storage" => matches!(name, "TypedStorage" | "UntypedStorage"),
        "torch._utils" => name.starts_with("_rebuild_"),
        "torch._tensor" => name == "_rebuild_from_type_v2",
        "torch.nn.parameter" => name == "Parameter",
        "torch.serialization" => name == "_get_layout",
        "collections" => matches!(name, "OrderedDict" | "Counter"),
        "builtins" | "__builtin__" => matches!(name, "set" | "frozenset" | "bytearray" | "complex"),
        "_codecs" => name == "encode",
        _ => false,
    }
}

/// What the walk knows of a stack value: only strings matter (`STACK_GLOBAL` reads two).
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Str(Rc<str>),
    Other,
}

/// The pickle machine's stacks and memo, holding [`Value`]s instead of objects.
#[derive(Default)]
struct Machine {
    stack: Vec<Value>,
    marks: Vec<Vec<Value>>,
    memo: HashMap<u64, Value>,
    /// Values on `stack` and under every mark.
    held: usize,
}

impl Machine {
    fn push(&mut self, v: Value) {
        self.stack.push(v);
        self.held += 1;
    }

    fn pop(&mut self) -> Result<Value> {
        let v = self.stack.pop().context("stack underflow: not a valid pickle")?;
        self.held -= 1;
        Ok(v)
    }

    fn mark(&mut self) {
        self.marks.push(std::mem::take(&mut self.stack));
    }

    fn memoize(&mut self, key: u64, v: Value) {
        self.memo.insert(key, v);
    }

    /// An error once the walk holds more than a weights file's pickle could need.
    fn within_limits(&self) -> Result<()> {
        if self.held > MAX_VALUES || self.marks.len() > MAX_MARKS || self.memo.len() > MAX_MEMO {
            bail!(
                "it builds more than a weights file needs ({} values, {} nested MARKs, {} memo entries; at most \
                 {MAX_VALUES}, {MAX_MARKS}, {MAX_MEMO}): a pickle made to exhaust memory",
                self.held, self.marks.len(), self.memo.len()
            );
        }
        Ok(())
    }

    fn pop_n(&mut self, n: usize) -> Result<()> {
        for _ in 0..n {
            self.pop()?;
        }
        Ok(())
    }

    fn pop_mark(&mut self) -> Result<()> {
        let below = self.marks.pop().context("MARK missing: not a valid pickle")?;
        self.held -= self.stack.len();
        self.stack = below;
        Ok(())
    }

    fn top(&self) -> Result<Value> {
        self.stack.last().cloned().context("stack underflow: not a valid pickle")
    }
}

/// Walks one pickle up to its `STOP`, refusing a global outside [`allowed`] (and whatever could
/// hide one: the extension registry, a `STACK_GLOBAL` whose name is not a plain string).
fn scan(r: &mut impl BufRead) -> Result<()> {
    let mut m = Machine::default();
    loop {
        m.within_limits()?;
        let op = read_n(r, 1).context("the pickle ends before its STOP: not a valid pickle")?[0];
        match op {
            b'.' => return Ok(()),
            b'(' => m.mark(),
            b'0' => drop(m.pop()?),
            b'1' => m.pop_mark()?,
            b'2' => {
                let top = m.top()?;
                m.push(top);
            }
            // Numbers, None, booleans, bytes: values that are not strings.
            b'F' | b'I' | b'L' => skip_line(r, &mut m)?,
            b'J' => skip_push(r, 4, &mut m)?,
            b'K' => skip_push(r, 1, &mut m)?,
            b'M' => skip_push(r, 2, &mut m)?,
            b'G' => skip_push(r, 8, &mut m)?,
            b'N' | 0x88 | 0x89 | b')' | b'}' | b']' | 0x8f => m.push(Value::Other),
            0x8a => counted(r, 1, &mut m, false)?,
            0x8b => counted(r, 4, &mut m, false)?,
            b'C' => counted(r, 1, &mut m, false)?,
            b'B' => counted(r, 4, &mut m, false)?,
            0x8e | 0x96 => counted(r, 8, &mut m, false)?,
            // Strings (Python 3 decodes the old byte-string opcodes to `str` too).
            b'S' | b'V' => {
                let line = read_line(r)?;
                m.push(Value::Str(line.trim_matches(|c| c == '\'' || c == '"').into()));
            }
            b'U' | 0x8c => counted(r, 1, &mut m, true)?,
            b'T' | b'X' => counted(r, 4, &mut m, true)?,
            0x8d => counted(r, 8, &mut m, true)?,
            // Persistent ids: how torch refers to tensor storages.
            b'P' => skip_line(r, &mut m)?,
            b'Q' => {
                m.pop()?;
                m.push(Value::Other);
            }
            // Calls and containers: what they pop, then one result.
            b'R' | 0x81 => {
                m.pop_n(2)?;
                m.push(Value::Other);
            }
            0x92 => {
                m.pop_n(3)?;
                m.push(Value::Other);
            }
            b'b' | b'a' => drop(m.pop()?),
            b's' => m.pop_n(2)?,
            b'e' | b'u' | 0x90 => m.pop_mark()?,
            b'd' | b'l' | b't' | 0x91 | b'o' => {
                m.pop_mark()?;
                m.push(Value::Other);
            }
            0x85..=0x87 => {
                m.pop_n((op - 0x84) as usize)?;
                m.push(Value::Other);
            }
            // Memo.
            b'g' => {
                let key = read_line(r)?.parse().context("GET with a bad memo key: not a valid pickle")?;
                get(&mut m, key)?;
            }
            b'h' => get(&mut m, le(&read_n(r, 1)?))?,
            b'j' => get(&mut m, le(&read_n(r, 4)?))?,
            b'p' => {
                let key = read_line(r)?.parse().context("PUT with a bad memo key: not a valid pickle")?;
                let top = m.top()?;
                m.memoize(key, top);
            }
            b'q' | b'r' => {
                let key = le(&read_n(r, if op == b'q' { 1 } else { 4 })?);
                let top = m.top()?;
                m.memoize(key, top);
            }
            0x94 => {
                let top = m.top()?;
                m.memoize(m.memo.len() as u64, top);
            }
            // Framing, protocol and out-of-band buffers carry no code.
            0x80 => drop(read_n(r, 1)?),
            0x95 => drop(read_n(r, 8)?),
            0x97 => m.push(Value::Other),
            0x98 => {}
            // Globals: the only way a pickle reaches code.
            b'c' | b'i' => {
                let (module, name) = (read_line(r)?, read_line(r)?);
                check_global(&module, &name)?;
                if op == b'i' {
                    m.pop_mark()?;
                }
                m.push(Value::Other);
            }
            0x93 => {
                let (name, module) = (m.pop()?, m.pop()?);
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => check_global(&module, &name)?,
                    _ => bail!("it names a global (STACK_GLOBAL) through values that are not plain strings"),
                }
                m.push(Value::Other);
            }
            0x82..=0x84 => bail!("it calls objects through the copyreg extension registry (EXT opcodes)"),
            other => bail!("byte 0x{other:02x} is not a pickle opcode: not a valid pickle"),
        }
    }
}

fn check_global(module: &str, name: &str) -> Result<()> {
    if !allowed(module, name) {
        bail!(
            "its pickle names `{module}.{name}`, which torch.load would import and could call: a \
             weights file needs only tensors, dicts and numbers, so this file would run code when \
             loaded in Python (barlow runs none; only torch.load(weights_only=True)-safe files are read)"
        );
    }
    Ok(())
}

fn get(m: &mut Machine, key: u64) -> Result<()> {
    let value = m.memo.get(&key).cloned().with_context(|| format!("memo key {key} missing: not a valid pickle"))?;
    m.push(value);
    Ok(())
}

fn le(bytes: &[u8]) -> u64 {
    bytes.iter().rev().fold(0, |acc, &b| (acc << 8) | b as u64)
}

fn read_n(r: &mut impl BufRead, n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; n];
    r.read_exact(&mut buf).context("the pickle ends early: not a valid pickle")?;
    Ok(buf)
}

fn read_line(r: &mut impl BufRead) -> Result<String> {
    let mut line = Vec::new();
    (&mut *r).take(1 << 16).read_until(b'\n', &mut line)?;
    if line.pop() != Some(b'\n') {
        bail!("a text argument ends early: not a valid pickle");
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn skip_line(r: &mut impl BufRead, m: &mut Machine) -> Result<()> {
    read_line(r)?;
    m.push(Value::Other);
    Ok(())
}

fn skip_push(r: &mut impl BufRead, n: usize, m: &mut Machine) -> Result<()> {
    read_n(r, n)?;
    m.push(Value::Other);
    Ok(())
}

/// A length-prefixed argument: kept when it is a short string (a name), skipped otherwise.
fn counted(r: &mut impl BufRead, width: usize, m: &mut Machine, string: bool) -> Result<()> {
    let len = le(&read_n(r, width)?);
    if string && len <= 256 {
        let bytes = read_n(r, len as usize)?;
        m.push(Value::Str(String::from_utf8_lossy(&bytes).into()));
    } else {
        let skipped = std::io::copy(&mut (&mut *r).take(len), &mut std::io::sink())?;
        if skipped != len {
            bail!("the pickle ends inside a {len}-byte value: not a valid pickle");
        }
        m.push(Value::Other);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_bytes(bytes: &[u8]) -> Result<()> {
        scan(&mut &bytes[..])
    }

    #[test]
    fn protocol_2_globals_are_checked() {
        // {'w': OrderedDict()} then os.system('x'), as pickle.dumps(protocol=2) writes them.
        assert!(check_bytes(b"\x80\x02}q\x00X\x01\x00\x00\x00wccollections\nOrderedDict\nq\x01)Rq\x02s.").is_ok());
        let err = check_bytes(b"\x80\x02cposix\nsystem\nq\x00X\x01\x00\x00\x00x\x85Rq\x01.").unwrap_err();
        assert!(format!("{err:#}").contains("`posix.system`"), "{err:#}");
        let err = check_bytes(b"\x80\x02ctorch\nload\n.").unwrap_err();
        assert!(format!("{err:#}").contains("`torch.load`"), "{err:#}");
    }

    #[test]
    fn stack_globals_are_read_from_the_stack_and_the_memo() {
        // pickle.dumps(os.system, protocol=4): strings memoised, then STACK_GLOBAL.
        let p4 = b"\x80\x04\x95\x14\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.";
        assert!(format!("{:#}", check_bytes(p4).unwrap_err()).contains("`posix.system`"));
        // The same names memoised, popped, and fetched back from the memo.
        let memo = b"\x80\x04\x8c\x05posix\x940\x8c\x06system\x940h\x00h\x01\x93.";
        assert!(format!("{:#}", check_bytes(memo).unwrap_err()).contains("`posix.system`"));
        // A decoy string pushed after the names and popped: the stack, not recency, decides.
        let decoy = b"\x80\x04\x8c\x05posix\x8c\x06system\x8c\x0bOrderedDict0\x93.";
        assert!(format!("{:#}", check_bytes(decoy).unwrap_err()).contains("`posix.system`"));
        let fine = b"\x80\x04\x8c\x0bcollections\x8c\x0bOrderedDict\x93).";
        assert!(check_bytes(fine).is_ok());
        // A dotted name walks attributes under protocol 4.
        let dotted = b"\x80\x04\x8c\x05torch\x8c\x18UntypedStorage.from_file\x93.";
        assert!(check_bytes(dotted).is_err());
    }

    #[test]
    fn pickles_made_to_exhaust_memory_are_refused() {
        let pickle = |head: &[u8], op: &[u8], n: usize| {
            let mut p = head.to_vec();
            (0..n).for_each(|_| p.extend_from_slice(op));
            p.push(b'.');
            p
        };
        let mut string = b"\x80\x02X\x00\x01\x00\x00".to_vec();
        string.extend([b'a'; 256]);
        for bomb in [pickle(&string, b"2", 2_000_000), pickle(b"\x80\x02", b"(", 1_000_000), pickle(b"\x80\x02N", b"\x94", 5_000_000)] {
            let err = format!("{:#}", check_bytes(&bomb).unwrap_err());
            assert!(err.contains("exhaust memory"), "{err}");
        }
        // The same opcodes in the numbers a checkpoint uses: a valid walk to the STOP.
        let mut fine = pickle(&string, b"20", 100_000);
        fine.splice(fine.len() - 1.., *b"0.");
        assert!(check_bytes(&fine).is_ok());
    }

    #[test]
    fn broken_pickles_are_errors_not_panics() {
        for bytes in [&b""[..], b"\x80\x02", b"\x80\x02cposix\n", b"\x80\x020.", b"\x80\x02h\x05.", b"\xff", b"\x80\x02X\xff\xff\xff\x00ab"] {
            assert!(check_bytes(bytes).is_err(), "{bytes:?}");
        }
    }
}
