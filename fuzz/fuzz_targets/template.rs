//! The agent's template lexer and parser (consul-template subset): never panics on any
//! template text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(t) = leash_agent::template::Template::parse("fuzz", text) {
        let _ = t.name();
    }
});
