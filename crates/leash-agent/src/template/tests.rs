//! Every construct of the supported subset, rendered against fixed data.

use serde_json::{Value, json};

use super::*;

fn db() -> Value {
    let data = json!({"username": "v-tok-ro-abc", "password": "p@ss\"word"});
    secret_value(
        data.as_object().unwrap(),
        "database/creds/agent-readonly/XYZ",
        900,
        true,
    )
}

fn kv() -> Value {
    let data = json!({"data": {"api_key": "k1", "list": ["a", "b"], "n": 0},
                      "metadata": {"version": 3}});
    secret_value(data.as_object().unwrap(), "", 0, false)
}

fn render_with(text: &str, missing_is_error: bool) -> Result<String, TemplateError> {
    let t = Template::parse("test.tmpl", text)?;
    let secret = |r: &SecretRequest| -> Option<Value> {
        match (r.path.as_str(), r.params.is_empty()) {
            ("database/creds/agent-readonly", true) => Some(db()),
            ("secret/data/app", true) => Some(kv()),
            ("pki/issue/web", false) => Some(secret_value(
                json!({"cn": r.params.get("common_name").cloned().unwrap_or_default()})
                    .as_object()
                    .unwrap(),
                "pki/issue/web/1",
                60,
                false,
            )),
            _ => None,
        }
    };
    let env = |k: &str| (k == "HOME_X").then(|| "/home/x".to_owned());
    t.render(&RenderEnv {
        secret: &secret,
        env: &env,
        error_on_missing_key: missing_is_error,
    })
}

