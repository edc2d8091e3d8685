//! Literal passwords out of a `connection_url` before it is shown or compared.

/// Whether a connection-string key names a password (`password`, `pwd`,
/// `sslpassword`, `passwd`, …), in any case and percent-encoding.
fn is_password_key(key: &str) -> bool {
    let key = percent_encoding::percent_decode_str(key.trim())
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    key.contains("password") || key.contains("passwd") || key == "pwd" || key == "pass"
}

/// Whether `s` is a libpq keyword/value string (`host=db password='x y' …`) rather than
/// a URL or a Go DSN: it starts with a keyword followed by `=`.
fn is_keyword_string(s: &str) -> bool {
    let t = s.trim_start();
    let key_len = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(t.len());
    key_len > 0 && t[key_len..].trim_start().starts_with('=')
}

const REDACTED: &str = "[redacted]";

/// A libpq keyword/value string with the value of every password-like keyword
/// replaced (quoted values with `\'` and `\\` escapes included).
fn redact_keywords(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    loop {
        let trimmed = rest.trim_start();
        out.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return out;
        }
        let Some(eq) = rest.find('=') else {
            out.push_str(rest);
            return out;
        };
        let key = &rest[..eq];
        out.push_str(&rest[..=eq]);
        rest = &rest[eq + 1..];
        let spaces = rest.len() - rest.trim_start().len();
        out.push_str(&rest[..spaces]);
        rest = &rest[spaces..];
        // The value: quoted up to the closing unescaped quote, else up to whitespace.
        let end = if rest.starts_with('\'') {
            let mut escaped = false;
            let mut end = rest.len();
            for (i, c) in rest.char_indices().skip(1) {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '\'' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            end
        } else {
            rest.find(char::is_whitespace).unwrap_or(rest.len())
        };
        let value = &rest[..end];
        if is_password_key(key) && value != "{{password}}" && value != "'{{password}}'" {
            out.push_str(REDACTED);
        } else {
            out.push_str(value);
        }
        rest = &rest[end..];
    }
}

/// `connection_url` with every literal password replaced, placeholders kept as
/// written: the URL's or Go DSN's user-info password (between `:` and `@`), the value of
/// any password-like query parameter (`?password=`, `&pwd=`, `sslpassword=`), and in a
/// libpq keyword/value string the value of any password-like keyword.
pub(super) fn redact_url(url: &str) -> String {
    if !url.contains("://") && is_keyword_string(url) {
        return redact_keywords(url);
    }
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = redact_userinfo(base);
    if let Some(q) = query {
        out.push('?');
        let (q, fragment) = match q.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (q, None),
        };
        let pairs: Vec<String> = q
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, v)) if is_password_key(k) && v != "{{password}}" => {
                    format!("{k}={REDACTED}")
                }
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&pairs.join("&"));
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(f);
        }
    }
    out
}

fn redact_userinfo(url: &str) -> String {
    let Some(at) = url.rfind('@') else {
        return url.to_owned();
    };
    let start = url.find("://").map_or(0, |i| i + 3);
    if at < start {
        return url.to_owned();
    }
    let userinfo = &url[start..at];
    match userinfo.split_once(':') {
        Some((_, pw)) if pw != "{{password}}" && !pw.is_empty() => {
            format!(
                "{}{}:{REDACTED}{}",
                &url[..start],
                &userinfo[..userinfo.len() - pw.len() - 1],
                &url[at..]
            )
        }
        _ => url.to_owned(),
    }
}
