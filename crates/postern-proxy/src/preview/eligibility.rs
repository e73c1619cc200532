//! Which held statements may have an impact preview: a pure decision over the classifier's
//! facts, made before any connection is opened.
//!
//! A preview runs the statement for real inside a transaction that Postern rolls back, so it is
//! only for a single statement every effect of which a rollback undoes. Refused, each with a
//! reason the approver reads as "no preview: …":
//!
//! - statements with parameters bound through the extended protocol (Postern keeps only their
//!   hash, so it cannot run them), texts that do not parse, and anything but exactly one
//!   statement;
//! - statements that cannot run in a transaction block or act outside it: `VACUUM`, `ANALYZE`,
//!   `CLUSTER`, `REINDEX`, anything `CONCURRENTLY`, `CHECKPOINT`, `LOCK`, `COPY` (rows from the
//!   client or a file, or a program), `CALL` (a procedure body Postern cannot see, which may
//!   commit), `DO`, `NOTIFY`/`LISTEN`, `LOAD`;
//! - functions whose effects a rollback does not undo or that reach outside the database:
//!   sequence functions (`nextval`, `setval`), `dblink*`, `pg_background*`, `http*`,
//!   `pg_notify`, large objects (`lo_*`, `loread`, `lowrite`), server files (`pg_read_file`,
//!   `pg_ls_*`, `pg_file_*`, …), backend signals (`pg_terminate_backend`, `pg_cancel_backend`,
//!   …), advisory locks, replication slots, WAL and statistics resets;
//! - the classes `dcl`, `admin` and `raw`, transaction and session statements (which change no
//!   data to preview), statements naming the session's prepared statements or cursors (a
//!   separate connection has none), and every escape hazard but a stored expression (a column
//!   `DEFAULT now()` in an `ALTER TABLE` is a common thing to preview, and rolls back).
//!
//! What the text cannot show (triggers, rules, sequence-backed defaults, functions that are not
//! PostgreSQL's own) is checked in the database just before the run (`catalog.rs`).

use postern_sql::{Analysis, Hazard, StatementFacts, StatementKind};

/// A statement that may be previewed, and what the run needs to know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Eligible {
    /// The command tag's words: `DELETE`, `ALTER TABLE`, …
    pub command: String,
    /// Whether `EXPLAIN` accepts the command, so the preview can show its plan.
    pub explain: bool,
    /// Whether it may fire triggers and rules: a data change, or `TRUNCATE`.
    pub fires_triggers: bool,
    /// Whether it may fill columns from their defaults (`INSERT`, `MERGE`, `UPDATE … DEFAULT`,
    /// anywhere in the text).
    pub uses_defaults: bool,
    /// Whether it is DDL, which event triggers run on.
    pub ddl: bool,
    /// Every table the statement names, as written.
    pub tables: Vec<String>,
    /// Every function it calls, lower-cased, as written.
    pub functions: Vec<String>,
}

/// Why there is no preview: shown to approvers, starting "no preview: ".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unavailable(pub String);

impl Unavailable {
    fn new(why: impl std::fmt::Display) -> Self {
        Self(format!("no preview: {why}"))
    }
}

/// The commands `EXPLAIN` takes (of those a preview runs).
/// <https://www.postgresql.org/docs/current/sql-explain.html>
const EXPLAINABLE: &[&str] = &[
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "MERGE",
    "CREATE TABLE AS",
];

/// Commands that cannot run inside a transaction block or whose effects escape one, with why.
fn command_reason(command: &str) -> Option<&'static str> {
    Some(match command {
        "VACUUM" | "ANALYZE" => {
            "it cannot be rolled back (VACUUM and ANALYZE act outside the \
                                 transaction)"
        }
        "CLUSTER" => "CLUSTER rewrites tables outside a transaction Postern can roll back",
        "REINDEX" => "REINDEX may run outside a transaction Postern can roll back",
        "CHECKPOINT" => "CHECKPOINT acts on the whole server",
        "LOCK TABLE" => "LOCK only takes locks: there is nothing to preview",
        "COPY" => {
            "COPY reads or writes rows outside the statement (the client's stream, a \
                   server file or a program), which a preview cannot replay"
        }
        "CALL" => "CALL runs a procedure whose body Postern cannot see, and which may commit",
        "DO" => "a DO block is code Postern cannot see",
        "NOTIFY" | "LISTEN" | "UNLISTEN" => "notifications reach other sessions",
        "LOAD" => "LOAD loads a library into the server process",
        _ => return None,
    })
}