fn render(text: &str) -> String {
    render_with(text, true).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_issue_template_renders_valid_json() {
    let out = render(
        r#"{{- with secret "database/creds/agent-readonly" -}}
{
  "username": "{{ .Data.username }}",
  "password": "{{ .Data.password | toJSON }}",
  "ttl_seconds": {{ .Data.lease_duration }}
}
{{- end -}}"#,
    );
    assert!(out.starts_with('{') && out.ends_with('}'), "{out:?}");
    assert!(out.contains("\"ttl_seconds\": 900"), "{out}");
    assert!(out.contains("v-tok-ro-abc"));
}

#[test]
fn lease_fields_and_kv2() {
    assert_eq!(
        render(
            r#"{{ with secret "database/creds/agent-readonly" }}{{ .LeaseID }} {{ .LeaseDuration }} {{ .Renewable }}{{ end }}"#
        ),
        "database/creds/agent-readonly/XYZ 900 true"
    );
    assert_eq!(
        render(
            r#"{{ with secret "secret/data/app" }}{{ .Data.data.api_key }}/{{ .Data.metadata.version }}{{ end }}"#
        ),
        "k1/3"
    );
}

#[test]
fn secret_with_write_parameters() {
    let t = Template::parse("t", r#"{{ with secret "pki/issue/web" "common_name=a.example" "ttl=1h" }}{{ .Data.cn }}{{ end }}"#).unwrap();
    assert_eq!(t.secrets().len(), 1);
    assert_eq!(t.secrets()[0].params.get("ttl").unwrap(), "1h");
    assert_eq!(
        t.secrets()[0].key(),
        "pki/issue/web?common_name=a.example&ttl=1h"
    );
    assert_eq!(
        render(
            r#"{{ with secret "pki/issue/web" "common_name=a.example" }}{{ .Data.cn }}{{ end }}"#
        ),
        "a.example"
    );
    // The secret can also be bound to a variable and used in a pipeline.
    assert_eq!(
        render(r#"{{ $s := secret "database/creds/agent-readonly" }}{{ $s.Data.username }}"#),
        "v-tok-ro-abc"
    );
    let e = Template::parse("t", r#"{{ secret .x }}"#).unwrap_err();
    assert!(e.to_string().contains("string literals"), "{e}");
    let e = Template::parse("t", r#"{{ secret "p" "novalue" }}"#).unwrap_err();
    assert!(e.to_string().contains("key=value"), "{e}");
}

#[test]
fn range_over_lists_and_maps_with_variables_and_else() {
    assert_eq!(
        render(
            r#"{{ with secret "secret/data/app" }}{{ range .Data.data.list }}[{{ . }}]{{ end }}{{ end }}"#
        ),
        "[a][b]"
    );
    assert_eq!(
        render(
            r#"{{ with secret "secret/data/app" }}{{ range $i, $v := .Data.data.list }}{{ $i }}={{ $v }};{{ end }}{{ end }}"#
        ),
        "0=a;1=b;"
    );
    assert_eq!(
        render(
            r#"{{ with secret "secret/data/app" }}{{ range $k, $v := .Data.metadata }}{{ $k }}:{{ $v }}{{ end }}{{ end }}"#
        ),
        "version:3"
    );
    assert_eq!(
        render(
            r#"{{ range $x := (index (secret "secret/data/app") "Warnings") }}x{{ else }}none{{ end }}"#
        ),
        "none"
    );
}

#[test]
fn if_else_if_else_and_truth() {
    let t = r#"{{ with secret "secret/data/app" }}{{ if .Data.data.n }}yes{{ else if eq .Data.data.api_key "k1" }}k1{{ else }}no{{ end }}{{ end }}"#;
    assert_eq!(render(t), "k1");
    assert_eq!(render(r#"{{ if "" }}a{{ else }}b{{ end }}"#), "b");
    assert_eq!(render(r#"{{ if not 0 }}a{{ end }}"#), "a");
    assert_eq!(
        render(r#"{{ if and 1 "x" }}a{{ end }}{{ if or 0 "" }}b{{ end }}"#),
        "a"
    );
    assert_eq!(render(r#"{{ if ne 1 2 }}ne{{ end }}"#), "ne");
    assert_eq!(render(r#"{{ with "" }}x{{ else }}empty{{ end }}"#), "empty");
}

#[test]
fn trimming_markers() {
    assert_eq!(render("a  \n {{- \"b\" -}} \n  c"), "abc");
    assert_eq!(render("a {{ \"b\" }} c"), "a b c");
    assert_eq!(render("a\n{{- /* comment */ -}}\nb"), "ab");
    // A minus sign without a space is a number, not a trim marker.
    assert_eq!(render("a {{-3}} b"), "a -3 b");
}

#[test]
fn json_functions() {
    let out = render(r#"{{ with secret "secret/data/app" }}{{ .Data.data | toJSON }}{{ end }}"#);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["api_key"], "k1");
    let out =
        render(r#"{{ with secret "secret/data/app" }}{{ toJSONPretty .Data.data }}{{ end }}"#);
    assert!(out.contains("\n  \"api_key\": \"k1\""), "{out}");
    // toJSON of a string escapes quotes, so it can sit inside JSON.
    assert_eq!(
        render(
            r#"{{ with secret "database/creds/agent-readonly" }}{{ .Data.password | toJSON }}{{ end }}"#
        ),
        r#""p@ss\"word""#
    );
}

#[test]
fn base64_env_file_printf_len_index() {
    assert_eq!(render(r#"{{ base64Encode "hello" }}"#), "aGVsbG8=");
    assert_eq!(render(r#"{{ "aGVsbG8=" | base64Decode }}"#), "hello");
    assert!(render_with(r#"{{ base64Decode "!!" }}"#, true).is_err());
    assert_eq!(render(r#"{{ env "HOME_X" }}|{{ env "NOPE" }}"#), "/home/x|");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.txt");
    std::fs::write(&p, "from-file").unwrap();
    assert_eq!(
        render(&format!("{{{{ file {:?} }}}}", p.to_str().unwrap())),
        "from-file"
    );
    let e = render_with(r#"{{ file "/nonexistent/x" }}"#, true).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/x"), "{e}");
    assert_eq!(render(r#"{{ printf "%s-%d-%q" "a" 3 "b" }}"#), "a-3-\"b\"");
    assert_eq!(
        render(
            r#"{{ with secret "secret/data/app" }}{{ len .Data.data.list }}{{ index .Data.data.list 1 }}{{ index .Data.data "api_key" }}{{ end }}"#
        ),
        "2bk1"
    );
}

#[test]
fn missing_keys_name_the_key_and_the_template() {
    let e = render_with(
        r#"{{ with secret "database/creds/agent-readonly" }}
{{ .Data.usernme }}{{ end }}"#,
        true,
    )
    .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("\"usernme\"") && msg.contains("test.tmpl") && msg.contains("line 2"),
        "{msg}"
    );
    assert!(matches!(e, TemplateError::MissingKey { ref key, .. } if key == "usernme"));
    let e = render_with(r#"{{ index (secret "secret/data/app") "Nope" }}"#, true).unwrap_err();
    assert!(e.to_string().contains("Nope"), "{e}");
    // Not an error when turned off, and never `<no value>`.
    assert_eq!(
        render_with(
            r#"[{{ with secret "database/creds/agent-readonly" }}{{ .Data.x }}{{ end }}]"#,
            false
        )
        .unwrap(),
        "[]"
    );
}

#[test]
fn syntax_errors_say_where() {
    for (text, want) in [
        ("{{ if 1 }}x", "missing {{end}}"),
        ("{{ end }}", "unexpected {{end}}"),
        ("a {{ .x ", "unclosed action"),
        ("{{ nope 1 }}", "\"nope\" not defined"),
        ("\n\n{{ \"x }}", "line 3"),
        ("{{ define \"x\" }}{{ end }}", "not supported"),
        ("{{ else }}", "unexpected {{else}}"),
        ("{{ (1 }}", "unclosed"),
        ("{{ 1 | }}", "missing command"),
    ] {
        let e = Template::parse("t.ctmpl", text).unwrap_err();
        let s = e.to_string();
        assert!(s.contains(want) && s.contains("t.ctmpl"), "{text:?}: {s}");
    }
}

#[test]
fn variables_and_assignment() {
    assert_eq!(render(r#"{{ $a := "x" }}{{ $a = "y" }}{{ $a }}"#), "y");
    let e = render_with(r#"{{ $b }}"#, true).unwrap_err();
    assert!(e.to_string().contains("undefined variable $b"), "{e}");
    // A variable declared inside a block is gone after its end.
    let e = render_with(r#"{{ if 1 }}{{ $c := 1 }}{{ end }}{{ $c }}"#, true).unwrap_err();
    assert!(e.to_string().contains("$c"), "{e}");
}

#[test]
fn unfetched_secret_is_an_error() {
    let e = render_with(r#"{{ with secret "other/path" }}x{{ end }}"#, true).unwrap_err();
    assert!(e.to_string().contains("other/path"), "{e}");
}
