//! Audit device configuration: what an operator enables, and what it parses into.
//!
//! [`DeviceConfig`] is the Vault-shaped description of a device, serialised as Vault's
//! `sys/audit` lists it (`{"type","description","options","local","path"}`); options are
//! kept exactly as given so a listing shows what was enabled. [`FileOptions`] is the
//! parsed form the file device runs on — parse, don't validate: a `FileOptions` value is
//! always usable. Unknown option keys and unsupported values are errors that name the key
//! and what is expected, never the value given; nothing is enabled when parsing fails.
//!
//! Not here: opening the file (`file`), storing the audit table (the core does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::AuditError;
use crate::rotate::Rotation;

/// Vault's `file` device.
pub const KIND_FILE: &str = "file";
/// Vault's `socket` device: JSON lines over TCP (or a Unix stream socket).
pub const KIND_SOCKET: &str = "socket";

/// `address` (socket): `host:port` for TCP, a path for `unix`. Required.
pub const OPT_ADDRESS: &str = "address";
/// `socket_type` (socket): `tcp` (default) or `unix`.
pub const OPT_SOCKET_TYPE: &str = "socket_type";
/// `write_timeout` (socket): how long one write (and one connection attempt) may take.
/// Default `2s`, as Vault's.
pub const OPT_WRITE_TIMEOUT: &str = "write_timeout";
/// `buffer_size` (socket): entries kept while the peer is unreachable, delivered in order
/// when it is back; past it, new entries fail at once. Default 10000.
pub const OPT_BUFFER_SIZE: &str = "buffer_size";

const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_BUFFER_SIZE: usize = 10_000;
/// The largest `buffer_size` accepted (entries are a few KiB each).
const MAX_BUFFER_SIZE: usize = 1_000_000;

const SOCKET_OPTIONS: [&str; 9] = [
    OPT_ADDRESS,
    OPT_SOCKET_TYPE,
    OPT_WRITE_TIMEOUT,
    OPT_BUFFER_SIZE,
    OPT_LOG_RAW,
    OPT_HMAC_ACCESSOR,
    OPT_FORMAT,
    OPT_PREFIX,
    OPT_ELIDE_LIST_RESPONSES,
];

/// `file_path`: where entries go; `stdout` and `discard` are special. Required.
pub const OPT_FILE_PATH: &str = "file_path";
/// `log_raw`: write entries without hashing secrets. Default `false`.
pub const OPT_LOG_RAW: &str = "log_raw";
/// `hmac_accessor`: hash token accessors. Default `true`.
pub const OPT_HMAC_ACCESSOR: &str = "hmac_accessor";
/// `mode`: octal file mode a new file is created with; an existing file's mode is only
/// ever tightened to it (bits it does not grant are removed, none are added); `0000`
/// leaves it alone.
pub const OPT_MODE: &str = "mode";
/// `format`: only `json` is supported.
pub const OPT_FORMAT: &str = "format";
/// `prefix`: a string written before every entry on its line.
pub const OPT_PREFIX: &str = "prefix";
/// `elide_list_responses`: replace list responses by their key count. Default `false`.
pub const OPT_ELIDE_LIST_RESPONSES: &str = "elide_list_responses";

/// `rotate_bytes`: rotate the file once it holds this many bytes; `0` = never by size.
/// Default 100 MiB.
pub const OPT_ROTATE_BYTES: &str = "rotate_bytes";
/// `rotate_interval`: rotate the file once it is this old (Go duration); `0` = never by
/// age. Default `24h`.
pub const OPT_ROTATE_INTERVAL: &str = "rotate_interval";
/// `rotate_compress`: gzip rotated files. Default `true`.
pub const OPT_ROTATE_COMPRESS: &str = "rotate_compress";
/// `retention`: delete rotated files older than this (Go duration); `0` = keep forever.
/// Default 90 days.
pub const OPT_RETENTION: &str = "retention";

/// Default `rotate_bytes`: 100 MiB.
const DEFAULT_ROTATE_BYTES: u64 = 100 << 20;
/// Default `rotate_interval`: 24 hours.
const DEFAULT_ROTATE_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Default `retention`: 90 days.
const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86400);

