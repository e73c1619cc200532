-- SCIM 2.0 provisioning (issue 5): the users an identity provider provisions to Postern
-- (RFC 7643 section 4.1), and the revocations SCIM made, so that reactivating a person lifts
-- those and never one an operator made. Times are unix seconds.

-- A provisioned user. `id` is Postern's (RFC 7643 section 3.1: assigned by the service
-- provider, never reassigned); `attributes` holds what else the provider sent (name,
-- displayName, emails, extensions), never a password.
CREATE TABLE scim_users (
    id          TEXT    NOT NULL PRIMARY KEY,
    user_name   TEXT    NOT NULL,
    external_id TEXT,
    active      INTEGER NOT NULL,
    attributes  TEXT    NOT NULL,  -- JSON object
    created_at  INTEGER NOT NULL,
    modified_at INTEGER NOT NULL,
    CHECK (active IN (0, 1)),
    CHECK (json_valid(attributes) AND json_type(attributes) = 'object')
) STRICT;

-- userName is unique and compared without regard to case (RFC 7643 section 4.1.1: caseExact
-- false); SQLite's NOCASE folds ASCII letters only.
CREATE UNIQUE INDEX scim_users_user_name ON scim_users (user_name COLLATE NOCASE);
-- Providers look users up by externalId before creating them.
CREATE INDEX scim_users_external_id ON scim_users (external_id) WHERE external_id IS NOT NULL;
-- Listing, oldest first.
CREATE INDEX scim_users_created ON scim_users (created_at);

-- A revocation SCIM made (deactivation or deletion), by the person it covers: the issuer's
-- `iss` and the subject. Outlives the user's row, so that a deleted person stays revoked.
CREATE TABLE scim_revocations (
    revocation_id TEXT NOT NULL PRIMARY KEY,
    issuer        TEXT NOT NULL,
    subject       TEXT NOT NULL,
    FOREIGN KEY (revocation_id) REFERENCES revocations (id)
) STRICT;

CREATE INDEX scim_revocations_person ON scim_revocations (issuer, subject);
