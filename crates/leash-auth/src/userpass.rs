//! The `userpass` auth method: people (the approvers of the just-in-time flow) log in
//! with a user name and a password. Vault's paths and fields:
//!
//! * `users/:name` — create, update, read, delete; `LIST users/`. Fields: `password`
//!   (required on create) and the shared `token_*` fields ([`TokenParams`], legacy names
//!   included). Reads never return the password or its hash.
//! * `users/:name/password` — change the password; `users/:name/policies` — change the
//!   policies.
//! * `login/:name` with `{"password"}` — unauthenticated; answers with a
//!   [`LoginGrant`](leash_backend::LoginGrant): display name `userpass-<name>`, metadata
//!   `{"username": name}`, identity alias and role = the name.
//!
//! Invariants:
//! * A password is stored only as an Argon2id PHC string (a fresh 128-bit salt per
//!   password, the argon2 crate's OWASP defaults), never in clear, never in `Debug`.
//! * A wrong password and an unknown user get the same message and cost the same
//!   Argon2 work (unknown users are verified against a dummy hash), so neither the
//!   answer nor its timing tells whether a user exists.
//! * Argon2 runs on the blocking pool, at most one hash per core at a time, so a flood
//!   of logins cannot starve the async runtime or exhaust memory.
//! * User names are case-insensitive (stored lower-case), as in Vault.
//!
//! Not here: the failed-login rate limit per source and the token minting — the core
//! does both for every auth method.

use std::collections::BTreeMap;
use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use async_trait::async_trait;
use base64::Engine as _;
use leash_backend::{
    Backend, BackendRequest, CoreError, MountStorage, Response, Route, Routes, TOKEN_FIELDS,
    TokenParams, fields, match_route, store,
};

use leash_types::Operation;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;
use zeroize::Zeroizing;

/// The one answer to a failed login, whether the user exists or not.
pub const INVALID_LOGIN: &str = "invalid username or password";

/// Longest password accepted, in bytes (longer ones cannot have been set, so a login
/// with one fails like any wrong password).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Longest user name, in characters.
const MAX_NAME: usize = 128;

/// Storage key prefix of user records in the mount's namespace.
const USER_PREFIX: &str = "user/";

/// A stored user. No `Debug`: it holds the password hash.
#[derive(Serialize, Deserialize)]
struct UserEntry {
    /// Argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`).
    password_hash: String,
    /// The token fields.
    #[serde(default)]
    token: TokenParams,
}

/// The backend serving one `userpass` mount.
pub struct UserpassBackend {
    store: MountStorage,
    /// Bounds concurrent Argon2 computations (each takes ~19 MiB and a core).
    hashing: Arc<Semaphore>,
    /// A PHC string with the default parameters and random salt and output: unknown
    /// users are verified against it, so they cost what a real user costs.
    dummy_hash: String,
}

/// The `userpass` auth method, storing in `store` (its mount's namespace). It needs no
/// clock: passwords do not expire.
pub fn new_backend(store: MountStorage) -> Arc<dyn Backend> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    Arc::new(UserpassBackend {
        store,
        hashing: Arc::new(Semaphore::new(cores)),
        dummy_hash: dummy_hash(),
    })
}

/// A valid Argon2id PHC string nobody knows a password for, with the parameters new
/// hashes get.
fn dummy_hash() -> String {
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    let salt = b64.encode(leash_types::random::bytes::<16>());
    let out = b64.encode(leash_types::random::bytes::<32>());
    format!(
        "$argon2id$v=19$m={},t={},p={}${salt}${out}",
        Params::DEFAULT_M_COST,
        Params::DEFAULT_T_COST,
        Params::DEFAULT_P_COST
    )
}

/// The token fields of a new user: `TokenParams::default()` leaves `token_type`
/// empty; a new user reads as Vault's "default".
fn new_token_params() -> TokenParams {
    TokenParams {
        token_type: "default".to_owned(),
        ..TokenParams::default()
    }
}

/// Hashes `password` with Argon2id and a fresh random salt (CPU-heavy: call on the
/// blocking pool).
fn hash_password(password: &[u8]) -> Result<String, CoreError> {
    let salt = SaltString::encode_b64(&leash_types::random::bytes::<16>())
        .map_err(|e| CoreError::internal(format!("argon2 salt: {e}")))?;
    Argon2::default()
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| CoreError::internal(format!("argon2 hashing failed: {e}")))
}

