//! HCL1 (and JSON) text as a JSON value, for Vault-shaped files other than policies:
//! the server and agent configuration.
//!
//! Mapping: `key = value` → `"key": value`; a block `a "b" { … }` → `"a": {"b": {…}}`;
//! blocks of one kind with different labels merge (`listener "tcp"` and `listener "unix"`
//! give one object with two keys); any other repeated key collects its values in one
//! flat list, in input order (`template {…}` three times → `"template": [{…}, {…}, {…}]`).

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::syntax::{self, Item, Node, NodeKind, SyntaxError};

/// Parses HCL1 or JSON text into a JSON object.
pub fn parse_to_json(text: &str) -> Result<Value, SyntaxError> {
    let items = syntax::parse(text)?;
    Ok(items_to_json(&items))
}

fn items_to_json(items: &[Item]) -> Value {
    let mut m = Map::new();
    // Keys whose value is already the list of their repeated values: a further value
    // joins that list (rather than nesting it, `[[a, b], c]`).
    let mut collected: HashSet<&str> = HashSet::new();
    for it in items {
        let v = node_to_json(&it.value);
        match m.get_mut(&it.key) {
            None => {
                m.insert(it.key.clone(), v);
            }
            Some(existing) => {
                // Merge nested block objects (`a "x" {}` then `a "y" {}`), else collect.
                match (existing, v) {
                    (Value::Object(a), Value::Object(b))
                        if !collected.contains(it.key.as_str())
                            && b.keys().all(|k| !a.contains_key(k)) =>
                    {
                        a.extend(b)
                    }
                    (Value::Array(list), v) if collected.contains(it.key.as_str()) => {
                        list.push(v);
                    }
                    (e, v) => {
                        let prev = std::mem::take(e);
                        *e = Value::Array(vec![prev, v]);
                        collected.insert(it.key.as_str());
                    }
                }
            }
        }
    }
    Value::Object(m)
}

fn node_to_json(n: &Node) -> Value {
    match &n.kind {
        NodeKind::Str(s) => Value::String(s.clone()),
        NodeKind::Number(x) => Value::Number(x.clone()),
        NodeKind::Bool(b) => Value::Bool(*b),
        NodeKind::Null => Value::Null,
        NodeKind::List(items) => Value::Array(items.iter().map(node_to_json).collect()),
        NodeKind::Object(items) => items_to_json(items),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_config_shape() {
        let v = parse_to_json(
            r#"
            storage "sqlite" { path = "./data" }
            listener "tcp" {
              address = "127.0.0.1:8200"
              tls_disable = true
            }
            default_lease_ttl = "1h"
            "#,
        )
        .unwrap();
        assert_eq!(v["storage"]["sqlite"]["path"], json!("./data"));
        assert_eq!(v["listener"]["tcp"]["tls_disable"], json!(true));
        assert_eq!(v["default_lease_ttl"], json!("1h"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = parse_to_json("a = {\n b = \n").unwrap_err();
        assert!(e.pos.line >= 2, "{e}");
        assert!(e.to_string().starts_with("line "), "{e}");
    }

    #[test]
    fn a_block_repeated_three_or_more_times_is_one_flat_list() {
        // Regression: the third `template` used to nest the list (`[[a, b], c]`).
        for n in 2..=5 {
            let text: String = (0..n)
                .map(|i| format!("template {{ destination = \"f{i}\" }}\n"))
                .collect();
            let v = parse_to_json(&text).unwrap();
            let list = v["template"].as_array().unwrap();
            assert_eq!(list.len(), n, "{v}");
            for (i, t) in list.iter().enumerate() {
                assert_eq!(t["destination"], json!(format!("f{i}")), "{v}");
            }
        }
    }

    #[test]
    fn repeated_keys_collect_flat_and_lists_stay_values() {
        let v = parse_to_json("a = 1\na = 2\na = 3\n").unwrap();
        assert_eq!(v["a"], json!([1, 2, 3]));
        // A repeated key whose values are lists collects the lists, one per value.
        let v = parse_to_json("a = [1]\na = [2, 3]\na = [4]\n").unwrap();
        assert_eq!(v["a"], json!([[1], [2, 3], [4]]));
        // The first value alone is not wrapped.
        let v = parse_to_json("a = [1, 2]\n").unwrap();
        assert_eq!(v["a"], json!([1, 2]));
    }

    #[test]
    fn labelled_blocks_merge_and_repeated_labels_collect() {
        let v = parse_to_json(
            "listener \"tcp\" { a = 1 }\nlistener \"unix\" { b = 2 }\nlistener \"ws\" { c = 3 }\n",
        )
        .unwrap();
        assert_eq!(
            v["listener"],
            json!({"tcp": {"a": 1}, "unix": {"b": 2}, "ws": {"c": 3}})
        );
        // The same label twice cannot merge: the blocks are collected, then stay flat.
        let v = parse_to_json("x \"a\" { n = 1 }\nx \"a\" { n = 2 }\nx \"a\" { n = 3 }\n").unwrap();
        assert_eq!(
            v["x"],
            json!([{"a": {"n": 1}}, {"a": {"n": 2}}, {"a": {"n": 3}}])
        );
        // Once collected, a block with a new label joins the list instead of merging
        // into one of its members.
        let v = parse_to_json("x \"a\" { n = 1 }\nx \"a\" { n = 2 }\nx \"b\" { n = 3 }\n").unwrap();
        assert_eq!(
            v["x"],
            json!([{"a": {"n": 1}}, {"a": {"n": 2}}, {"b": {"n": 3}}])
        );
    }
}
