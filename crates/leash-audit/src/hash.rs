//! Keyed hashing of secrets in audit entries, as Vault does it.
//!
//! Every audit device has its own random key; [`Hasher::hmac`] turns a value into
//! `hmac-sha256:<lowercase hex of HMAC-SHA256(key, value)>`, the exact form Vault writes and
//! `sys/audit-hash/:path` returns, so an operator who holds a token can find the entries
//! about it without the log ever holding the token. [`hash_strings`] applies that to every
//! string leaf of a JSON value (Vault's `HashStructure`).
//!
//! Invariants: the key never leaves a [`Hasher`] — no `Clone`, `Debug` prints no key
//! material, the key is zeroized on drop (it is a [`SecretBytes`]).
//!
//! Not here: deciding *which* fields of an entry to hash (the core builds entries), key
//! generation and storage (the core persists each device's key).

use hmac::{Hmac, Mac};
use leash_types::SecretBytes;
use serde_json::Value;
use sha2::Sha256;

/// The prefix of every hashed value, as Vault writes it.
pub const HMAC_PREFIX: &str = "hmac-sha256:";

/// A device's HMAC-SHA256 key, plus the device options that decide what to hash.
///
/// The broker hands each device's `Hasher` to the entry builder passed to
/// [`Broker::log`](crate::Broker::log), so a builder can honour per-device options
/// ([`Hasher::hmac_accessor`], [`Hasher::elide_list_responses`]) without knowing which
/// device it is building for.
pub struct Hasher {
    key: SecretBytes,
    /// The keyed state (key already absorbed), cloned per input instead of re-keying.
    keyed: Hmac<Sha256>,
    hmac_accessor: bool,
    elide_list_responses: bool,
}

impl Hasher {
    /// A hasher with `key`, and Vault's default options (`hmac_accessor = true`,
    /// `elide_list_responses = false`).
    pub fn new(key: SecretBytes) -> Hasher {
        let Ok(keyed) = Hmac::<Sha256>::new_from_slice(key.expose()) else {
            // HMAC is defined for keys of every length; `new_from_slice` cannot fail for it.
            unreachable!("HMAC-SHA256 accepts keys of any length")
        };
        Hasher {
            key,
            keyed,
            hmac_accessor: true,
            elide_list_responses: false,
        }
    }

    /// Sets the per-device options (parsed from the device's configuration).
    pub(crate) fn with_options(mut self, hmac_accessor: bool, elide_list_responses: bool) -> Self {
        self.hmac_accessor = hmac_accessor;
        self.elide_list_responses = elide_list_responses;
        self
    }

    /// `hmac-sha256:<lowercase hex>` of `input` under this device's key.
    pub fn hmac(&self, input: &str) -> String {
        let mut mac = self.keyed.clone();
        mac.update(input.as_bytes());
        let tag = mac.finalize().into_bytes();
        let mut out = String::with_capacity(HMAC_PREFIX.len() + 2 * tag.len());
        out.push_str(HMAC_PREFIX);
        out.push_str(&hex::encode(tag));
        out
    }

    /// Whether token accessors are to be hashed in this device's entries (Vault's
    /// `hmac_accessor` option, default `true`).
    pub fn hmac_accessor(&self) -> bool {
        self.hmac_accessor
    }

    /// Whether list responses are to be elided to their key count in this device's entries
    /// (Vault's `elide_list_responses` option, default `false`).
    pub fn elide_list_responses(&self) -> bool {
        self.elide_list_responses
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("key", &self.key) // SecretBytes prints only its length
            .field("hmac_accessor", &self.hmac_accessor)
            .field("elide_list_responses", &self.elide_list_responses)
            .finish()
    }
}

/// Replaces every string leaf of `value` — in objects and arrays, at any depth — by its
/// HMAC under `h`. Object keys, numbers, booleans and `null` are left as they are.
///
/// Walks with an explicit stack, so a deeply nested value cannot overflow the thread's
/// stack.
pub fn hash_strings(value: &mut Value, h: &Hasher) {
    let mut stack: Vec<&mut Value> = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => *s = h.hmac(s),
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(fields) => stack.extend(fields.values_mut()),
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hasher(key: &[u8]) -> Hasher {
        Hasher::new(SecretBytes::new(key.to_vec()))
    }

    #[test]
    fn hmac_matches_rfc4231_vector() {
        // RFC 4231 test case 2.
        let h = hasher(b"Jefe");
        assert_eq!(
            h.hmac("what do ya want for nothing?"),
            "hmac-sha256:5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn hmac_is_deterministic_per_key_and_differs_across_keys() {
        let a = hasher(b"key-a");
        let a2 = hasher(b"key-a");
        let b = hasher(b"key-b");
        let ha = a.hmac("s.secret-token");
        assert!(ha.starts_with(HMAC_PREFIX));
        assert_eq!(ha.len(), HMAC_PREFIX.len() + 64);
        assert!(
            ha[HMAC_PREFIX.len()..]
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(ha, a.hmac("s.secret-token"));
        assert_eq!(ha, a2.hmac("s.secret-token"));
        assert_ne!(ha, b.hmac("s.secret-token"));
        assert_ne!(ha, a.hmac("s.other-token"));
    }

    #[test]
    fn long_keys_work() {
        let h = hasher(&[7u8; 200]);
        assert!(h.hmac("x").starts_with(HMAC_PREFIX));
    }

    #[test]
    fn hash_strings_reaches_nested_strings_and_leaves_the_rest() {
        let h = hasher(b"k");
        let mut v = json!({
            "password": "hunter2",
            "n": 42,
            "ok": true,
            "none": null,
            "list": ["a", 1, ["deep", false], {"inner": "b"}],
            "obj": {"x": {"y": "z"}, "f": 1.5}
        });
        hash_strings(&mut v, &h);
        assert_eq!(
            v,
            json!({
                "password": h.hmac("hunter2"),
                "n": 42,
                "ok": true,
                "none": null,
                "list": [h.hmac("a"), 1, [h.hmac("deep"), false], {"inner": h.hmac("b")}],
                "obj": {"x": {"y": h.hmac("z")}, "f": 1.5}
            })
        );
        assert!(!v.to_string().contains("hunter2"));
    }

    #[test]
    fn hash_strings_on_a_bare_string_and_deep_nesting() {
        let h = hasher(b"k");
        let mut s = json!("plain");
        hash_strings(&mut s, &h);
        assert_eq!(s, json!(h.hmac("plain")));

        let mut deep = json!("leaf");
        for _ in 0..100_000 {
            deep = Value::Array(vec![deep]);
        }
        hash_strings(&mut deep, &h);
        let mut cur = &deep;
        while let Value::Array(items) = cur {
            cur = &items[0];
        }
        assert_eq!(cur, &json!(h.hmac("leaf")));
        // Dropping a 100 000-deep Value recurses; take it apart level by level instead.
        let mut cur = deep;
        while let Value::Array(mut items) = cur {
            match items.pop() {
                Some(inner) => cur = inner,
                None => break,
            }
        }
    }

    #[test]
    fn debug_prints_no_key_material() {
        let h = hasher(b"supersecretkeybytes");
        let d = format!("{h:?}");
        assert!(!d.contains("supersecret"));
        assert!(!d.contains(&hex::encode(b"supersecretkeybytes")));
        assert!(d.contains("REDACTED"));
    }
}
