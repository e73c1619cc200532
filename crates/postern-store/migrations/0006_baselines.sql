-- Baselines of service identities (issue 5): the statement fingerprints and client networks each
-- machine identity has been seen with on each target. What is first seen within the observation
-- window that starts at `started_at` is learned; what is first seen after it is an anomaly, kept
-- here unlearned so that it is reported once and an operator may accept it. Times are unix seconds.
CREATE TABLE baselines (
    issuer     TEXT    NOT NULL,
    subject    TEXT    NOT NULL,
    target     TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    PRIMARY KEY (issuer, subject, target)
) STRICT;

-- `kind` says what `value` is:
--   fingerprint  pg_query's fingerprint of a statement text (`sha256:` and the text's hash when
--                the text does not parse)
--   network      the client's network: its address masked to the configured prefix, as CIDR
CREATE TABLE baseline_entries (
    issuer      TEXT    NOT NULL,
    subject     TEXT    NOT NULL,
    target      TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    value       TEXT    NOT NULL,
    learned     INTEGER NOT NULL,
    first_seen  INTEGER NOT NULL,
    sample      TEXT    NOT NULL,
    accepted_by TEXT,
    PRIMARY KEY (issuer, subject, target, kind, value),
    FOREIGN KEY (issuer, subject, target) REFERENCES baselines (issuer, subject, target)
        ON DELETE CASCADE,
    CHECK (kind IN ('fingerprint', 'network')),
    CHECK (learned IN (0, 1))
) STRICT;
