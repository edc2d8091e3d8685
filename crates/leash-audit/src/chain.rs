//! The hash chain of a file audit device: line format, and verification of a device's
//! files (`leash audit verify`).
//!
//! Every line a file device writes ends with the field
//! `"prev_hash":"sha256:<64 lowercase hex>"`, the SHA-256 of the exact bytes of the line
//! before it on that device (prefix included, newline excluded), appended as the last
//! field of the entry's JSON object. The chain continues across restarts (the writer reads
//! the last line of the file when it opens it) and across rotations (the first line of a
//! new file carries the hash of the last line of the rotated one).
//!
//! A chain starts at a **genesis line**: the first line written to a missing or empty file
//! (or to a FIFO or stdout). It carries, just before `prev_hash`,
//! `"chain_genesis":{"nonce":"<64 hex>","reason":"<why>"}` with a fresh random 32-byte
//! nonce, and its `prev_hash` is the SHA-256 of `leash-audit-chain-genesis:<nonce hex>`.
//!
//! [`verify_files`] walks files in order and reports the first line whose `prev_hash`
//! does not match the line before it (a removed, reordered or edited entry), a line
//! without the field, or a genesis line anywhere but the first line of a file (a chain can
//! only legitimately restart on a fresh file). Genesis lines at the start of a later file
//! are reported as restarts, not as tampering. The last line of the newest file is not
//! protected by any successor: keep its hash elsewhere to protect it too.
//!
//! Not here: writing lines (the `file` module's writer thread computes the chain).

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The name of the chain field, the last field of every line.
pub const FIELD_PREV_HASH: &str = "prev_hash";
/// The name of the field that marks a genesis line.
pub const FIELD_GENESIS: &str = "chain_genesis";
/// The prefix of a `prev_hash` value.
pub const HASH_PREFIX: &str = "sha256:";
/// What a genesis line's `prev_hash` is the SHA-256 of, followed by the nonce in hex.
pub const GENESIS_DOMAIN: &str = "leash-audit-chain-genesis:";

/// `,"prev_hash":"sha256:` — what precedes the hex in a line (after the entry's fields).
const TAIL_OPEN: &[u8] = b"\"prev_hash\":\"sha256:";
/// The genesis marker's opening.
const GENESIS_OPEN: &[u8] = b"\"chain_genesis\":";

/// SHA-256 of `line` (no newline).
pub(crate) fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// The `prev_hash` of a genesis line with `nonce_hex`.
pub(crate) fn genesis_hash(nonce_hex: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(GENESIS_DOMAIN.as_bytes());
    h.update(nonce_hex.as_bytes());
    h.finalize().into()
}

/// What the writer appends inside a line's object: `[,]"chain_genesis":{…},` (genesis
/// only) then `"prev_hash":"sha256:<hex>"`. `body` is the line without its closing `}`.
pub(crate) fn append_fields(
    body: &[u8],
    out: &mut Vec<u8>,
    genesis: Option<(&str, &str)>,
    prev: &[u8; 32],
) {
    out.extend_from_slice(body);
    let empty_object = body
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !empty_object {
        out.push(b',');
    }
    if let Some((nonce, reason)) = genesis {
        out.extend_from_slice(GENESIS_OPEN);
        // The reason is one of the writer's fixed ASCII strings; serialise it anyway.
        let reason = serde_json::Value::String(reason.to_owned()).to_string();
        out.extend_from_slice(format!("{{\"nonce\":\"{nonce}\",\"reason\":{reason}}},").as_bytes());
    }
    out.extend_from_slice(TAIL_OPEN);
    let mut hex = [0u8; 64];
    // Encoding 32 bytes into 64 always fits.
    if hex::encode_to_slice(prev, &mut hex).is_ok() {
        out.extend_from_slice(&hex);
    }
    out.extend_from_slice(b"\"}");
}

/// The chain fields parsed from one line.
struct Parsed {
    prev: [u8; 32],
    /// `(nonce hex, reason)` of a genesis line.
    genesis: Option<(String, String)>,
}