/// Functions whose effects a rollback does not undo, or that reach outside the database, with
/// why. `name` is the last part of the called name, lower-cased: which schema an unqualified
/// name reaches depends on `search_path`, so every spelling counts.
fn function_reason(name: &str) -> Option<&'static str> {
    const PREFIXES: &[(&str, &str)] = &[
        ("dblink", "reaches another database"),
        ("pg_background", "runs SQL in another server process"),
        ("http", "reaches outside the database"),
        (
            "lo_",
            "works on large objects (lo_import and lo_export read and write server files)",
        ),
        ("pg_ls_", "reads the server's files"),
        ("pg_file_", "writes the server's files"),
        (
            "pg_advisory",
            "takes or releases advisory locks, which can outlive the transaction",
        ),
        (
            "pg_try_advisory",
            "takes advisory locks, which can outlive the transaction",
        ),
        (
            "pg_stat_reset",
            "resets statistics, which a rollback does not undo",
        ),
        (
            "pg_logical_",
            "acts on logical replication outside the transaction",
        ),
        (
            "pg_replication_",
            "acts on replication slots outside the transaction",
        ),
        ("pg_wal_replay_", "controls WAL replay"),
        ("pg_backup_", "controls backups"),
    ];
    let why = match name {
        "nextval" | "setval" => "changes a sequence, and a rollback does not undo that",
        "pg_notify" => "sends notifications to other sessions",
        "pg_terminate_backend"
        | "pg_cancel_backend"
        | "pg_signal_backend"
        | "pg_reload_conf"
        | "pg_rotate_logfile"
        | "pg_promote"
        | "pg_log_backend_memory_contexts" => "signals server processes",
        "pg_read_file" | "pg_read_binary_file" | "pg_stat_file" | "pg_logdir_ls" => {
            "reads the server's files"
        }
        "loread" | "lowrite" => "works on large objects",
        "pg_switch_wal"
        | "pg_create_restore_point"
        | "pg_start_backup"
        | "pg_stop_backup"
        | "pg_sync_replication_slots"
        | "pg_import_system_collations" => "acts on the server outside the transaction",
        "set_config" => "changes settings",
        _ if name.ends_with("_replication_slot") => {
            "acts on replication slots outside the transaction"
        }
        _ => {
            return PREFIXES
                .iter()
                .find(|(prefix, _)| name.starts_with(prefix))
                .map(|(_, why)| *why);
        }
    };
    Some(why)
}

