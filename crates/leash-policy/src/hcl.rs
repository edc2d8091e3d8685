//! HCL1 (and JSON) text as a JSON value, for other Vault-shaped files: the server and
//! agent configuration. Same dialect and limits as policies (see `syntax`).
//!
//! Mapping: `key = value` → `"key": value`; a block `a "b" { … }` → `"a": {"b": {…}}`;
//! blocks of one kind with different labels merge (`listener "tcp"` and `listener "unix"`
//! give one object with two keys); any other repeated key collects its values in a list.

use serde_json::{Map, Value};

use crate::error::PolicyError;
use crate::syntax::{self, Item, Node, NodeKind};

/// Parses HCL1 or JSON text into a JSON object.
pub fn parse_to_json(text: &str) -> Result<Value, PolicyError> {
    let items = syntax::parse(text).map_err(|e| PolicyError::Syntax {
        line: e.pos.line,
        column: e.pos.column,
        message: e.message,
    })?;
    Ok(items_to_json(&items))
}

fn items_to_json(items: &[Item]) -> Value {
    let mut m = Map::new();
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
                        if b.keys().all(|k| !a.contains_key(k)) =>
                    {
                        a.extend(b)
                    }
                    (e, v) => {
                        let prev = std::mem::take(e);
                        *e = Value::Array(vec![prev, v]);
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
        assert!(e.line().is_some());
    }
}