/// Whether `password` matches the PHC string (constant-time comparison of the output;
/// CPU-heavy: call on the blocking pool).
fn verify_password(password: &[u8], phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(h) => Argon2::default().verify_password(password, &h).is_ok(),
        Err(_) => false,
    }
}

/// A user name as stored: trimmed of nothing, lower-cased, and restricted to a safe
/// alphabet (e-mail-like names are fine).
fn user_name(raw: &str) -> Result<String, CoreError> {
    let name = raw.to_ascii_lowercase();
    let ok = !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if ok {
        Ok(name)
    } else {
        Err(CoreError::invalid(format!(
            "invalid user name {raw:?}: use 1-{MAX_NAME} characters of a-z, 0-9, '-', '_', '.', '@', starting with a letter or digit"
        )))
    }
}

/// The `password` field of a write, validated (never echoed).
fn new_password(data: &Map<String, Value>) -> Result<Option<Zeroizing<String>>, CoreError> {
    match data.get("password") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => {
            Err(CoreError::invalid("password must not be empty"))
        }
        Some(Value::String(s)) if s.len() > MAX_PASSWORD_BYTES => Err(CoreError::invalid(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes"
        ))),
        Some(Value::String(s)) => Ok(Some(Zeroizing::new(s.clone()))),
        Some(_) => Err(CoreError::invalid(
            "invalid value for field \"password\": expected a string",
        )),
    }
}

impl UserpassBackend {
    fn key(name: &str) -> String {
        format!("{USER_PREFIX}{name}")
    }

    async fn load(&self, name: &str) -> Result<Option<UserEntry>, CoreError> {
        self.store.load_json(&Self::key(name)).await
    }

    /// Runs Argon2 work on the blocking pool, holding a hashing permit until it ends
    /// (even if the request is abandoned meanwhile).
    async fn argon2<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CoreError> {
        let permit = Arc::clone(&self.hashing)
            .acquire_owned()
            .await
            .map_err(|_| CoreError::internal("password hashing is shut down"))?;
        tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await
        .map_err(|e| CoreError::internal(format!("password hashing task failed: {e}")))
    }

    async fn hash(&self, password: Zeroizing<String>) -> Result<String, CoreError> {
        self.argon2(move || hash_password(password.as_bytes()))
            .await?
    }

    /// Read-modify-write of one user, atomically: `change` gets the current entry
    /// (`None` if absent) and returns the new one or a message for a 400.
    async fn modify_user(
        &self,
        name: &str,
        change: impl FnOnce(Option<UserEntry>) -> Result<UserEntry, String> + Send + 'static,
    ) -> Result<(), CoreError> {
        self.store
            .modify(
                &Self::key(name),
                Box::new(move |old| {
                    let old = match old {
                        None => None,
                        Some(b) => Some(
                            serde_json::from_slice::<UserEntry>(b)
                                .map_err(|e| format!("stored user is unreadable: {e}"))?,
                        ),
                    };
                    let new = change(old)?;
                    serde_json::to_vec(&new)
                        .map(Some)
                        .map_err(|e| format!("cannot encode the user: {e}").into())
                }),
            )
            .await
            .map_err(store::refused_or_storage)?;
        Ok(())
    }

    async fn write_user(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        // Validate everything cheap first, so a bad request costs no Argon2 time.
        TokenParams::default().update(data)?;
        let password = new_password(data)?;
        let mut known: Vec<&str> = TOKEN_FIELDS.to_vec();
        known.extend(["password", "username"]);
        let warnings: Vec<String> = fields::ignored_warning(data, &known).into_iter().collect();
        let hash = match password {
            Some(p) => Some(self.hash(p).await?),
            None => None,
        };
        let data = data.clone();
        let missing = format!("missing required field \"password\" to create user {name:?}");
        self.modify_user(name, move |old| {
            let (mut token, old_hash) = match old {
                Some(e) => (e.token, Some(e.password_hash)),
                None => (new_token_params(), None),
            };
            token.update(&data).map_err(|e| e.to_string())?;
            let password_hash = hash.or(old_hash).ok_or(missing)?;
            Ok(UserEntry {
                password_hash,
                token,
            })
        })
        .await?;
        Ok(Response::warnings_only(warnings))
    }

