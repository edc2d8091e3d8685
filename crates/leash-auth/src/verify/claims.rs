//! Verified claims: time, issuer and audience rules, claim look-up, `*` globs.

use serde_json::{Map, Value};

use super::JwtError;

/// Leeways for the time claims, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRules {
    /// Now, in Unix seconds (from the server's clock).
    pub now: i64,
    /// Extra seconds after `exp` during which the token still counts.
    pub exp_leeway: i64,
    /// Seconds before `nbf` from which the token already counts.
    pub nbf_leeway: i64,
    /// Clock skew allowed on every time claim (`exp`, `nbf`, `iat`).
    pub skew: i64,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
}

/// Verified claims.
#[derive(Clone)]
pub struct Claims(pub(super) Map<String, Value>);

impl std::fmt::Debug for Claims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Claims{{{}}}",
            self.0.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    }
}

pub(crate) fn numeric_date(v: Option<&Value>, name: &'static str) -> Result<Option<i64>, JwtError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
                // Whole seconds; saturating at the i64 range.
                Ok(Some(f.floor() as i64))
            } else {
                Err(JwtError::BadTimeClaim(name))
            }
        }
        Some(_) => Err(JwtError::BadTimeClaim(name)),
    }
}

impl Claims {
    /// All claims.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// A claim by name, or by JSON pointer when `path` starts with `/`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        claim(&self.0, path)
    }

    /// A string claim (numbers and booleans are turned into strings).
    pub fn string(&self, path: &str) -> Option<String> {
        match self.get(path)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// Checks `exp`, `nbf` and `iat` against `rules`.
    pub fn check_times(&self, rules: &TimeRules) -> Result<(), JwtError> {
        let now = rules.now;
        let skew = rules.skew.max(0);
        match numeric_date(self.0.get("exp"), "exp")? {
            None if rules.require_exp => return Err(JwtError::MissingExpiry),
            Some(exp)
                if now
                    >= exp
                        .saturating_add(rules.exp_leeway.max(0))
                        .saturating_add(skew) =>
            {
                return Err(JwtError::Expired);
            }
            _ => {}
        }
        if let Some(nbf) = numeric_date(self.0.get("nbf"), "nbf")?
            && now
                .saturating_add(rules.nbf_leeway.max(0))
                .saturating_add(skew)
                < nbf
        {
            return Err(JwtError::NotYetValid);
        }
        if let Some(iat) = numeric_date(self.0.get("iat"), "iat")?
            && now.saturating_add(skew) < iat
        {
            return Err(JwtError::IssuedInFuture);
        }
        Ok(())
    }

    /// Checks that `iss` is exactly `expected`.
    pub fn check_issuer(&self, expected: &str) -> Result<(), JwtError> {
        match self.0.get("iss") {
            Some(Value::String(iss)) if iss == expected => Ok(()),
            _ => Err(JwtError::Issuer),
        }
    }

    /// The `aud` claim as a list (a single string is a list of one).
    pub fn audiences(&self) -> Result<Vec<&str>, JwtError> {
        match self.0.get("aud") {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(a)) => Ok(vec![a.as_str()]),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().ok_or(JwtError::Audience))
                .collect(),
            Some(_) => Err(JwtError::Audience),
        }
    }

    /// Checks `aud` against `bound`: some audience must be bound when any are. With no
    /// bound audiences, a token that has an `aud` is refused when `strict` (Vault's JWT
    /// rule) and accepted otherwise.
    pub fn check_audience(&self, bound: &[String], strict: bool) -> Result<(), JwtError> {
        let auds = self.audiences()?;
        if bound.is_empty() {
            if strict && !auds.is_empty() {
                return Err(JwtError::UnboundAudience);
            }
            return Ok(());
        }
        if auds.iter().any(|a| bound.iter().any(|b| b == a)) {
            Ok(())
        } else {
            Err(JwtError::Audience)
        }
    }
}

/// A claim of `claims` by name, or by JSON pointer (RFC 6901) when `path` starts with
/// `/` (e.g. `/groups/0`, `/kubernetes.io/namespace`).
pub fn claim<'c>(claims: &'c Map<String, Value>, path: &str) -> Option<&'c Value> {
    let Some(pointer) = path.strip_prefix('/') else {
        return claims.get(path);
    };
    let mut segments = pointer
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"));
    let first = segments.next()?;
    let mut cur = claims.get(&first)?;
    for seg in segments {
        cur = match cur {
            Value::Object(m) => m.get(&seg)?,
            Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Whether `value` matches `pattern`, where `*` stands for any run of characters
/// (including none) and everything else is literal: `*`, `agents-*`, `*-prod`, `a*b*c`.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    let p = pattern.as_bytes();
    let v = value.as_bytes();
    let (mut pi, mut vi) = (0usize, 0usize);
    // Where the last `*` was, and the value position it is currently matched up to.
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, vi));
            pi += 1;
        } else if pi < p.len() && p[pi] == v[vi] {
            pi += 1;
            vi += 1;
        } else if let Some((sp, sv)) = star {
            pi = sp + 1;
            vi = sv + 1;
            star = Some((sp, sv + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}
