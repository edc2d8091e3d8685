//! Rotation of a file audit device: naming, listing, compression and retention.
//!
//! The writer thread rotates between batches: it syncs the current file, renames it to
//! `<file>.<UTC stamp>` (stamp `YYYYMMDDTHHMMSS.nnnnnnnnnZ`, so names sort by time),
//! syncs the directory and opens a new `<file>`; the hash chain continues in it. A
//! background thread then gzips the rotated file to `<file>.<stamp>.gz.tmp`, syncs it,
//! renames it to `<file>.<stamp>.gz` and removes the uncompressed file, so the rotated
//! entries are readable under one of the two names at every moment ([`device_files`]
//! takes the uncompressed one when both exist). Rotated files whose stamp is older than
//! the retention period are deleted at each rotation and when the device opens.
//!
//! Not here: deciding when to rotate (the writer loop), the chain (`chain`).

use leash_types::{Clock as _, SystemClock};
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Length of a rotation stamp: `YYYYMMDDTHHMMSS.nnnnnnnnnZ`.
const STAMP_LEN: usize = 26;

/// When and how a file device rotates. Zero durations and sizes mean "off".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Rotation {
    /// Rotate once the current file holds at least this many bytes (0 = never by size).
    pub(crate) bytes: u64,
    /// Rotate once the current file is this old (zero = never by age).
    pub(crate) interval: Duration,
    /// Gzip rotated files in the background.
    pub(crate) compress: bool,
    /// Delete rotated files older than this (zero = keep forever).
    pub(crate) retention: Duration,
}

impl Rotation {
    /// No rotation, no retention.
    #[cfg(test)]
    pub(crate) const OFF: Rotation = Rotation {
        bytes: 0,
        interval: Duration::ZERO,
        compress: false,
        retention: Duration::ZERO,
    };
}

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == STAMP_LEN
        && b.iter().enumerate().all(|(i, c)| match i {
            8 => *c == b'T',
            15 => *c == b'.',
            25 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Splits a rotated file's name into its base name and stamp (`a.log.<stamp>[.gz]`).
pub(crate) fn split_rotated(name: &str) -> Option<(&str, &str)> {
    let name = name.strip_suffix(".gz").unwrap_or(name);
    let dot = name.len().checked_sub(STAMP_LEN + 1)?;
    let (base, rest) = name.split_at(dot);
    let stamp = rest.strip_prefix('.')?;
    (!base.is_empty() && is_stamp(stamp)).then_some((base, stamp))
}

/// The UTC stamp of `t`.
fn stamp(t: SystemTime) -> String {
    let t = time::OffsetDateTime::from(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// The time a stamp names.
fn stamp_time(s: &str) -> Option<SystemTime> {
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let month = time::Month::try_from(u8::try_from(num(4..6)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)?).ok()?,
        month,
        u8::try_from(num(6..8)?).ok()?,
    )
    .ok()?;
    let tm = time::Time::from_hms_nano(
        u8::try_from(num(9..11)?).ok()?,
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(13..15)?).ok()?,
        num(16..25)?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, tm).assume_utc().into())
}

/// The files of the device whose current file is `base`: rotated ones oldest first, then
/// `base` if it exists. A rotated file present both uncompressed and compressed (the
/// moment between compressing and removing) is listed once, uncompressed.
pub fn device_files(base: &Path) -> io::Result<Vec<PathBuf>> {
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Some(base_name) = base.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let mut rotated: Vec<(String, bool, PathBuf)> = Vec::new();
    match fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some((b, s)) = split_rotated(&name)
                    && b == base_name
                {
                    rotated.push((s.to_owned(), name.ends_with(".gz"), entry.path()));
                }
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    rotated.sort();
    rotated.dedup_by(|later, earlier| later.0 == earlier.0);
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, _, p)| p).collect();
    if base.exists() {
        out.push(base.to_path_buf());
    }
    Ok(out)
}

