//! Querying the entries of a file audit device: [`query`] filters the lines of a device's
//! files (rotated ones, `.gz` included, and the current one) by agent, trace id, event and
//! time, through an index kept beside each file.
//!
//! The index of `<file>` is `<file>.qidx` (written through `<file>.qidx.tmp` and a
//! rename). It holds, per entry, the byte offset and length of its line (in the
//! decompressed stream for `.gz`), its time, and ids into a table of the strings the
//! filters compare: `agent_id`, `auth.entity_id`, the agent's readable name (an event's
//! `agent_name`; for request and response entries the login role or user name in
//! `auth.metadata`, else `auth.display_name`), `trace_id`, `type`, `event`. These are
//! already HMAC'd or non-secret ids and names, so the index holds no secret. It records how many
//! bytes of the file it covers and a SHA-256 of the first and last 4 KiB of them: an
//! index whose file shrank or whose covered bytes changed is rebuilt; a plain file that
//! grew (the current file) has only its new complete lines scanned, and the index is
//! rewritten to cover them. A missing or unreadable index is rebuilt; an index that cannot
//! be written (read-only directory) only costs a full scan. The audit files themselves are
//! never written.
//!
//! Not here: finding a device's files ([`crate::chain::discover`]), the table output
//! (`leash audit query`).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// Suffix of an index file: `<file>.qidx`.
pub const INDEX_SUFFIX: &str = ".qidx";
/// Suffix of an index being written: `<file>.qidx.tmp`.
pub const INDEX_TMP_SUFFIX: &str = ".qidx.tmp";

const MAGIC: &[u8; 8] = b"LEASHQI2";
/// "No such string" in a record.
const NONE: u32 = u32::MAX;
/// Bytes hashed at each end of the indexed prefix.
const EDGE: u64 = 4096;

/// What [`query`] keeps: every given filter must match (they AND together).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Matches `agent_id` or `agent_name`, or `auth.entity_id` (or the agent's name:
    /// login role, user name, else display name) of request and response entries.
    pub agent: Option<String>,
    /// Matches `trace_id`.
    pub trace: Option<String>,
    /// Matches a lifecycle `event` (`issued` is short for `agent.credential.issued`) or
    /// an entry's `type`.
    pub event: Option<String>,
    /// Entries at or after this time (Unix nanoseconds).
    pub since: Option<i64>,
    /// Entries at or before this time (Unix nanoseconds).
    pub until: Option<i64>,
}

/// One matching entry.
#[derive(Debug, Clone)]
pub struct Match {
    /// The file it is in.
    pub file: PathBuf,
    /// Its line, as written (prefix included, newline excluded).
    pub line: String,
    /// Its `time` (or lifecycle `timestamp`), Unix nanoseconds, if it has one.
    pub time: Option<i64>,
}

/// How [`query`] used the indexes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Files searched.
    pub files: usize,
    /// Indexes built from scratch (missing, stale or unreadable).
    pub built: usize,
    /// Indexes used as they were.
    pub reused: usize,
    /// Indexes extended by scanning the new tail of a grown file.
    pub extended: usize,
    /// Lines read from new tails.
    pub tail_lines: usize,
}

/// The result of [`query`].
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Matching entries, in file order (oldest file first), then line order.
    pub matches: Vec<Match>,
    /// Index use.
    pub stats: Stats,
}

/// Filters the entries of `files` (in the order given, as [`crate::chain::discover`]
/// returns them), building or refreshing each file's index as needed.
pub fn query(files: &[PathBuf], filter: &Filter) -> io::Result<Outcome> {
    let mut out = Outcome::default();
    for file in files {
        out.stats.files += 1;
        let index = load_or_build(file, &mut out.stats)?;
        let hits = index.select(filter);
        read_lines(file, &index, &hits, &mut out.matches)?;
    }
    Ok(out)
}

/// The path of the index of `file`.
pub fn index_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_owned();
    p.push(INDEX_SUFFIX);
    PathBuf::from(p)
}

