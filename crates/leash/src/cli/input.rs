//! Turning command-line data into request bodies, the way the Vault CLI does.
//!
//! * `k=v` sets `k` to the string `v`; a key given twice becomes a list.
//! * `k=@file` reads the value from a file, `k=-` from stdin (once).
//! * A single `-` argument reads a whole JSON object from stdin, a single `@file.json`
//!   from a file.
//!
//! Values stay strings (the server parses `"1h"` or `"true"` by field type), as with
//! `vault write`. Files and stdin are read raw, trailing newlines included. Stdin is
//! passed in as a reader so tests need no real terminal.

use std::io::Read;

use leash_client::{ExposeSecret, SecretString};

use serde_json::{Map, Value};

/// Why a data argument could not be used; always the user's to fix (exit 1).
#[derive(Debug, thiserror::Error)]
pub(crate) enum InputError {
    /// Not `key=value`.
    #[error("invalid key/value pair {0:?}: format must be key=value")]
    NotKeyValue(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    File {
        /// The file named.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Stdin could not be read.
    #[error("reading stdin: {0}")]
    Stdin(std::io::Error),
    /// Stdin named twice: it can only be read once.
    #[error("stdin (-) can be used for only one value")]
    StdinTwice,
    /// A JSON document that is not an object.
    #[error("{source_name}: expected a JSON object: {reason}")]
    NotJsonObject {
        /// Where the document came from.
        source_name: String,
        /// What is wrong.
        reason: String,
    },
    /// Not valid UTF-8.
    #[error("{0}: not valid UTF-8")]
    NotUtf8(String),
}

/// Parses data arguments into a JSON object. The arguments are secrets (they may hold
/// passwords), so errors name the key, never the value.
pub(crate) fn parse_data_args(
    args: &[SecretString],
    stdin: &mut dyn Read,
) -> Result<Map<String, Value>, InputError> {
    let mut stdin_used = false;
    if let [single] = args {
        let single = single.expose_secret();
        if single == "-" {
            let text = read_stdin(stdin, &mut stdin_used)?;
            return json_object(&text, "stdin");
        }
        if let Some(path) = single.strip_prefix('@').filter(|_| !single.contains('=')) {
            let text = read_file(path)?;
            return json_object(&text, path);
        }
    }
    let mut map = Map::new();
    for arg in args {
        let arg = arg.expose_secret();
        let (key, raw) = arg
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| InputError::NotKeyValue(redact_pair(arg)))?;
        let value = if raw == "-" {
            read_stdin(stdin, &mut stdin_used)?
        } else if let Some(path) = raw.strip_prefix('@') {
            read_file(path)?
        } else {
            raw.to_owned()
        };
        insert_or_append(&mut map, key, Value::String(value));
    }
    Ok(map)
}

/// What an error may show of a bad argument: a key without `=` is shown (it holds no
/// value), anything after an `=` is hidden.
fn redact_pair(arg: &str) -> String {
    match arg.split_once('=') {
        Some((k, _)) => format!("{k}=<hidden>"),
        None if arg.len() <= 64 => arg.to_owned(),
        None => format!("{}…", arg.chars().take(16).collect::<String>()),
    }
}

/// Inserts `value`; a repeated key turns into a list of all its values.
fn insert_or_append(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get_mut(key) {
        None => {
            map.insert(key.to_owned(), value);
        }
        Some(Value::Array(list)) => list.push(value),
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, value]);
        }
    }
}

fn read_stdin(stdin: &mut dyn Read, used: &mut bool) -> Result<String, InputError> {
    if *used {
        return Err(InputError::StdinTwice);
    }
    *used = true;
    let mut buf = Vec::new();
    stdin.read_to_end(&mut buf).map_err(InputError::Stdin)?;
    String::from_utf8(buf).map_err(|_| InputError::NotUtf8("stdin".into()))
}

