//! Atomic file writes: a temporary file in the destination's directory, created with
//! the final mode, written, fsynced, renamed over the destination, and the directory
//! fsynced. A reader sees the old file or the new one, never half of one; the rename
//! gives every rotation a new mtime (and inode).

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use crate::AgentError;

/// Writes `bytes` to `path` atomically with `mode` (e.g. `0o600`). Creates the parent
/// directory (0700) if needed.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AgentError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| AgentError::io(dir, e))?;
    }
    let file_name = path
        .file_name()
        .ok_or_else(|| AgentError::Config(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        leash_types::random::base62(8)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have narrowed the mode; set it exactly.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok::<(), std::io::Error>(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(AgentError::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_with_the_mode_and_replaces_them() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/creds.json");
        write_atomic(&p, b"{\"a\":1}", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o640
        );
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