/// Decides whether `analysis` may be previewed. `bound_parameters`: it came through the
/// extended protocol, with values Postern kept only the hash of.
pub(crate) fn eligible(
    analysis: &Analysis,
    bound_parameters: bool,
) -> Result<Eligible, Unavailable> {
    if bound_parameters {
        return Err(Unavailable::new(
            "the statement came through the extended protocol with bound values, and Postern \
             keeps only their hash, so it cannot run it",
        ));
    }
    if let Some(error) = &analysis.parse_error {
        return Err(Unavailable::new(format!(
            "the text does not parse ({error})"
        )));
    }
    let statement = match analysis.statements.as_slice() {
        [one] => one,
        [] => return Err(Unavailable::new("the text holds no statement")),
        many => {
            return Err(Unavailable::new(format!(
                "the text holds {} statements; a preview runs exactly one",
                many.len()
            )));
        }
    };
    let command = statement.command.as_str();
    if let Some(why) = command_reason(command) {
        return Err(Unavailable::new(why));
    }
    if has_word(&analysis.text, "concurrently") {
        return Err(Unavailable::new(format!(
            "{command} … CONCURRENTLY cannot run inside a transaction block, so its effects \
             cannot be rolled back"
        )));
    }
    for function in &statement.functions {
        let name = last_part(function);
        if let Some(why) = function_reason(name) {
            return Err(Unavailable::new(format!(
                "the statement calls {name}(), which {why}"
            )));
        }
    }
    if statement.prepared.is_some() {
        return Err(Unavailable::new(format!(
            "{command} names a prepared statement or cursor of the requester's session, which a \
             separate connection does not have"
        )));
    }
    check_kind(statement)?;
    if let Some(hazard) = statement
        .hazards
        .iter()
        .find(|h| !matches!(h, Hazard::FunctionDefinition { .. }))
    {
        return Err(Unavailable::new(format!(
            "the statement {}",
            hazard_reason(hazard)
        )));
    }
    // Nested too: a writable CTE can INSERT under a DELETE.
    let text = analysis.text.as_str();
    let uses_defaults = has_word(text, "insert")
        || has_word(text, "merge")
        || (has_word(text, "update") && has_word(text, "default"));
    Ok(Eligible {
        command: command.to_owned(),
        explain: EXPLAINABLE.contains(&command),
        fires_triggers: statement.kind == StatementKind::Write || command == "TRUNCATE TABLE",
        uses_defaults,
        ddl: statement.kind == StatementKind::Ddl,
        tables: statement.tables.clone(),
        functions: statement.functions.clone(),
    })
}

/// Refuses the classes a preview never runs.
fn check_kind(statement: &StatementFacts) -> Result<(), Unavailable> {
    let command = &statement.command;
    let why = match statement.kind {
        StatementKind::Read | StatementKind::Write | StatementKind::Ddl => return Ok(()),
        StatementKind::Transaction => format!("{command} controls the transaction itself"),
        StatementKind::Session => {
            format!("{command} changes the session, not data, so there is nothing to preview")
        }
        StatementKind::Dcl => {
            format!("{command} is a `dcl` statement: privileges and roles are not previewed")
        }
        StatementKind::Admin => format!(
            "{command} is an `admin` statement, whose effects may reach outside the transaction"
        ),
        StatementKind::Raw => format!(
            "{command} is a `raw` statement (or calls one that runs SQL given as text), which \
             Postern cannot see into"
        ),
    };
    Err(Unavailable::new(why))
}

fn hazard_reason(hazard: &Hazard) -> String {
    match hazard {
        Hazard::RoleChange => "changes the role".to_owned(),
        Hazard::SessionAuthorization => "changes the session authorization".to_owned(),
        Hazard::ResetAll => "resets every setting".to_owned(),
        Hazard::DiscardAll => "discards the session's state".to_owned(),
        Hazard::PosternSetting { name } => format!("sets Postern's own setting {name}"),
        Hazard::SetConfig { .. } => "calls set_config()".to_owned(),
        Hazard::StandardConformingStringsOff => "turns standard_conforming_strings off".to_owned(),
        Hazard::SearchPath { .. } => "changes search_path".to_owned(),
        Hazard::PgSettingsWrite => "writes to pg_settings".to_owned(),
        Hazard::ClientEncoding { .. } => "changes the client encoding".to_owned(),
        Hazard::DoBlock => "holds a DO block, code Postern cannot see".to_owned(),
        Hazard::AlterRole => "changes roles".to_owned(),
        Hazard::FunctionDefinition { what } => format!("defines {what}"),
        Hazard::RunsSqlText { function } => {
            format!("calls {function}(), which runs SQL Postern cannot see")
        }
        Hazard::Call => "calls a procedure Postern cannot see into".to_owned(),
    }
}

/// The last part of a possibly schema-qualified name.
fn last_part(name: &str) -> &str {
    name.rsplit('.').next().unwrap_or(name)
}

