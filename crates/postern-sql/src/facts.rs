//! The facts the classifier reports about a SQL text: what kind of statement each one is, what
//! it touches, and which constructs the escape guard must look at. Plain data: the decisions made
//! from these facts live in `postern-policy`.

use serde::Serialize;

/// What parsing one SQL text (one simple-protocol `Query`, or one `Parse`) found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Analysis {
    /// One entry per top-level statement, in the order they appear in the text. Empty for an
    /// empty query (only whitespace, comments or semicolons) and when the text does not parse.
    pub statements: Vec<StatementFacts>,
    /// libpg_query's message when it rejects the text; `statements` is then empty, and nothing
    /// about the text is known.
    pub parse_error: Option<String>,
    /// pg_query's fingerprint (hex) of the whole text: the same for texts that differ only in
    /// constants and formatting. For grouping in audit and metrics, never for caching decisions.
    pub fingerprint: Option<String>,
    /// The text with literals that could be secrets replaced (see [`crate::redact`]), for the
    /// audit log: made once per distinct text, with the analysis, rather than per statement.
    pub redacted: String,
    /// The text as the client sent it: what a statement-scoped approval grants, and what an
    /// impact preview runs. Kept with the shared analysis so that recording it per statement
    /// copies nothing. Never logged (it may hold secrets); `redacted` is for showing.
    pub text: String,
}

impl Analysis {
    /// The most dangerous kind among the statements: `Raw` when the text did not parse, `Read`
    /// for an empty query.
    #[must_use]
    pub fn kind(&self) -> StatementKind {
        if self.parse_error.is_some() {
            return StatementKind::Raw;
        }
        self.statements
            .iter()
            .map(|s| s.kind)
            .max()
            .unwrap_or(StatementKind::Read)
    }

    /// Every hazard of every statement, in order.
    pub fn hazards(&self) -> impl Iterator<Item = &Hazard> {
        self.statements.iter().flat_map(|s| s.hazards.iter())
    }
}

/// Facts about one top-level statement, gathered from every node of its parse tree (subqueries,
/// CTEs, cursor and `PREPARE` bodies, `COPY (query)`, `EXPLAIN` targets, rule actions, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementFacts {
    /// The most dangerous class of anything the statement does.
    pub kind: StatementKind,
    /// The command, as PostgreSQL names it in its command tags: `SELECT`, `CREATE FUNCTION`, ...
    pub command: String,
    /// Every relation named anywhere in the tree (CTE references excluded), schema-qualified when
    /// written so. Tables reached only through functions (`table_to_xml('t')`, `regclass` casts)
    /// are not here: such functions carry a [`Hazard`] or an `Admin`/`Raw` kind instead.
    pub tables: Vec<String>,
    /// Every function called anywhere in the tree, lower-cased, schema-qualified when written so.
    pub functions: Vec<String>,
    /// Constructs the escape guard cares about, each listed once.
    pub hazards: Vec<Hazard>,
    /// For SQL-level `PREPARE`, `EXECUTE`, `DEALLOCATE`, `DECLARE` and `FETCH`/`MOVE`: the
    /// prepared statement or cursor named, so that a session can decide an `EXECUTE` with what
    /// the `PREPARE` prepared and a `FETCH` with the query its `DECLARE` opened.
    pub prepared: Option<PreparedName>,
    /// State the statement leaves on the server connection after its transaction ends (see
    /// [`SessionScoped`]), each listed once, in the order found. Empty for nearly every statement.
    pub session_scoped: Vec<SessionScoped>,
}

/// What a statement does with a prepared statement's or a cursor's name (as the server folds
/// it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PreparedName {
    /// `PREPARE name AS ...`: the facts of this statement are those of the statement prepared.
    Prepare(String),
    /// `EXECUTE name`.
    Execute(String),
    /// `DEALLOCATE name`, or `DEALLOCATE ALL` (`None`).
    Deallocate(Option<String>),
    /// `DECLARE name CURSOR ... FOR query`: the facts of this statement are the query's. `hold`:
    /// `WITH HOLD`, so the cursor outlives its transaction.
    Declare { name: String, hold: bool },
    /// `FETCH` or `MOVE` on the cursor `name`.
    Fetch(String),
}