/// Parses a time bound: RFC 3339 (`2026-11-29T18:00:00Z`), or a duration ago relative to
/// `now` (Unix nanoseconds): a number with `s`, `m`, `h` or `d` (`90m`, `1h`, `7d`).
pub fn parse_time(s: &str, now: i64) -> Result<i64, String> {
    if let Some(t) = rfc3339(s) {
        return Ok(t);
    }
    let unit = match s.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        Some('d') => 86400,
        _ => 0,
    };
    let n: Option<i64> = s
        .get(..s.len().saturating_sub(1))
        .and_then(|d| d.parse().ok());
    match n {
        Some(n) if unit > 0 && n >= 0 => n
            .checked_mul(unit)
            .and_then(|secs| secs.checked_mul(1_000_000_000))
            .map(|ns| now.saturating_sub(ns))
            .ok_or_else(|| format!("{s}: duration too large")),
        _ => Err(format!(
            "{s}: expected an RFC 3339 time (2026-11-29T18:00:00Z) or a duration ago (30m, 1h, 7d)"
        )),
    }
}

fn rfc3339(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// One indexed line.
#[derive(Debug, Clone, Copy)]
struct Rec {
    offset: u64,
    len: u32,
    time: i64,
    agent: u32,
    entity: u32,
    trace: u32,
    ty: u32,
    event: u32,
    name: u32,
}

const REC_LEN: usize = 8 + 4 + 8 + 4 * 6;

#[derive(Debug, Default)]
struct Index {
    /// Bytes of the file covered (the whole file for `.gz`).
    covered: u64,
    /// SHA-256 of the first and last [`EDGE`] bytes of the covered prefix.
    edges: [u8; 32],
    /// Offset (in the decompressed stream) after the last indexed line.
    end: u64,
    strings: Vec<String>,
    recs: Vec<Rec>,
}

impl Index {
    fn id(&self, s: &str) -> Option<u32> {
        self.strings
            .iter()
            .position(|x| x == s)
            .and_then(|i| u32::try_from(i).ok())
    }

    /// Positions of the records matching `f`.
    fn select(&self, f: &Filter) -> Vec<usize> {
        let lookup = |s: &Option<String>| s.as_deref().map(|s| self.id(s).unwrap_or(NONE - 1));
        let agent = lookup(&f.agent);
        let trace = lookup(&f.trace);
        let (ev_a, ev_b) = match f.event.as_deref() {
            None => (None, None),
            Some(e) => (
                Some(self.id(e).unwrap_or(NONE - 1)),
                Some(
                    self.id(&format!("agent.credential.{e}"))
                        .unwrap_or(NONE - 1),
                ),
            ),
        };
        let mut out = Vec::new();
        for (i, r) in self.recs.iter().enumerate() {
            if let Some(a) = agent
                && r.agent != a
                && r.entity != a
                && r.name != a
            {
                continue;
            }
            if let Some(t) = trace
                && r.trace != t
            {
                continue;
            }
            if let (Some(a), Some(b)) = (ev_a, ev_b)
                && r.event != a
                && r.event != b
                && r.ty != a
            {
                continue;
            }
            if f.since.is_some_and(|s| r.time == i64::MIN || r.time < s)
                || f.until.is_some_and(|u| r.time == i64::MIN || r.time > u)
            {
                continue;
            }
            out.push(i);
        }
        out
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.recs.len() * REC_LEN);
        b.extend_from_slice(MAGIC);
        b.extend_from_slice(&self.covered.to_le_bytes());
        b.extend_from_slice(&self.edges);
        b.extend_from_slice(&self.end.to_le_bytes());
        b.extend_from_slice(&(self.strings.len() as u64).to_le_bytes());
        for s in &self.strings {
            b.extend_from_slice(&(s.len() as u32).to_le_bytes());
            b.extend_from_slice(s.as_bytes());
        }
        b.extend_from_slice(&(self.recs.len() as u64).to_le_bytes());
        for r in &self.recs {
            b.extend_from_slice(&r.offset.to_le_bytes());
            b.extend_from_slice(&r.len.to_le_bytes());
            b.extend_from_slice(&r.time.to_le_bytes());
            for v in [r.agent, r.entity, r.trace, r.ty, r.event, r.name] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b
    }

    fn decode(b: &[u8]) -> Option<Index> {
        let mut c = Cursor { b, at: 0 };
        if c.take(8)? != MAGIC {
            return None;
        }
        let covered = c.u64()?;
        let edges: [u8; 32] = c.take(32)?.try_into().ok()?;
        let end = c.u64()?;
        let n = usize::try_from(c.u64()?).ok()?;
        let mut strings = Vec::with_capacity(n.min(b.len()));
        for _ in 0..n {
            let len = c.u32()? as usize;
            strings.push(std::str::from_utf8(c.take(len)?).ok()?.to_owned());
        }
        let n = usize::try_from(c.u64()?).ok()?;
        if b.len().saturating_sub(c.at) != n.checked_mul(REC_LEN)? {
            return None;
        }
        let mut recs = Vec::with_capacity(n);
        for _ in 0..n {
            recs.push(Rec {
                offset: c.u64()?,
                len: c.u32()?,
                time: c.u64()? as i64,
                agent: c.u32()?,
                entity: c.u32()?,
                trace: c.u32()?,
                ty: c.u32()?,
                event: c.u32()?,
                name: c.u32()?,
            });
        }
        Some(Index {
            covered,
            edges,
            end,
            strings,
            recs,
        })
    }
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
}

fn is_gz(file: &Path) -> bool {
    file.extension().is_some_and(|e| e == "gz")
}

/// SHA-256 of the first and last [`EDGE`] bytes of the first `covered` bytes of `file`.
fn edges(f: &mut File, covered: u64) -> io::Result<[u8; 32]> {
    let mut h = Sha256::new();
    let mut buf = vec![0; EDGE.min(covered) as usize];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut buf)?;
    h.update(&buf);
    f.seek(SeekFrom::Start(covered.saturating_sub(EDGE)))?;
    f.read_exact(&mut buf)?;
    h.update(&buf);
    Ok(h.finalize().into())
}