/// Whether `word` (lower-case ASCII) appears in `text` as a whole word, in any case. Strings and
/// comments are not told apart: a false match only means no preview.
pub(crate) fn has_word(text: &str, word: &str) -> bool {
    let is_ident = |b: &u8| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'$';
    let (text, word) = (text.as_bytes(), word.as_bytes());
    if word.is_empty() {
        return false;
    }
    text.windows(word.len()).enumerate().any(|(start, window)| {
        window.eq_ignore_ascii_case(word)
            && !start
                .checked_sub(1)
                .and_then(|i| text.get(i))
                .is_some_and(is_ident)
            && !text.get(start + word.len()).is_some_and(is_ident)
    })
}

#[cfg(test)]
mod tests {
    use postern_sql::Classifier;

    use super::{eligible, has_word};

    fn check(sql: &str) -> Result<super::Eligible, String> {
        let analysis = Classifier::new(0).analyze(sql);
        eligible(&analysis, false).map_err(|u| u.0)
    }

    #[test]
    fn single_rollbackable_statements_are_eligible() {
        for (sql, command, explain) in [
            (
                "DELETE FROM orders WHERE tenant_id = 'acme'",
                "DELETE",
                true,
            ),
            (
                "-- reason: INC-1\nUPDATE orders SET amount = 0 WHERE id = 3;",
                "UPDATE",
                true,
            ),
            (
                "INSERT INTO orders (tenant_id, customer, amount) VALUES ('a', 'b', 1)",
                "INSERT",
                true,
            ),
            (
                "WITH gone AS (DELETE FROM t RETURNING id) SELECT count(*) FROM gone",
                "SELECT",
                true,
            ),
            ("SELECT * FROM orders FOR UPDATE", "SELECT", true),
            (
                "ALTER TABLE orders ADD COLUMN note text DEFAULT now()::text",
                "ALTER TABLE",
                false,
            ),
            (
                "CREATE INDEX orders_customer ON orders (customer)",
                "CREATE INDEX",
                false,
            ),
            ("TRUNCATE orders", "TRUNCATE TABLE", false),
            ("DROP TABLE orders", "DROP TABLE", false),
            (
                "CREATE TABLE copy AS SELECT * FROM orders",
                "CREATE TABLE AS",
                true,
            ),
        ] {
            let eligible = check(sql).unwrap_or_else(|why| panic!("{sql}: {why}"));
            assert_eq!(eligible.command, command, "{sql}");
            assert_eq!(eligible.explain, explain, "{sql}");
        }
        let insert = check("INSERT INTO orders (tenant_id) VALUES ('a')").unwrap();
        assert!(insert.uses_defaults && insert.fires_triggers);
        let delete = check("DELETE FROM public.orders WHERE id = 1").unwrap();
        assert!(!delete.uses_defaults && delete.fires_triggers && !delete.ddl);
        assert_eq!(delete.tables, ["public.orders"]);
        assert!(
            check("UPDATE orders SET amount = DEFAULT")
                .unwrap()
                .uses_defaults
        );
        assert!(
            check("WITH m AS (INSERT INTO t VALUES (1) RETURNING id) DELETE FROM t USING m")
                .unwrap()
                .uses_defaults
        );
        assert!(!check("SELECT 1").unwrap().fires_triggers);
        assert!(check("TRUNCATE orders").unwrap().fires_triggers);
        assert!(
            !check("ALTER TABLE orders ADD COLUMN c int")
                .unwrap()
                .fires_triggers
        );
        assert!(check("CREATE TABLE t (id int)").unwrap().ddl);
    }

