//! Renders a parsed template. Values are JSON values; `.` starts as `null` and `$` is
//! the root. Truth follows Go: `false`, `0`, `""`, `null`, empty lists and maps are
//! false. Output of a value: strings as they are, `null` as nothing, numbers and
//! booleans as text, lists and maps as compact JSON.

use base64::Engine as _;
use serde_json::Value;

use super::parse::{Arg, Command, Node, Pipeline};
use super::{SecretRequest, TemplateError};

/// The functions a template may call.
const FUNCS: &[&str] = &[
    "secret",
    "toJSON",
    "toJSONPretty",
    "base64Encode",
    "base64Decode",
    "env",
    "file",
    "index",
    "len",
    "eq",
    "ne",
    "not",
    "and",
    "or",
    "printf",
];

/// What a render may look up outside the template.
pub struct RenderEnv<'a> {
    /// The answer to a `secret` call, in the shape of [`super::secret_value`]; `None` if
    /// the agent has not fetched it.
    pub secret: &'a dyn Fn(&SecretRequest) -> Option<Value>,
    /// Environment variables, for `env`.
    pub env: &'a dyn Fn(&str) -> Option<String>,
    /// Missing keys are errors (default). When false they render as nothing.
    pub error_on_missing_key: bool,
}

/// Lists the `secret` calls of a tree, checking that their arguments are literals and
/// that every function exists.
pub(crate) fn collect_secrets(
    name: &str,
    nodes: &[Node],
    out: &mut Vec<SecretRequest>,
) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(_) => {}
            Node::Action(p) => collect_pipe(name, p, out)?,
            Node::If { pipe, then, other } | Node::With { pipe, then, other } => {
                collect_pipe(name, pipe, out)?;
                collect_secrets(name, then, out)?;
                collect_secrets(name, other, out)?;
            }
            Node::Range { pipe, body, other } => {
                collect_pipe(name, pipe, out)?;
                collect_secrets(name, body, out)?;
                collect_secrets(name, other, out)?;
            }
        }
    }
    Ok(())
}

fn collect_pipe(
    name: &str,
    p: &Pipeline,
    out: &mut Vec<SecretRequest>,
) -> Result<(), TemplateError> {
    for c in &p.cmds {
        for a in &c.args {
            match a {
                Arg::Func(f) if !FUNCS.contains(&f.as_str()) => {
                    return Err(TemplateError::syntax(
                        name,
                        p.line,
                        &format!("function {f:?} not defined"),
                    ));
                }
                Arg::Sub(sub) => collect_pipe(name, sub, out)?,
                _ => {}
            }
        }
        if let Some(Arg::Func(f)) = c.args.first()
            && f == "secret"
        {
            let mut lits = Vec::new();
            for a in &c.args[1..] {
                match a {
                    Arg::Str(s) => lits.push(s.clone()),
                    _ => {
                        return Err(TemplateError::syntax(
                            name,
                            p.line,
                            "secret arguments must be string literals",
                        ));
                    }
                }
            }
            let req = SecretRequest::from_args(&lits)
                .map_err(|m| TemplateError::syntax(name, p.line, &m))?;
            out.push(req);
        }
    }
    Ok(())
}

pub(crate) fn render(
    name: &str,
    nodes: &[Node],
    env: &RenderEnv<'_>,
) -> Result<String, TemplateError> {
    let mut ex = Exec {
        name,
        env,
        out: String::new(),
        vars: vec![("".to_owned(), Value::Null)],
    };
    ex.walk(nodes, &Value::Null)?;
    Ok(ex.out)
}

struct Exec<'a, 'e> {
    name: &'a str,
    env: &'a RenderEnv<'e>,
    out: String,
    vars: Vec<(String, Value)>,
}

pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|x| x != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

fn print(v: &Value, out: &mut String) {
    match v {
        Value::Null => {}
        Value::String(s) => out.push_str(s),
        other => out.push_str(&other.to_string()),
    }
}

