//! Names of the objects a generated Kubernetes credential creates (`name_template`).
//!
//! A small subset of Vault's Go templates: literal text and the actions
//! `{{.DisplayName}}`, `{{.RoleName}}`, `{{unix_time}}` and `{{random N}}`, each
//! optionally piped through `truncate N` and `lowercase` (`{{.RoleName | truncate 8}}`).
//! Anything else is refused when the role is written. The result is made a valid
//! Kubernetes name (DNS-1123: lower-case letters, digits and `-`, at most 63 characters,
//! starting and ending with a letter or digit).

use leash_backend::CoreError;
use leash_types::random;

/// The default template: `v-<display>-<role>-<unix time>-<random>` (Vault's shape).
pub(crate) const DEFAULT_TEMPLATE: &str =
    "v-{{.DisplayName | truncate 8}}-{{.RoleName | truncate 8}}-{{unix_time}}-{{random 20}}";

/// Longest Kubernetes object name used.
const MAX_LEN: usize = 63;

/// What a template is rendered with.
pub(crate) struct Vars<'a> {
    pub(crate) display_name: &'a str,
    pub(crate) role_name: &'a str,
    pub(crate) unix_time: i64,
}

/// Renders `template`; `Err` names what is wrong with it (never leaks anything secret:
/// templates are operator text).
pub(crate) fn render(template: &str, vars: &Vars<'_>) -> Result<String, CoreError> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| {
            CoreError::invalid("name_template: a \"{{\" without its closing \"}}\"")
        })?;
        out.push_str(&action(after[..end].trim(), vars)?);
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(dns_name(&out))
}

fn action(text: &str, vars: &Vars<'_>) -> Result<String, CoreError> {
    let mut parts = text.split('|').map(str::trim);
    let head = parts.next().unwrap_or("");
    let mut value = match head.split_whitespace().collect::<Vec<_>>().as_slice() {
        [".DisplayName"] => vars.display_name.to_owned(),
        [".RoleName"] => vars.role_name.to_owned(),
        ["unix_time"] => vars.unix_time.to_string(),
        ["random", n] => {
            let n: usize = n
                .parse()
                .ok()
                .filter(|n| (1..=32).contains(n))
                .ok_or_else(|| {
                    CoreError::invalid("name_template: random takes a length from 1 to 32")
                })?;
            random::base62(n).to_ascii_lowercase()
        }
        _ => {
            return Err(CoreError::invalid(format!(
                "name_template: unsupported action {text:?} (use .DisplayName, .RoleName, unix_time, random N, with | truncate N and | lowercase)"
            )));
        }
    };
    for pipe in parts {
        match pipe.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["lowercase"] => value = value.to_lowercase(),
            ["truncate", n] => {
                let n: usize = n
                    .parse()
                    .map_err(|_| CoreError::invalid("name_template: truncate takes a number"))?;
                value = value.chars().take(n).collect();
            }
            _ => {
                return Err(CoreError::invalid(format!(
                    "name_template: unsupported pipe {pipe:?} (truncate N, lowercase)"
                )));
            }
        }
    }
    Ok(value)
}

/// `s` as a DNS-1123 name: lower case, other characters as `-`, at most 63 characters,
/// letters or digits at both ends.
fn dns_name(s: &str) -> String {
    let mapped: String = s
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .take(MAX_LEN)
        .collect();
    mapped.trim_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars<'static> {
        Vars {
            display_name: "kubernetes-Agents.Summariser",
            role_name: "pod_reader",
            unix_time: 1_800_000_000,
        }
    }

    #[test]
    fn the_default_template_makes_valid_unique_names() {
        let a = render(DEFAULT_TEMPLATE, &vars()).unwrap();
        let b = render(DEFAULT_TEMPLATE, &vars()).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("v-kubernet-pod-read-1800000000-"), "{a}");
        assert!(a.len() <= 63);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }

    #[test]
    fn names_are_cut_and_trimmed_and_bad_templates_refused() {
        let long = render(&"x".repeat(100), &vars()).unwrap();
        assert_eq!(long.len(), 63);
        assert_eq!(render("-{{.RoleName}}_", &vars()).unwrap(), "pod-reader");
        assert!(render("{{.Password}}", &vars()).is_err());
        assert!(render("{{random 99}}", &vars()).is_err());
        assert!(render("{{.RoleName", &vars()).is_err());
        assert!(render("{{.RoleName | upper}}", &vars()).is_err());
    }
}
