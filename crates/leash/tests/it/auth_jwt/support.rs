//! Test support for the `jwt` and `kubernetes` auth methods: keys and certificates made
//! at test time with the `openssl` command (nothing private is committed), JWT signing,
//! and a small local HTTP(S) server that answers as a handler says (or hangs) and keeps
//! what it was sent — the JWKS endpoint, the OIDC discovery document and the Kubernetes
//! TokenReview API are played by it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use leash_testkit::TestServer;
use leash_types::{Clock as _, SystemClock};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::error;

/// A signing key pair.
pub(crate) struct Key {
    /// PKCS#8 private key PEM (test only, never written to the repository).
    pub(crate) private_pem: String,
    /// SPKI public key PEM.
    pub(crate) public_pem: String,
    /// The public key as a JWK (no `kid`).
    pub(crate) jwk: Value,
}

/// A server certificate and its key.
pub(crate) struct ServerCert {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// Everything cryptographic the tests need, made once per test run.
pub(crate) struct Pki {
    /// The CA that leash is told to trust.
    pub(crate) ca_pem: String,
    /// A server certificate for 127.0.0.1 / localhost issued by that CA.
    pub(crate) server: ServerCert,
    /// A certificate for the same names from another CA (pinning must refuse it).
    pub(crate) rogue_server: ServerCert,
    /// That other CA (trusting it instead of `ca_pem` must refuse `server`).
    pub(crate) rogue_ca_pem: String,
    /// Service-account / issuer signing keys.
    pub(crate) rsa: Key,
    pub(crate) rsa2: Key,
    pub(crate) ec: Key,
}

fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command is needed to make test keys and certificates");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap()
}

fn ec_key(dir: &Path, out: &str) {
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            out,
        ],
    );
}

fn make_ca(dir: &Path, tag: &str) {
    ec_key(dir, &format!("{tag}-ca.key"));
    std::fs::write(
        dir.join(format!("{tag}-ca.cnf")),
        format!(
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n\
             [dn]\nCN = leash test CA {tag}\n\
             [v3_ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n\
             subjectKeyIdentifier = hash\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-new",
            "-key",
            &format!("{tag}-ca.key"),
            "-config",
            &format!("{tag}-ca.cnf"),
            "-days",
            "2",
            "-out",
            &format!("{tag}-ca.pem"),
        ],
    );
}

fn make_server_cert(dir: &Path, tag: &str) -> ServerCert {
    ec_key(dir, &format!("{tag}-srv.key"));
    std::fs::write(
        dir.join(format!("{tag}-srv.cnf")),
        "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = 127.0.0.1\n",
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{tag}-srv.ext")),
        "basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n\
         extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n\
         authorityKeyIdentifier = keyid\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &format!("{tag}-srv.key"),
            "-config",
            &format!("{tag}-srv.cnf"),
            "-out",
            &format!("{tag}-srv.csr"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{tag}-srv.csr"),
            "-CA",
            &format!("{tag}-ca.pem"),
            "-CAkey",
            &format!("{tag}-ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{tag}-srv.ext"),
            "-out",
            &format!("{tag}-srv.pem"),
        ],
    );
    ServerCert {
        cert_pem: read(dir, &format!("{tag}-srv.pem")),
        key_pem: read(dir, &format!("{tag}-srv.key")),
    }
}

fn make_key(dir: &Path, tag: &str, rsa: bool) -> Key {
    let key = format!("{tag}.key");
    let public = format!("{tag}.pub");
    if rsa {
        openssl(
            dir,
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                &key,
            ],
        );
    } else {
        ec_key(dir, &key);
    }
    openssl(dir, &["pkey", "-in", &key, "-pubout", "-out", &public]);
    let jwk = if rsa {
        let m = String::from_utf8(openssl(
            dir,
            &["rsa", "-pubin", "-in", &public, "-modulus", "-noout"],
        ))
        .unwrap();
        let hex = m.trim().trim_start_matches("Modulus=");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB", "use": "sig"})
    } else {
        let der = openssl(dir, &["pkey", "-pubin", "-in", &public, "-outform", "DER"]);
        let p = &der[der.len() - 64..];
        json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&p[..32]),
               "y": URL_SAFE_NO_PAD.encode(&p[32..])})
    };
    Key {
        private_pem: read(dir, &key),
        public_pem: read(dir, &public),
        jwk,
    }
}

/// The test PKI (made on first use; a few seconds of `openssl`).
pub(crate) fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        make_ca(d, "one");
        make_ca(d, "two");
        Pki {
            ca_pem: read(d, "one-ca.pem"),
            server: make_server_cert(d, "one"),
            rogue_server: make_server_cert(d, "two"),
            rogue_ca_pem: read(d, "two-ca.pem"),
            rsa: make_key(d, "rsa1", true),
            rsa2: make_key(d, "rsa2", true),
            ec: make_key(d, "ec1", false),
        }
    })
}

