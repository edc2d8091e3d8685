//! The MySQL connection URL / Go DSN parser: never panics, and its errors never repeat
//! the password (a distinctive one, substituted for `{{password}}` or used as the
//! configured one).
#![no_main]

use arbitrary::Arbitrary;
use leash_engines::database::mysql::{MySqlConfig, connection_opts};
use leash_types::SecretString;
use libfuzzer_sys::fuzz_target;

const PASSWORDS: [&str; 4] = [
    "S3cr3t-p@ss:w/rd?x&y=z#%",
    "Zq9!Zq9!Zq9!Zq9!Zq9!",
    "pw(with)parens/and@at",
    "%41%42-encoded-looking-pw",
];

#[derive(Arbitrary, Debug)]
struct Input {
    url: String,
    username: String,
    password: u8,
    max_open_connections: u16,
}

fuzz_target!(|input: Input| {
    let password = PASSWORDS[usize::from(input.password) % PASSWORDS.len()];
    let mut config = MySqlConfig::new(
        input.url.clone(),
        input.username.clone(),
        SecretString::from(password.to_owned()),
    );
    config.max_open_connections = usize::from(input.max_open_connections);
    if let Err(e) = connection_opts(&config) {
        let shown = format!("{e} {e:?}");
        if !input.url.contains(password) && !input.username.contains(password) {
            assert!(!shown.contains(password), "password in error: {shown}");
        }
    }
});
