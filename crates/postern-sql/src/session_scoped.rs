//! The state a statement leaves on the server connection after its transaction ends
//! ([`SessionScoped`]): what transaction pooling, which hands the connection to another client
//! between transactions, cannot carry. Decided from the top-level statement here; calls of
//! `set_config` and advisory lock functions, and `pg_settings` writes, are found by the walk in
//! `classify.rs`, which asks [`temp_object`] about every node that runs.
//!
//! Decisions that are not obvious:
//! - Only the top-level `SET` counts: the `SET` clauses of `CREATE/ALTER FUNCTION` and
//!   `ALTER ROLE/DATABASE` store defaults and leave nothing on this connection.
//! - `SET TRANSACTION`, `SET SESSION TRANSACTION` (the same thing: PostgreSQL applies it to the
//!   current transaction) and `SET transaction_isolation` / `transaction_read_only` /
//!   `transaction_deferrable` last only for the transaction: each transaction starts from the
//!   `default_transaction_*` settings (`StartTransaction` in `xact.c`).
//!   `SET SESSION CHARACTERISTICS AS TRANSACTION` sets those defaults and is reported under their
//!   names, as `ExecSetVariableStmt` (`guc_funcs.c`) maps it.
//! - `DISCARD PLANS`, `SEQUENCES` and `TEMP` are not reported: they drop state rather than leave
//!   it, and leave Postern's own prepared statements alone.
//! - A relation created in `pg_temp` is temporary whatever its `TEMP` keyword says
//!   (`RangeVarAdjustRelationPersistence` in `namespace.c`); so is a function or type created
//!   there.

use pg_query::protobuf::{
    DiscardMode, IntoClause, Node, ObjectType, OnCommitAction, RangeVar, VariableSetKind,
    VariableSetStmt,
};
use pg_query::{NodeEnum, NodeRef};

use crate::facts::{PreparedName, SessionScoped};

/// `RangeVar.relpersistence` of a temporary relation (`RELPERSISTENCE_TEMP` in `pg_class.h`).
const RELPERSISTENCE_TEMP: &str = "t";

/// The schema name that stands for the session's temporary schema (`LookupCreationNamespace` and
/// `RangeVarGetCreationNamespace` in `namespace.c`).
const TEMP_SCHEMA: &str = "pg_temp";

/// Settings that last only for the current transaction, however they are set.
const TRANSACTION_SETTINGS: &[&str] = &[
    "transaction_isolation",
    "transaction_read_only",
    "transaction_deferrable",
];

/// What the top-level statement `root` itself leaves on the connection; `prepared` is what the
/// classifier read from it about prepared statements and cursors.
pub(crate) fn of_statement(
    root: NodeRef<'_>,
    prepared: Option<&PreparedName>,
) -> Vec<SessionScoped> {
    match (root, prepared) {
        (NodeRef::VariableSetStmt(set), _) => settings(set),
        (NodeRef::ListenStmt(_), _) => vec![SessionScoped::Listen],
        (NodeRef::LoadStmt(_), _) => vec![SessionScoped::Load],
        (NodeRef::DiscardStmt(d), _) if d.target == DiscardMode::DiscardAll as i32 => {
            vec![SessionScoped::Discard {
                what: "all".to_owned(),
            }]
        }
        (_, Some(PreparedName::Prepare(_))) => vec![SessionScoped::Prepare],
        (_, Some(PreparedName::Deallocate(None))) => vec![SessionScoped::Deallocate],
        (_, Some(PreparedName::Declare { hold: true, .. })) => vec![SessionScoped::HoldCursor],
        _ => Vec::new(),
    }
}

/// The settings a top-level `SET`/`RESET` changes for the rest of the session.
fn settings(set: &VariableSetStmt) -> Vec<SessionScoped> {
    if set.is_local {
        return Vec::new();
    }
    let setting = |name: String| SessionScoped::Setting { name };
    match VariableSetKind::try_from(set.kind) {
        Ok(VariableSetKind::VarResetAll) => vec![setting("all".to_owned())],
        // `SET SESSION CHARACTERISTICS AS TRANSACTION mode, ...`: each mode is a `DefElem`
        // named `transaction_isolation`, `transaction_read_only` or `transaction_deferrable`,
        // and sets the `default_` setting of that name.
        Ok(VariableSetKind::VarSetMulti) if set.name == "SESSION CHARACTERISTICS" => {
            let mut names: Vec<SessionScoped> = Vec::new();
            for arg in &set.args {
                let name = match &arg.node {
                    Some(NodeEnum::DefElem(mode)) => format!("default_{}", mode.defname),
                    _ => "session_characteristics".to_owned(),
                };
                let item = setting(name.to_lowercase());
                if !names.contains(&item) {
                    names.push(item);
                }
            }
            if names.is_empty() {
                names.push(setting("session_characteristics".to_owned()));
            }
            names
        }
        // `SET [SESSION] TRANSACTION ...`, `SET TRANSACTION SNAPSHOT`: this transaction only.
        Ok(VariableSetKind::VarSetMulti) => Vec::new(),
        _ => {
            // GUC names are case-insensitive (`guc_name_compare`).
            let name = set.name.trim().to_lowercase();
            if TRANSACTION_SETTINGS.contains(&name.as_str()) {
                Vec::new()
            } else {
                vec![setting(name)]
            }
        }
    }
}

/// Whether `node`, when it runs, creates a temporary object that outlives its transaction.
pub(crate) fn temp_object(node: NodeRef<'_>) -> bool {
    match node {
        NodeRef::CreateStmt(c) => {
            c.relation.as_ref().is_some_and(is_temp_relation)
                && c.oncommit != OnCommitAction::OncommitDrop as i32
        }
        NodeRef::CreateTableAsStmt(c) => c.into.as_deref().is_some_and(is_temp_into),
        NodeRef::SelectStmt(s) => s.into_clause.as_deref().is_some_and(is_temp_into),
        NodeRef::ViewStmt(v) => v.view.as_ref().is_some_and(is_temp_relation),
        NodeRef::CreateSeqStmt(s) => s.sequence.as_ref().is_some_and(is_temp_relation),
        NodeRef::CompositeTypeStmt(t) => t.typevar.as_ref().is_some_and(is_temp_relation),
        NodeRef::CreateFunctionStmt(f) => in_temp_schema(&f.funcname),
        NodeRef::CreateDomainStmt(d) => in_temp_schema(&d.domainname),
        NodeRef::CreateEnumStmt(e) => in_temp_schema(&e.type_name),
        NodeRef::CreateRangeStmt(r) => in_temp_schema(&r.type_name),
        NodeRef::DefineStmt(d) => {
            d.kind == ObjectType::ObjectType as i32 && in_temp_schema(&d.defnames)
        }
        _ => false,
    }
}

/// The target of `SELECT ... INTO` or `CREATE TABLE ... AS`, unless dropped at commit.
fn is_temp_into(into: &IntoClause) -> bool {
    into.rel.as_ref().is_some_and(is_temp_relation)
        && into.on_commit != OnCommitAction::OncommitDrop as i32
}

fn is_temp_relation(relation: &RangeVar) -> bool {
    relation.relpersistence == RELPERSISTENCE_TEMP || relation.schemaname == TEMP_SCHEMA
}

/// Whether a qualified name (`[catalog.]schema.name`, as a list of strings) is in `pg_temp`.
fn in_temp_schema(name: &[Node]) -> bool {
    match name {
        [.., schema, _] => {
            matches!(&schema.node, Some(NodeEnum::String(s)) if s.sval == TEMP_SCHEMA)
        }
        _ => false,
    }
}
