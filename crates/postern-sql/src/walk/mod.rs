//! A complete walk over a libpg_query parse tree.
//!
//! The classifier must not miss a node: a `set_config('role', ...)` three subqueries deep in a CTE
//! of a cursor declaration is as dangerous as one at the top. pg_query's own `nodes()` iterator
//! visits only the node types its summaries need, so [`children::push_children`] is generated
//! (by `tools/gen_walk.py`) from pg_query's protobuf definitions and covers every field of every
//! node type. Walks use an explicit stack, so deep trees cannot overflow the thread's stack.

mod children;

pub(crate) use children::push_children;

use pg_query::NodeRef;

/// Whether `pred` holds for `root` or any node below it.
pub(crate) fn any_node<'a>(root: NodeRef<'a>, mut pred: impl FnMut(NodeRef<'a>) -> bool) -> bool {
    let mut stack = vec![root];
    while let Some(node) = stack.pop() {
        if pred(node) {
            return true;
        }
        push_children(node, &mut stack);
    }
    false
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use pg_query::NodeRef;
    use serde_json::Value;

    use super::push_children;

    /// Node types that only ever appear wrapped in a `Node` (never as a plain struct field), so
    /// that the serde view of the tree and the walk must count them alike.
    const WRAPPED_ONLY: &[&str] = &[
        "AConst",
        "ColumnRef",
        "AExpr",
        "ResTarget",
        "SubLink",
        "TypeCast",
        "BoolExpr",
        "ParamRef",
        "List",
        "CaseExpr",
        "NullTest",
        "DefElem",
        "SortBy",
        "RangeSubselect",
    ];

    /// Counts wrapped nodes by type in the serde (JSON) rendering of the tree, which includes
    /// every field of every struct whatever the generator knew about.
    fn count_json(value: &Value, counts: &mut BTreeMap<String, usize>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::Object(inner)) = map.get("node")
                    && let Some((kind, _)) = inner.iter().next()
                {
                    *counts.entry(kind.clone()).or_default() += 1;
                }
                map.values().for_each(|v| count_json(v, counts));
            }
            Value::Array(items) => items.iter().for_each(|v| count_json(v, counts)),
            _ => {}
        }
    }

    fn name(node: NodeRef<'_>) -> String {
        let debug = format!("{node:?}");
        debug.split('(').next().unwrap_or_default().to_owned()
    }

    #[test]
    fn walk_reaches_every_node_that_serde_sees() {
        let corpus = [
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < $1) \
             SELECT n, CASE WHEN n > 1 THEN 'a' ELSE NULL END, count(*) FILTER (WHERE n IS NOT NULL) \
             OVER (PARTITION BY n ORDER BY n DESC) FROM r, LATERAL (SELECT * FROM t WHERE t.a = r.n) s \
             WHERE EXISTS (SELECT 1 FROM u WHERE u.id = ANY(ARRAY[1,2])) GROUP BY ROLLUP (n) \
             HAVING sum(n) > 1 ORDER BY 1 LIMIT 10 OFFSET 2 FOR UPDATE OF r SKIP LOCKED",
            "INSERT INTO t (a, b) SELECT x::int, y COLLATE \"C\" FROM s \
             ON CONFLICT (a) WHERE a > 0 DO UPDATE SET b = excluded.b || 'x' WHERE t.a <> 1 RETURNING *",
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED AND s.x > 1 THEN UPDATE SET a = s.a \
             WHEN NOT MATCHED THEN INSERT (a) VALUES (s.a) WHEN NOT MATCHED BY SOURCE THEN DELETE",
            "UPDATE t SET (a, b) = (SELECT 1, 2) FROM u WHERE t.id = u.id AND u.x IN (1, 2, 3)",
            "DELETE FROM t USING u WHERE t.id = u.id AND NOT (u.x BETWEEN 1 AND 2) RETURNING t.*",
            "CREATE TABLE t (a int DEFAULT 1 CHECK (a > 0) REFERENCES u (id) ON DELETE CASCADE, \
             b text GENERATED ALWAYS AS (upper(c)) STORED, c text COLLATE \"C\", \
             EXCLUDE USING gist (a WITH =) WHERE (a > 1)) PARTITION BY RANGE (a, (lower(c)))",
            "ALTER TABLE t ADD COLUMN d int DEFAULT 2, ALTER COLUMN a SET DEFAULT 3, \
             ALTER COLUMN c TYPE varchar(10) USING c::varchar, ADD CONSTRAINT k CHECK (d < 9)",
            "CREATE FUNCTION f(a int DEFAULT 1, OUT b int) RETURNS SETOF int LANGUAGE sql \
             SET search_path = public BEGIN ATOMIC SELECT a + 1; END",
            "CREATE VIEW v WITH (security_barrier) AS SELECT * FROM t WHERE a = 1 WITH CHECK OPTION",
            "CREATE RULE r AS ON UPDATE TO t WHERE new.a > 1 DO INSTEAD (INSERT INTO u VALUES (new.a); NOTIFY ch)",
            "CREATE TRIGGER tr AFTER UPDATE OF a ON t REFERENCING NEW TABLE AS n FOR EACH ROW \
             WHEN (old.a IS DISTINCT FROM new.a) EXECUTE FUNCTION f('x')",
            "CREATE INDEX CONCURRENTLY i ON t USING btree ((lower(c)) DESC NULLS LAST, a) INCLUDE (b) WHERE a > 0",
            "CREATE POLICY p ON t FOR SELECT TO reader USING (owner = current_user) WITH CHECK (a > 0)",
            "COPY (SELECT json_build_object('a', a) FROM t WHERE a > 1) TO STDOUT WITH (FORMAT csv)",
            "EXPLAIN (ANALYZE, FORMAT json) SELECT * FROM t JOIN u USING (id) LEFT JOIN w ON w.x = t.y",
            "PREPARE p(int) AS SELECT * FROM t WHERE a = $1 AND b = ANY (SELECT b FROM u)",
            "DECLARE c SCROLL CURSOR WITH HOLD FOR SELECT xmlelement(name a, xmlattributes(1 AS b), 'c')",
            "SELECT * FROM json_table('[1]'::jsonb, '$[*]' COLUMNS (a int PATH '$', b text DEFAULT 'x' ON EMPTY))",
            "SELECT * FROM xmltable('/r' PASSING (SELECT x FROM t) COLUMNS a int PATH 'a' DEFAULT 0)",
            "SELECT jsonb_path_query(j, '$.a') ->> 'b', j #> '{a,b}', (j).f, a[1:2], row(1, 2) < row(1, 3) FROM t",
            "SELECT grouping(a), a FROM t GROUP BY GROUPING SETS ((a), (b), CUBE (a, b)) ORDER BY a USING <",
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a), string_agg(DISTINCT b, ',' ORDER BY b) FROM t",
            "ALTER ROLE r IN DATABASE d SET work_mem = '1MB'",
            "GRANT SELECT (a, b), UPDATE ON TABLE t, u TO r WITH GRANT OPTION GRANTED BY CURRENT_USER",
            "CREATE DOMAIN d AS int DEFAULT 1 CONSTRAINT c CHECK (VALUE > lower_bound())",
            "CREATE STATISTICS s (dependencies) ON (a + b), c FROM t",
            "VACUUM (ANALYZE, VERBOSE) t (a), u",
            "CREATE SCHEMA s CREATE TABLE x (a int DEFAULT f()) CREATE VIEW y AS SELECT * FROM x",
            "SELECT * FROM t TABLESAMPLE SYSTEM (10) REPEATABLE (f(1)) WHERE a IS NOT TRUE",
            "SELECT a FROM t WHERE a = ALL (SELECT 1) UNION SELECT 2 INTERSECT SELECT 3 EXCEPT SELECT 4",
        ];
        for sql in corpus {
            let parsed = pg_query::parse(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            let json = serde_json::to_value(&parsed.protobuf).unwrap();
            let mut expected = BTreeMap::new();
            count_json(&json, &mut expected);

            let mut walked = BTreeMap::new();
            let mut stack: Vec<NodeRef<'_>> = parsed
                .protobuf
                .stmts
                .iter()
                .filter_map(|raw| raw.stmt.as_ref()?.node.as_ref().map(|n| n.to_ref()))
                .collect();
            *walked.entry("RawStmt-roots".to_owned()).or_insert(0) += stack.len();
            while let Some(node) = stack.pop() {
                *walked.entry(name(node)).or_insert(0usize) += 1;
                push_children(node, &mut stack);
            }
            for kind in WRAPPED_ONLY {
                assert_eq!(
                    walked.get(*kind),
                    expected.get(*kind),
                    "{kind} in {sql}\nwalk:  {walked:?}\nserde: {expected:?}"
                );
            }
        }
    }
}