/// Parses the tail of `line` (no newline); `None` if it has no well-formed chain field.
fn parse_line(line: &[u8]) -> Option<Parsed> {
    // `"prev_hash":"sha256:` + 64 hex + `"}`
    let tail_len = TAIL_OPEN.len() + 64 + 2;
    if line.len() < tail_len + 1 || !line.ends_with(b"\"}") {
        return None;
    }
    let start = line.len() - tail_len;
    let tail = &line[start..];
    if !tail.starts_with(TAIL_OPEN) {
        return None;
    }
    let mut prev = [0u8; 32];
    hex::decode_to_slice(&tail[TAIL_OPEN.len()..TAIL_OPEN.len() + 64], &mut prev).ok()?;
    let before = &line[..start];
    // `…,"chain_genesis":{"nonce":"…","reason":"…"},` just before the tail?
    let genesis = if before.ends_with(b"},") {
        find_last(before, GENESIS_OPEN).and_then(|at| {
            let obj = &before[at + GENESIS_OPEN.len()..before.len() - 1];
            #[derive(serde::Deserialize)]
            struct G {
                nonce: String,
                reason: String,
            }
            serde_json::from_slice::<G>(obj)
                .ok()
                .map(|g| (g.nonce, g.reason))
        })
    } else {
        None
    };
    Some(Parsed { prev, genesis })
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// A chain restart found by [`verify_files`] (a genesis line at the start of a file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    /// The file whose first line starts a new chain.
    pub file: PathBuf,
    /// The reason the writer recorded.
    pub reason: String,
}

/// The first inconsistency [`verify_files`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tamper {
    /// The file holding the offending line.
    pub file: PathBuf,
    /// 1-based line number in that file.
    pub line: u64,
    /// What did not match.
    pub reason: String,
}

impl fmt::Display for Tamper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {}: {}",
            self.file.display(),
            self.line,
            self.reason
        )
    }
}

/// What [`verify_files`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// Files read, in order.
    pub files: Vec<PathBuf>,
    /// Lines checked.
    pub lines: u64,
    /// Chain starts at the first line of a file (the first file's included).
    pub restarts: Vec<Restart>,
    /// The first inconsistency, if any.
    pub tamper: Option<Tamper>,
}

/// Opens `path`, transparently gunzipping a `.gz` file. A rotated file that was
/// compressed since it was listed (`path` gone, `path.gz` there) is read compressed.
pub fn open_log(path: &Path) -> io::Result<Box<dyn BufRead>> {
    let gz = path.extension().is_some_and(|e| e == "gz");
    let (file, gz) = match File::open(path) {
        Ok(f) => (f, gz),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !gz => {
            let mut compressed = path.as_os_str().to_owned();
            compressed.push(".gz");
            match File::open(PathBuf::from(compressed)) {
                Ok(f) => (f, true),
                Err(_) => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    if gz {
        Ok(Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::new(file)),
        )))
    } else {
        Ok(Box::new(BufReader::with_capacity(1 << 16, file)))
    }
}

/// Expands each argument: a directory holding one device's files, or a device's base path
/// (its current file, existing or not), becomes its rotated files oldest first, then the
/// current file; any other existing file is taken as is. Errors name what was not found.
pub fn discover(args: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut bases: Vec<PathBuf> = Vec::new();
            let entries = std::fs::read_dir(arg).map_err(|e| format!("{}: {e}", arg.display()))?;
            for entry in entries {
                let entry = entry.map_err(|e| format!("{}: {e}", arg.display()))?;
                let name = entry.file_name();
                let name = name.to_string_lossy();
                // A compression in progress (or left by a crash) is not a device file.
                if name.ends_with(".gz.tmp") {
                    continue;
                }
                // Indexes of `leash audit query` live beside the files they index.
                if name.ends_with(crate::query::INDEX_SUFFIX)
                    || name.ends_with(crate::query::INDEX_TMP_SUFFIX)
                {
                    continue;
                }
                let base = match crate::rotate::split_rotated(&name) {
                    Some((base, _)) => base.to_owned(),
                    None => name.into_owned(),
                };
                let base = arg.join(base);
                if !bases.contains(&base) {
                    bases.push(base);
                }
            }
            bases.sort();
            if bases.len() != 1 {
                return Err(format!(
                    "{}: expected the files of one audit device, found {} base names; name the file",
                    arg.display(),
                    bases.len()
                ));
            }
            out.extend(crate::rotate::device_files(&bases[0]).map_err(|e| e.to_string())?);
        } else if crate::rotate::split_rotated(
            &arg.file_name().unwrap_or_default().to_string_lossy(),
        )
        .is_some()
        {
            if !arg.exists() {
                return Err(format!("{}: no such file", arg.display()));
            }
            out.push(arg.clone());
        } else {
            let files = crate::rotate::device_files(arg).map_err(|e| e.to_string())?;
            if files.is_empty() {
                return Err(format!("{}: no such file", arg.display()));
            }
            out.extend(files);
        }
    }
    Ok(out)
}

