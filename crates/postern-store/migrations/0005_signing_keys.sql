-- Postern as a token issuer (issue 5, token exchange): the keys it signs exchanged tokens with.
-- A key signs from `created_at` until `retire_at`, and is published (so tokens it signed still
-- verify) until `expires_at`. The private key is PKCS#8 DER: this file is 0600. Unix seconds.
CREATE TABLE signing_keys (
    kid         TEXT    NOT NULL PRIMARY KEY,
    algorithm   TEXT    NOT NULL,
    private_key BLOB    NOT NULL,
    created_at  INTEGER NOT NULL,
    retire_at   INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    CHECK (algorithm IN ('ES256')),
    CHECK (created_at <= retire_at AND retire_at <= expires_at)
) STRICT;

CREATE INDEX signing_keys_expiry ON signing_keys (expires_at);