/// The statement classes that policy grants, least dangerous first: the derived order is the
/// order of danger, and a statement doing several things has the greatest kind among them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementKind {
    /// `SELECT`, `VALUES`, `TABLE`, `SHOW`, `EXPLAIN` without `ANALYZE`, `COPY ... TO STDOUT`.
    Read,
    /// `BEGIN`, `START TRANSACTION`, `COMMIT`, `ROLLBACK`, `SAVEPOINT`, `RELEASE`,
    /// `PREPARE TRANSACTION`.
    Transaction,
    /// Session state: `SET`/`RESET`, `DISCARD`, `LISTEN`/`UNLISTEN`/`NOTIFY`,
    /// `PREPARE`/`EXECUTE`/`DEALLOCATE`, cursors, `set_config()`.
    Session,
    /// Data changes: `INSERT`/`UPDATE`/`DELETE`/`MERGE`, `SELECT ... FOR UPDATE/SHARE`,
    /// `nextval`/`setval`, `COPY ... FROM STDIN`, `CALL`, `REFRESH MATERIALIZED VIEW`.
    Write,
    /// Schema changes: `CREATE`/`ALTER`/`DROP` of non-role objects, `SELECT INTO`,
    /// `CREATE TABLE AS`, `TRUNCATE`, `COMMENT`.
    Ddl,
    /// Privileges and roles: `GRANT`/`REVOKE`, `CREATE`/`ALTER`/`DROP ROLE`, `REASSIGN OWNED`.
    Dcl,
    /// Server administration: `ALTER SYSTEM`, extensions, `VACUUM`, `ANALYZE`, `CHECKPOINT`,
    /// `LOCK`, `COPY` with a server file or `PROGRAM`, databases, tablespaces, subscriptions,
    /// backend signalling, server-file, large-object and `dblink` functions.
    Admin,
    /// Opaque or unknown: `DO`, functions that run SQL given as text, statements Postern does not
    /// recognise.
    Raw,
}

impl StatementKind {
    /// The name policy uses for this class (the Cedar action).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Transaction => "transaction",
            Self::Session => "session",
            Self::Write => "write",
            Self::Ddl => "ddl",
            Self::Dcl => "dcl",
            Self::Admin => "admin",
            Self::Raw => "raw",
        }
    }
}

impl std::fmt::Display for StatementKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A construct that could let a client escape the role or settings Postern chose, or run code the
/// classifier cannot see. Found anywhere in the tree, including nested statements.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "hazard", rename_all = "snake_case")]
pub enum Hazard {
    /// `SET [SESSION|LOCAL] ROLE`, `RESET ROLE`, `SET role TO ...` in any spelling, also inside
    /// `ALTER ROLE/DATABASE ... SET` and function `SET` clauses.
    RoleChange,
    /// `SET SESSION AUTHORIZATION`, `RESET SESSION AUTHORIZATION`, `SET session_authorization`.
    SessionAuthorization,
    /// A top-level `RESET ALL` (which also resets the role and `postern.*`).
    ResetAll,
    /// `DISCARD ALL` (which also resets the role and `postern.*`).
    DiscardAll,
    /// `SET`/`RESET` of a `postern.*` setting; `name` lower-cased.
    PosternSetting {
        /// The setting, lower-cased.
        name: String,
    },
    /// A call of `set_config` (any schema, any case).
    SetConfig {
        /// The lower-cased setting name when the first argument is a string constant (escape
        /// and Unicode strings decoded); `None` when it is computed at run time.
        setting: Option<String>,
    },
    /// `standard_conforming_strings` set to anything but on, by `SET` or `set_config`. With it
    /// off the server reads backslashes in string literals differently from Postern's parser.
    StandardConformingStringsOff,
    /// `search_path` changed, by `SET`/`RESET` or `set_config`: the schemas it may now hold
    /// (names as the server folds them), or `None` when the value is computed at run time.
    /// `RESET` and `SET ... TO DEFAULT` give no new schemas: they return to the login's value.
    SearchPath {
        /// The new path's schemas, when Postern can read them.
        schemas: Option<Vec<String>>,
    },
    /// `INSERT`/`UPDATE`/`DELETE`/`MERGE` on `pg_settings`, which changes settings (including
    /// the role) through the view's rules without naming them in the statement.
    PgSettingsWrite,
    /// `client_encoding` (`SET client_encoding`, `SET NAMES`, `set_config`) set to an encoding
    /// that is not ASCII-safe, in which the server and Postern could split the text differently.
    ClientEncoding {
        /// The encoding as written; empty when computed at run time.
        name: String,
    },
    /// A `DO` block: code the classifier cannot read.
    DoBlock,
    /// Creating, changing, renaming or dropping a role, user or group, or granting or revoking
    /// role membership.
    AlterRole,
    /// A definition of code or of an expression stored to run later (functions, procedures,
    /// views, rules, triggers, domains, column defaults that call functions, ...).
    FunctionDefinition {
        /// What is defined, for the client message: `CREATE FUNCTION`, `a column DEFAULT
        /// expression that calls a function`, ...
        what: String,
    },
    /// A call of a function that runs SQL given as text, which the classifier cannot see.
    RunsSqlText {
        /// The function as written, lower-cased.
        function: String,
    },
    /// `CALL procedure(...)`.
    Call,
}

