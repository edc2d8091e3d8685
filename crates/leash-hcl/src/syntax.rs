//! The parser: HCL version 1 (the dialect Vault parses policies and configuration with)
//! and JSON, into one small tree where every key and value knows its line and column.
//!
//! Why not an HCL2 parser: Vault policies are HCL1, and HCL1 accepts forms HCL2 rejects
//! that appear in Vault's own documentation, e.g. `control_group = { factor "x" { … } }`
//! (a block inside an object) or `{ a = 1 b = 2 }` on one line (no separators).
//!
//! Invariants:
//! * Every syntax error carries a one-based line and column (in characters).
//! * A multi-key item `k1 "k2" "k3" { … }` is normalised into nested single-key items
//!   `k1 = { k2 = { k3 = { … } } }`, HCL1's own reading of labels; JSON spells labels
//!   that way already, so both inputs decode through the same code.
//! * Input nesting is bounded ([`MAX_DEPTH`]) so hostile text cannot exhaust the stack.
//!
//! Not here: what keys mean (the policy decoder and the config readers), HCL2
//! expressions, `${…}` interpolation.

use serde_json::Number;

/// Deepest nesting of lists and objects accepted.
pub const MAX_DEPTH: usize = 64;

/// A one-based position in the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    /// One-based line.
    pub line: usize,
    /// One-based column, in characters.
    pub column: usize,
}

/// A syntax error at a position. The message names the offending token's kind, never
/// more of the input than that token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {}, column {}: {message}", pos.line, pos.column)]
pub struct SyntaxError {
    /// Where the offending character is.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
}

/// A value with the position where it starts.
#[derive(Clone, Debug)]
pub struct Node {
    /// Where the value starts.
    pub pos: Pos,
    /// The value.
    pub kind: NodeKind,
}

/// The kinds of value.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A string (quoted or heredoc), unescaped.
    Str(String),
    /// A number, as JSON would hold it.
    Number(Number),
    /// `true` or `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// `[ … ]`.
    List(Vec<Node>),
    /// `{ … }` or a block body, items in input order (keys may repeat).
    Object(Vec<Item>),
}

impl NodeKind {
    /// A short name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Str(_) => "a string",
            NodeKind::Number(_) => "a number",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Null => "null",
            NodeKind::List(_) => "a list",
            NodeKind::Object(_) => "an object",
        }
    }
}

/// `key = value` or `key { … }` (always a single key after normalisation).
#[derive(Clone, Debug)]
pub struct Item {
    /// The key.
    pub key: String,
    /// Where the key starts.
    pub key_pos: Pos,
    /// Its value.
    pub value: Node,
}

/// Parses text: JSON when the first non-blank character is `{`, HCL1 otherwise.
/// Returns the top-level items.
pub fn parse(text: &str) -> Result<Vec<Item>, SyntaxError> {
    let mut p = Parser::new(text)?;
    let is_json = matches!(p.peek().tok, Tok::LBrace);
    let items = if is_json {
        let node = p.value(0)?;
        match node.kind {
            NodeKind::Object(items) => items,
            _ => return Err(err(node.pos, "a JSON document must be an object")),
        }
    } else {
        p.items(0, true)?
    };
    let next = p.peek();
    if !matches!(next.tok, Tok::Eof) {
        return Err(err(next.pos, format!("unexpected {}", next.tok.describe())));
    }
    Ok(items)
}

fn err(pos: Pos, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        pos,
        message: message.into(),
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Number(Number),
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Assign,
    Comma,
    Eof,
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("identifier {s:?}"),
            Tok::Str(_) => "string".to_owned(),
            Tok::Number(_) => "number".to_owned(),
            Tok::LBrace => "'{'".to_owned(),
            Tok::RBrace => "'}'".to_owned(),
            Tok::LBracket => "'['".to_owned(),
            Tok::RBracket => "']'".to_owned(),
            Tok::Assign => "'='".to_owned(),
            Tok::Comma => "','".to_owned(),
            Tok::Eof => "end of input".to_owned(),
        }
    }
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    pos: Pos,
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
}