/// Syncs the directory holding `path`, so a rename or creation in it is durable.
pub(crate) fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => File::open(d)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Renames `base` to a fresh `<base>.<stamp>` and syncs the directory; returns the new name.
pub(crate) fn rename_current(base: &Path) -> io::Result<PathBuf> {
    let mut now = SystemClock.now();
    loop {
        let mut name = base.as_os_str().to_owned();
        name.push(".");
        name.push(stamp(now));
        let target = PathBuf::from(name);
        let mut gz = target.as_os_str().to_owned();
        gz.push(".gz");
        if !target.exists() && !Path::new(&gz).exists() {
            fs::rename(base, &target)?;
            sync_dir(base)?;
            return Ok(target);
        }
        now += Duration::from_nanos(1);
    }
}

/// Gzips `rotated` to `<rotated>.gz` (through a `.tmp` name), then removes `rotated`.
pub(crate) fn compress(rotated: &Path) -> io::Result<()> {
    let mut tmp = rotated.as_os_str().to_owned();
    tmp.push(".gz.tmp");
    let tmp = PathBuf::from(tmp);
    let mut gz = rotated.as_os_str().to_owned();
    gz.push(".gz");
    let result = (|| {
        let mut input = File::open(rotated)?;
        let out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_from(&input)?
            .open(&tmp)?;
        // Level 1: audit JSON is repetitive enough that the fastest level still shrinks
        // it several times over, and it costs a fraction of the default level's CPU —
        // which, under load, is taken from the requests being audited (issue 18).
        let mut enc =
            flate2::write::GzEncoder::new(BufWriter::new(out), flate2::Compression::fast());
        io::copy(&mut input, &mut enc)?;
        let out = enc.finish()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        fs::rename(&tmp, &gz)?;
        sync_dir(rotated)?;
        fs::remove_file(rotated)?;
        // An index of the uncompressed file no longer has a file to index.
        let _ = fs::remove_file(crate::query::index_path(rotated));
        sync_dir(rotated)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Sets a new file's creation mode to that of `from`.
trait ModeFrom {
    fn mode_from(&mut self, from: &File) -> io::Result<&mut Self>;
}

impl ModeFrom for fs::OpenOptions {
    fn mode_from(&mut self, from: &File) -> io::Result<&mut Self> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let mode = from.metadata()?.permissions().mode() & 0o7777;
        Ok(self.mode(mode))
    }
}

/// Deletes rotated files of `base` whose stamp is older than `retention` (zero = keep).
pub(crate) fn apply_retention(base: &Path, retention: Duration) -> io::Result<usize> {
    if retention.is_zero() {
        return Ok(0);
    }
    let Some(cutoff) = SystemClock.now().checked_sub(retention) else {
        return Ok(0);
    };
    let mut removed = 0;
    for path in device_files(base)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some((_, s)) = split_rotated(&name)
            && stamp_time(s).is_some_and(|t| t < cutoff)
        {
            fs::remove_file(&path)?;
            // Its compressed twin, if compression was between rename and remove.
            let mut gz = path.as_os_str().to_owned();
            gz.push(".gz");
            let _ = fs::remove_file(PathBuf::from(gz));
            // Its `leash audit query` index, if any.
            let _ = fs::remove_file(crate::query::index_path(&path));
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_split() {
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let s = stamp(t);
        assert!(is_stamp(&s), "{s}");
        assert_eq!(stamp_time(&s), Some(t));
        let name = format!("audit.log.{s}");
        assert_eq!(split_rotated(&name), Some(("audit.log", s.as_str())));
        assert_eq!(
            split_rotated(&format!("{name}.gz")),
            Some(("audit.log", s.as_str()))
        );
        assert_eq!(split_rotated("audit.log"), None);
        assert_eq!(split_rotated(&format!("{name}.gz.tmp")), None);
    }

    #[test]
    fn retention_deletes_only_old_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("a.log");
        let old = dir.path().join(format!(
            "a.log.{}",
            stamp(SystemClock.now() - Duration::from_secs(100 * 86400))
        ));
        let new = dir
            .path()
            .join(format!("a.log.{}.gz", stamp(SystemClock.now())));
        for p in [&base, &old, &new] {
            fs::write(p, b"x\n").unwrap();
        }
        assert_eq!(
            apply_retention(&base, Duration::from_secs(90 * 86400)).unwrap(),
            1
        );
        assert_eq!(device_files(&base).unwrap(), vec![new, base]);
    }
}