/// State a statement leaves on the server connection after its transaction ends. With
/// transaction pooling the connection serves another client's next transaction, which would
/// inherit the state, and this client's next transaction may run on another connection, which
/// lacks it.
///
/// Statements (`SET`, `LISTEN`, `PREPARE`, ...) count at the top level only; calls of
/// `set_config` and of advisory lock functions, and writes to `pg_settings`, count wherever they
/// appear in the tree, like [`Hazard`]s (inside a plain `EXPLAIN` or a stored definition too).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SessionScoped {
    /// A session-level `SET`/`RESET` (not `SET LOCAL`, not `SET TRANSACTION`, not the `SET`
    /// clauses of `ALTER ROLE/DATABASE/FUNCTION` and `CREATE FUNCTION`, which store defaults).
    Setting {
        /// The setting as the server names it, lower-cased: `timezone` for `SET TIME ZONE`,
        /// `client_encoding` for `SET NAMES`, `search_path` for `SET SCHEMA`,
        /// `default_transaction_isolation` (`_read_only`, `_deferrable`) for
        /// `SET SESSION CHARACTERISTICS AS TRANSACTION`, `all` for `RESET ALL`.
        name: String,
    },
    /// A call of `set_config` whose `is_local` argument is not the constant `true`, or an
    /// `INSERT`/`UPDATE`/`DELETE`/`MERGE` on `pg_settings` (whose rules call `set_config` with
    /// `is_local` false).
    SetConfig {
        /// The lower-cased setting name when it is a string constant; `None` when it is computed
        /// at run time, and for `pg_settings` writes.
        setting: Option<String>,
    },
    /// `LISTEN channel`: notifications are delivered to the connection.
    Listen,
    /// A call of a session-level advisory lock function (`pg_advisory_lock`,
    /// `pg_try_advisory_lock` and their `_shared` forms), held until unlocked or the connection
    /// closes. The `_xact_` forms end with the transaction.
    AdvisoryLock {
        /// The function as written, lower-cased.
        function: String,
    },
    /// `DECLARE ... CURSOR WITH HOLD`: the cursor outlives its transaction.
    HoldCursor,
    /// SQL-level `PREPARE`: the prepared statement stays on the connection.
    Prepare,
    /// `DEALLOCATE ALL`, which would also drop the statements Postern keeps prepared on the
    /// connection. `DEALLOCATE name` is not reported.
    Deallocate,
    /// `DISCARD ALL`, which would also drop the statements Postern keeps prepared on the
    /// connection. `DISCARD PLANS`, `SEQUENCES` and `TEMP` are not reported.
    Discard {
        /// What is discarded, lower-cased: `all`.
        what: String,
    },
    /// Creating a temporary table, view or sequence (`CREATE TEMP ...`, `SELECT ... INTO TEMP`,
    /// `CREATE TEMP TABLE ... AS`, or a relation created in schema `pg_temp`), or a function,
    /// procedure, type or domain created in `pg_temp`. Not a temporary table created
    /// `ON COMMIT DROP`, which ends with its transaction.
    TempObject,
    /// `LOAD 'library'`: the library stays loaded in the server process.
    Load,
}
