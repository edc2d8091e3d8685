//! Request path validation. A path that could mean two things is refused with a 400
//! that says why, before it reaches routing or policy checks:
//! `..` and `.` segments, empty segments (`//`) other than one trailing slash (lists),
//! encoded slashes or backslashes (`%2F`, `%5C`), NUL and control characters, invalid
//! percent-encoding or UTF-8, and overlong paths.

use percent_encoding::percent_decode_str;

/// Longest accepted path, in bytes after decoding.
pub const MAX_PATH: usize = 2048;

/// Why a path was refused (the message is shown to the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request path: {0}")]
pub struct PathError(pub &'static str);

/// Validates and decodes the part of a raw (still percent-encoded) URI path after
/// `/v1/`. Returns the decoded logical path, without leading slash.
pub fn logical_path(raw: &str) -> Result<String, PathError> {
    let lower = raw.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(PathError("encoded slashes are not allowed"));
    }
    if lower.contains("%00") {
        return Err(PathError("NUL bytes are not allowed"));
    }
    let decoded = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError("the path is not valid UTF-8"))?;
    if decoded.len() > MAX_PATH {
        return Err(PathError("the path is too long"));
    }
    if decoded.chars().any(|c| c.is_control()) {
        return Err(PathError("control characters are not allowed"));
    }
    if decoded.contains('\\') {
        return Err(PathError("backslashes are not allowed"));
    }
    if decoded.is_empty() {
        return Err(PathError("the path is empty"));
    }
    let body = decoded.strip_suffix('/').unwrap_or(&decoded);
    for seg in body.split('/') {
        match seg {
            "" => return Err(PathError("empty path segments ('//') are not allowed")),
            "." | ".." => return Err(PathError("'.' and '..' segments are not allowed")),
            _ => {}
        }
    }
    Ok(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        assert_eq!(logical_path("secret/data/a").unwrap(), "secret/data/a");
        assert_eq!(
            logical_path("secret/metadata/").unwrap(),
            "secret/metadata/"
        );
        assert_eq!(
            logical_path("secret/data/a%20b").unwrap(),
            "secret/data/a b"
        );
        assert_eq!(logical_path("sys/health").unwrap(), "sys/health");
    }

    #[test]
    fn refuses_ambiguous_paths() {
        for bad in [
            "secret/../sys/policy/x",
            "secret/./data",
            "secret//data",
            "/secret/data",
            "secret/data%2Fx",
            "secret/data%2fx",
            "secret%5Cdata",
            "secret/%2e%2e/sys",
            "a%00b",
            "a%0ab",
            "a%ff",
            "",
            "..",
        ] {
            assert!(logical_path(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