impl Exec<'_, '_> {
    fn err(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::Render {
            template: self.name.to_owned(),
            line,
            message: message.into(),
        }
    }

    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        for n in nodes {
            match n {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.decl.is_empty() {
                        print(&v, &mut self.out);
                    }
                }
                Node::If { pipe, then, other } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let r = if truthy(&v) {
                        self.walk(then, dot)
                    } else {
                        self.walk(other, dot)
                    };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::With { pipe, then, other } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let r = if truthy(&v) {
                        self.walk(then, &v)
                    } else {
                        self.walk(other, dot)
                    };
                    self.vars.truncate(mark);
                    r?;
                }
                Node::Range { pipe, body, other } => {
                    let mark = self.vars.len();
                    // Declarations of a range bind per element, not to the whole value.
                    let inner = Pipeline {
                        decl: Vec::new(),
                        ..pipe.clone()
                    };
                    let v = self.pipeline(&inner, dot)?;
                    let items: Vec<(Value, Value)> = match v {
                        Value::Array(a) => a
                            .into_iter()
                            .enumerate()
                            .map(|(i, x)| (Value::from(i), x))
                            .collect(),
                        Value::Object(o) => {
                            o.into_iter().map(|(k, x)| (Value::String(k), x)).collect()
                        }
                        Value::Null => Vec::new(),
                        Value::Number(n) if n.as_u64().is_some() => (0..n.as_u64().unwrap_or(0))
                            .map(|i| (Value::from(i), Value::from(i)))
                            .collect(),
                        other => {
                            return Err(self.err(
                                pipe.line,
                                format!("range can't iterate over {}", kind(&other)),
                            ));
                        }
                    };
                    if items.is_empty() {
                        self.walk(other, dot)?;
                    }
                    for (k, x) in items {
                        let m = self.vars.len();
                        match pipe.decl.as_slice() {
                            [] => {}
                            [v] => self.vars.push((v.clone(), x.clone())),
                            [kn, vn, ..] => {
                                self.vars.push((kn.clone(), k));
                                self.vars.push((vn.clone(), x.clone()));
                            }
                        }
                        let r = self.walk(body, &x);
                        self.vars.truncate(m);
                        r?;
                    }
                    self.vars.truncate(mark);
                }
            }
        }
        Ok(())
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut piped: Option<Value> = None;
        for c in &p.cmds {
            piped = Some(self.command(c, dot, piped, p.line)?);
        }
        let v = piped.unwrap_or(Value::Null);
        if let Some(var) = p.decl.first() {
            if p.assign {
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == var)
                    .ok_or_else(|| TemplateError::Render {
                        template: self.name.to_owned(),
                        line: p.line,
                        message: format!("undefined variable ${var}"),
                    })?;
                slot.1 = v.clone();
            } else {
                self.vars.push((var.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn command(
        &mut self,
        c: &Command,
        dot: &Value,
        piped: Option<Value>,
        line: usize,
    ) -> Result<Value, TemplateError> {
        if let Some(Arg::Func(f)) = c.args.first() {
            let mut args = Vec::with_capacity(c.args.len());
            for a in &c.args[1..] {
                args.push(self.arg(a, dot, line)?);
            }
            if let Some(v) = piped {
                args.push(v);
            }
            return self.call(f, args, line);
        }
        if c.args.len() != 1 {
            return Err(self.err(line, "only functions take arguments"));
        }
        if piped.is_some() {
            return Err(self.err(line, "can only pipe into a function"));
        }
        self.arg(&c.args[0], dot, line)
    }

    fn arg(&mut self, a: &Arg, dot: &Value, line: usize) -> Result<Value, TemplateError> {
        match a {
            Arg::Dot => Ok(dot.clone()),
            Arg::Field(f) => self.fields(dot, f, "", line),
            Arg::Var(v, f) => {
                let base = if v.is_empty() {
                    self.vars.first().map(|(_, x)| x.clone())
                } else {
                    self.vars
                        .iter()
                        .rev()
                        .find(|(n, _)| n == v)
                        .map(|(_, x)| x.clone())
                }
                .ok_or_else(|| self.err(line, format!("undefined variable ${v}")))?;
                self.fields(&base, f, &format!("${v}"), line)
            }
            Arg::Func(f) => self.call(f, Vec::new(), line),
            Arg::Str(s) => Ok(Value::String(s.clone())),
            Arg::Num(n) => Ok(Value::Number(n.clone())),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Ok(Value::Null),
            Arg::Sub(p) => self.pipeline(p, dot),
        }
    }

    fn fields(
        &self,
        base: &Value,
        chain: &[String],
        prefix: &str,
        line: usize,
    ) -> Result<Value, TemplateError> {
        let mut cur = base;
        for (i, key) in chain.iter().enumerate() {
            match cur {
                Value::Object(o) => match o.get(key) {
                    Some(v) => cur = v,
                    None => {
                        if !self.env.error_on_missing_key {
                            return Ok(Value::Null);
                        }
                        return Err(TemplateError::MissingKey {
                            template: self.name.to_owned(),
                            line,
                            key: key.clone(),
                            path: format!("{prefix}.{}", chain[..=i].join(".")),
                        });
                    }
                },
                other => {
                    return Err(self.err(
                        line,
                        format!(
                            "can't read field {key:?} of {} (in {prefix}.{})",
                            kind(other),
                            chain[..=i].join(".")
                        ),
                    ));
                }
            }
        }
        Ok(cur.clone())
    }

    fn call(&mut self, f: &str, args: Vec<Value>, line: usize) -> Result<Value, TemplateError> {
        let want = |n: usize| -> Result<(), TemplateError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(self.err(
                    line,
                    format!("{f} takes {n} argument(s), got {}", args.len()),
                ))
            }
        };
        let string = |v: &Value| -> Result<String, TemplateError> {
            match v {
                Value::String(s) => Ok(s.clone()),
                Value::Number(n) => Ok(n.to_string()),
                Value::Bool(b) => Ok(b.to_string()),
                other => Err(self.err(line, format!("{f} wants a string, got {}", kind(other)))),
            }
        };
        match f {
            "secret" => {
                let lits = args.iter().map(string).collect::<Result<Vec<_>, _>>()?;
                let req = SecretRequest::from_args(&lits).map_err(|m| self.err(line, m))?;
                (self.env.secret)(&req)
                    .ok_or_else(|| self.err(line, format!("secret {:?} not available", req.path)))
            }
            "toJSON" => {
                want(1)?;
                Ok(Value::String(args[0].to_string()))
            }
            "toJSONPretty" => {
                want(1)?;
                serde_json::to_string_pretty(&args[0])
                    .map(Value::String)
                    .map_err(|e| self.err(line, e.to_string()))
            }
            "base64Encode" => {
                want(1)?;
                Ok(Value::String(
                    base64::engine::general_purpose::STANDARD.encode(string(&args[0])?),
                ))
            }
            "base64Decode" => {
                want(1)?;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(string(&args[0])?.trim())
                    // The decoder's message quotes the offending byte: keep secret bytes out.
                    .map_err(|_| self.err(line, "base64Decode: the value is not valid base64"))?;
                String::from_utf8(bytes)
                    .map(Value::String)
                    .map_err(|_| self.err(line, "base64Decode: the result is not UTF-8 text"))
            }
            "env" => {
                want(1)?;
                Ok(Value::String(
                    (self.env.env)(&string(&args[0])?).unwrap_or_default(),
                ))
            }
            "file" => {
                want(1)?;
                let path = string(&args[0])?;
                std::fs::read_to_string(&path)
                    .map(Value::String)
                    .map_err(|e| self.err(line, format!("file {path:?}: {e}")))
            }
            "index" => {
                let Some((first, keys)) = args.split_first() else {
                    return Err(self.err(line, "index needs a value"));
                };
                let mut cur = first.clone();
                for k in keys {
                    cur = match (&cur, k) {
                        (Value::Object(o), Value::String(s)) => match o.get(s) {
                            Some(v) => v.clone(),
                            None if !self.env.error_on_missing_key => Value::Null,
                            None => {
                                return Err(TemplateError::MissingKey {
                                    template: self.name.to_owned(),
                                    line,
                                    key: s.clone(),
                                    path: format!("index … {s:?}"),
                                });
                            }
                        },
                        (Value::Array(a), Value::Number(n)) => n
                            .as_u64()
                            .and_then(|i| a.get(usize::try_from(i).ok()?))
                            .cloned()
                            .ok_or_else(|| self.err(line, format!("index {n} out of range")))?,
                        (v, k) => {
                            return Err(
                                self.err(line, format!("can't index {} with {}", kind(v), kind(k)))
                            );
                        }
                    };
                }
                Ok(cur)
            }
            "len" => {
                want(1)?;
                match &args[0] {
                    Value::String(s) => Ok(Value::from(s.len())),
                    Value::Array(a) => Ok(Value::from(a.len())),
                    Value::Object(o) => Ok(Value::from(o.len())),
                    other => Err(self.err(line, format!("len of {}", kind(other)))),
                }
            }
            "eq" => {
                if args.len() < 2 {
                    return Err(self.err(line, "eq takes at least 2 arguments"));
                }
                Ok(Value::Bool(args[1..].iter().any(|x| same(&args[0], x))))
            }
            "ne" => {
                want(2)?;
                Ok(Value::Bool(!same(&args[0], &args[1])))
            }
            "not" => {
                want(1)?;
                Ok(Value::Bool(!truthy(&args[0])))
            }
            "and" | "or" => {
                if args.is_empty() {
                    return Err(self.err(line, format!("{f} needs arguments")));
                }
                let stop_on = f == "or";
                let n = args.len();
                for (i, a) in args.into_iter().enumerate() {
                    if truthy(&a) == stop_on || i + 1 == n {
                        return Ok(a);
                    }
                }
                Ok(Value::Null)
            }
            "printf" => {
                let Some((fmt, rest)) = args.split_first() else {
                    return Err(self.err(line, "printf needs a format"));
                };
                let fmt = string(fmt)?;
                printf(&fmt, rest)
                    .map(Value::String)
                    .map_err(|m| self.err(line, m))
            }
            other => Err(self.err(line, format!("function {other:?} not defined"))),
        }
    }
}

/// Equality with numbers compared by value (`1` equals `1.0`).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// `printf` with `%s`, `%d`, `%v`, `%q` and `%%`.
fn printf(fmt: &str, args: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    let mut it = args.iter();
    let mut chars = fmt.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let verb = chars.next().ok_or("printf: format ends with %")?;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| format!("printf: missing argument for %{verb}"))?;
        match verb {
            's' | 'v' | 'd' => print(v, &mut out),
            'q' => out.push_str(
                &Value::String(match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .to_string(),
            ),
            other => return Err(format!("printf: unsupported verb %{other}")),
        }
    }
    Ok(out)
}