    async fn change_password(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let password = new_password(data)?
            .ok_or_else(|| CoreError::invalid("missing required field \"password\""))?;
        if self.load(name).await?.is_none() {
            return Err(CoreError::invalid(format!("no user named {name:?}")));
        }
        let hash = self.hash(password).await?;
        let gone = format!("no user named {name:?}");
        self.modify_user(name, move |old| match old {
            Some(e) => Ok(UserEntry {
                password_hash: hash,
                token: e.token,
            }),
            None => Err(gone),
        })
        .await?;
        Ok(None)
    }

    async fn change_policies(
        &self,
        name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let policies = match fields::grantable_policies(data, "token_policies")? {
            Some(p) => p,
            None => fields::grantable_policies(data, "policies")?.ok_or_else(|| {
                CoreError::invalid("missing required field \"token_policies\" (or \"policies\")")
            })?,
        };
        let mut only = Map::new();
        only.insert("token_policies".into(), Value::from(policies));
        let gone = format!("no user named {name:?}");
        self.modify_user(name, move |old| match old {
            Some(mut e) => {
                e.token.update(&only).map_err(|e| e.to_string())?;
                Ok(e)
            }
            None => Err(gone),
        })
        .await?;
        Ok(None)
    }

    async fn read_user(&self, name: &str) -> Result<Option<Response>, CoreError> {
        Ok(self
            .load(name)
            .await?
            .map(|u| Response::data(Value::Object(u.token.to_json()))))
    }

    async fn list_users(&self) -> Result<Option<Response>, CoreError> {
        let keys: Vec<String> = self
            .store
            .list(USER_PREFIX)
            .await?
            .into_iter()
            .filter_map(|k| k.strip_prefix(USER_PREFIX).map(str::to_owned))
            .collect();
        Ok((!keys.is_empty()).then(|| Response::keys(keys)))
    }

    async fn login(
        &self,
        raw_name: &str,
        data: &Map<String, Value>,
    ) -> Result<Option<Response>, CoreError> {
        let password = match data.get("password") {
            Some(Value::String(s)) if !s.is_empty() => Zeroizing::new(s.clone()),
            Some(Value::String(_)) | None | Some(Value::Null) => {
                return Err(CoreError::invalid("missing password"));
            }
            Some(_) => {
                return Err(CoreError::invalid(
                    "invalid value for field \"password\": expected a string",
                ));
            }
        };
        // A name that cannot exist, or a password longer than any that can be set,
        // fails like a wrong password (and says nothing about which users exist).
        let Ok(name) = user_name(raw_name) else {
            return Err(CoreError::invalid(INVALID_LOGIN));
        };
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(CoreError::invalid(INVALID_LOGIN));
        }
        let user = self.load(&name).await?;
        // The same Argon2 work whether the user exists or not: no timing oracle.
        let (phc, exists) = match &user {
            Some(u) => (u.password_hash.clone(), true),
            None => (self.dummy_hash.clone(), false),
        };
        let matched = self
            .argon2(move || verify_password(password.as_bytes(), &phc))
            .await?;
        let Some(user) = user.filter(|_| matched && exists) else {
            return Err(CoreError::invalid(INVALID_LOGIN));
        };
        let metadata = BTreeMap::from([("username".to_owned(), name.clone())]);
        let mut grant = user
            .token
            .grant(format!("userpass-{name}"), name.clone(), metadata);
        grant.role = Some(name);
        Ok(Some(Response::login(grant)))
    }
}

#[async_trait]
impl Backend for UserpassBackend {
    async fn exists(&self, req: &BackendRequest<'_>) -> Result<Option<bool>, CoreError> {
        match match_route("users/:name", req.path) {
            Some(c) => match user_name(c[0]) {
                Ok(name) => Ok(Some(self.load(&name).await?.is_some())),
                Err(_) => Ok(None),
            },
            None => Ok(None),
        }
    }