    #[test]
    fn effects_that_escape_a_rollback_get_no_preview_and_say_why() {
        for (sql, says) in [
            (
                "DELETE FROM orders WHERE id = nextval('orders_id_seq')",
                "nextval()",
            ),
            ("SELECT setval('orders_id_seq', 1)", "setval()"),
            ("UPDATE orders SET id = public.NEXTVAL('s')", "nextval()"),
            (
                "SELECT dblink_exec('host=x', 'DELETE FROM t')",
                "dblink_exec()",
            ),
            ("SELECT pg_notify('c', 'x')", "pg_notify()"),
            ("NOTIFY c", "notifications"),
            ("SELECT lo_import('/etc/passwd')", "lo_import()"),
            ("SELECT lo_export(1, '/tmp/x')", "lo_export()"),
            ("SELECT pg_read_file('/etc/passwd')", "pg_read_file()"),
            ("SELECT pg_terminate_backend(1)", "pg_terminate_backend()"),
            ("SELECT pg_cancel_backend(1)", "pg_cancel_backend()"),
            ("SELECT pg_advisory_lock(1)", "advisory locks"),
            ("SELECT pg_try_advisory_xact_lock(1)", "advisory locks"),
            ("SELECT http_get('https://example.com')", "http_get()"),
            (
                "DELETE FROM t WHERE id IN (SELECT pg_background_launch('x'))",
                "pg_background_launch()",
            ),
            (
                "CREATE INDEX CONCURRENTLY i ON orders (customer)",
                "CONCURRENTLY",
            ),
            ("REINDEX TABLE CONCURRENTLY orders", "REINDEX"),
            ("DROP INDEX CONCURRENTLY i", "CONCURRENTLY"),
            ("VACUUM orders", "VACUUM"),
            ("VACUUM FULL orders", "VACUUM"),
            ("ANALYZE orders", "ANALYZE"),
            ("CLUSTER orders USING orders_pkey", "CLUSTER"),
            ("COPY orders TO PROGRAM 'cat'", "COPY"),
            ("COPY orders TO '/tmp/orders'", "COPY"),
            ("COPY orders FROM STDIN", "COPY"),
            ("CALL cleanup()", "CALL"),
            ("DO $$ BEGIN DELETE FROM t; END $$", "DO block"),
            ("LOCK TABLE orders", "LOCK"),
            ("CHECKPOINT", "CHECKPOINT"),
            ("GRANT SELECT ON orders TO reader", "`dcl`"),
            ("ALTER ROLE writer SUPERUSER", "`dcl`"),
            ("ALTER SYSTEM SET work_mem = '1GB'", "`admin`"),
            ("CREATE EXTENSION dblink", "`admin`"),
            (
                "SELECT query_to_xml('DELETE FROM t', true, true, '')",
                "`raw`",
            ),
            ("COMMIT", "transaction"),
            ("BEGIN", "transaction"),
            ("SET work_mem = '1GB'", "session"),
            ("EXECUTE p(1)", "prepared statement or cursor"),
            ("FETCH ALL FROM c", "prepared statement or cursor"),
            ("PREPARE p AS DELETE FROM t", "prepared statement or cursor"),
            ("SELECT set_config('work_mem', '1GB', true)", "set_config()"),
            ("DELETE FROM t; DELETE FROM u", "2 statements"),
            ("", "no statement"),
            ("DELETE FROM WHERE", "does not parse"),
        ] {
            let why = check(sql).map(|e| e.command).expect_err(sql);
            assert!(why.starts_with("no preview: "), "{sql}: {why}");
            assert!(why.contains(says), "{sql}: {why} should mention {says}");
        }
    }

    #[test]
    fn extended_protocol_statements_with_bound_values_get_no_preview() {
        let analysis = Classifier::new(0).analyze("DELETE FROM orders WHERE id = $1");
        let why = eligible(&analysis, true).expect_err("bound values").0;
        assert!(why.contains("bound values"), "{why}");
    }

    #[test]
    fn words_are_whole_and_caseless() {
        assert!(has_word("create index Concurrently i", "concurrently"));
        assert!(has_word("x\nconcurrently", "concurrently"));
        assert!(!has_word("select concurrently_x", "concurrently"));
        assert!(!has_word("select x_concurrently", "concurrently"));
        assert!(has_word("SET a = DEFAULT", "default"));
        assert!(!has_word("SET a = defaults", "default"));
        assert!(!has_word("", "default"));
        assert!(has_word("é default", "default"));
    }
}