const KNOWN_OPTIONS: [&str; 11] = [
    OPT_ROTATE_BYTES,
    OPT_ROTATE_INTERVAL,
    OPT_ROTATE_COMPRESS,
    OPT_RETENTION,
    OPT_FILE_PATH,
    OPT_LOG_RAW,
    OPT_HMAC_ACCESSOR,
    OPT_MODE,
    OPT_FORMAT,
    OPT_PREFIX,
    OPT_ELIDE_LIST_RESPONSES,
];

/// Default file mode of an audit log: readable and writable by the server only.
const DEFAULT_MODE: u32 = 0o600;

/// One audit device as the operator enabled it (and as `GET sys/audit` lists it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceConfig {
    /// Mount path with a trailing slash, e.g. `file/`. Defaults to empty when
    /// deserialising a request body (Vault takes the path from the URL).
    #[serde(default)]
    pub path: String,
    /// Device type; only `file` is supported. Serialised as Vault's `type`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Device options as given (`file_path`, `log_raw`, `hmac_accessor`, `mode`, `format`,
    /// `prefix`, `elide_list_responses`). When deserialising, booleans and numbers are
    /// accepted and kept as strings (`true` → `"true"`), as Vault's `TypeKVPairs` does.
    #[serde(default, deserialize_with = "options_as_strings")]
    pub options: BTreeMap<String, String>,
    /// Vault's "local" flag (not replicated); stored and listed, no other effect here.
    #[serde(default)]
    pub local: bool,
}

/// Option values as strings; `null` means unset. Objects and arrays are errors.
fn options_as_strings<'de, D>(d: D) -> Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    let mut out = BTreeMap::new();
    for (key, value) in raw {
        let value = match value {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) => s,
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => {
                return Err(D::Error::custom(format!(
                    "option {key:?} must be a string, a number or a boolean"
                )));
            }
        };
        out.insert(key, value);
    }
    Ok(out)
}

/// The options every device type shares, parsed once for all of them.
struct Shared {
    log_raw: bool,
    hmac_accessor: bool,
    prefix: String,
    elide_list_responses: bool,
}

/// Refuses an option `known` does not list, and a `format` other than `json`; returns
/// the options every device type shares.
fn parse_shared(
    kind: &str,
    known: &[&str],
    options: &BTreeMap<String, String>,
) -> Result<Shared, AuditError> {
    if let Some(key) = options.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(AuditError::InvalidConfig(format!(
            "unknown option {key:?} for audit device type {kind:?} (known: {})",
            known.join(", ")
        )));
    }
    let get = |key: &str| {
        options
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    match get(OPT_FORMAT) {
        None | Some("json") => {}
        Some("jsonx") => {
            return Err(AuditError::InvalidConfig(format!(
                "option {OPT_FORMAT:?}: \"jsonx\" is not supported; use \"json\""
            )));
        }
        Some(_) => {
            return Err(AuditError::InvalidConfig(format!(
                "option {OPT_FORMAT:?}: unknown format; use \"json\""
            )));
        }
    }
    let prefix = options.get(OPT_PREFIX).cloned().unwrap_or_default();
    // A newline in the prefix would start lines of the operator's choosing (shell, fake
    // entries) before every entry; no control character has a place there.
    if prefix
        .chars()
        .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
    {
        return Err(AuditError::InvalidConfig(format!(
            "option {OPT_PREFIX:?} must not contain control characters (newlines, tabs, escapes)"
        )));
    }
    Ok(Shared {
        log_raw: parse_bool(OPT_LOG_RAW, get(OPT_LOG_RAW), false)?,
        hmac_accessor: parse_bool(OPT_HMAC_ACCESSOR, get(OPT_HMAC_ACCESSOR), true)?,
        prefix,
        elide_list_responses: parse_bool(
            OPT_ELIDE_LIST_RESPONSES,
            get(OPT_ELIDE_LIST_RESPONSES),
            false,
        )?,
    })
}

