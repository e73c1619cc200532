-- Just-in-time approvals: statements held until approvers approve them, the votes cast, and the
-- grants that approvals make. Times are unix seconds. Lists and free-form objects are JSON text.

-- A held statement. `state` leaves 'pending' once, and `decided_at` says when.
CREATE TABLE approval_requests (
    id                TEXT    NOT NULL PRIMARY KEY,
    requester_subject TEXT    NOT NULL,
    requester_issuer  TEXT    NOT NULL,
    target            TEXT    NOT NULL,
    role              TEXT    NOT NULL,
    session_id        TEXT    NOT NULL,
    client_ip         TEXT    NOT NULL,
    statement         TEXT    NOT NULL,
    statement_key     TEXT    NOT NULL,
    fingerprint       TEXT    NOT NULL,
    params_hash       TEXT,
    reason            TEXT,
    actions           TEXT    NOT NULL,  -- JSON: [{"action": …, "resource": …}]
    requirements      TEXT    NOT NULL,  -- JSON: [{"policy", "group", "approvers", …}]
    context           TEXT    NOT NULL,  -- JSON object
    created_at        INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    state             TEXT    NOT NULL DEFAULT 'pending',
    decided_at        INTEGER,
    preview           TEXT,              -- JSON, set once the preview has run
    CHECK (state IN ('pending', 'approved', 'denied', 'withdrawn', 'expired')),
    CHECK ((state = 'pending') = (decided_at IS NULL)),
    CHECK (json_valid(actions) AND json_type(actions) = 'array'),
    CHECK (json_valid(requirements) AND json_type(requirements) = 'array'),
    CHECK (json_valid(context) AND json_type(context) = 'object'),
    CHECK (preview IS NULL OR json_valid(preview))
) STRICT;

-- What expiry and the console's queue read: the pending requests.
CREATE INDEX approval_requests_pending ON approval_requests (expires_at) WHERE state = 'pending';
-- Listing, newest first.
CREATE INDEX approval_requests_created ON approval_requests (created_at);

-- One vote per approver (issuer and subject) per request, kept whether or not it counted.
CREATE TABLE approval_votes (
    request_id       TEXT    NOT NULL,
    approver_subject TEXT    NOT NULL,
    approver_issuer  TEXT    NOT NULL,
    approver_groups  TEXT    NOT NULL,  -- JSON: ["group", …], as the approver's token had them
    verdict          TEXT    NOT NULL,
    comment          TEXT,
    scope            TEXT    NOT NULL,
    ttl_secs         INTEGER,
    budget           INTEGER,
    at               INTEGER NOT NULL,
    PRIMARY KEY (request_id, approver_issuer, approver_subject),
    FOREIGN KEY (request_id) REFERENCES approval_requests (id),
    CHECK (verdict IN ('approve', 'deny')),
    CHECK (scope IN ('statement', 'action')),
    CHECK (json_valid(approver_groups) AND json_type(approver_groups) = 'array'),
    CHECK (ttl_secs IS NULL OR ttl_secs >= 1),
    CHECK (budget IS NULL OR budget >= 1)
) STRICT;

-- What an approval allows its requester to run again. At most one per request. `uses` counts what
-- was taken from `budget` (NULL: unlimited until `expires_at`). `lapse_reported` is set once the
-- grant's expiry has been audited, so each expiry is reported once.
CREATE TABLE grants (
    id             TEXT    NOT NULL PRIMARY KEY,
    request_id     TEXT    NOT NULL UNIQUE,
    subject        TEXT    NOT NULL,
    issuer         TEXT    NOT NULL,
    target         TEXT    NOT NULL,
    role           TEXT    NOT NULL,
    scope          TEXT    NOT NULL,
    statement_key  TEXT,
    actions        TEXT    NOT NULL,  -- JSON: the request's actions
    budget         INTEGER,
    uses           INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    created_by     TEXT    NOT NULL,  -- JSON: the approving subjects
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_by     TEXT,
    lapse_reported INTEGER NOT NULL DEFAULT 0,
    FOREIGN KEY (request_id) REFERENCES approval_requests (id),
    CHECK (scope IN ('statement', 'action')),
    CHECK ((scope = 'statement') = (statement_key IS NOT NULL)),
    CHECK (json_valid(actions) AND json_type(actions) = 'array'),
    CHECK (json_valid(created_by) AND json_type(created_by) = 'array'),
    CHECK (budget IS NULL OR budget >= 1),
    CHECK (uses >= 0 AND (budget IS NULL OR uses <= budget)),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL)),
    CHECK (lapse_reported IN (0, 1))
) STRICT;

-- What every held statement looks up: the requester's grants not revoked.
CREATE INDEX grants_active ON grants (subject, target, role) WHERE revoked_at IS NULL;
-- What `lapse_grants` reads: expiries not yet reported.
CREATE INDEX grants_unreported_lapse ON grants (expires_at)
    WHERE lapse_reported = 0 AND revoked_at IS NULL;
-- Listing, newest first.
CREATE INDEX grants_created ON grants (created_at);
