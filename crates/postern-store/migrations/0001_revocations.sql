-- Revocations (issue 5): identities that may no longer connect, until the revocation is lifted
-- or lapses at `expires_at`. Times are unix seconds.
--
-- `kind` says what `value` names:
--   subject         the subject, from any issuer
--   issuer_subject  the subject issued by `issuer` (the `iss` claim); `issuer` is set only here
--   group           a group the identity is in
--   token_id        a token's `jti`
CREATE TABLE revocations (
    id         TEXT    NOT NULL PRIMARY KEY,
    kind       TEXT    NOT NULL,
    issuer     TEXT,
    value      TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_by TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    lifted_at  INTEGER,
    lifted_by  TEXT,
    CHECK (kind IN ('subject', 'issuer_subject', 'group', 'token_id')),
    CHECK ((kind = 'issuer_subject') = (issuer IS NOT NULL)),
    CHECK ((lifted_at IS NULL) = (lifted_by IS NULL))
) STRICT;

-- What `active_revocations` reads on every refresh: those not lifted.
CREATE INDEX revocations_not_lifted ON revocations (expires_at) WHERE lifted_at IS NULL;