/// Checks a file device's path against the server's allow-list of audit directories
/// (`audit_dir`; empty = no restriction) and returns the path to open: the canonical
/// one, so a symlink swapped in later is not followed from the name given. Refused: a
/// relative path, a `..` component, a path whose directory does not exist, and anything
/// that (symlinks resolved) lies outside every allowed directory.
pub(crate) fn allowed_file(path: &Path, allowed: &[PathBuf]) -> Result<PathBuf, AuditError> {
    if allowed.is_empty() {
        return Ok(path.to_path_buf());
    }
    let refuse = |why: &str| {
        AuditError::InvalidConfig(format!(
            "option {OPT_FILE_PATH:?} {why}; the server's audit_dir allows files under: {}",
            allowed
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    if !path.is_absolute() {
        return Err(refuse("must be an absolute path"));
    }
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(refuse("must not contain '..'"));
    }
    let canonical = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(_) => {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                return Err(refuse("must name a file"));
            };
            let parent = std::fs::canonicalize(parent)
                .map_err(|_| refuse("must be in an existing directory"))?;
            // A dangling symlink would be created through; refuse it.
            if std::fs::symlink_metadata(path).is_ok() {
                return Err(refuse("must not be a dangling symbolic link"));
            }
            parent.join(name)
        }
    };
    let inside = allowed.iter().any(|dir| {
        std::fs::canonicalize(dir).is_ok_and(|d| canonical.starts_with(&d) && canonical != d)
    });
    if !inside {
        return Err(refuse(
            "is outside the allowed audit directories (symbolic links resolved)",
        ));
    }
    Ok(canonical)
}

/// Where a file device writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// A file (or FIFO, or device node) opened for append; entries are fsynced.
    File(PathBuf),
    /// Standard output; flushed, not fsynced.
    Stdout,
    /// Nowhere; every entry succeeds at once.
    Discard,
}

/// The validated options of a file device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileOptions {
    pub(crate) target: Target,
    pub(crate) log_raw: bool,
    pub(crate) hmac_accessor: bool,
    /// Octal mode; 0 means "do not touch the mode".
    pub(crate) mode: u32,
    pub(crate) prefix: String,
    pub(crate) elide_list_responses: bool,
    /// Rotation and retention (regular files only; ignored for FIFOs and devices).
    pub(crate) rotation: Rotation,
}

impl FileOptions {
    /// Parses a `file` device's options. An empty value counts as unset.
    pub(crate) fn parse(options: &BTreeMap<String, String>) -> Result<FileOptions, AuditError> {
        let shared = parse_shared("file", &KNOWN_OPTIONS, options)?;
        let get = |key: &str| {
            options
                .get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };

        let target = match get(OPT_FILE_PATH) {
            None => {
                return Err(AuditError::InvalidConfig(format!(
                    "option {OPT_FILE_PATH:?} is required"
                )));
            }
            Some("stdout") => Target::Stdout,
            Some("discard") => Target::Discard,
            Some(p) => Target::File(PathBuf::from(p)),
        };
        let mode = match get(OPT_MODE) {
            None => DEFAULT_MODE,
            Some(raw) => parse_mode(raw)?,
        };
        let rotation_keys = [
            OPT_ROTATE_BYTES,
            OPT_ROTATE_INTERVAL,
            OPT_ROTATE_COMPRESS,
            OPT_RETENTION,
        ];
        if !matches!(target, Target::File(_))
            && let Some(key) = rotation_keys.iter().find(|k| get(k).is_some())
        {
            return Err(AuditError::InvalidConfig(format!(
                "option {key:?} applies only to a file, not to {OPT_FILE_PATH:?} = \"stdout\" or \"discard\""
            )));
        }
        let rotation = Rotation {
            bytes: match get(OPT_ROTATE_BYTES) {
                None => DEFAULT_ROTATE_BYTES,
                Some(raw) => raw.parse::<u64>().map_err(|_| {
                    AuditError::InvalidConfig(format!(
                        "option {OPT_ROTATE_BYTES:?}: not a whole number of bytes (0 turns rotation by size off)"
                    ))
                })?,
            },
            interval: parse_go_duration(OPT_ROTATE_INTERVAL, get(OPT_ROTATE_INTERVAL), DEFAULT_ROTATE_INTERVAL)?,
            compress: parse_bool(OPT_ROTATE_COMPRESS, get(OPT_ROTATE_COMPRESS), true)?,
            retention: parse_go_duration(OPT_RETENTION, get(OPT_RETENTION), DEFAULT_RETENTION)?,
        };
        Ok(FileOptions {
            rotation,
            target,
            log_raw: shared.log_raw,
            hmac_accessor: shared.hmac_accessor,
            mode,
            prefix: shared.prefix,
            elide_list_responses: shared.elide_list_responses,
        })
    }
}