/// Reads a whole file as UTF-8 text.
pub(crate) fn read_file(path: &str) -> Result<String, InputError> {
    let bytes = std::fs::read(path).map_err(|source| InputError::File {
        path: path.to_owned(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|_| InputError::NotUtf8(path.to_owned()))
}

/// Reads `-` (stdin) or a file path as text.
pub(crate) fn read_file_or_stdin(name: &str, stdin: &mut dyn Read) -> Result<String, InputError> {
    if name == "-" {
        let mut used = false;
        read_stdin(stdin, &mut used)
    } else {
        read_file(name)
    }
}

fn json_object(text: &str, source_name: &str) -> Result<Map<String, Value>, InputError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(InputError::NotJsonObject {
            source_name: source_name.to_owned(),
            reason: "not an object".into(),
        }),
        Err(e) => Err(InputError::NotJsonObject {
            source_name: source_name.to_owned(),
            reason: e.to_string(),
        }),
    }
}

/// Parses `k=v` metadata flags into a string map (no files, no stdin).
pub(crate) fn parse_metadata(
    pairs: &[String],
) -> Result<std::collections::BTreeMap<String, String>, InputError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(InputError::NotKeyValue(p.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn args(a: &[&str]) -> Vec<SecretString> {
        a.iter().map(|s| SecretString::from(*s)).collect()
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    fn no_stdin() -> impl Read {
        std::io::empty()
    }

    #[test]
    fn key_values_are_strings_and_repeats_become_lists() {
        let m = parse_data_args(
            &args(&["a=1", "b=x=y", "p=one", "p=two", "p=three", "e="]),
            &mut no_stdin(),
        )
        .unwrap();
        assert_eq!(
            Value::Object(m),
            json!({"a": "1", "b": "x=y", "p": ["one", "two", "three"], "e": ""})
        );
    }

    #[test]
    fn values_from_files_and_stdin() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("policy.hcl");
        std::fs::write(&f, "path \"x\" {}\n").unwrap();
        let arg = format!("policy=@{}", f.display());
        let mut stdin = std::io::Cursor::new(b"from-stdin\n".to_vec());
        let m = parse_data_args(&[arg.into(), "password=-".into()], &mut stdin).unwrap();
        assert_eq!(m["policy"], json!("path \"x\" {}\n"));
        assert_eq!(m["password"], json!("from-stdin\n"));
    }

    #[test]
    fn stdin_only_once() {
        let mut stdin = std::io::Cursor::new(b"x".to_vec());
        let e = parse_data_args(&args(&["a=-", "b=-"]), &mut stdin).unwrap_err();
        assert!(matches!(e, InputError::StdinTwice));
    }

    #[test]
    fn whole_json_object_from_stdin_or_file() {
        let mut stdin = std::io::Cursor::new(br#"{"policies": ["a"], "ttl": 60}"#.to_vec());
        let m = parse_data_args(&args(&["-"]), &mut stdin).unwrap();
        assert_eq!(Value::Object(m), json!({"policies": ["a"], "ttl": 60}));
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("d.json");
        std::fs::write(&f, r#"{"k": true}"#).unwrap();
        let m = parse_data_args(&[format!("@{}", f.display()).into()], &mut no_stdin()).unwrap();
        assert_eq!(Value::Object(m), json!({"k": true}));
        let mut stdin = std::io::Cursor::new(b"[1]".to_vec());
        assert!(matches!(
            parse_data_args(&args(&["-"]), &mut stdin),
            Err(InputError::NotJsonObject { .. })
        ));
    }

    #[test]
    fn bad_arguments_name_themselves() {
        let e = parse_data_args(&args(&["a=1", "novalue"]), &mut no_stdin()).unwrap_err();
        assert!(e.to_string().contains("novalue"), "{e}");
        let e = parse_data_args(&args(&["=s3cr3t"]), &mut no_stdin()).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = parse_data_args(&args(&["k=@/definitely/not/here"]), &mut no_stdin()).unwrap_err();
        assert!(e.to_string().contains("/definitely/not/here"), "{e}");
        assert!(parse_data_args(&[], &mut no_stdin()).unwrap().is_empty());
    }

    #[test]
    fn metadata_pairs() {
        let m = parse_metadata(&strings(&["agent=a1", "team=x=y"])).unwrap();
        assert_eq!(m["agent"], "a1");
        assert_eq!(m["team"], "x=y");
        assert!(parse_metadata(&strings(&["nope"])).is_err());
    }
}
