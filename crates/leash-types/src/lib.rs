//! The shared vocabulary of leash: capabilities, operations, durations, secret wrappers,
//! token formats, randomness and the clock.
//!
//! This crate does no IO and knows nothing of HTTP, storage or policy parsing. Everything
//! here is small, pure and used by more than one other crate.
#![forbid(unsafe_code)]

pub mod capability;
pub mod cidr;
pub mod clock;
pub mod duration;
pub mod flags;
pub mod random;
pub mod secret;
pub mod token;

pub use capability::{Capabilities, Capability, Operation};
pub use clock::{Clock, ManualClock, SystemClock, rfc3339, rfc3339_precise};
pub use duration::{DurationError, format_go_duration, parse_duration};
pub use secret::{ExposeSecret, SecretBytes, SecretString};
pub use token::{TokenKind, TokenValue};