/// What a socket device connects to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SocketAddress {
    /// `host:port`, resolved at each connection attempt.
    Tcp(String),
    /// A Unix stream socket's path.
    Unix(PathBuf),
}

impl std::fmt::Display for SocketAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketAddress::Tcp(a) => write!(f, "tcp://{a}"),
            SocketAddress::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// The validated options of a socket device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SocketOptions {
    pub(crate) address: SocketAddress,
    pub(crate) write_timeout: Duration,
    pub(crate) buffer_size: usize,
    pub(crate) log_raw: bool,
    pub(crate) hmac_accessor: bool,
    pub(crate) prefix: String,
    pub(crate) elide_list_responses: bool,
}

impl SocketOptions {
    /// Parses a `socket` device's options. An empty value counts as unset.
    pub(crate) fn parse(options: &BTreeMap<String, String>) -> Result<SocketOptions, AuditError> {
        let shared = parse_shared("socket", &SOCKET_OPTIONS, options)?;
        let get = |key: &str| {
            options
                .get(key)
                .map(String::as_str)
                .filter(|v| !v.is_empty())
        };
        let Some(raw_address) = get(OPT_ADDRESS) else {
            return Err(AuditError::InvalidConfig(format!(
                "option {OPT_ADDRESS:?} is required (\"host:port\" for tcp, a path for unix)"
            )));
        };
        let address = match get(OPT_SOCKET_TYPE) {
            None | Some("tcp") => {
                let port_ok = raw_address.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                });
                if !port_ok
                    || raw_address
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(AuditError::InvalidConfig(format!(
                        "option {OPT_ADDRESS:?}: not \"host:port\" (e.g. \"127.0.0.1:9090\" or \"[::1]:9090\")"
                    )));
                }
                SocketAddress::Tcp(raw_address.to_owned())
            }
            Some("unix") => SocketAddress::Unix(PathBuf::from(raw_address)),
            Some("udp") => {
                return Err(AuditError::InvalidConfig(format!(
                    "option {OPT_SOCKET_TYPE:?}: \"udp\" is not supported (a datagram can be lost without an error, so an entry could not count as recorded); use \"tcp\" or \"unix\""
                )));
            }
            Some(_) => {
                return Err(AuditError::InvalidConfig(format!(
                    "option {OPT_SOCKET_TYPE:?}: unknown socket type; use \"tcp\" or \"unix\""
                )));
            }
        };
        let write_timeout = parse_go_duration(
            OPT_WRITE_TIMEOUT,
            get(OPT_WRITE_TIMEOUT),
            DEFAULT_WRITE_TIMEOUT,
        )?;
        if write_timeout.is_zero() {
            return Err(AuditError::InvalidConfig(format!(
                "option {OPT_WRITE_TIMEOUT:?} must be more than zero (e.g. \"2s\")"
            )));
        }
        let buffer_size = match get(OPT_BUFFER_SIZE) {
            None => DEFAULT_BUFFER_SIZE,
            Some(raw) => match raw.parse::<usize>() {
                Ok(n) if (1..=MAX_BUFFER_SIZE).contains(&n) => n,
                _ => {
                    return Err(AuditError::InvalidConfig(format!(
                        "option {OPT_BUFFER_SIZE:?}: not a number of entries from 1 to {MAX_BUFFER_SIZE}"
                    )));
                }
            },
        };
        Ok(SocketOptions {
            address,
            write_timeout,
            buffer_size,
            log_raw: shared.log_raw,
            hmac_accessor: shared.hmac_accessor,
            prefix: shared.prefix,
            elide_list_responses: shared.elide_list_responses,
        })
    }
}

