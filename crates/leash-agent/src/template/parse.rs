//! Parses the pieces from [`lex`](super::lex) into a tree of nodes: text, output
//! actions, `if`/`else if`/`else`, `with`/`else`, `range` (with `$i, $v :=`) and
//! variable declarations. Pipelines are commands joined by `|`.

use super::TemplateError;
use super::lex::{Piece, Tok};

/// A node of the template tree.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Text(String),
    /// `{{ pipeline }}`: printed unless it declares a variable.
    Action(Pipeline),
    If {
        pipe: Pipeline,
        then: Vec<Node>,
        other: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        then: Vec<Node>,
        other: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        other: Vec<Node>,
    },
}

/// `$a, $b := cmd | cmd`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pipeline {
    pub(crate) line: usize,
    /// Declared variables (`:=`) or assigned ones (`=`), without the `$`.
    pub(crate) decl: Vec<String>,
    /// Whether `decl` are assignments to existing variables.
    pub(crate) assign: bool,
    pub(crate) cmds: Vec<Command>,
}

/// One command: a function call, or a single operand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Command {
    pub(crate) args: Vec<Arg>,
}

/// An operand.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Dot,
    Field(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Str(String),
    Num(serde_json::Number),
    Bool(bool),
    Nil,
    Sub(Box<Pipeline>),
}

/// How a list of nodes ended.
enum Stop {
    Eof,
    End,
    Else(usize, Vec<Tok>),
}

pub(crate) fn parse(name: &str, pieces: Vec<Piece>) -> Result<Vec<Node>, TemplateError> {
    let mut it = pieces.into_iter();
    let (nodes, end) = parse_list(name, &mut it)?;
    match end {
        Stop::Eof => Ok(nodes),
        Stop::End => Err(TemplateError::syntax(name, 0, "unexpected {{end}}")),
        Stop::Else(line, _) => Err(TemplateError::syntax(name, line, "unexpected {{else}}")),
    }
}

fn parse_list(
    name: &str,
    it: &mut impl Iterator<Item = Piece>,
) -> Result<(Vec<Node>, Stop), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(p) = it.next() {
        let (toks, line) = match p {
            Piece::Text(t) => {
                nodes.push(Node::Text(t));
                continue;
            }
            Piece::Action(toks, line) => (toks, line),
        };
        let kw = match toks.first() {
            Some(Tok::Ident(k)) => k.as_str(),
            _ => "",
        };
        match kw {
            "end" => {
                if toks.len() != 1 {
                    return Err(TemplateError::syntax(name, line, "{{end}} takes nothing"));
                }
                return Ok((nodes, Stop::End));
            }
            "else" => return Ok((nodes, Stop::Else(line, toks[1..].to_vec()))),
            "if" | "with" | "range" => {
                let node = parse_block(name, kw, line, &toks[1..], it)?;
                nodes.push(node);
            }
            "define" | "template" | "block" | "break" | "continue" => {
                return Err(TemplateError::syntax(
                    name,
                    line,
                    &format!("{{{{{kw}}}}} is not supported by leash templates"),
                ));
            }
            _ => nodes.push(Node::Action(parse_pipeline(name, line, &toks, true)?)),
        }
    }
    Ok((nodes, Stop::Eof))
}

fn parse_block(
    name: &str,
    kw: &str,
    line: usize,
    toks: &[Tok],
    it: &mut impl Iterator<Item = Piece>,
) -> Result<Node, TemplateError> {
    if toks.is_empty() {
        return Err(TemplateError::syntax(
            name,
            line,
            &format!("missing value for {kw}"),
        ));
    }
    let pipe = parse_pipeline(name, line, toks, kw != "if")?;
    let (then, end) = parse_list(name, it)?;
    let other = match end {
        Stop::Eof => {
            return Err(TemplateError::syntax(
                name,
                line,
                &format!("unclosed {{{{{kw}}}}}: missing {{{{end}}}}"),
            ));
        }
        Stop::End => Vec::new(),
        Stop::Else(eline, rest) if rest.is_empty() => {
            let (other, end) = parse_list(name, it)?;
            match end {
                Stop::End => other,
                Stop::Else(l, _) => {
                    return Err(TemplateError::syntax(name, l, "{{else}} after {{else}}"));
                }
                Stop::Eof => {
                    return Err(TemplateError::syntax(
                        name,
                        eline,
                        &format!("unclosed {{{{{kw}}}}}: missing {{{{end}}}}"),
                    ));
                }
            }
        }
        // `{{else if …}}` / `{{else with …}}`: a nested block sharing our {{end}}.
        Stop::Else(eline, rest) => match rest.first() {
            Some(Tok::Ident(k)) if (k == "if" || k == "with") && kw != "range" => {
                let k = k.clone();
                vec![parse_block(name, &k, eline, &rest[1..], it)?]
            }
            _ => {
                return Err(TemplateError::syntax(
                    name,
                    eline,
                    "{{else}} takes nothing, or `if`/`with` and a value",
                ));
            }
        },
    };
    Ok(match kw {
        "if" => Node::If { pipe, then, other },
        "with" => Node::With { pipe, then, other },
        _ => Node::Range {
            pipe,
            body: then,
            other,
        },
    })
}