/// Verifies the chain across `files`, in the order given (oldest first).
pub fn verify_files(files: &[PathBuf]) -> io::Result<Report> {
    let mut report = Report {
        files: files.to_vec(),
        ..Report::default()
    };
    // The hash of the last line seen, across files.
    let mut head: Option<[u8; 32]> = None;
    let mut line = Vec::with_capacity(4096);
    for path in files {
        let mut reader = open_log(path)?;
        let mut n: u64 = 0;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            n += 1;
            report.lines += 1;
            let tamper = |reason: String| Tamper {
                file: path.clone(),
                line: n,
                reason,
            };
            let Some(parsed) = parse_line(&line) else {
                report.tamper = Some(tamper(format!(
                    "no well-formed \"{FIELD_PREV_HASH}\" field at the end of the line (an edited line, or a line torn by a failed write)"
                )));
                return Ok(report);
            };
            match (&parsed.genesis, head) {
                (Some((nonce, reason)), _) => {
                    if n != 1 {
                        report.tamper = Some(tamper(format!(
                            "a chain restart (genesis, reason {reason:?}) in the middle of a file: the writer starts chains only on a fresh file"
                        )));
                        return Ok(report);
                    }
                    if parsed.prev != genesis_hash(nonce) {
                        report.tamper = Some(tamper(
                            "genesis line whose prev_hash is not the hash of its nonce".to_owned(),
                        ));
                        return Ok(report);
                    }
                    report.restarts.push(Restart {
                        file: path.clone(),
                        reason: reason.clone(),
                    });
                }
                (None, None) => {
                    report.tamper = Some(tamper(
                        "the first line checked does not start a chain (no chain_genesis): earlier entries or files are missing — pass all rotated files".to_owned(),
                    ));
                    return Ok(report);
                }
                (None, Some(expected)) => {
                    if parsed.prev != expected {
                        let at = if n == 1 {
                            "the last line of the previous file".to_owned()
                        } else {
                            format!("line {}", n - 1)
                        };
                        report.tamper = Some(tamper(format!(
                            "prev_hash sha256:{} does not match the hash of {at} (sha256:{}): an entry was removed, reordered or edited here or just before",
                            hex::encode(parsed.prev),
                            hex::encode(expected)
                        )));
                        return Ok(report);
                    }
                }
            }
            head = Some(line_hash(&line));
        }
    }
    Ok(report)
}

/// Reads the last line of `file` (without its newline) and whether the file ends with a
/// newline. `None` for an empty file.
pub(crate) fn read_last_line(file: &mut File) -> io::Result<Option<(Vec<u8>, bool)>> {
    use std::io::{Seek, SeekFrom};
    let len = file.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Ok(None);
    }
    let mut end = len;
    let mut tail: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut ends_clean = None;
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let want = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..want])?;
        let mut piece = chunk[..want].to_vec();
        piece.extend_from_slice(&tail);
        tail = piece;
        if ends_clean.is_none() {
            ends_clean = Some(tail.last() == Some(&b'\n'));
        }
        let search_end = if ends_clean == Some(true) {
            tail.len() - 1
        } else {
            tail.len()
        };
        if let Some(p) = tail[..search_end].iter().rposition(|b| *b == b'\n') {
            return Ok(Some((
                tail[p + 1..search_end].to_vec(),
                ends_clean == Some(true),
            )));
        }
        if start == 0 {
            return Ok(Some((
                tail[..search_end].to_vec(),
                ends_clean == Some(true),
            )));
        }
        end = start;
    }
}
