//! What the statement's text cannot show, asked of the database just before a preview runs:
//! code that would run with it and whose effects a rollback may not undo, or that Postern cannot
//! see into.
//!
//! - triggers and rules on the tables it names (and on their partitions, inheritance children
//!   and, for views, the relations they read), for a data change or `TRUNCATE`;
//! - columns whose default comes from a sequence (`serial`, identity columns, `DEFAULT
//!   nextval(…)`), when the statement may fill defaults: an `INSERT` into a `serial` table takes
//!   a number from the sequence, and the rollback does not give it back;
//! - enabled event triggers, for DDL;
//! - functions it calls that exist outside `pg_catalog` (and Postern's own `postern` schema):
//!   their bodies may call anything.
//!
//! The query runs as the requester's role inside the preview's transaction; it reads only
//! catalogs every role may read. Names go in as quoted literals. What still escapes it — a
//! built-in function's body, an operator's function, an RLS policy's expression — is the
//! database privileges' business, as for any statement.

use super::eligibility::Eligible;
use crate::upstream::{quote_ident, quote_literal};

/// Most findings reported; one is enough to refuse.
const MAX_FINDINGS: usize = 5;

/// Schemas whose functions Postern trusts not to reach outside the transaction: PostgreSQL's
/// own, and the claims functions `postern setup-db` installs.
const TRUSTED_SCHEMAS: &[&str] = &["pg_catalog", "postern"];

/// The query whose rows (one text column each) say why the statement may not be previewed;
/// `None` when there is nothing to ask.
pub(crate) fn findings_query(eligible: &Eligible) -> Option<String> {
    let mut arms = Vec::new();
    let relations =
        !eligible.tables.is_empty() && (eligible.fires_triggers || eligible.uses_defaults);
    if relations && eligible.fires_triggers {
        arms.push(
            "SELECT format('%s has trigger %I, which would run with it', t.tgrelid::regclass, \
             t.tgname) FROM pg_catalog.pg_trigger t WHERE t.tgrelid IN (SELECT oid FROM rel) \
             AND NOT t.tgisinternal AND t.tgenabled <> 'D'"
                .to_owned(),
        );
        arms.push(
            "SELECT format('%s has rule %I, which would run with it', w.ev_class::regclass, \
             w.rulename) FROM pg_catalog.pg_rewrite w WHERE w.ev_class IN (SELECT oid FROM rel) \
             AND w.rulename <> '_RETURN'"
                .to_owned(),
        );
    }
    if relations && eligible.uses_defaults {
        arms.push(
            "SELECT format('column %I of %s takes its value from a sequence, which a rollback \
             does not give back', a.attname, a.attrelid::regclass) FROM pg_catalog.pg_attribute \
             a LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = \
             a.attnum WHERE a.attrelid IN (SELECT oid FROM rel) AND a.attnum > 0 AND NOT \
             a.attisdropped AND (a.attidentity <> '' OR position('nextval(' IN \
             pg_catalog.pg_get_expr(d.adbin, d.adrelid)) > 0)"
                .to_owned(),
        );
    }
    if eligible.ddl {
        arms.push(
            "SELECT format('event trigger %I would run with it', e.evtname) FROM \
             pg_catalog.pg_event_trigger e WHERE e.evtenabled <> 'D'"
                .to_owned(),
        );
    }
    let mut names: Vec<&str> = eligible
        .functions
        .iter()
        .map(|f| f.rsplit('.').next().unwrap_or(f))
        .collect();
    names.sort_unstable();
    names.dedup();
    if !names.is_empty() {
        arms.push(format!(
            "SELECT format('it calls %s, which is not one of PostgreSQL''s own functions', \
             p.oid::regprocedure) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON \
             n.oid = p.pronamespace WHERE p.proname = ANY ({}) AND n.nspname <> ALL ({})",
            text_array(names.iter().copied()),
            text_array(TRUSTED_SCHEMAS.iter().copied()),
        ));
    }
    if arms.is_empty() {
        return None;
    }
    let mut sql = String::new();
    if relations {
        let regclasses: Vec<String> = eligible
            .tables
            .iter()
            .map(|table| {
                let quoted: Vec<String> = table.split('.').map(quote_ident).collect();
                format!(
                    "pg_catalog.to_regclass({})",
                    quote_literal(&quoted.join("."))
                )
            })
            .collect();
        // The relations named, then their partitions and inheritance children and, for views,
        // the relations their query reads — what a write through them reaches.
        sql.push_str(&format!(
            "WITH RECURSIVE rel(oid) AS (SELECT c.oid FROM pg_catalog.pg_class c WHERE c.oid = \
             ANY (ARRAY[{}]::oid[]) UNION SELECT e.child FROM rel JOIN (SELECT i.inhparent AS \
             parent, i.inhrelid AS child FROM pg_catalog.pg_inherits i UNION ALL SELECT \
             w.ev_class, d.refobjid FROM pg_catalog.pg_rewrite w JOIN pg_catalog.pg_depend d ON \
             d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND d.objid = w.oid AND \
             d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.refobjid <> \
             w.ev_class WHERE w.rulename = '_RETURN') e ON e.parent = rel.oid) ",
            regclasses.join(", ")
        ));
    }
    sql.push_str(&arms.join(" UNION ALL "));
    sql.push_str(&format!(" LIMIT {MAX_FINDINGS}"));
    Some(sql)
}

/// `ARRAY['a', 'b']::text[]`.
fn text_array<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.map(quote_literal).collect();
    format!("ARRAY[{}]::text[]", quoted.join(", "))
}

#[cfg(test)]
mod tests {
    use postern_sql::Classifier;

    use super::findings_query;
    use crate::preview::eligibility::eligible;

    fn query(sql: &str) -> Option<String> {
        let analysis = Classifier::new(0).analyze(sql);
        findings_query(&eligible(&analysis, false).expect("eligible"))
    }

    #[test]
    fn asks_what_the_statement_may_set_off() {
        let delete = query("DELETE FROM public.orders WHERE tenant_id = 'acme'").expect("a query");
        assert!(
            delete.contains("to_regclass('\"public\".\"orders\"')"),
            "{delete}"
        );
        assert!(delete.contains("pg_trigger") && delete.contains("pg_rewrite"));
        assert!(
            !delete.contains("nextval("),
            "a DELETE fills no defaults: {delete}"
        );
        assert!(
            !delete.contains("pg_proc"),
            "no function is called: {delete}"
        );

        let insert = query("INSERT INTO orders (tenant_id) VALUES (lower('A'))").expect("a query");
        assert!(insert.contains("nextval(") && insert.contains("attidentity"));
        assert!(
            insert.contains("p.proname = ANY (ARRAY['lower']::text[])"),
            "{insert}"
        );

        let ddl = query("ALTER TABLE orders ADD COLUMN note text").expect("a query");
        assert!(ddl.contains("pg_event_trigger") && !ddl.contains("pg_trigger "));

        assert_eq!(query("SELECT 1"), None);
        let select = query("SELECT count(*) FROM orders").expect("a query");
        assert!(!select.contains("pg_trigger") && select.contains("'count'"));
    }

    #[test]
    fn names_cannot_break_out_of_their_literals() {
        let sql = query("DELETE FROM \"o'; DROP TABLE x; --\" WHERE true").expect("a query");
        assert!(
            sql.contains("to_regclass('\"o''; DROP TABLE x; --\"')"),
            "{sql}"
        );
    }
}