fn parse_pipeline(
    name: &str,
    line: usize,
    toks: &[Tok],
    allow_decl: bool,
) -> Result<Pipeline, TemplateError> {
    let mut decl = Vec::new();
    let mut assign = false;
    let mut rest = toks;
    // `$x :=`, `$i, $v :=`, `$x =`
    let decl_at = toks
        .iter()
        .position(|t| matches!(t, Tok::Declare | Tok::Assign));
    if let Some(pos) = decl_at {
        if !allow_decl {
            return Err(TemplateError::syntax(
                name,
                line,
                "variables cannot be declared here",
            ));
        }
        for (i, t) in toks[..pos].iter().enumerate() {
            match (i % 2, t) {
                (0, Tok::Var(v, f)) if f.is_empty() && !v.is_empty() => decl.push(v.clone()),
                (1, Tok::Comma) => {}
                _ => {
                    return Err(TemplateError::syntax(
                        name,
                        line,
                        "bad variable declaration",
                    ));
                }
            }
        }
        if decl.is_empty() || decl.len() > 2 || toks[..pos].len().is_multiple_of(2) {
            return Err(TemplateError::syntax(
                name,
                line,
                "bad variable declaration",
            ));
        }
        assign = matches!(toks[pos], Tok::Assign);
        rest = &toks[pos + 1..];
    }
    let (cmds, used) = parse_cmds(name, line, rest)?;
    if used != rest.len() {
        return Err(TemplateError::syntax(name, line, "unexpected \")\""));
    }
    Ok(Pipeline {
        line,
        decl,
        assign,
        cmds,
    })
}

/// Parses commands until the tokens end or a `)` closes; returns how many it consumed
/// (not counting the `)`).
fn parse_cmds(
    name: &str,
    line: usize,
    toks: &[Tok],
) -> Result<(Vec<Command>, usize), TemplateError> {
    let mut cmds = Vec::new();
    let mut args = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let arg = match &toks[i] {
            Tok::Close => break,
            Tok::Pipe => {
                if args.is_empty() {
                    return Err(TemplateError::syntax(
                        name,
                        line,
                        "missing command before |",
                    ));
                }
                cmds.push(Command {
                    args: std::mem::take(&mut args),
                });
                i += 1;
                continue;
            }
            Tok::Open => {
                let (sub, used) = parse_cmds(name, line, &toks[i + 1..])?;
                if toks.get(i + 1 + used) != Some(&Tok::Close) {
                    return Err(TemplateError::syntax(name, line, "unclosed \"(\""));
                }
                if sub.is_empty() {
                    return Err(TemplateError::syntax(name, line, "empty \"()\""));
                }
                i += used + 1;
                Arg::Sub(Box::new(Pipeline {
                    line,
                    decl: Vec::new(),
                    assign: false,
                    cmds: sub,
                }))
            }
            Tok::Dot => Arg::Dot,
            Tok::Field(f) => Arg::Field(f.clone()),
            Tok::Var(v, f) => Arg::Var(v.clone(), f.clone()),
            Tok::Str(s) => Arg::Str(s.clone()),
            Tok::Num(n) => Arg::Num(n.clone()),
            Tok::Ident(w) => match w.as_str() {
                "true" => Arg::Bool(true),
                "false" => Arg::Bool(false),
                "nil" => Arg::Nil,
                "if" | "else" | "end" | "with" | "range" => {
                    return Err(TemplateError::syntax(
                        name,
                        line,
                        &format!("unexpected keyword {w:?}"),
                    ));
                }
                _ => Arg::Func(w.clone()),
            },
            Tok::Declare | Tok::Assign | Tok::Comma => {
                return Err(TemplateError::syntax(
                    name,
                    line,
                    "unexpected token in command",
                ));
            }
        };
        args.push(arg);
        i += 1;
    }
    if args.is_empty() && !cmds.is_empty() {
        return Err(TemplateError::syntax(name, line, "missing command after |"));
    }
    if !args.is_empty() {
        cmds.push(Command { args });
    }
    if cmds.is_empty() {
        return Err(TemplateError::syntax(name, line, "missing value"));
    }
    Ok((cmds, i))
}
