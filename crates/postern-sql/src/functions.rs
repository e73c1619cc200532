//! What Postern knows about functions by name: which change data, which administer the server,
//! which run SQL given as text, and which take locks that outlive the transaction. Names are matched on the last, lower-cased part of the called
//! name whatever schema it is written with, because `search_path` decides which function an
//! unqualified name reaches and a client controls `search_path`. The lists are of PostgreSQL's own
//! functions and of the common extensions (`dblink`, `pg_background`, `pg_cron`); the database's
//! privileges remain the first wall for everything else.

use crate::facts::StatementKind;

/// Functions that change data.
const WRITE: &[&str] = &["nextval", "setval"];

/// Functions that change session state.
const SESSION: &[&str] = &["set_config", "pg_notify"];

/// Functions that administer the server, signal other backends, or read and write server files.
/// `lo_*` and `dblink*` are matched by prefix in [`kind_of`].
const ADMIN: &[&str] = &[
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_log_backend_memory_contexts",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_peek_changes",
    "pg_logical_slot_get_binary_changes",
    "pg_logical_slot_peek_binary_changes",
    "pg_logical_emit_message",
    "pg_sync_replication_slots",
    "pg_import_system_collations",
    "pg_read_file",
    "pg_read_binary_file",
    "pg_stat_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_ls_logicalsnapdir",
    "pg_ls_logicalmapdir",
    "pg_ls_replslotdir",
    "pg_ls_summariesdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
    "loread",
    "lowrite",
];

/// Functions that run SQL given as text, or read whole tables named by a value rather than in the
/// statement. `dblink*` and `pg_background*` are matched by prefix in [`runs_sql_text`].
const RUNS_SQL_TEXT: &[&str] = &[
    "query_to_xml",
    "query_to_xmlschema",
    "query_to_xml_and_xmlschema",
    "cursor_to_xml",
    "cursor_to_xmlschema",
    "table_to_xml",
    "table_to_xmlschema",
    "table_to_xml_and_xmlschema",
    "schema_to_xml",
    "schema_to_xmlschema",
    "schema_to_xml_and_xmlschema",
    "database_to_xml",
    "database_to_xmlschema",
    "database_to_xml_and_xmlschema",
    "ts_stat",
];

/// pg_cron's functions that store SQL text to run later; matched schema-qualified only, their
/// bare names being too common.
const RUNS_SQL_TEXT_QUALIFIED: &[&str] = &[
    "cron.schedule",
    "cron.schedule_in_database",
    "cron.alter_job",
];

/// Advisory lock functions whose locks are held by the session, past the transaction, until
/// unlocked or the connection closes. The `pg_advisory_xact_lock*` forms end with the transaction.
/// <https://www.postgresql.org/docs/current/functions-admin.html#FUNCTIONS-ADVISORY-LOCKS>
const SESSION_ADVISORY_LOCKS: &[&str] = &[
    "pg_advisory_lock",
    "pg_advisory_lock_shared",
    "pg_try_advisory_lock",
    "pg_try_advisory_lock_shared",
];

/// Whether a function whose last name part is `name` (lower-cased) takes a session-level
/// advisory lock.
pub(crate) fn takes_session_lock(name: &str) -> bool {
    SESSION_ADVISORY_LOCKS.contains(&name)
}

/// Whether a call of `qualified` (lower-cased, dot-joined) whose last part is `name` with `argc`
/// arguments runs SQL text.
pub(crate) fn runs_sql_text(qualified: &str, name: &str, argc: usize) -> bool {
    RUNS_SQL_TEXT.contains(&name)
        || name.starts_with("dblink")
        || name.starts_with("pg_background")
        // ts_rewrite(query tsquery, select text) runs `select`; the three-tsquery form runs nothing.
        || (name == "ts_rewrite" && argc == 2)
        || RUNS_SQL_TEXT_QUALIFIED.contains(&qualified)
}

/// The statement kind a call of this function implies, when it implies more than `Read`.
pub(crate) fn kind_of(qualified: &str, name: &str, argc: usize) -> Option<StatementKind> {
    if name.starts_with("dblink") {
        // It runs SQL, but on a connection it opens itself: server administration.
        return Some(StatementKind::Admin);
    }
    if runs_sql_text(qualified, name, argc) {
        return Some(StatementKind::Raw);
    }
    if ADMIN.contains(&name) || name.starts_with("lo_") {
        return Some(StatementKind::Admin);
    }
    if WRITE.contains(&name) {
        return Some(StatementKind::Write);
    }
    if SESSION.contains(&name) {
        return Some(StatementKind::Session);
    }
    None
}
