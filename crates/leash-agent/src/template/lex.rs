//! Splits template text into text runs and actions (`{{ … }}`), applying the `{{-`/`-}}`
//! whitespace trimming, and tokenises the inside of each action.
//!
//! Go's rules, kept: a trim marker is `{{-` or `-}}` followed/preceded by a space; it
//! removes all whitespace (newlines included) on that side. `{{/* … */}}` is a comment.

use super::TemplateError;

/// A piece of template text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Piece {
    /// Literal text (already trimmed).
    Text(String),
    /// The tokens of one action and the line it starts on.
    Action(Vec<Tok>, usize),
}

/// A token inside an action.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    /// `.` alone.
    Dot,
    /// `.a.b` (field chain after the dot).
    Field(Vec<String>),
    /// `$name.a.b` (`$` alone is the root).
    Var(String, Vec<String>),
    /// A bare word: function or keyword.
    Ident(String),
    /// A string literal, unescaped.
    Str(String),
    /// A number literal.
    Num(serde_json::Number),
    /// `|`
    Pipe,
    /// `(`
    Open,
    /// `)`
    Close,
    /// `:=`
    Declare,
    /// `=`
    Assign,
    /// `,`
    Comma,
}

/// Splits `src` into pieces. `name` is used in error messages.
pub(crate) fn split(name: &str, src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut out: Vec<Piece> = Vec::new();
    let mut rest = src;
    let mut line = 1usize;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            push_text(&mut out, rest, trim_next, false);
            break;
        };
        let text = &rest[..open];
        let after = &rest[open + 2..];
        let trim_left = after.starts_with("- ")
            || after.starts_with("-\t")
            || after.starts_with("-\n")
            || after.starts_with("-\r");
        push_text(&mut out, text, trim_next, trim_left);
        line += text.matches('\n').count();
        let inner_start = if trim_left { 2 } else { 0 };
        let body = &after[inner_start..];
        let close = find_close(body)
            .ok_or_else(|| TemplateError::syntax(name, line, "unclosed action: missing \"}}\""))?;
        let mut inner = &body[..close];
        let trim_right = inner.ends_with(" -")
            || inner.ends_with("\t-")
            || inner.ends_with("\n-")
            || inner.ends_with("\r-");
        if trim_right {
            inner = &inner[..inner.len() - 1];
        }
        let action_line = line;
        line += inner.matches('\n').count();
        let trimmed = inner.trim();
        if !(trimmed.starts_with("/*") && trimmed.ends_with("*/")) {
            let toks = tokenise(name, action_line, inner)?;
            if toks.is_empty() {
                return Err(TemplateError::syntax(name, action_line, "empty action"));
            }
            out.push(Piece::Action(toks, action_line));
        }
        trim_next = trim_right;
        rest = &body[close + 2..];
        if trim_right {
            // Count the newlines the trim will drop so line numbers stay right.
            let ws = rest.len() - rest.trim_start().len();
            line += rest[..ws].matches('\n').count();
            rest = &rest[ws..];
            trim_next = false;
        }
    }
    Ok(out)
}

fn push_text(out: &mut Vec<Piece>, text: &str, trim_start: bool, trim_end: bool) {
    let mut t = text;
    if trim_start {
        t = t.trim_start();
    }
    if trim_end {
        t = t.trim_end();
    }
    if !t.is_empty() {
        out.push(Piece::Text(t.to_owned()));
    }
}

/// Position of the `}}` closing an action, skipping string literals.
fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn tokenise(name: &str, line: usize, s: &str) -> Result<Vec<Tok>, TemplateError> {
    let chars: Vec<char> = s.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    let err = |m: String| TemplateError::syntax(name, line, &m);
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            '(' => {
                toks.push(Tok::Open);
                i += 1;
            }
            ')' => {
                toks.push(Tok::Close);
                i += 1;
            }
            ',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                toks.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            '.' if !chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) => {
                let (fields, n) = field_chain(&chars[i..]);
                i += n;
                toks.push(if fields.is_empty() {
                    Tok::Dot
                } else {
                    Tok::Field(fields)
                });
            }
            '$' => {
                let mut j = i + 1;
                while j < chars.len() && is_ident_char(chars[j]) {
                    j += 1;
                }
                let var: String = chars[i + 1..j].iter().collect();
                let (fields, n) = if chars.get(j) == Some(&'.') {
                    field_chain(&chars[j..])
                } else {
                    (Vec::new(), 0)
                };
                toks.push(Tok::Var(var, fields));
                i = j + n;
            }
            '"' => {
                let mut v = String::new();
                let mut j = i + 1;
                loop {
                    let Some(&ch) = chars.get(j) else {
                        return Err(err("unterminated string literal".into()));
                    };
                    match ch {
                        '"' => break,
                        '\\' => {
                            let esc = chars.get(j + 1).copied();
                            v.push(match esc {
                                Some('n') => '\n',
                                Some('t') => '\t',
                                Some('r') => '\r',
                                Some('\\') => '\\',
                                Some('"') => '"',
                                other => {
                                    return Err(err(format!(
                                        "unsupported escape \\{} in string literal",
                                        other.map(String::from).unwrap_or_default()
                                    )));
                                }
                            });
                            j += 2;
                        }
                        ch => {
                            v.push(ch);
                            j += 1;
                        }
                    }
                }
                toks.push(Tok::Str(v));
                i = j + 1;
            }
            '`' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '`' {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err(err("unterminated raw string".into()));
                }
                toks.push(Tok::Str(chars[i + 1..j].iter().collect()));
                i = j + 1;
            }
            c if c.is_ascii_digit() || c == '-' || c == '+' || c == '.' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '.') {
                    j += 1;
                }
                let text: String = chars[i..j].iter().collect();
                let num = text
                    .parse::<i64>()
                    .ok()
                    .map(serde_json::Number::from)
                    .or_else(|| {
                        text.parse::<f64>()
                            .ok()
                            .and_then(serde_json::Number::from_f64)
                    })
                    .ok_or_else(|| err(format!("bad number {text:?}")))?;
                toks.push(Tok::Num(num));
                i = j;
            }
            c if is_ident_char(c) => {
                let mut j = i;
                while j < chars.len() && is_ident_char(chars[j]) {
                    j += 1;
                }
                toks.push(Tok::Ident(chars[i..j].iter().collect()));
                i = j;
            }
            other => return Err(err(format!("unexpected character {other:?} in action"))),
        }
    }
    Ok(toks)
}

/// `.a.b.c` starting at a dot → (["a","b","c"], chars consumed).
fn field_chain(chars: &[char]) -> (Vec<String>, usize) {
    let mut fields = Vec::new();
    let mut i = 0;
    while chars.get(i) == Some(&'.') {
        let mut j = i + 1;
        while j < chars.len() && is_ident_char(chars[j]) {
            j += 1;
        }
        if j == i + 1 {
            // A lone dot.
            if fields.is_empty() {
                i += 1;
            }
            break;
        }
        fields.push(chars[i + 1..j].iter().collect());
        i = j;
    }
    (fields, i)
}