impl Parser {
    fn new(text: &str) -> Result<Parser, SyntaxError> {
        Ok(Parser {
            tokens: Lexer::new(text).run()?,
            at: 0,
        })
    }

    fn peek(&self) -> Token {
        self.tokens.get(self.at).cloned().unwrap_or(Token {
            tok: Tok::Eof,
            pos: self
                .tokens
                .last()
                .map_or(Pos { line: 1, column: 1 }, |t| t.pos),
        })
    }

    fn bump(&mut self) -> Token {
        let t = self.peek();
        if self.at < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    /// Items until `}` (or end of input at top level).
    fn items(&mut self, depth: usize, top: bool) -> Result<Vec<Item>, SyntaxError> {
        let mut items = Vec::new();
        loop {
            let t = self.peek();
            match &t.tok {
                Tok::Eof if top => return Ok(items),
                Tok::Eof => return Err(err(t.pos, "unclosed '{': expected '}'")),
                Tok::RBrace if !top => return Ok(items),
                Tok::Comma => {
                    self.bump();
                }
                Tok::Ident(_) | Tok::Str(_) => items.push(self.item(depth)?),
                other => {
                    return Err(err(
                        t.pos,
                        format!("expected a key, found {}", other.describe()),
                    ));
                }
            }
        }
    }

    fn item(&mut self, depth: usize) -> Result<Item, SyntaxError> {
        let mut keys = Vec::new();
        loop {
            let t = self.peek();
            match t.tok {
                Tok::Ident(s) | Tok::Str(s) => {
                    self.bump();
                    keys.push((s, t.pos));
                }
                _ => break,
            }
        }
        let t = self.peek();
        let value = match t.tok {
            Tok::Assign => {
                self.bump();
                self.value(depth)?
            }
            Tok::LBrace => self.value(depth)?,
            other => {
                let key = keys.last().map_or("", |(k, _)| k.as_str());
                return Err(err(
                    t.pos,
                    format!(
                        "expected '=' or '{{' after key {key:?}, found {}",
                        other.describe()
                    ),
                ));
            }
        };
        // Fold labels inwards: k1 "k2" { v } becomes k1 = { k2 = { v } }.
        let mut value = value;
        while keys.len() > 1 {
            let Some((key, key_pos)) = keys.pop() else {
                break;
            };
            value = Node {
                pos: key_pos,
                kind: NodeKind::Object(vec![Item {
                    key,
                    key_pos,
                    value,
                }]),
            };
        }
        let Some((key, key_pos)) = keys.pop() else {
            return Err(err(t.pos, "expected a key"));
        };
        Ok(Item {
            key,
            key_pos,
            value,
        })
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        let t = self.bump();
        if depth >= MAX_DEPTH {
            return Err(err(
                t.pos,
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        let kind = match t.tok {
            Tok::Str(s) => NodeKind::Str(s),
            Tok::Number(n) => NodeKind::Number(n),
            Tok::Ident(s) if s == "true" => NodeKind::Bool(true),
            Tok::Ident(s) if s == "false" => NodeKind::Bool(false),
            Tok::Ident(s) if s == "null" => NodeKind::Null,
            Tok::LBrace => {
                let items = self.items(depth + 1, false)?;
                self.bump(); // the '}' that ended the items
                NodeKind::Object(items)
            }
            Tok::LBracket => NodeKind::List(self.list(depth + 1)?),
            other => {
                return Err(err(
                    t.pos,
                    format!("expected a value, found {}", other.describe()),
                ));
            }
        };
        Ok(Node { pos: t.pos, kind })
    }

    fn list(&mut self, depth: usize) -> Result<Vec<Node>, SyntaxError> {
        let mut out = Vec::new();
        loop {
            let t = self.peek();
            match t.tok {
                Tok::RBracket => {
                    self.bump();
                    return Ok(out);
                }
                Tok::Eof => return Err(err(t.pos, "unclosed '[': expected ']'")),
                _ => out.push(self.value(depth)?),
            }
            let t = self.peek();
            match t.tok {
                Tok::Comma => {
                    self.bump();
                }
                Tok::RBracket => {}
                other => {
                    return Err(err(
                        t.pos,
                        format!("expected ',' or ']' in list, found {}", other.describe()),
                    ));
                }
            }
        }
    }
}

struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
    out: Vec<Token>,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Lexer<'a> {
        Lexer {
            chars: text.chars().peekable(),
            line: 1,
            column: 1,
            out: Vec::new(),
        }
    }

    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn next_char(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn peek_char(&mut self) -> Option<char> {
        self.chars.peek().copied()
    }

    fn push(&mut self, tok: Tok, pos: Pos) {
        self.out.push(Token { tok, pos });
    }

    fn run(mut self) -> Result<Vec<Token>, SyntaxError> {
        // A byte-order mark is not content.
        if self.peek_char() == Some('\u{feff}') {
            self.chars.next();
        }
        while let Some(c) = self.peek_char() {
            let pos = self.pos();
            match c {
                ' ' | '\t' | '\r' | '\n' => {
                    self.next_char();
                }
                '#' => self.line_comment(),
                '/' => {
                    self.next_char();
                    match self.next_char() {
                        Some('/') => self.line_comment(),
                        Some('*') => self.block_comment(pos)?,
                        _ => return Err(err(pos, "unexpected '/'")),
                    }
                }
                '{' | '}' | '[' | ']' | '=' | ':' | ',' => {
                    self.next_char();
                    let tok = match c {
                        '{' => Tok::LBrace,
                        '}' => Tok::RBrace,
                        '[' => Tok::LBracket,
                        ']' => Tok::RBracket,
                        ',' => Tok::Comma,
                        _ => Tok::Assign,
                    };
                    self.push(tok, pos);
                }
                '"' => {
                    self.next_char();
                    let s = self.string(pos)?;
                    self.push(Tok::Str(s), pos);
                }
                '<' => {
                    let s = self.heredoc(pos)?;
                    self.push(Tok::Str(s), pos);
                }
                c if c == '-' || c.is_ascii_digit() => {
                    let n = self.number(pos)?;
                    self.push(Tok::Number(n), pos);
                }
                c if c.is_alphabetic() || c == '_' => {
                    let mut s = String::new();
                    while let Some(c) = self.peek_char() {
                        if c.is_alphanumeric() || matches!(c, '_' | '-' | '.') {
                            s.push(c);
                            self.next_char();
                        } else {
                            break;
                        }
                    }
                    self.push(Tok::Ident(s), pos);
                }
                other => return Err(err(pos, format!("unexpected character {other:?}"))),
            }
        }
        let end = self.pos();
        self.push(Tok::Eof, end);
        Ok(self.out)
    }

    fn line_comment(&mut self) {
        while let Some(c) = self.peek_char() {
            if c == '\n' {
                break;
            }
            self.next_char();
        }
    }

    fn block_comment(&mut self, start: Pos) -> Result<(), SyntaxError> {
        let mut prev = '\0';
        while let Some(c) = self.next_char() {
            if prev == '*' && c == '/' {
                return Ok(());
            }
            prev = c;
        }
        Err(err(start, "unterminated comment: expected '*/'"))
    }

    fn string(&mut self, start: Pos) -> Result<String, SyntaxError> {
        let mut s = String::new();
        loop {
            let pos = self.pos();
            match self.next_char() {
                None | Some('\n') => return Err(err(start, "unterminated string")),
                Some('"') => return Ok(s),
                Some('\\') => {
                    let c = match self.next_char() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('n') => '\n',
                        Some('t') => '\t',
                        Some('r') => '\r',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('u') => self.unicode_escape(pos, 4)?,
                        Some('U') => self.unicode_escape(pos, 8)?,
                        Some(other) => {
                            return Err(err(pos, format!("invalid escape sequence \\{other}")));
                        }
                        None => return Err(err(start, "unterminated string")),
                    };
                    s.push(c);
                }
                Some(c) => s.push(c),
            }
        }
    }

    fn hex(&mut self, pos: Pos, digits: usize) -> Result<u32, SyntaxError> {
        let mut v: u32 = 0;
        for _ in 0..digits {
            let d = self
                .next_char()
                .and_then(|c| c.to_digit(16))
                .ok_or_else(|| err(pos, "invalid unicode escape"))?;
            v = v.wrapping_mul(16).wrapping_add(d);
        }
        Ok(v)
    }

    fn unicode_escape(&mut self, pos: Pos, digits: usize) -> Result<char, SyntaxError> {
        let mut v = self.hex(pos, digits)?;
        if digits == 4 && (0xD800..0xDC00).contains(&v) {
            // A UTF-16 surrogate pair, as JSON writes characters outside the BMP.
            if self.next_char() != Some('\\') || self.next_char() != Some('u') {
                return Err(err(pos, "unpaired surrogate in unicode escape"));
            }
            let low = self.hex(pos, 4)?;
            if !(0xDC00..0xE000).contains(&low) {
                return Err(err(pos, "unpaired surrogate in unicode escape"));
            }
            v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00);
        }
        char::from_u32(v).ok_or_else(|| err(pos, "invalid unicode escape"))
    }

    fn heredoc(&mut self, start: Pos) -> Result<String, SyntaxError> {
        self.next_char();
        if self.next_char() != Some('<') {
            return Err(err(start, "unexpected '<'"));
        }
        let indented = self.peek_char() == Some('-');
        if indented {
            self.next_char();
        }
        let mut marker = String::new();
        while let Some(c) = self.peek_char() {
            if c == '\n' || c == '\r' {
                break;
            }
            marker.push(c);
            self.next_char();
        }
        let marker = marker.trim().to_owned();
        if marker.is_empty() || !marker.chars().all(|c| c.is_alphanumeric() || c == '_') {
            return Err(err(start, "a heredoc needs an identifier after '<<'"));
        }
        self.line_comment();
        self.next_char();
        let mut lines: Vec<String> = Vec::new();
        loop {
            if self.peek_char().is_none() {
                return Err(err(
                    start,
                    format!("unterminated heredoc: expected {marker:?}"),
                ));
            }
            let mut line = String::new();
            while let Some(c) = self.peek_char() {
                if c == '\n' {
                    break;
                }
                line.push(c);
                self.next_char();
            }
            let trimmed = line.trim_end_matches('\r');
            let is_end = if indented {
                trimmed.trim() == marker
            } else {
                trimmed == marker
            };
            if is_end {
                break;
            }
            lines.push(trimmed.to_owned());
            self.next_char();
        }
        if indented {
            // Only ASCII blanks count as indentation, so cuts stay on char boundaries.
            let lead = |l: &str| l.bytes().take_while(|b| *b == b' ' || *b == b'\t').count();
            let indent = lines
                .iter()
                .filter(|l| !l.trim().is_empty())
                .map(|l| lead(l))
                .min()
                .unwrap_or(0);
            for l in &mut lines {
                let cut = indent.min(lead(l));
                l.replace_range(..cut, "");
            }
        }
        let mut s = lines.join("\n");
        s.push('\n');
        Ok(s)
    }

    fn number(&mut self, start: Pos) -> Result<Number, SyntaxError> {
        let mut s = String::new();
        while let Some(c) = self.peek_char() {
            if c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E') {
                s.push(c);
                self.next_char();
            } else {
                break;
            }
        }
        let invalid = || err(start, format!("invalid number {s:?}"));
        let n = serde_json::from_str::<Number>(&s).map_err(|_| invalid())?;
        if !n.is_f64() {
            return Ok(n);
        }
        // serde_json's default float parser is fast but not always correctly rounded, so
        // the same value printed and read again could come back different; the
        // standard library's is exact (its grammar is wider, checked above).
        s.parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .ok_or_else(invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top(text: &str) -> Vec<Item> {
        parse(text).unwrap()
    }

    fn number(text: &str) -> Number {
        match top(&format!("n = {text}")).remove(0).value.kind {
            NodeKind::Number(n) => n,
            other => panic!("{}", other.type_name()),
        }
    }

    #[test]
    fn numbers_are_read_exactly_and_read_back_as_themselves() {
        // Found by the `hcl` fuzz target: a float printed and read again changed.
        for text in [
            "855555555508220000000000000001906806292",
            "8.5555555550822e38",
            "0.1",
            "1e-7",
            "-2.5E+3",
        ] {
            let n = number(text);
            let want: f64 = text.parse().unwrap();
            assert_eq!(n.as_f64(), Some(want), "{text}");
            assert_eq!(number(&n.to_string()), n, "{text} -> {n}");
        }
        assert_eq!(number("42").as_u64(), Some(42));
        assert_eq!(number("-7").as_i64(), Some(-7));
        assert_eq!(number("18446744073709551615").as_u64(), Some(u64::MAX));
    }

    #[test]
    fn labels_fold_into_nested_objects() {
        let items = top("path \"a/*\" { capabilities = [\"read\",] }");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key, "path");
        let NodeKind::Object(inner) = &items[0].value.kind else {
            panic!("object")
        };
        assert_eq!(inner[0].key, "a/*");
        assert_eq!(inner[0].key_pos, Pos { line: 1, column: 6 });
    }

    #[test]
    fn hcl1_objects_need_no_separators_and_may_hold_blocks() {
        let text = "path \"a\" { control_group = { ttl = \"1h\" factor \"x\" { identity { approvals = 1 } } } }";
        let items = top(text);
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn json_and_comments_and_heredoc() {
        let items = top(" {\"path\": {\"a\": {\"capabilities\": [\"read\"]}}, \"n\": null}");
        assert_eq!(items.len(), 2);
        let items =
            top("# c\n// c\n/* c\n c */ name = \"x\" comment = <<EOT\nhello\n  world\nEOT\n");
        assert_eq!(items.len(), 2);
        let NodeKind::Str(s) = &items[1].value.kind else {
            panic!("string")
        };
        assert_eq!(s, "hello\n  world\n");
    }

    #[test]
    fn indented_heredoc_strips_common_blank_prefix() {
        let items = top("a = <<-EOT\n    x\n  \u{3000}y\n    EOT\n");
        let NodeKind::Str(s) = &items[0].value.kind else {
            panic!("string")
        };
        assert_eq!(s, "  x\n\u{3000}y\n");
    }

    #[test]
    fn escapes() {
        let items = top(r#"a = "q\"\\\n\u00e9\ud83d\ude00""#);
        let NodeKind::Str(s) = &items[0].value.kind else {
            panic!("string")
        };
        assert_eq!(s, "q\"\\\n\u{e9}\u{1F600}");
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("path \"a\" {\n  capabilities = [\"read\"\n}\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 3, column: 1 });
        let e = parse("path \"a\" {\n  capabilities = \"read\n}").unwrap_err();
        assert_eq!(
            e.pos,
            Pos {
                line: 2,
                column: 18
            }
        );
        assert!(e.message.contains("unterminated string"));
        let e = parse("path \"a\" {").unwrap_err();
        assert!(e.message.contains("'}'"), "{}", e.message);
        let e = parse("a = ").unwrap_err();
        assert!(e.message.contains("expected a value"));
        let e = parse("a = @").unwrap_err();
        assert_eq!(e.pos, Pos { line: 1, column: 5 });
        let e = parse("{\"a\": 1} x").unwrap_err();
        assert!(e.message.contains("unexpected"));
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        let text = format!("a = {}{}", "[".repeat(10_000), "]".repeat(10_000));
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("nesting"));
    }
}
