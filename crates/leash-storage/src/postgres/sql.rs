//! Table names and the SQL text that uses them.

/// Table names and the SQL that uses them.
pub(super) struct Sql {
    pub(super) meta: String,
    pub(super) entries: String,
    pub(super) tokens: String,
    pub(super) leases: String,
    pub(super) servers: String,
    pub(super) migrations: String,
    pub(super) channel: String,
}

impl Sql {
    pub(super) fn new(t: &str) -> Sql {
        Sql {
            meta: format!("{t}_meta"),
            entries: t.to_owned(),
            tokens: format!("{t}_tokens"),
            leases: format!("{t}_leases"),
            servers: format!("{t}_servers"),
            migrations: format!("{t}_migrations"),
            channel: format!("{t}_changes"),
        }
    }

    /// Versioned migrations, in order; each runs in its own transaction once.
    pub(super) fn migrations(&self) -> Vec<String> {
        let Sql {
            meta,
            entries: e,
            tokens: tk,
            leases: l,
            servers: sv,
            channel: ch,
            ..
        } = self;
        vec![format!(
            r#"
CREATE TABLE {meta} (key TEXT COLLATE "C" PRIMARY KEY, value BYTEA NOT NULL);
CREATE TABLE {e} (
    ns TEXT COLLATE "C" NOT NULL, key TEXT COLLATE "C" NOT NULL, value BYTEA NOT NULL,
    PRIMARY KEY (ns, key));
CREATE TABLE {tk} (
    hash BYTEA PRIMARY KEY,
    accessor_hash BYTEA NOT NULL UNIQUE,
    parent BYTEA,
    expire_at BIGINT,
    uses_left BIGINT,
    entry BYTEA NOT NULL);
CREATE INDEX {tk}_parent ON {tk}(parent) WHERE parent IS NOT NULL;
CREATE INDEX {tk}_expire ON {tk}(expire_at) WHERE expire_at IS NOT NULL;
CREATE TABLE {l} (
    id TEXT COLLATE "C" PRIMARY KEY,
    token BYTEA,
    issue_time BIGINT NOT NULL,
    expire_at BIGINT NOT NULL,
    max_expire_at BIGINT NOT NULL,
    state SMALLINT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_error TEXT,
    entry BYTEA NOT NULL,
    owner TEXT,
    claim_owner TEXT,
    claim_until TIMESTAMPTZ);
CREATE INDEX {l}_expire ON {l}(expire_at, id);
CREATE INDEX {l}_revoking ON {l}(expire_at, id) WHERE state = 2;
CREATE INDEX {l}_token ON {l}(token) WHERE token IS NOT NULL;
CREATE INDEX {l}_failing ON {l}(attempts) WHERE attempts > 0;
CREATE INDEX {l}_pending ON {l}(owner) WHERE state = 0;
CREATE TABLE {sv} (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now());
CREATE FUNCTION {e}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE p TEXT;
BEGIN
  IF TG_OP = 'DELETE' THEN p := 'e' || OLD.ns || chr(31) || OLD.key;
  ELSE p := 'e' || NEW.ns || chr(31) || NEW.key; END IF;
  IF octet_length(p) > 7000 THEN p := 'f'; END IF;
  PERFORM pg_notify('{ch}', p);
  RETURN NULL;
END $$;
CREATE TRIGGER {e}_notify AFTER INSERT OR UPDATE OR DELETE ON {e}
    FOR EACH ROW EXECUTE FUNCTION {e}_notify();
CREATE FUNCTION {tk}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('{ch}', 't' || encode(OLD.hash, 'hex'));
  RETURN NULL;
END $$;
CREATE TRIGGER {tk}_notify AFTER UPDATE OF parent, expire_at, entry OR DELETE ON {tk}
    FOR EACH ROW EXECUTE FUNCTION {tk}_notify();
"#
        )]
    }
}

pub(super) const TOKEN_COLUMNS: &str = "hash, accessor_hash, parent, expire_at, uses_left, entry";
pub(super) const LEASE_COLUMNS: &str = "id, token, issue_time, expire_at, max_expire_at, state, attempts, next_attempt_at, last_error, entry";