    async fn handle(&self, req: &BackendRequest<'_>) -> Result<Option<Response>, CoreError> {
        let op = req.operation;
        let write = matches!(op, Operation::Create | Operation::Update);
        let path = req.dispatch_path();
        if path == "users" {
            return match op {
                Operation::List | Operation::Read => self.list_users().await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("login/:name", path) {
            return match op {
                _ if write => self.login(c[0], req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("users/:name", path) {
            let name = user_name(c[0])?;
            return match op {
                Operation::Read => self.read_user(&name).await,
                Operation::Delete => {
                    self.store.delete(&Self::key(&name)).await?;
                    Ok(None)
                }
                _ if write => self.write_user(&name, req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("users/:name/password", path) {
            let name = user_name(c[0])?;
            return match op {
                _ if write => self.change_password(&name, req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        if let Some(c) = match_route("users/:name/policies", path) {
            let name = user_name(c[0])?;
            return match op {
                _ if write => self.change_policies(&name, req.data).await,
                _ => Err(CoreError::UnsupportedOperation),
            };
        }
        Err(CoreError::UnknownPath(format!(
            "{}{}",
            req.mount.route_prefix(),
            path
        )))
    }

    fn routes(&self) -> Routes<'_> {
        // User names are stored lower-cased: `users/Alice` is `users/alice` to the ACL too.
        const ROUTES: &[Route] = &[
            Route::path("login/:name").unauthenticated().folded(),
            Route::path("users"),
            Route::path("users/:name").folded(),
            Route::path("users/:name/password").folded(),
            Route::path("users/:name/policies").folded(),
        ];
        Routes::Table(ROUTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leash_backend::{MountConfig, MountEntry, MountTable};
    use leash_storage::{Keyring, SqliteStorage};
    use serde_json::json;

    struct Fixture {
        backend: Arc<dyn Backend>,
        store: MountStorage,
        mount: MountEntry,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::from_master(&Keyring::generate_master()).unwrap();
        let storage: Arc<dyn leash_storage::Storage> =
            Arc::new(SqliteStorage::open(dir.path(), keyring).unwrap());
        let mount = MountEntry {
            path: "userpass/".into(),
            kind: "userpass".into(),
            description: String::new(),
            accessor: "auth_userpass_test".into(),
            uuid: "0000-userpass-test".into(),
            config: MountConfig::default(),
            options: BTreeMap::new(),
            local: false,
            table: MountTable::Auth,
        };
        let store = MountStorage::new(storage, &mount);
        let backend = new_backend(store.clone());
        Fixture {
            backend,
            store,
            mount,
            _dir: dir,
        }
    }

    impl Fixture {
        async fn call(
            &self,
            operation: Operation,
            path: &str,
            data: Value,
        ) -> Result<Option<Response>, CoreError> {
            let data = data.as_object().cloned().unwrap_or_default();
            let req = BackendRequest {
                id: "test",
                operation,
                path,
                data: &data,
                mount: &self.mount,
                caller: None,
                remote_addr: None,
                token: None,
                grant: None,
            };
            self.backend.handle(&req).await
        }

        async fn invalid(&self, operation: Operation, path: &str, data: Value) -> String {
            match self.call(operation, path, data).await {
                Err(CoreError::InvalidRequest(m)) => m,
                Err(e) => panic!("expected a 400 from {path}, got {e:?}"),
                Ok(r) => panic!("expected a 400 from {path}, got {r:?}"),
            }
        }
    }

    #[test]
    fn dummy_hash_parses_with_the_default_parameters() {
        let d = dummy_hash();
        let h = PasswordHash::new(&d).unwrap();
        assert_eq!(h.algorithm.as_str(), "argon2id");
        assert!(!verify_password(b"anything", &d));
        let real = hash_password(b"pw").unwrap();
        let r = PasswordHash::new(&real).unwrap();
        // Same algorithm, version, parameters and output length as a real hash.
        assert_eq!(
            (h.algorithm, h.version, &h.params),
            (r.algorithm, r.version, &r.params)
        );
        assert_eq!(h.hash.unwrap().len(), r.hash.unwrap().len());
        assert!(
            real.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{real}"
        );
        assert!(verify_password(b"pw", &real) && !verify_password(b"pW", &real));
    }

    #[test]
    fn names_are_lower_cased_and_restricted() {
        assert_eq!(user_name("Alice@Example.com").unwrap(), "alice@example.com");
        for bad in ["", ".hidden", "a/b", "a b", "ä", &"x".repeat(129), ".."] {
            assert!(user_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn user_crud_login_and_no_password_at_rest() {
        let f = fixture();
        let r = f
            .call(
                Operation::Create,
                "users/Alice",
                json!({"password": "correct horse", "token_policies": "approver", "token_ttl": "1h", "bogus": 1}),
            )
            .await
            .unwrap()
            .unwrap();
        assert!(r.warnings[0].contains("bogus"), "{:?}", r.warnings);
        let read = f
            .call(Operation::Read, "users/alice", json!({}))
            .await
            .unwrap()
            .unwrap()
            .data
            .unwrap();
        assert_eq!(read["token_policies"], json!(["approver"]));
        assert_eq!(read["token_ttl"], json!(3600));
        let text = read.to_string();
        assert!(
            !text.contains("correct horse") && !text.contains("argon2"),
            "{text}"
        );
        let stored = f.store.get("user/alice").await.unwrap().unwrap();
        let stored = String::from_utf8(stored.to_vec()).unwrap();
        assert!(stored.contains("$argon2id$") && !stored.contains("correct horse"));

        let ok = f
            .call(
                Operation::Update,
                "login/ALICE",
                json!({"password": "correct horse"}),
            )
            .await
            .unwrap()
            .unwrap();
        let grant = ok.login.unwrap();
        assert_eq!(grant.display_name, "userpass-alice");
        assert_eq!(grant.alias, "alice");
        assert_eq!(grant.role.as_deref(), Some("alice"));
        assert_eq!(
            grant.metadata.get("username").map(String::as_str),
            Some("alice")
        );
        assert_eq!(grant.policies, vec!["approver"]);
        assert_eq!(grant.ttl, Some(std::time::Duration::from_secs(3600)));

        // Same message for a wrong password, an unknown user and an impossible name.
        for (path, pw) in [
            ("login/alice", "wrong"),
            ("login/bob", "correct horse"),
            ("login/..", "x"),
        ] {
            assert_eq!(
                f.invalid(Operation::Update, path, json!({"password": pw}))
                    .await,
                INVALID_LOGIN
            );
        }
        assert_eq!(
            f.invalid(Operation::Update, "login/alice", json!({})).await,
            "missing password"
        );

        // Change the password and the policies; the old password stops working.
        f.call(
            Operation::Update,
            "users/alice/password",
            json!({"password": "new one"}),
        )
        .await
        .unwrap();
        assert_eq!(
            f.invalid(
                Operation::Update,
                "login/alice",
                json!({"password": "correct horse"})
            )
            .await,
            INVALID_LOGIN
        );
        f.call(
            Operation::Update,
            "users/alice/policies",
            json!({"policies": ["a", "b"]}),
        )
        .await
        .unwrap();
        let ok = f
            .call(
                Operation::Update,
                "login/alice",
                json!({"password": "new one"}),
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.login.unwrap().policies, vec!["a", "b"]);
        // A token-field update keeps the password.
        f.call(Operation::Update, "users/alice", json!({"token_ttl": 60}))
            .await
            .unwrap();
        assert!(
            f.call(
                Operation::Update,
                "login/alice",
                json!({"password": "new one"})
            )
            .await
            .is_ok()
        );

        let list = f
            .call(Operation::List, "users/", json!({}))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(list.data.unwrap()["keys"], json!(["alice"]));
        f.call(Operation::Delete, "users/alice", json!({}))
            .await
            .unwrap();
        assert!(
            f.call(Operation::List, "users/", json!({}))
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(
            f.invalid(
                Operation::Update,
                "login/alice",
                json!({"password": "new one"})
            )
            .await,
            INVALID_LOGIN
        );
    }

    #[tokio::test]
    async fn bad_input_is_refused_and_changes_nothing() {
        let f = fixture();
        let m = f.invalid(Operation::Create, "users/carol", json!({})).await;
        assert!(m.contains("missing required field \"password\""), "{m}");
        let m = f
            .invalid(Operation::Create, "users/carol", json!({"password": ""}))
            .await;
        assert!(m.contains("must not be empty"), "{m}");
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        let m = f
            .invalid(Operation::Create, "users/carol", json!({"password": long}))
            .await;
        assert!(m.contains("longer than"), "{m}");
        let m = f
            .invalid(Operation::Create, "users/carol", json!({"password": 5}))
            .await;
        assert!(m.contains("expected a string"), "{m}");
        let m = f
            .invalid(
                Operation::Create,
                "users/carol",
                json!({"password": "p", "token_type": "batch"}),
            )
            .await;
        assert!(m.contains("token_type"), "{m}");
        let m = f
            .invalid(Operation::Create, "users/a%2Fb", json!({"password": "p"}))
            .await;
        assert!(m.contains("invalid user name"), "{m}");
        let m = f
            .invalid(
                Operation::Update,
                "users/nobody/password",
                json!({"password": "p"}),
            )
            .await;
        assert!(m.contains("no user named"), "{m}");
        let m = f
            .invalid(
                Operation::Update,
                "users/nobody/policies",
                json!({"policies": "p"}),
            )
            .await;
        assert!(m.contains("no user named"), "{m}");
        assert!(
            f.call(Operation::List, "users/", json!({}))
                .await
                .unwrap()
                .is_none()
        );
    }
}
