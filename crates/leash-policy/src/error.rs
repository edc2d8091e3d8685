//! Why a policy text was refused.
//!
//! Invariants: every error names where the problem is (line, and column for syntax
//! errors) and which key, path or capability is at fault; none quotes more of the input
//! than that. The caller that wrote the policy is always the one at fault (a 400).

use std::fmt;

/// A policy text that cannot be loaded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text is not well-formed HCL (or JSON).
    #[error("line {line}, column {column}: {message}")]
    Syntax {
        /// One-based line of the offending character.
        line: usize,
        /// One-based column (in characters) of the offending character.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// The text is well-formed but does not describe a valid policy: an unknown key or
    /// capability, a value of the wrong type, a bad duration.
    #[error("{}", Located(*line, message))]
    Invalid {
        /// One-based line of the offending key or value, when known.
        line: Option<usize>,
        /// What is wrong, naming the path and the key.
        message: String,
    },
}

impl PolicyError {
    /// The one-based line the error points at, when known.
    pub fn line(&self) -> Option<usize> {
        match self {
            PolicyError::Syntax { line, .. } => Some(*line),
            PolicyError::Invalid { line, .. } => *line,
        }
    }
}

struct Located<'a>(Option<usize>, &'a String);

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(line) => write!(f, "line {line}: {}", self.1),
            None => f.write_str(self.1),
        }
    }
}