/// Fields of an entry the index keeps.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(rename = "type", borrow, default)]
    ty: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    event: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    time: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    timestamp: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    agent_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    agent_name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    trace_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    auth: Option<AuthProbe<'a>>,
}

#[derive(Deserialize)]
struct AuthProbe<'a> {
    #[serde(borrow, default)]
    entity_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    display_name: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    metadata: Option<HashMap<String, serde_json::Value>>,
}

impl AuthProbe<'_> {
    /// The agent's readable name: login role or user name, else the display name.
    fn name(&self) -> Option<&str> {
        let meta = self.metadata.as_ref();
        ["role_name", "role", "username"]
            .iter()
            .find_map(|k| {
                meta.and_then(|m| m.get(*k))
                    .and_then(serde_json::Value::as_str)
                    .filter(|v| !v.is_empty())
            })
            .or(self.display_name.as_deref())
    }
}

/// Adds lines to an index, interning their strings.
struct Builder {
    index: Index,
    ids: HashMap<String, u32>,
}

impl Builder {
    fn new(index: Index) -> Builder {
        let ids = index
            .strings
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        Builder { index, ids }
    }

    fn intern(&mut self, s: Option<&str>) -> u32 {
        match s {
            None | Some("") => NONE,
            Some(s) => {
                if let Some(id) = self.ids.get(s) {
                    return *id;
                }
                let id = self.index.strings.len() as u32;
                self.index.strings.push(s.to_owned());
                self.ids.insert(s.to_owned(), id);
                id
            }
        }
    }

