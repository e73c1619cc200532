//! The escape guard: refuses statements that could change who the session is or how Postern reads
//! it, whatever policy says about their class.
//!
//! Policy decides *whether* a class of statement is allowed; the guard makes sure that what runs
//! upstream stays the session Postern set up: the role chosen from the verified identity, the
//! signed `postern.*` settings, and settings under which Postern's parser reads text as the
//! server does (`standard_conforming_strings` on, an ASCII-safe `client_encoding`). In every mode
//! it refuses role and session-authorization changes, `RESET ALL`, `DISCARD ALL`, `postern.*`
//! writes, `set_config` of those (or of a setting it cannot name), writes to `pg_settings`, and
//! text it cannot parse or `DO` blocks (unless the client may run raw statements). In `set_role`
//! mode, where only the guard stands between the client and `RESET ROLE`, it also refuses
//! everything that runs SQL it cannot see or stores code to run later (see
//! `docs/ARCHITECTURE.md`, decision 2). Pure: no I/O, no state.

use postern_config::UpstreamMode;
use postern_sql::{Analysis, Hazard, PreparedName, SessionScoped, is_ascii_safe_encoding};

/// What the guard needs to know about the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardContext {
    /// How the upstream connection got its role: in `SetRole` mode a client that escapes the guard
    /// can `RESET ROLE` to the shared login role, so more is refused.
    pub mode: UpstreamMode,
    /// Policy grants this identity `dcl` on the target: it may manage roles.
    pub may_dcl: bool,
    /// Policy grants this identity `raw` on the target: it may run what Postern cannot check.
    pub may_raw: bool,
}

/// Why a statement or a connection was refused, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// `SET ROLE`, `RESET ROLE`, `set_config('role', ...)`.
    RoleChange,
    /// `SET SESSION AUTHORIZATION` and its spellings.
    SessionAuthorization,
    /// `RESET ALL`.
    ResetAll,
    /// `DISCARD ALL`.
    DiscardAll,
    /// Writes to `postern.*` settings.
    PosternSetting,
    /// `set_config` with a setting name computed at run time.
    DynamicSetConfig,
    /// `standard_conforming_strings` turned off.
    StandardConformingStrings,
    /// `search_path` set to a value computed at run time.
    DynamicSearchPath,
    /// `INSERT`/`UPDATE`/`DELETE` on `pg_settings`.
    PgSettingsWrite,
    /// A client encoding that is not ASCII-safe.
    ClientEncoding,
    /// A `DO` block without the raw permission.
    DoBlock,
    /// Role management without the dcl permission.
    AlterRole,
    /// Stored code or expressions in `set_role` mode.
    FunctionDefinition,
    /// A function that runs SQL text, in `set_role` mode.
    RunsSqlText,
    /// `CALL` in `set_role` mode.
    Call,
    /// Text the parser rejected, without the raw permission.
    ParseError,
    /// The fastpath function-call protocol message.
    Fastpath,
    /// A startup parameter given twice.
    DuplicateStartupParameter,
    /// A replication connection.
    Replication,
    /// A startup parameter that is not on the allow list.
    StartupParameter,
    /// A malformed or disallowed `options` startup parameter.
    StartupOptions,
    /// State that would outlive its transaction on a server connection shared transaction by
    /// transaction.
    TransactionPooling,
}

impl RefusalReason {
    /// A stable name for metrics and audit events.
    #[must_use]
    pub fn label(&self) -> &'static str {
        match self {
            Self::RoleChange => "role_change",
            Self::SessionAuthorization => "session_authorization",
            Self::ResetAll => "reset_all",
            Self::DiscardAll => "discard_all",
            Self::PosternSetting => "postern_setting",
            Self::DynamicSetConfig => "dynamic_set_config",
            Self::StandardConformingStrings => "standard_conforming_strings",
            Self::DynamicSearchPath => "dynamic_search_path",
            Self::PgSettingsWrite => "pg_settings_write",
            Self::ClientEncoding => "client_encoding",
            Self::DoBlock => "do_block",
            Self::AlterRole => "alter_role",
            Self::FunctionDefinition => "function_definition",
            Self::RunsSqlText => "runs_sql_text",
            Self::Call => "call",
            Self::ParseError => "parse_error",
            Self::Fastpath => "fastpath",
            Self::DuplicateStartupParameter => "duplicate_startup_parameter",
            Self::Replication => "replication",
            Self::StartupParameter => "startup_parameter",
            Self::StartupOptions => "startup_options",
            Self::TransactionPooling => "transaction_pooling",
        }
    }
}

