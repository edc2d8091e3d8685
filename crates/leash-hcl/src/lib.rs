//! HCL version 1 (and JSON) for leash: the one reader of Vault-shaped text. ACL
//! policies decode its position-carrying tree ([`parse`]); the server and agent
//! configuration read it as JSON ([`parse_to_json`]).
//!
//! Pure and synchronous: no IO. Every syntax error names its line and column; input
//! nesting is bounded ([`MAX_DEPTH`]) so hostile text cannot exhaust the stack.
#![forbid(unsafe_code)]

mod json;
mod syntax;

pub use json::parse_to_json;
pub use syntax::{Item, MAX_DEPTH, Node, NodeKind, Pos, SyntaxError, parse};