/// Now, in Unix seconds.
pub(crate) fn now() -> i64 {
    i64::try_from(
        SystemClock
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// A JWT signed with `alg` by `key_pem` (a private key; for `HS*` the bytes are the
/// HMAC secret), with an optional `kid`.
pub(crate) fn sign(alg: Algorithm, key_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    let key = match alg {
        Algorithm::ES256 | Algorithm::ES384 => {
            EncodingKey::from_ec_pem(key_pem.as_bytes()).unwrap()
        }
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            EncodingKey::from_secret(key_pem.as_bytes())
        }
        _ => EncodingKey::from_rsa_pem(key_pem.as_bytes()).unwrap(),
    };
    jsonwebtoken::encode(&h, claims, &key).unwrap()
}

/// A JWT with a hand-made header and signature (e.g. `alg: none`).
pub(crate) fn unsigned(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// A request the fake server received.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Seen {
    /// A header's value (case-insensitive name).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// What the fake server does with a request.
pub(crate) enum Reply {
    /// Answer with this status and JSON body.
    Json(u16, Value),
    /// Never answer (until the server is dropped).
    Hang,
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A local HTTP or HTTPS server on 127.0.0.1, stopped when dropped.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    tls: bool,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_one<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<Seen>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let first: Vec<&str> = lines.next().unwrap_or("").split(' ').collect();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < len {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    let req = Seen {
        method: first.first().copied().unwrap_or("").to_owned(),
        path: first.get(1).copied().unwrap_or("").to_owned(),
        headers,
        body,
    };
    seen.lock().unwrap().push(req.clone());
    match handler(&req) {
        Reply::Hang => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
        Reply::Json(status, v) => {
            let body = v.to_string();
            let answer = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(answer.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    }
}

impl FakeServer {
    /// Starts a server; with `cert`, it speaks HTTPS with that certificate.
    pub(crate) async fn start(
        cert: Option<&ServerCert>,
        handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> FakeServer {
        let acceptor = cert.map(|c| {
            let certs = rustls_pemfile::certs(&mut c.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls_pemfile::private_key(&mut c.key_pem.as_bytes())
                .unwrap()
                .unwrap();
            let config = rustls::ServerConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let tls = acceptor.is_some();
        let seen2 = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            // Connections live in the set, so stopping the server stops them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (h, s) = (Arc::clone(&handler), Arc::clone(&seen2));
                match &acceptor {
                    Some(a) => {
                        let a = a.clone();
                        conns.spawn(async move {
                            // A client that refuses our certificate ends here.
                            if let Ok(tls) = a.accept(stream).await {
                                serve_one(tls, h, s).await;
                            }
                        });
                    }
                    None => {
                        conns.spawn(serve_one(stream, h, s));
                    }
                }
                while conns.try_join_next().is_some() {}
            }
        });
        FakeServer {
            addr,
            tls,
            seen,
            task,
        }
    }

    /// Base URL (`https://127.0.0.1:port` or `http://…`).
    pub(crate) fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// What it received so far.
    pub(crate) fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Enables an auth method of `kind` at `path` as root.
pub(crate) async fn enable(srv: &TestServer, path: &str, kind: &str) {
    let (s, b) = srv
        .root(
            "POST",
            &format!("sys/auth/{path}"),
            Some(json!({"type": kind})),
        )
        .await;
    assert_eq!(s, 204, "enable {kind} at {path}: {b}");
}

/// A root write that must succeed (204, or 200 with warnings); returns the body.
pub(crate) async fn write(srv: &TestServer, path: &str, body: Value) -> Value {
    let (s, b) = srv.root("POST", path, Some(body)).await;
    assert!(s == 204 || s == 200, "POST {path}: {s} {b}");
    b
}

/// Logs in without a token; returns status and body.
pub(crate) async fn login(srv: &TestServer, mount: &str, role: &str, jwt: &str) -> (u16, Value) {
    srv.call(
        "POST",
        &format!("auth/{mount}/login"),
        None,
        Some(json!({"role": role, "jwt": jwt})),
    )
    .await
}

/// Asserts that logging in with `jwt` is refused — 400 for an unknown role, else 403
/// (`permission denied` and the reason) — with the error naming the failed check
/// (`want`), and that the answer contains no part of the token.
pub(crate) async fn assert_refused(
    srv: &TestServer,
    mount: &str,
    role: &str,
    jwt: &str,
    want: &str,
) {
    let (s, b) = login(srv, mount, role, jwt).await;
    let status = if want == "invalid role name" {
        400
    } else {
        403
    };
    assert_eq!(s, status, "expected a {status} refusal: {b}");
    let msg = error(&b);
    assert!(msg.contains(want), "error {msg:?} does not name {want:?}");
    let text = b.to_string();
    for part in jwt.split('.').filter(|p| p.len() >= 8) {
        assert!(!text.contains(part), "the answer echoes the token: {text}");
    }
    assert!(b.get("auth").is_none_or(Value::is_null), "{b}");
}