/// A duration option (`"24h"`, `"90d"`, `"3600"`; `"0"` = off).
fn parse_go_duration(
    key: &str,
    raw: Option<&str>,
    default: Duration,
) -> Result<Duration, AuditError> {
    match raw {
        None => Ok(default),
        Some(raw) => leash_types::parse_duration(raw).map_err(|e| {
            AuditError::InvalidConfig(format!(
                "option {key:?}: {e}; use a duration such as \"24h\" or \"0\" (off)"
            ))
        }),
    }
}

/// Booleans as Go's `strconv.ParseBool` reads them (Vault parses options with it).
fn parse_bool(key: &str, raw: Option<&str>, default: bool) -> Result<bool, AuditError> {
    match raw {
        None => Ok(default),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
        Some("0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
        Some(_) => Err(AuditError::InvalidConfig(format!(
            "option {key:?}: not a boolean; use \"true\" or \"false\""
        ))),
    }
}

/// An octal mode such as `0600` (Go's `strconv.ParseUint(raw, 8, 32)`), at most `07777`.
fn parse_mode(raw: &str) -> Result<u32, AuditError> {
    let bad = || {
        AuditError::InvalidConfig(format!(
            "option {OPT_MODE:?}: not an octal file mode such as \"0600\""
        ))
    };
    if !raw.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad());
    }
    match u32::from_str_radix(raw, 8) {
        Ok(m) if m <= 0o7777 => Ok(m),
        _ => Err(bad()),
    }
}