/// A refusal: why, for metrics, and what to tell the client. The message names the construct and
/// the reason, never echoes the statement, and is safe to send to the client as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// Why, as a metrics label.
    pub reason: RefusalReason,
    /// What to tell the client: what was refused, why, and where possible what to do instead.
    pub message: String,
}

impl Refusal {
    pub(crate) fn new(reason: RefusalReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The longest parser message quoted back to the client; libpg_query's messages are short, but
/// they can quote a token of the client's text.
const MAX_QUOTED_PARSER_MESSAGE: usize = 200;

/// Checks every statement of an analysed text; the first refusal found wins.
///
/// # Errors
///
/// A [`Refusal`] naming the first construct the guard refuses in this context.
pub fn check(analysis: &Analysis, ctx: &GuardContext) -> Result<(), Refusal> {
    if let Some(error) = &analysis.parse_error {
        if ctx.may_raw {
            return Ok(());
        }
        return Err(Refusal::new(
            RefusalReason::ParseError,
            format!(
                "Postern could not parse this statement, so it cannot check it: {}",
                truncate(error, MAX_QUOTED_PARSER_MESSAGE)
            ),
        ));
    }
    analysis
        .hazards()
        .try_for_each(|hazard| check_hazard(hazard, ctx))
}

/// Checks a text for a target with transaction pooling, where a client holds a server
/// connection only for a transaction and the next transaction may run on another connection,
/// after another client's. Whatever would outlive the transaction on the connection is refused:
/// it would reach the next client, or be missing from the client's own next transaction. So is
/// SQL-level `EXECUTE`/`DEALLOCATE` (the connection holds other clients' prepared statements,
/// and with `PREPARE` refused there is nothing of the client's to name) and reading
/// `pg_prepared_statements` (which would show other clients' statements).
///
/// # Errors
///
/// A [`Refusal`] naming the first such statement and what to do instead.
pub fn check_transaction_pooling(analysis: &Analysis) -> Result<(), Refusal> {
    const WHY: &str = "this target uses transaction pooling, so your server connection is yours \
                       only until your transaction ends and then serves other clients";
    let refuse = |what: String, instead: &str| {
        Err(Refusal::new(
            RefusalReason::TransactionPooling,
            format!("{what} is refused: {WHY}; {instead}"),
        ))
    };
    for statement in &analysis.statements {
        if let Some(state) = statement.session_scoped.first() {
            return match state {
                SessionScoped::Setting { name } => refuse(
                    format!("setting {name} for the session"),
                    "use SET LOCAL inside a transaction block, or a target with pool mode \"session\"",
                ),
                SessionScoped::SetConfig { setting } => refuse(
                    format!(
                        "set_config({}) for the session",
                        setting.as_deref().unwrap_or("a computed name")
                    ),
                    "pass true as its third argument (is_local) inside a transaction block",
                ),
                SessionScoped::Listen => refuse(
                    "LISTEN".to_owned(),
                    "notifications need a target with pool mode \"session\"",
                ),
                SessionScoped::AdvisoryLock { function } => refuse(
                    format!("{function}(), a session-level advisory lock,"),
                    "use the transaction-level pg_advisory_xact_lock() family instead",
                ),
                SessionScoped::HoldCursor => refuse(
                    "a cursor WITH HOLD".to_owned(),
                    "declare it without WITH HOLD and fetch from it inside the transaction",
                ),
                SessionScoped::Prepare => refuse(
                    "SQL-level PREPARE".to_owned(),
                    "use your driver's prepared statements (the extended protocol's), which \
                     Postern keeps across server connections",
                ),
                SessionScoped::Deallocate => refuse(
                    "DEALLOCATE ALL".to_owned(),
                    "close your driver's prepared statements one by one",
                ),
                SessionScoped::Discard { what } => refuse(
                    format!("DISCARD {}", what.to_uppercase()),
                    "every transaction already starts without your earlier state",
                ),
                SessionScoped::TempObject => refuse(
                    "a temporary object that outlives its transaction".to_owned(),
                    "create temporary tables with ON COMMIT DROP inside a transaction block, or \
                     use a target with pool mode \"session\"",
                ),
                SessionScoped::Load => refuse(
                    "LOAD".to_owned(),
                    "load libraries through the server's configuration",
                ),
            };
        }
        match &statement.prepared {
            Some(PreparedName::Execute(_)) => {
                return refuse(
                    "SQL-level EXECUTE".to_owned(),
                    "use your driver's prepared statements (the extended protocol's)",
                );
            }
            Some(PreparedName::Deallocate(_)) => {
                return refuse(
                    "DEALLOCATE".to_owned(),
                    "close your driver's prepared statements through the protocol",
                );
            }
            _ => {}
        }
        if statement.tables.iter().any(|table| {
            table == "pg_prepared_statements" || table == "pg_catalog.pg_prepared_statements"
        }) {
            return refuse(
                "reading pg_prepared_statements".to_owned(),
                "it would list the statements other clients prepared on the shared connection",
            );
        }
    }
    Ok(())
}

/// The refusal for a fastpath `FunctionCall` ('F') message, which calls a function by OID with no
/// SQL text for the guard or policy to see.
#[must_use]
pub fn check_fastpath() -> Refusal {
    Refusal::new(
        RefusalReason::Fastpath,
        "the fastpath function call protocol is not supported through Postern: \
         call the function with a SELECT statement instead",
    )
}

const ROLE_FROM_IDENTITY: &str = "the role is chosen from your verified identity";

fn check_hazard(hazard: &Hazard, ctx: &GuardContext) -> Result<(), Refusal> {
    let set_role_mode = ctx.mode == UpstreamMode::SetRole;
    let refusal = match hazard {
        Hazard::RoleChange => Refusal::new(
            RefusalReason::RoleChange,
            format!(
                "changing the role (SET ROLE, RESET ROLE, SET role) is not allowed through \
                 Postern: {ROLE_FROM_IDENTITY}"
            ),
        ),
        Hazard::SessionAuthorization => Refusal::new(
            RefusalReason::SessionAuthorization,
            "SET SESSION AUTHORIZATION is not allowed through Postern: the session's user is \
             chosen from your verified identity",
        ),
        Hazard::ResetAll => Refusal::new(
            RefusalReason::ResetAll,
            "RESET ALL is not allowed through Postern: it would also reset the settings Postern \
             made for this session; reset the settings you changed by name (RESET name)",
        ),
        Hazard::DiscardAll => Refusal::new(
            RefusalReason::DiscardAll,
            "DISCARD ALL is not allowed through Postern: it would also reset the role and \
             settings Postern made for this session; use DISCARD PLANS, DISCARD SEQUENCES or \
             DISCARD TEMP",
        ),
        Hazard::PosternSetting { name } => postern_setting(name),
        Hazard::SetConfig { setting: None } => Refusal::new(
            RefusalReason::DynamicSetConfig,
            "set_config() with a setting name computed at run time is not allowed through \
             Postern: it cannot check which setting it changes; write the name as a string \
             constant",
        ),
        Hazard::SetConfig {
            setting: Some(setting),
        } => match setting.as_str() {
            "role" => Refusal::new(
                RefusalReason::RoleChange,
                format!(
                    "set_config('role', ...) is not allowed through Postern: {ROLE_FROM_IDENTITY}"
                ),
            ),
            "session_authorization" => Refusal::new(
                RefusalReason::SessionAuthorization,
                "set_config('session_authorization', ...) is not allowed through Postern: the \
                 session's user is chosen from your verified identity",
            ),
            name if name.starts_with("postern.") => postern_setting(name),
            _ => return Ok(()),
        },
        Hazard::StandardConformingStringsOff => Refusal::new(
            RefusalReason::StandardConformingStrings,
            "turning standard_conforming_strings off is not allowed through Postern: it reads \
             backslashes in string literals as the server does only while the setting is on",
        ),
        Hazard::PgSettingsWrite => Refusal::new(
            RefusalReason::PgSettingsWrite,
            "writing to pg_settings is not allowed through Postern: it changes settings, the role \
             among them, without naming them in the statement; use SET name = value",
        ),
        Hazard::ClientEncoding { name } if !is_ascii_safe_encoding(name) => {
            let what = if name.is_empty() {
                "a client_encoding computed at run time".to_owned()
            } else {
                format!("client_encoding {:?}", truncate(name, 64))
            };
            Refusal::new(
                RefusalReason::ClientEncoding,
                format!(
                    "{what} is not allowed through Postern: Postern reads statements only in \
                     ASCII-safe encodings, such as UTF8"
                ),
            )
        }
        Hazard::ClientEncoding { .. } => return Ok(()),
        Hazard::SearchPath { schemas: Some(_) } => return Ok(()),
        Hazard::SearchPath { schemas: None } => Refusal::new(
            RefusalReason::DynamicSearchPath,
            "setting search_path to a value computed at run time is not allowed through Postern: \
             policy decides tables by schema, so write the new path as a constant",
        ),
        Hazard::DoBlock if !ctx.may_raw => Refusal::new(
            RefusalReason::DoBlock,
            "DO blocks are not allowed through Postern without the raw permission: their code \
             cannot be checked before it runs",
        ),
        Hazard::AlterRole if !ctx.may_dcl => Refusal::new(
            RefusalReason::AlterRole,
            "creating, changing or dropping roles, and granting or revoking role membership, are \
             not allowed through Postern without the dcl permission",
        ),
        Hazard::FunctionDefinition { what } if set_role_mode && !ctx.may_raw => Refusal::new(
            RefusalReason::FunctionDefinition,
            format!(
                "{what} is not allowed on this target without the raw permission: it stores code \
                 that runs later, which Postern cannot check, and the target connects in \
                 set_role mode"
            ),
        ),
        Hazard::RunsSqlText { function } if set_role_mode && !ctx.may_raw => Refusal::new(
            RefusalReason::RunsSqlText,
            format!(
                "{}() is not allowed on this target without the raw permission: it runs SQL given \
                 as text, which Postern cannot check, and the target connects in set_role mode",
                truncate(function, 128)
            ),
        ),
        Hazard::Call if set_role_mode && !ctx.may_raw => Refusal::new(
            RefusalReason::Call,
            "CALL is not allowed on this target without the raw permission: the procedure's \
             code cannot be checked, and the target connects in set_role mode",
        ),
        Hazard::DoBlock
        | Hazard::AlterRole
        | Hazard::FunctionDefinition { .. }
        | Hazard::RunsSqlText { .. }
        | Hazard::Call => return Ok(()),
    };
    Err(refusal)
}

fn postern_setting(name: &str) -> Refusal {
    Refusal::new(
        RefusalReason::PosternSetting,
        format!(
            "changing the setting {:?} is not allowed: postern.* settings are set by Postern \
             from your verified identity",
            truncate(name, 64)
        ),
    )
}

/// `text` cut to at most `max` bytes on a character boundary, with an ellipsis when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use postern_config::UpstreamMode::{self, RoleLogin, SetRole};
    use postern_sql::{Analysis, Classifier};

    use super::{GuardContext, RefusalReason, check, check_fastpath, check_transaction_pooling};

    fn ctx(mode: UpstreamMode, may_dcl: bool, may_raw: bool) -> GuardContext {
        GuardContext {
            mode,
            may_dcl,
            may_raw,
        }
    }

    fn analyze(sql: &str) -> Analysis {
        (*Classifier::new(0).analyze(sql)).clone()
    }

    fn reason(sql: &str, ctx: &GuardContext) -> Option<RefusalReason> {
        check(&analyze(sql), ctx).err().map(|r| r.reason)
    }

    /// Refused in every mode, whatever the permissions.
    #[test]
    fn always_refused() {
        use RefusalReason as R;
        let cases = [
            ("SET ROLE admin", R::RoleChange),
            ("set local role admin", R::RoleChange),
            ("RESET ROLE", R::RoleChange),
            ("SET \"role\" TO admin", R::RoleChange),
            ("SELECT set_config('role', 'admin', false)", R::RoleChange),
            (
                "SELECT pg_catalog.set_config(E'\\x72ole', 'admin', false)",
                R::RoleChange,
            ),
            (
                "SELECT set_config(U&'\\0072ole', 'admin', false)",
                R::RoleChange,
            ),
            (
                "WITH x AS (SELECT set_config('role', 'a', true)) SELECT * FROM x",
                R::RoleChange,
            ),
            (
                "DECLARE c CURSOR FOR SELECT set_config('role', 'a', true)",
                R::RoleChange,
            ),
            (
                "COPY (SELECT set_config('role', 'a', true)) TO STDOUT",
                R::RoleChange,
            ),
            (
                "EXPLAIN ANALYZE SELECT set_config('role', 'a', true)",
                R::RoleChange,
            ),
            (
                "PREPARE p AS SELECT set_config('role', 'a', true)",
                R::RoleChange,
            ),
            ("SELECT 1; SET ROLE admin", R::RoleChange),
            ("SET SESSION AUTHORIZATION admin", R::SessionAuthorization),
            ("RESET SESSION AUTHORIZATION", R::SessionAuthorization),
            (
                "SELECT set_config('session_authorization', 'admin', false)",
                R::SessionAuthorization,
            ),
            ("RESET ALL", R::ResetAll),
            ("DISCARD ALL", R::DiscardAll),
            ("SET postern.claims = '{}'", R::PosternSetting),
            ("RESET postern.claims", R::PosternSetting),
            (
                "SELECT set_config('Postern.Claims', 'x', false)",
                R::PosternSetting,
            ),
            (
                "SELECT set_config('ro'||'le', 'x', false)",
                R::DynamicSetConfig,
            ),
            ("SELECT set_config($1, 'x', false)", R::DynamicSetConfig),
            (
                "SET standard_conforming_strings = off",
                R::StandardConformingStrings,
            ),
            (
                "SELECT set_config('standard_conforming_strings', 'off', false)",
                R::StandardConformingStrings,
            ),
            (
                "UPDATE pg_settings SET setting = 'x' WHERE name = 'role'",
                R::PgSettingsWrite,
            ),
            ("SET client_encoding = 'SJIS'", R::ClientEncoding),
            ("SET NAMES 'GBK'", R::ClientEncoding),
            (
                "SELECT set_config('client_encoding', 'BIG5', false)",
                R::ClientEncoding,
            ),
            (
                "SELECT set_config('client_encoding', $1, false)",
                R::ClientEncoding,
            ),
        ];
        for mode in [RoleLogin, SetRole] {
            for (may_dcl, may_raw) in [(false, false), (true, true)] {
                let ctx = ctx(mode, may_dcl, may_raw);
                for (sql, want) in cases {
                    assert_eq!(reason(sql, &ctx), Some(want), "{sql} in {ctx:?}");
                }
            }
        }
    }

    #[test]
    fn allowed_in_every_mode() {
        for sql in [
            "SELECT 1",
            "SELECT * FROM t WHERE a = $1",
            "SET search_path = app, public",
            "SET client_encoding = 'UTF8'",
            "SET standard_conforming_strings = on",
            "RESET work_mem",
            "DISCARD PLANS",
            "SHOW role",
            "SELECT current_setting('role')",
            "SELECT set_config('application_name', 'x', false)",
            "SELECT set_config('search_path', 'app', true)",
            "BEGIN; INSERT INTO t VALUES (1); COMMIT",
            "",
        ] {
            for mode in [RoleLogin, SetRole] {
                let ctx = ctx(mode, false, false);
                assert_eq!(check(&analyze(sql), &ctx), Ok(()), "{sql} in {ctx:?}");
            }
        }
    }

    #[test]
    fn parse_errors_and_do_blocks_need_raw() {
        for mode in [RoleLogin, SetRole] {
            let without = ctx(mode, true, false);
            let with = ctx(mode, false, true);
            let refusal = check(&analyze("SELEKT 1"), &without).unwrap_err();
            assert_eq!(refusal.reason, RefusalReason::ParseError);
            assert_eq!(
                refusal.message,
                "Postern could not parse this statement, so it cannot check it: \
                 syntax error at or near \"SELEKT\""
            );
            assert_eq!(check(&analyze("SELEKT 1"), &with), Ok(()));
            assert_eq!(
                reason("DO $$ BEGIN END $$", &without),
                Some(RefusalReason::DoBlock)
            );
            assert_eq!(reason("DO $$ BEGIN END $$", &with), None);
        }
    }

    #[test]
    fn role_management_needs_dcl() {
        for sql in [
            "CREATE ROLE r",
            "ALTER USER r PASSWORD 'x'",
            "ALTER ROLE r SET search_path = app",
            "ALTER ROLE r RENAME TO s",
            "DROP ROLE r",
            "GRANT admin TO me",
            "REVOKE admin FROM me",
        ] {
            for mode in [RoleLogin, SetRole] {
                assert_eq!(
                    reason(sql, &ctx(mode, false, true)),
                    Some(RefusalReason::AlterRole),
                    "{sql}"
                );
                assert_eq!(reason(sql, &ctx(mode, true, false)), None, "{sql}");
            }
        }
        // Even with dcl, a stored role change is still a role change.
        assert_eq!(
            reason("ALTER ROLE r SET role = admin", &ctx(RoleLogin, true, true)),
            Some(RefusalReason::RoleChange)
        );
    }

    #[test]
    fn set_role_mode_refuses_what_it_cannot_see() {
        use RefusalReason as R;
        let cases = [
            (
                "SELECT query_to_xml('select 1', true, true, '')",
                R::RunsSqlText,
            ),
            ("SELECT * FROM ts_stat('select v from t')", R::RunsSqlText),
            (
                "SELECT * FROM dblink('db', 'select 1') AS t(a int)",
                R::RunsSqlText,
            ),
            ("SELECT dblink_exec('db', 'set role admin')", R::RunsSqlText),
            (
                "SELECT * FROM t WHERE EXISTS (SELECT table_to_xml('t', true, true, ''))",
                R::RunsSqlText,
            ),
            (
                "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
                R::FunctionDefinition,
            ),
            (
                "CREATE PROCEDURE p() LANGUAGE sql AS ''",
                R::FunctionDefinition,
            ),
            ("CREATE VIEW v AS SELECT 1", R::FunctionDefinition),
            (
                "CREATE RULE r AS ON INSERT TO t DO INSTEAD NOTHING",
                R::FunctionDefinition,
            ),
            (
                "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
                R::FunctionDefinition,
            ),
            (
                "CREATE DOMAIN d AS int CHECK (VALUE > 0)",
                R::FunctionDefinition,
            ),
            ("CREATE TABLE t (a int DEFAULT f())", R::FunctionDefinition),
            (
                "ALTER TABLE t ALTER a SET DEFAULT f()",
                R::FunctionDefinition,
            ),
            ("CALL p()", R::Call),
        ];
        for (sql, want) in cases {
            assert_eq!(reason(sql, &ctx(SetRole, true, false)), Some(want), "{sql}");
            assert_eq!(reason(sql, &ctx(SetRole, true, true)), None, "{sql}");
            assert_eq!(reason(sql, &ctx(RoleLogin, true, false)), None, "{sql}");
        }
        // Plain tables and constant defaults are fine in set_role mode.
        for sql in [
            "CREATE TABLE t (a int DEFAULT 0 CHECK (a >= 0))",
            "ALTER TABLE t ADD COLUMN b text",
        ] {
            assert_eq!(reason(sql, &ctx(SetRole, false, false)), None, "{sql}");
        }
    }

    #[test]
    fn only_the_hazardous_statement_of_a_text_matters_but_it_is_found() {
        let ctx = ctx(SetRole, false, false);
        assert_eq!(
            reason(
                "SELECT 1; SELECT 2; SELECT set_config('role', 'x', false)",
                &ctx
            ),
            Some(RefusalReason::RoleChange)
        );
        assert_eq!(reason("SELECT 1; SELECT 2", &ctx), None);
    }

    #[test]
    fn messages_name_the_construct_and_never_echo_the_statement() {
        let ctx = ctx(SetRole, false, false);
        let secret = "x".repeat(10_000);
        let sql = format!("SELECT set_config('ro'||'le', '{secret}', false)");
        let refusal = check(&analyze(&sql), &ctx).unwrap_err();
        assert!(
            refusal
                .message
                .starts_with("set_config() with a setting name computed")
        );
        assert!(!refusal.message.contains(&secret));
        let refusal = check(&analyze("SET ROLE admin"), &ctx).unwrap_err();
        assert_eq!(
            refusal.to_string(),
            "changing the role (SET ROLE, RESET ROLE, SET role) is not allowed through Postern: \
             the role is chosen from your verified identity"
        );
        let refusal = check(&analyze("SET NAMES 'sjis'"), &ctx).unwrap_err();
        assert!(
            refusal
                .message
                .starts_with("client_encoding \"sjis\" is not allowed")
        );
        let refusal = check(&analyze("CREATE VIEW v AS SELECT 1"), &ctx).unwrap_err();
        assert!(
            refusal
                .message
                .starts_with("CREATE VIEW is not allowed on this target")
        );
        let refusal = check(
            &analyze(&format!("SELECT '{secret}' garbage garbage")),
            &ctx,
        )
        .unwrap_err();
        assert!(refusal.message.len() < 400, "{}", refusal.message);
    }

    #[test]
    fn fastpath_is_always_refused() {
        let refusal = check_fastpath();
        assert_eq!(refusal.reason, RefusalReason::Fastpath);
        assert_eq!(refusal.reason.label(), "fastpath");
        assert!(
            refusal.message.starts_with(
                "the fastpath function call protocol is not supported through Postern"
            )
        );
    }

    #[test]
    fn transaction_pooling_refuses_what_outlives_a_transaction() {
        let refused = [
            ("SET search_path = app", "setting search_path"),
            (
                "SELECT set_config('app.x', '1', false)",
                "set_config(app.x)",
            ),
            ("LISTEN jobs", "LISTEN"),
            ("SELECT pg_advisory_lock(1)", "pg_advisory_lock"),
            ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", "WITH HOLD"),
            ("PREPARE p AS SELECT 1", "SQL-level PREPARE"),
            ("EXECUTE postern_tx_1", "SQL-level EXECUTE"),
            ("DEALLOCATE postern_tx_1", "DEALLOCATE"),
            ("DISCARD ALL", "DISCARD ALL"),
            ("CREATE TEMP TABLE t (a int)", "temporary object"),
            (
                "SELECT name, statement FROM pg_prepared_statements",
                "pg_prepared_statements",
            ),
        ];
        for (sql, named) in refused {
            let analysis = analyze(sql);
            let refusal = check_transaction_pooling(&analysis)
                .expect_err(&format!("{sql} must be refused under transaction pooling"));
            assert_eq!(refusal.reason, RefusalReason::TransactionPooling);
            assert!(
                refusal.message.contains(named),
                "{sql}: {}",
                refusal.message
            );
            assert!(
                refusal.message.contains("transaction pooling"),
                "{}",
                refusal.message
            );
        }
        for sql in [
            "SELECT 1",
            "SET LOCAL search_path = app",
            "SELECT set_config('app.x', '1', true)",
            "SELECT pg_advisory_xact_lock(1)",
            "DECLARE c CURSOR FOR SELECT 1",
            "CREATE TEMP TABLE t (a int) ON COMMIT DROP",
            "BEGIN",
            "INSERT INTO t VALUES (1)",
        ] {
            let analysis = analyze(sql);
            assert_eq!(check_transaction_pooling(&analysis), Ok(()), "{sql}");
        }
    }
}
