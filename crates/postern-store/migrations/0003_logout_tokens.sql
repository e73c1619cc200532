-- OIDC back-channel logout (issue 5): the `jti` of every logout token acted on, kept until the
-- token could no longer be accepted anyway (`remember_until`), so a replayed token is refused.
-- Times are unix seconds.
CREATE TABLE logout_tokens (
    issuer         TEXT    NOT NULL,
    jti            TEXT    NOT NULL,
    remember_until INTEGER NOT NULL,
    PRIMARY KEY (issuer, jti)
) STRICT;

CREATE INDEX logout_tokens_until ON logout_tokens (remember_until);
