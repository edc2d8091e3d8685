//! Vault-style flags (for the `leash` and `leash-agent` binaries): the Vault CLI spells long flags with one dash (`-format=json`,
//! `-field token`), clap with two. [`normalise_vault_style_flags`] rewrites the first
//! into the second before parsing, so scripts written for `vault` run unchanged.
//!
//! Only arguments that look like a single-dash long flag are touched: a dash, then a
//! letter, then at least one more letter, digit, `-` or `_` before an optional `=`.
//! Short flags (`-h`, `-f`), a lone `-` (stdin), negative numbers, `--long` flags,
//! positional arguments and everything after `--` pass through unchanged.

use std::ffi::OsString;

/// Rewrites `-name[=value]` into `--name[=value]`. The first item (the program name)
/// is kept as is.
pub fn normalise_vault_style_flags(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut rest_positional = false;
    for (i, arg) in args.enumerate() {
        if i == 0 || rest_positional {
            out.push(arg);
            continue;
        }
        if arg == "--" {
            rest_positional = true;
            out.push(arg);
            continue;
        }
        match arg.to_str() {
            Some(s) if is_single_dash_long_flag(s) => out.push(OsString::from(format!("-{s}"))),
            _ => out.push(arg),
        }
    }
    out
}

fn is_single_dash_long_flag(s: &str) -> bool {
    let Some(body) = s.strip_prefix('-') else {
        return false;
    };
    if body.starts_with('-') {
        return false;
    }
    let name = body.split_once('=').map_or(body, |(n, _)| n);
    let mut chars = name.chars();
    let first_is_letter = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    first_is_letter
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(args: &[&str]) -> Vec<String> {
        normalise_vault_style_flags(args.iter().map(OsString::from))
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            norm(&[
                "leash",
                "token",
                "create",
                "-format=json",
                "-policy",
                "bench",
                "-ttl=1h"
            ]),
            [
                "leash",
                "token",
                "create",
                "--format=json",
                "--policy",
                "bench",
                "--ttl=1h"
            ]
        );
        assert_eq!(
            norm(&[
                "leash",
                "kv",
                "get",
                "-field=password",
                "-address=http://x:1",
                "secret/a"
            ]),
            [
                "leash",
                "kv",
                "get",
                "--field=password",
                "--address=http://x:1",
                "secret/a"
            ]
        );
        assert_eq!(
            norm(&[
                "leash",
                "token",
                "create",
                "-explicit-max-ttl=2h",
                "-no-default-policy"
            ]),
            [
                "leash",
                "token",
                "create",
                "--explicit-max-ttl=2h",
                "--no-default-policy"
            ]
        );
        assert_eq!(
            norm(&["leash", "token", "revoke", "-self"]),
            ["leash", "token", "revoke", "--self"]
        );
    }

    #[test]
    fn everything_else_is_left_alone() {
        let same = [
            "leash",
            "-h",
            "-f",
            "-",
            "-5",
            "--format=json",
            "--",
            "-format=json",
            "k=-v",
            "secret/-x",
            "-=x",
            "-9abc",
        ];
        let mut expected: Vec<String> = same.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(norm(&same), expected);
        // The program name is never rewritten, even if it looks like a flag.
        expected = vec!["-leash".into(), "--ab".into()];
        assert_eq!(norm(&["-leash", "-ab"]), expected);
    }

    #[test]
    fn values_with_equals_keep_their_dashes() {
        assert_eq!(
            norm(&["leash", "-metadata=a=-b"]),
            ["leash", "--metadata=a=-b"]
        );
    }
}