    /// Indexes `line` (no newline) found at `offset`; lines that are not JSON objects
    /// (after an optional prefix) are skipped.
    fn add(&mut self, offset: u64, line: &[u8]) {
        let Some(start) = line.iter().position(|c| *c == b'{') else {
            return;
        };
        let Ok(len) = u32::try_from(line.len()) else {
            return;
        };
        let Some(json) = line.get(start..) else {
            return;
        };
        let Ok(p) = serde_json::from_slice::<Probe<'_>>(json) else {
            return;
        };
        let time = p
            .timestamp
            .as_deref()
            .or(p.time.as_deref())
            .and_then(rfc3339)
            .unwrap_or(i64::MIN);
        let rec = Rec {
            offset,
            len,
            time,
            agent: self.intern(p.agent_id.as_deref()),
            entity: self.intern(p.auth.as_ref().and_then(|a| a.entity_id.as_deref())),
            trace: self.intern(p.trace_id.as_deref()),
            ty: self.intern(p.ty.as_deref()),
            event: self.intern(p.event.as_deref()),
            name: self.intern(
                p.agent_name
                    .as_deref()
                    .or_else(|| p.auth.as_ref().and_then(AuthProbe::name)),
            ),
        };
        self.index.recs.push(rec);
    }

    /// Reads lines from `r`, which is at stream offset `start`; with `complete_only`, a
    /// last line without a newline is left out. Returns lines read.
    fn scan(&mut self, r: &mut dyn BufRead, start: u64, complete_only: bool) -> io::Result<usize> {
        let mut at = start;
        let mut line = Vec::new();
        let mut n = 0;
        loop {
            line.clear();
            let got = r.read_until(b'\n', &mut line)?;
            if got == 0 {
                break;
            }
            let complete = line.last() == Some(&b'\n');
            if !complete && complete_only {
                break;
            }
            let body = if complete {
                &line[..line.len() - 1]
            } else {
                &line[..]
            };
            self.add(at, body);
            at += got as u64;
            n += 1;
        }
        self.index.end = at;
        Ok(n)
    }
}

fn load_or_build(file: &Path, stats: &mut Stats) -> io::Result<Index> {
    let gz = is_gz(file);
    let mut f = File::open(file)?;
    let size = f.metadata()?.len();
    let ipath = index_path(file);
    let old = fs::read(&ipath).ok().and_then(|b| Index::decode(&b));
    if let Some(old) = old {
        let fits = if gz {
            size == old.covered
        } else {
            size >= old.covered
        };
        if fits && edges(&mut f, old.covered)? == old.edges {
            if gz || size == old.covered {
                stats.reused += 1;
                return Ok(old);
            }
            // The current file grew: scan its new complete lines only.
            let covered = old.covered;
            let mut b = Builder::new(old);
            f.seek(SeekFrom::Start(covered))?;
            let mut r = BufReader::with_capacity(1 << 16, &mut f);
            let n = b.scan(&mut r, covered, true)?;
            let mut index = b.index;
            if n > 0 {
                index.covered = index.end;
                index.edges = edges(&mut f, index.covered)?;
                save(&ipath, &index);
            }
            stats.extended += 1;
            stats.tail_lines += n;
            return Ok(index);
        }
    }
    let mut b = Builder::new(Index::default());
    if gz {
        let mut r = crate::chain::open_log(file)?;
        b.scan(&mut r, 0, false)?;
        b.index.covered = size;
    } else {
        let mut r = BufReader::with_capacity(1 << 20, &mut f);
        b.scan(&mut r, 0, true)?;
        b.index.covered = b.index.end;
    }
    let mut index = b.index;
    index.edges = edges(&mut f, index.covered)?;
    save(&ipath, &index);
    stats.built += 1;
    Ok(index)
}

/// Writes an index through a temporary name; failures only cost a rebuild next time.
fn save(ipath: &Path, index: &Index) {
    let mut tmp = ipath.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let res = File::create(&tmp)
        .and_then(|mut f| f.write_all(&index.encode()))
        .and_then(|()| fs::rename(&tmp, ipath));
    if let Err(e) = res {
        let _ = fs::remove_file(&tmp);
        tracing::debug!(index = %ipath.display(), error = %e, "audit query index not saved");
    }
}

