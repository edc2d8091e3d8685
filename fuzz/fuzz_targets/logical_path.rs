//! Request path validation: never panics, and what it accepts is canonical (no `.`/`..`
//! or empty segments but a trailing slash, no backslash or control character, bounded).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|raw: &str| {
    let Ok(p) = leash_http::path::logical_path(raw) else {
        return;
    };
    assert!(!p.is_empty());
    assert!(p.len() <= leash_http::path::MAX_PATH);
    assert!(!p.contains('\\'), "{p:?}");
    assert!(!p.chars().any(char::is_control), "{p:?}");
    let body = p.strip_suffix('/').unwrap_or(&p);
    for seg in body.split('/') {
        assert!(
            !seg.is_empty() && seg != "." && seg != "..",
            "{raw:?} -> {p:?}"
        );
    }
});
