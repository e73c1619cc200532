//! `postern setup-db`: installs the `postern` schema in a target database — the claims signing
//! key, readable by no client role, and the SECURITY DEFINER functions that verify
//! `postern.claims` for row-level security policies.
//!
//! Idempotent: running it again keeps the existing key (sessions already signed stay valid) and
//! replaces the functions with the current version.

use crate::error::UpstreamError;
use crate::target::{Target, fill_random};

/// HMAC-SHA256's block size: the key is padded to it for the inner and outer pads.
const HMAC_BLOCK: usize = 64;

/// What `setup-db` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupReport {
    /// A new signing key was created (false: the existing one was kept).
    pub created_key: bool,
}

/// The schema, table and functions. `$KEY$`, `$IPAD$`, `$OPAD$` are replaced by hex literals.
const INSTALL_SQL: &str = r#"
CREATE SCHEMA IF NOT EXISTS postern;
REVOKE ALL ON SCHEMA postern FROM PUBLIC;
GRANT USAGE ON SCHEMA postern TO PUBLIC;
CREATE TABLE IF NOT EXISTS postern.signing_key (
    id int PRIMARY KEY CHECK (id = 1),
    key bytea NOT NULL,
    ipad bytea NOT NULL,
    opad bytea NOT NULL
);
REVOKE ALL ON postern.signing_key FROM PUBLIC;

CREATE OR REPLACE FUNCTION postern.verified_envelope() RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    raw text := current_setting('postern.claims', true);
    dot int;
    payload text;
    k record;
    body jsonb;
BEGIN
    IF raw IS NULL OR raw = '' THEN
        RETURN NULL;
    END IF;
    dot := strpos(raw, '.');
    IF dot = 0 THEN
        RETURN NULL;
    END IF;
    payload := left(raw, dot - 1);
    SELECT ipad, opad INTO k FROM postern.signing_key WHERE id = 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF encode(sha256(k.opad || sha256(k.ipad || convert_to(payload, 'UTF8'))), 'hex')
            IS DISTINCT FROM substr(raw, dot + 1) THEN
        RETURN NULL;
    END IF;
    body := convert_from(decode(payload, 'base64'), 'UTF8')::jsonb;
    IF (body->>'pid')::int IS DISTINCT FROM pg_backend_pid() THEN
        RETURN NULL;
    END IF;
    IF (body->>'exp')::bigint <= extract(epoch FROM clock_timestamp()) THEN
        RETURN NULL;
    END IF;
    RETURN body;
END
$fn$;
REVOKE ALL ON FUNCTION postern.verified_envelope() FROM PUBLIC;

CREATE OR REPLACE FUNCTION postern.claims() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT postern.verified_envelope() -> 'claims' $fn$;

CREATE OR REPLACE FUNCTION postern.claim(name text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT postern.verified_envelope() -> 'claims' ->> name $fn$;

CREATE OR REPLACE FUNCTION postern.subject() RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$ SELECT postern.verified_envelope() ->> 'sub' $fn$;

GRANT EXECUTE ON FUNCTION postern.claims(), postern.claim(text), postern.subject() TO PUBLIC;

INSERT INTO postern.signing_key (id, key, ipad, opad)
VALUES (1, '\x$KEY$', '\x$IPAD$', '\x$OPAD$')
ON CONFLICT (id) DO NOTHING
RETURNING id;
"#;

/// Installs or updates the `postern` schema in `target`'s database through its admin login.
pub async fn setup_db(target: &Target) -> Result<SetupReport, UpstreamError> {
    let mut key = [0u8; 32];
    fill_random(&mut key);
    let mut padded = [0u8; HMAC_BLOCK];
    padded[..key.len()].copy_from_slice(&key);
    let ipad: Vec<u8> = padded.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = padded.iter().map(|b| b ^ 0x5c).collect();
    let sql = INSTALL_SQL
        .replace("$KEY$", &hex::encode(key))
        .replace("$IPAD$", &hex::encode(ipad))
        .replace("$OPAD$", &hex::encode(opad));
    let mut admin = target.admin().await?;
    // One simple-query message runs as one implicit transaction: all of it or none.
    let result = admin.simple_query(&sql).await;
    admin.terminate().await;
    let created_key = !result?.rows.is_empty();
    Ok(SetupReport { created_key })
}