/// Reads the lines of `hits` (positions in `index`, ascending) from `file`.
fn read_lines(file: &Path, index: &Index, hits: &[usize], out: &mut Vec<Match>) -> io::Result<()> {
    if hits.is_empty() {
        return Ok(());
    }
    let mut push = |rec: &Rec, bytes: Vec<u8>| {
        out.push(Match {
            file: file.to_path_buf(),
            line: String::from_utf8_lossy(&bytes).into_owned(),
            time: (rec.time != i64::MIN).then_some(rec.time),
        });
    };
    if is_gz(file) {
        // A gzip stream cannot seek: decompress up to the last hit.
        let mut r = crate::chain::open_log(file)?;
        let mut at = 0u64;
        for &i in hits {
            let Some(rec) = index.recs.get(i) else {
                continue;
            };
            io::copy(&mut (&mut r).take(rec.offset - at), &mut io::sink())?;
            let mut buf = vec![0; rec.len as usize];
            r.read_exact(&mut buf)?;
            at = rec.offset + u64::from(rec.len);
            push(rec, buf);
        }
    } else {
        let mut f = File::open(file)?;
        for &i in hits {
            let Some(rec) = index.recs.get(i) else {
                continue;
            };
            f.seek(SeekFrom::Start(rec.offset))?;
            let mut buf = vec![0; rec.len as usize];
            f.read_exact(&mut buf)?;
            push(rec, buf);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse() {
        let now = 10_000 * 1_000_000_000;
        assert_eq!(parse_time("1h", now), Ok(now - 3600 * 1_000_000_000));
        assert_eq!(parse_time("0s", now), Ok(now));
        assert_eq!(parse_time("1970-01-01T00:00:01Z", now), Ok(1_000_000_000));
        assert!(parse_time("soon", now).is_err());
        assert!(parse_time("h", now).is_err());
    }

    #[test]
    fn index_round_trips() {
        let mut b = Builder::new(Index::default());
        b.add(0, br#"{"type":"request","time":"1970-01-01T00:00:02Z","agent_id":"a","trace_id":"t","auth":{"entity_id":"e"}}"#);
        b.add(9, b"not json");
        let i = b.index;
        let j = Index::decode(&i.encode()).unwrap();
        assert_eq!(j.recs.len(), 1);
        assert_eq!(j.strings, i.strings);
        assert_eq!(j.recs[0].time, 2_000_000_000);
        let f = Filter {
            agent: Some("e".into()),
            ..Filter::default()
        };
        assert_eq!(j.select(&f), vec![0]);
    }

    #[test]
    fn agents_are_found_by_readable_name_too() {
        let mut b = Builder::new(Index::default());
        b.add(0, br#"{"type":"lifecycle","timestamp":"1970-01-01T00:00:02Z","agent_id":"ent-uuid","agent_name":"agent-deployer"}"#);
        b.add(1, br#"{"type":"request","time":"1970-01-01T00:00:02Z","auth":{"entity_id":"ent-uuid","display_name":"approle","metadata":{"role_name":"agent-deployer","n":1}}}"#);
        b.add(2, br#"{"type":"request","time":"1970-01-01T00:00:02Z","auth":{"display_name":"token-ci"}}"#);
        b.add(
            3,
            br#"{"type":"lifecycle","agent_id":"other","agent_name":"someone-else"}"#,
        );
        let j = Index::decode(&b.index.encode()).unwrap();
        let by = |a: &str| {
            j.select(&Filter {
                agent: Some(a.into()),
                ..Filter::default()
            })
        };
        assert_eq!(by("agent-deployer"), vec![0, 1]);
        assert_eq!(by("ent-uuid"), vec![0, 1]);
        assert_eq!(by("token-ci"), vec![2]);
        assert_eq!(by("nobody"), Vec::<usize>::new());
    }
}