/// The canonical form of a mount path: no leading slash, one trailing slash, no empty,
/// `.` or `..` segment. `file` and `/file/` both become `file/`.
pub(crate) fn normalize_path(path: &str) -> Result<String, AuditError> {
    let trimmed = path.trim_start_matches('/');
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if trimmed.is_empty() {
        return Err(AuditError::InvalidConfig(
            "audit device path must not be empty".to_owned(),
        ));
    }
    if let Some(seg) = trimmed
        .split('/')
        .find(|s| s.is_empty() || *s == "." || *s == "..")
    {
        return Err(AuditError::InvalidConfig(format!(
            "audit device path {path:?} has an invalid segment {seg:?}"
        )));
    }
    if trimmed.chars().any(|c| c.is_control()) {
        return Err(AuditError::InvalidConfig(format!(
            "audit device path {path:?} contains a control character"
        )));
    }
    Ok(format!("{trimmed}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn invalid(pairs: &[(&str, &str)]) -> String {
        match FileOptions::parse(&opts(pairs)) {
            Err(AuditError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    #[test]
    fn prefix_refuses_control_characters() {
        for bad in [
            "x\n",
            "\nrm -rf /;",
            "a\rb",
            "tab\there",
            "\u{1b}[31m",
            "a\u{2028}b",
            "nul\0",
        ] {
            let m = invalid(&[("file_path", "stdout"), ("prefix", bad)]);
            assert!(
                m.contains("\"prefix\"") && m.contains("control"),
                "{bad:?}: {m}"
            );
            assert!(!m.contains(bad), "the value is not echoed: {m}");
        }
        let o =
            FileOptions::parse(&opts(&[("file_path", "stdout"), ("prefix", "leash: ")])).unwrap();
        assert_eq!(o.prefix, "leash: ");
    }

    #[test]
    fn file_paths_stay_inside_the_allowed_directories() {
        let root = tempfile::tempdir().unwrap();
        let allowed = root.path().join("audit");
        let outside = root.path().join("elsewhere");
        std::fs::create_dir_all(allowed.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"").unwrap();
        std::os::unix::fs::symlink(&outside, allowed.join("link-dir")).unwrap();
        std::os::unix::fs::symlink(outside.join("victim"), allowed.join("link-file")).unwrap();
        std::os::unix::fs::symlink(outside.join("new"), allowed.join("dangling")).unwrap();
        let dirs = vec![allowed.clone()];
        let real = std::fs::canonicalize(&allowed).unwrap();

        // No allow-list: anything goes (as before).
        assert_eq!(
            allowed_file(&outside.join("x"), &[]).unwrap(),
            outside.join("x")
        );
        assert_eq!(
            allowed_file(&allowed.join("a.log"), &dirs).unwrap(),
            real.join("a.log")
        );
        assert_eq!(
            allowed_file(&allowed.join("sub/b.log"), &dirs).unwrap(),
            real.join("sub/b.log")
        );
        for bad in [
            outside.join("x.log"),
            allowed.join("../elsewhere/x.log"),
            allowed.join("sub/../a.log"),
            allowed.join("link-dir/x.log"),
            allowed.join("link-file"),
            allowed.join("dangling"),
            allowed.join("missing-dir/x.log"),
            allowed.clone(),
            PathBuf::from("relative.log"),
            PathBuf::from("/etc/passwd"),
        ] {
            match allowed_file(&bad, &dirs) {
                Err(AuditError::InvalidConfig(m)) => {
                    assert!(
                        m.contains("\"file_path\"") && m.contains("audit_dir"),
                        "{m}"
                    )
                }
                other => panic!("{}: {other:?}", bad.display()),
            }
        }
    }

    #[test]
    fn defaults_follow_vault() {
        let o = FileOptions::parse(&opts(&[("file_path", "/var/log/a.log")])).unwrap();
        assert_eq!(
            o,
            FileOptions {
                target: Target::File(PathBuf::from("/var/log/a.log")),
                log_raw: false,
                hmac_accessor: true,
                mode: 0o600,
                prefix: String::new(),
                elide_list_responses: false,
                rotation: Rotation {
                    bytes: 100 << 20,
                    interval: Duration::from_secs(86400),
                    compress: true,
                    retention: Duration::from_secs(90 * 86400),
                },
            }
        );
    }

    #[test]
    fn rotation_options_parse_and_reject_bad_values() {
        let o = FileOptions::parse(&opts(&[
            ("file_path", "/tmp/a.log"),
            ("rotate_bytes", "0"),
            ("rotate_interval", "1h30m"),
            ("rotate_compress", "false"),
            ("retention", "0"),
        ]))
        .unwrap();
        assert_eq!(
            o.rotation,
            Rotation {
                bytes: 0,
                interval: Duration::from_secs(5400),
                compress: false,
                retention: Duration::ZERO,
            }
        );
        let m = invalid(&[("file_path", "/tmp/a.log"), ("rotate_bytes", "1MB")]);
        assert!(m.contains("rotate_bytes") && !m.contains("1MB"), "{m}");
        let m = invalid(&[("file_path", "/tmp/a.log"), ("retention", "-1h")]);
        assert!(m.contains("retention"), "{m}");
        let m = invalid(&[("file_path", "/tmp/a.log"), ("rotate_interval", "soon")]);
        assert!(m.contains("rotate_interval") && !m.contains("soon"), "{m}");
        let m = invalid(&[("file_path", "stdout"), ("rotate_bytes", "10")]);
        assert!(m.contains("only to a file"), "{m}");
    }

    #[test]
    fn every_option_parses() {
        let o = FileOptions::parse(&opts(&[
            ("file_path", "stdout"),
            ("log_raw", "true"),
            ("hmac_accessor", "false"),
            ("mode", "0640"),
            ("format", "json"),
            ("prefix", "@cee: "),
            ("elide_list_responses", "1"),
        ]))
        .unwrap();
        assert_eq!(o.target, Target::Stdout);
        assert!(o.log_raw && !o.hmac_accessor && o.elide_list_responses);
        assert_eq!(o.mode, 0o640);
        assert_eq!(o.prefix, "@cee: ");
        let d = FileOptions::parse(&opts(&[("file_path", "discard"), ("mode", "0000")])).unwrap();
        assert_eq!((d.target, d.mode), (Target::Discard, 0));
    }

    #[test]
    fn bad_options_name_the_key() {
        assert!(invalid(&[("file_path", "/x"), ("colour", "red")]).contains("\"colour\""));
        assert!(invalid(&[]).contains("\"file_path\" is required"));
        assert!(invalid(&[("file_path", "")]).contains("\"file_path\" is required"));
        let m = invalid(&[("file_path", "/x"), ("format", "jsonx")]);
        assert!(m.contains("\"format\"") && m.contains("jsonx") && m.contains("not supported"));
        assert!(invalid(&[("file_path", "/x"), ("format", "xml")]).contains("\"format\""));
        assert!(invalid(&[("file_path", "/x"), ("log_raw", "yes")]).contains("\"log_raw\""));
        assert!(
            invalid(&[("file_path", "/x"), ("hmac_accessor", "no")]).contains("\"hmac_accessor\"")
        );
        for bad in ["0800", "rw", "-1", "077777", "0x1ff"] {
            assert!(
                invalid(&[("file_path", "/x"), ("mode", bad)]).contains("\"mode\""),
                "{bad}"
            );
        }
    }

    #[test]
    fn socket_options_parse_and_reject_bad_values() {
        let o = SocketOptions::parse(&opts(&[("address", "127.0.0.1:9090")])).unwrap();
        assert_eq!(o.address, SocketAddress::Tcp("127.0.0.1:9090".into()));
        assert_eq!(o.write_timeout, Duration::from_secs(2));
        assert_eq!(o.buffer_size, 10_000);
        assert!(!o.log_raw && o.hmac_accessor);
        let o = SocketOptions::parse(&opts(&[
            ("address", "/run/log.sock"),
            ("socket_type", "unix"),
            ("write_timeout", "3s"),
            ("buffer_size", "10"),
            ("prefix", "@cee: "),
        ]))
        .unwrap();
        assert_eq!(o.address, SocketAddress::Unix("/run/log.sock".into()));
        assert_eq!(
            (o.write_timeout, o.buffer_size),
            (Duration::from_secs(3), 10)
        );
        let bad = |pairs: &[(&str, &str)]| match SocketOptions::parse(&opts(pairs)) {
            Err(AuditError::InvalidConfig(m)) => m,
            other => panic!("expected InvalidConfig, got {other:?}"),
        };
        assert!(bad(&[]).contains("\"address\" is required"));
        for a in ["localhost", "host:0", ":9090", "host:99999", "a b:1"] {
            assert!(bad(&[("address", a)]).contains("host:port"), "{a}");
        }
        assert!(bad(&[("address", "h:1"), ("socket_type", "udp")]).contains("not supported"));
        let m = bad(&[("address", "h:1"), ("socket_type", "sctp")]);
        assert!(m.contains("socket_type") && !m.contains("sctp"), "{m}");
        assert!(bad(&[("address", "h:1"), ("file_path", "/x")]).contains("\"file_path\""));
        assert!(bad(&[("address", "h:1"), ("buffer_size", "0")]).contains("buffer_size"));
        assert!(bad(&[("address", "h:1"), ("write_timeout", "0")]).contains("write_timeout"));
    }

    #[test]
    fn paths_are_normalised_and_tricks_rejected() {
        assert_eq!(normalize_path("file").unwrap(), "file/");
        assert_eq!(normalize_path("/file/").unwrap(), "file/");
        assert_eq!(normalize_path("a/b").unwrap(), "a/b/");
        for bad in ["", "/", "//", "a//b", "a/../b", "./a", "a\nb"] {
            assert!(normalize_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn device_config_serialises_as_vault_lists_it() {
        let cfg = DeviceConfig {
            path: "file/".into(),
            kind: "file".into(),
            description: String::new(),
            options: opts(&[("file_path", "/vault/logs/audit.log")]),
            local: false,
        };
        let v = serde_json::to_value(&cfg).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type":"file","description":"","options":{"file_path":
                "/vault/logs/audit.log"},"local":false,"path":"file/"})
        );
        let back: DeviceConfig =
            serde_json::from_value(serde_json::json!({"path":"file/","type":"file"})).unwrap();
        assert_eq!(back.kind, "file");
        assert!(back.options.is_empty());

        // A request body: no path (it is in the URL), loosely typed option values.
        let body: DeviceConfig = serde_json::from_value(serde_json::json!({
            "type": "file",
            "options": {"file_path": "/x.log", "log_raw": true, "mode": 600, "prefix": null}
        }))
        .unwrap();
        assert_eq!(body.path, "");
        assert_eq!(
            body.options,
            opts(&[
                ("file_path", "/x.log"),
                ("log_raw", "true"),
                ("mode", "600")
            ])
        );
        let nested = serde_json::from_value::<DeviceConfig>(serde_json::json!({
            "type": "file", "options": {"file_path": ["a"]}
        }));
        assert!(nested.unwrap_err().to_string().contains("\"file_path\""));
    }
}
