//! Turns one SQL text into an [`Analysis`]: parses it with libpg_query (the PostgreSQL server's
//! own grammar), then walks every node of every top-level statement and records its kind, the
//! relations and functions it names, and its hazards. Classification follows PostgreSQL semantics
//! and never stops at the top-level statement: a statement's kind is the most dangerous kind of
//! anything inside it that runs, and hazards count wherever they appear.
//!
//! Decisions that are not obvious:
//! - Below a plain `EXPLAIN` (no `ANALYZE`) nothing runs, so inner statements add no kind; their
//!   hazards are still reported. `EXPLAIN ANALYZE` runs its statement and takes its kind.
//! - Bodies of views, rules, `PREPARE` and cursors add their kind: the most dangerous wins.
//! - A relation written without a schema whose name is a CTE in scope is the CTE, not a table.
//!   Scope follows PostgreSQL: a non-recursive CTE sees only the CTEs before it, and the target of
//!   `INSERT`/`UPDATE`/`DELETE`/`MERGE` is always a table.
//! - `RESET ALL` is a hazard only at the top level: nested in `ALTER ROLE/DATABASE/FUNCTION ...
//!   RESET ALL` it resets stored defaults, not this session. Every other setting hazard counts
//!   wherever it appears, since stored defaults apply to later sessions.
//! - Expressions stored to run later (column defaults, generated columns, checks, index, partition,
//!   statistics and policy expressions) are a `FunctionDefinition` hazard when they call any
//!   function, because an unqualified name can reach a function the client defined.
//! - `CALL` is a write, functions running SQL text are raw (`dblink*`: admin), and
//!   `COMMIT PREPARED`/`ROLLBACK PREPARED` are admin: they act on transactions outside the session.
//! - State left on the connection past the transaction (`session_scoped.rs`) is gathered here too:
//!   `set_config` calls that are not transaction-local, session advisory locks and `pg_settings`
//!   writes wherever they appear, like hazards; temporary objects wherever they are created by
//!   something that runs (so `EXPLAIN ANALYZE CREATE TEMP TABLE ... AS`, not plain `EXPLAIN`).

use std::rc::Rc;

use pg_query::protobuf::{
    AlterTableType, ConstrType, DiscardMode, FuncCall, ObjectType, RangeVar, TransactionStmtKind,
    VariableSetKind, VariableSetStmt, WithClause, a_const,
};
use pg_query::{NodeEnum, NodeRef};

use crate::command::command_tag;
use crate::encoding::is_ascii_safe_encoding;
use crate::facts::{Analysis, Hazard, PreparedName, SessionScoped, StatementFacts, StatementKind};
use crate::functions;
use crate::session_scoped;
use crate::walk::{any_node, push_children};

/// Parses and classifies `sql`. Call through `limits::analyze_uncached`, which keeps hostile
/// texts away from the parser.
pub(crate) fn analyze_text(sql: &str) -> Analysis {
    let parsed = match pg_query::parse(sql) {
        Ok(parsed) => parsed,
        Err(error) => {
            return Analysis {
                statements: Vec::new(),
                parse_error: Some(parse_error_message(error)),
                fingerprint: None,
                redacted: String::new(),
                text: String::new(),
            };
        }
    };
    let statements = parsed
        .protobuf
        .stmts
        .iter()
        .filter_map(|raw| raw.stmt.as_ref()?.node.as_ref())
        .map(|node| statement_facts(node.to_ref()))
        .collect();
    Analysis {
        statements,
        parse_error: None,
        fingerprint: pg_query::fingerprint(sql).ok().map(|f| f.hex),
        redacted: String::new(),
        text: String::new(),
    }
}

fn parse_error_message(error: pg_query::Error) -> String {
    match error {
        pg_query::Error::Parse(message) => message,
        pg_query::Error::Conversion(_) => "the text contains a NUL byte".to_owned(),
        pg_query::Error::Decode(_) => "the statement is nested too deeply to analyse".to_owned(),
        other => other.to_string(),
    }
}

/// One node on the walk's stack, with what is known about where it sits.
#[derive(Clone)]
struct Frame<'a> {
    node: NodeRef<'a>,
    /// False below a plain `EXPLAIN`: the statement is planned, not run, so it adds no kind.
    executes: bool,
    /// CTE names in scope: an unqualified relation with one of these names is that CTE.
    ctes: Rc<Vec<&'a str>>,
    /// Whether this is the top-level statement itself.
    root: bool,
}

fn statement_facts(root: NodeRef<'_>) -> StatementFacts {
    let prepared = prepared_name(root);
    let mut facts = Collector {
        session_scoped: session_scoped::of_statement(root, prepared.as_ref()),
        ..Collector::default()
    };
    let mut stack = vec![Frame {
        node: root,
        executes: true,
        ctes: Rc::new(Vec::new()),
        root: true,
    }];
    let mut children = Vec::new();
    while let Some(frame) = stack.pop() {
        facts.visit(&frame);
        push_children(frame.node, &mut children);
        let executes = frame.executes && !is_plain_explain(frame.node);
        let with = with_clause(frame.node);
        let body_ctes = match with {
            Some(with) => {
                let mut names = (*frame.ctes).clone();
                names.extend(cte_names(with));
                Rc::new(names)
            }
            None => Rc::clone(&frame.ctes),
        };
        let target = dml_target(frame.node);
        // Reversed, so that the stack pops children in field order.
        for child in children.drain(..).rev() {
            match child {
                NodeRef::WithClause(with) => {
                    let names: Vec<&str> = cte_names(with).collect();
                    for (i, cte) in with.ctes.iter().enumerate().rev() {
                        let Some(NodeEnum::CommonTableExpr(cte)) = &cte.node else {
                            continue;
                        };
                        // A recursive WITH sees all its CTEs; otherwise each sees those before it.
                        let visible = if with.recursive {
                            &names[..]
                        } else {
                            &names[..i]
                        };
                        let mut scope = (*frame.ctes).clone();
                        scope.extend_from_slice(visible);
                        stack.push(Frame {
                            node: NodeRef::CommonTableExpr(cte),
                            executes,
                            ctes: Rc::new(scope),
                            root: false,
                        });
                    }
                }
                NodeRef::RangeVar(r) if target.is_some_and(|t| std::ptr::eq(t, r)) => {
                    stack.push(Frame {
                        node: child,
                        executes,
                        ctes: Rc::new(Vec::new()),
                        root: false,
                    });
                }
                _ => stack.push(Frame {
                    node: child,
                    executes,
                    ctes: Rc::clone(&body_ctes),
                    root: false,
                }),
            }
        }
    }
    StatementFacts {
        kind: facts.kind.unwrap_or(StatementKind::Raw),
        command: command_tag(root),
        tables: facts.tables,
        functions: facts.functions,
        hazards: facts.hazards,
        prepared,
        session_scoped: facts.session_scoped,
    }
}

/// The prepared statement or cursor a top-level statement names.
fn prepared_name(root: NodeRef<'_>) -> Option<PreparedName> {
    match root {
        NodeRef::PrepareStmt(p) => Some(PreparedName::Prepare(p.name.clone())),
        NodeRef::ExecuteStmt(e) => Some(PreparedName::Execute(e.name.clone())),
        NodeRef::DeallocateStmt(d) => Some(PreparedName::Deallocate(
            (!d.isall && !d.name.is_empty()).then(|| d.name.clone()),
        )),
        NodeRef::DeclareCursorStmt(d) => Some(PreparedName::Declare {
            name: d.portalname.clone(),
            hold: d.options & CURSOR_OPT_HOLD != 0,
        }),
        NodeRef::FetchStmt(f) => Some(PreparedName::Fetch(f.portalname.clone())),
        _ => None,
    }
}

/// `DeclareCursorStmt.options` bit for `WITH HOLD` (`CURSOR_OPT_HOLD` in PostgreSQL's
/// `parsenodes.h`).
const CURSOR_OPT_HOLD: i32 = 0x0020;

fn with_clause(node: NodeRef<'_>) -> Option<&WithClause> {
    match node {
        NodeRef::SelectStmt(s) => s.with_clause.as_ref(),
        NodeRef::InsertStmt(s) => s.with_clause.as_ref(),
        NodeRef::UpdateStmt(s) => s.with_clause.as_ref(),
        NodeRef::DeleteStmt(s) => s.with_clause.as_ref(),
        NodeRef::MergeStmt(s) => s.with_clause.as_ref(),
        _ => None,
    }
}

fn cte_names(with: &WithClause) -> impl Iterator<Item = &str> {
    with.ctes.iter().filter_map(|cte| match &cte.node {
        Some(NodeEnum::CommonTableExpr(cte)) => Some(cte.ctename.as_str()),
        _ => None,
    })
}

/// The relation a data-modifying statement writes to.
fn dml_target(node: NodeRef<'_>) -> Option<&RangeVar> {
    match node {
        NodeRef::InsertStmt(s) => s.relation.as_ref(),
        NodeRef::UpdateStmt(s) => s.relation.as_ref(),
        NodeRef::DeleteStmt(s) => s.relation.as_ref(),
        NodeRef::MergeStmt(s) => s.relation.as_ref(),
        NodeRef::CopyStmt(s) if s.is_from => s.relation.as_ref(),
        _ => None,
    }
}

/// `EXPLAIN` without `ANALYZE` (or with `ANALYZE false`): plans its statement without running it.
fn is_plain_explain(node: NodeRef<'_>) -> bool {
    let NodeRef::ExplainStmt(explain) = node else {
        return false;
    };
    !explain.options.iter().any(|option| match &option.node {
        Some(NodeEnum::DefElem(option)) if option.defname.eq_ignore_ascii_case("analyze") => {
            // A bare ANALYZE, or any value but an explicit false, runs the statement.
            option
                .arg
                .as_ref()
                .and_then(|arg| option_text(arg.node.as_ref()))
                .is_none_or(|value| !is_false(&value))
        }
        _ => false,
    })
}

/// What the walk has gathered so far about one statement.
#[derive(Default)]
struct Collector {
    kind: Option<StatementKind>,
    tables: Vec<String>,
    functions: Vec<String>,
    hazards: Vec<Hazard>,
    /// Seeded with what the top-level statement itself leaves (`session_scoped::of_statement`).
    session_scoped: Vec<SessionScoped>,
}

impl Collector {
    fn add_kind(&mut self, kind: StatementKind) {
        self.kind = Some(self.kind.map_or(kind, |k| k.max(kind)));
    }

    fn hazard(&mut self, hazard: Hazard) {
        if !self.hazards.contains(&hazard) {
            self.hazards.push(hazard);
        }
    }

    fn session_scoped(&mut self, state: SessionScoped) {
        if !self.session_scoped.contains(&state) {
            self.session_scoped.push(state);
        }
    }

    fn defines(&mut self, what: &str) {
        self.hazard(Hazard::FunctionDefinition {
            what: what.to_owned(),
        });
    }

    /// Records a `FunctionDefinition` hazard when a stored expression calls a function.
    fn stored_expression(&mut self, expr: Option<&pg_query::protobuf::Node>, what: &str) {
        if let Some(expr) = expr.and_then(|e| e.node.as_ref())
            && any_node(expr.to_ref(), |n| matches!(n, NodeRef::FuncCall(_)))
        {
            self.defines(what);
        }
    }

    fn visit(&mut self, frame: &Frame<'_>) {
        if frame.executes {
            match statement_kind(frame.node) {
                Some(kind) => self.add_kind(kind),
                None if frame.root => self.add_kind(StatementKind::Raw),
                None => {}
            }
        }
        if let Some(target) = dml_target(frame.node)
            && target.relname.eq_ignore_ascii_case("pg_settings")
        {
            self.hazard(Hazard::PgSettingsWrite);
            // The view's rules call `set_config(name, value, false)`.
            self.session_scoped(SessionScoped::SetConfig { setting: None });
        }
        if frame.executes && session_scoped::temp_object(frame.node) {
            self.session_scoped(SessionScoped::TempObject);
        }
        self.node_hazards(frame);
    }

    fn node_hazards(&mut self, frame: &Frame<'_>) {
        match frame.node {
            NodeRef::RangeVar(r) => {
                let is_cte = r.schemaname.is_empty()
                    && r.catalogname.is_empty()
                    && frame.ctes.contains(&r.relname.as_str());
                if !is_cte {
                    push_unique(&mut self.tables, qualified_relation(r));
                }
            }
            NodeRef::DropStmt(d) => {
                for object in &d.objects {
                    self.named_relation(d.remove_type, Some(object));
                }
            }
            NodeRef::CommentStmt(c) => self.named_relation(c.objtype, c.object.as_deref()),
            NodeRef::SecLabelStmt(s) => self.named_relation(s.objtype, s.object.as_deref()),
            NodeRef::FuncCall(call) => self.func_call(call, frame.executes),
            NodeRef::VariableSetStmt(set) => self.variable_set(set, frame.root),
            NodeRef::DiscardStmt(d) if d.target == DiscardMode::DiscardAll as i32 => {
                self.hazard(Hazard::DiscardAll);
            }
            NodeRef::DoStmt(_) => self.hazard(Hazard::DoBlock),
            NodeRef::CallStmt(_) => self.hazard(Hazard::Call),
            NodeRef::CreateRoleStmt(_)
            | NodeRef::AlterRoleStmt(_)
            | NodeRef::AlterRoleSetStmt(_)
            | NodeRef::DropRoleStmt(_)
            | NodeRef::GrantRoleStmt(_) => self.hazard(Hazard::AlterRole),
            NodeRef::RenameStmt(r) if r.rename_type == ObjectType::ObjectRole as i32 => {
                self.hazard(Hazard::AlterRole);
            }
            NodeRef::CreateFunctionStmt(f) if f.is_procedure => self.defines("CREATE PROCEDURE"),
            NodeRef::CreateFunctionStmt(_) => self.defines("CREATE FUNCTION"),
            NodeRef::AlterFunctionStmt(_) => self.defines("ALTER FUNCTION"),
            NodeRef::ViewStmt(_) => self.defines("CREATE VIEW"),
            NodeRef::CreateTableAsStmt(c) if c.objtype == ObjectType::ObjectMatview as i32 => {
                self.defines("CREATE MATERIALIZED VIEW");
            }
            NodeRef::RuleStmt(_) => self.defines("CREATE RULE"),
            NodeRef::CreateTrigStmt(_) => self.defines("CREATE TRIGGER"),
            NodeRef::CreateEventTrigStmt(_) => self.defines("CREATE EVENT TRIGGER"),
            NodeRef::CreateDomainStmt(_) => self.defines("CREATE DOMAIN"),
            NodeRef::CreateCastStmt(_) => self.defines("CREATE CAST"),
            NodeRef::CreateConversionStmt(_) => self.defines("CREATE CONVERSION"),
            NodeRef::CreateTransformStmt(_) => self.defines("CREATE TRANSFORM"),
            NodeRef::CreatePlangStmt(_) => self.defines("CREATE LANGUAGE"),
            NodeRef::CreateOpClassStmt(_) => self.defines("CREATE OPERATOR CLASS"),
            NodeRef::AlterOpFamilyStmt(a) if !a.is_drop => self.defines("ALTER OPERATOR FAMILY"),
            NodeRef::DefineStmt(d) => match ObjectType::try_from(d.kind) {
                Ok(ObjectType::ObjectAggregate) => self.defines("CREATE AGGREGATE"),
                Ok(ObjectType::ObjectOperator) => self.defines("CREATE OPERATOR"),
                // A base type names input and output functions; `CREATE TYPE t;` (a shell) none.
                Ok(ObjectType::ObjectType) if !d.definition.is_empty() => {
                    self.defines("CREATE TYPE");
                }
                _ => {}
            },
            NodeRef::Constraint(c) => {
                let what = match ConstrType::try_from(c.contype) {
                    Ok(ConstrType::ConstrDefault) => {
                        "a column DEFAULT expression that calls a function"
                    }
                    Ok(ConstrType::ConstrGenerated) => {
                        "a GENERATED column expression that calls a function"
                    }
                    Ok(ConstrType::ConstrCheck) => "a CHECK constraint that calls a function",
                    Ok(ConstrType::ConstrExclusion) => {
                        "an exclusion constraint that calls a function"
                    }
                    _ => return,
                };
                if any_node(frame.node, |n| matches!(n, NodeRef::FuncCall(_))) {
                    self.defines(what);
                }
            }
            NodeRef::AlterTableCmd(cmd) => match AlterTableType::try_from(cmd.subtype) {
                Ok(AlterTableType::AtColumnDefault | AlterTableType::AtCookedColumnDefault) => self
                    .stored_expression(
                        cmd.def.as_deref(),
                        "a column DEFAULT expression that calls a function",
                    ),
                Ok(AlterTableType::AtSetExpression) => self.stored_expression(
                    cmd.def.as_deref(),
                    "a GENERATED column expression that calls a function",
                ),
                _ => {}
            },
            NodeRef::AlterDomainStmt(d) if d.subtype == "T" => self.stored_expression(
                d.def.as_deref(),
                "a domain DEFAULT expression that calls a function",
            ),
            NodeRef::IndexStmt(index) => {
                let calls = index.index_params.iter().any(|param| match &param.node {
                    Some(NodeEnum::IndexElem(elem)) => elem.expr.as_deref().is_some_and(|e| {
                        e.node.as_ref().is_some_and(|e| {
                            any_node(e.to_ref(), |n| matches!(n, NodeRef::FuncCall(_)))
                        })
                    }),
                    _ => false,
                });
                if calls {
                    self.defines("an index expression that calls a function");
                }
                self.stored_expression(
                    index.where_clause.as_deref(),
                    "an index predicate that calls a function",
                );
            }
            NodeRef::PartitionElem(p) => self.stored_expression(
                p.expr.as_deref(),
                "a partition key expression that calls a function",
            ),
            NodeRef::StatsElem(s) => self.stored_expression(
                s.expr.as_deref(),
                "a statistics expression that calls a function",
            ),
            NodeRef::CreatePolicyStmt(p) => {
                for expr in [p.qual.as_deref(), p.with_check.as_deref()] {
                    self.stored_expression(
                        expr,
                        "a row-level security policy expression that calls a function",
                    );
                }
            }
            NodeRef::AlterPolicyStmt(p) => {
                for expr in [p.qual.as_deref(), p.with_check.as_deref()] {
                    self.stored_expression(
                        expr,
                        "a row-level security policy expression that calls a function",
                    );
                }
            }
            _ => {}
        }
    }

    /// Records the relation that an object name of `DROP`, `COMMENT` or `SECURITY LABEL` names,
    /// which the parser keeps as a list of names rather than a relation: the whole name for
    /// relations (`DROP TABLE a.b`), all but its last part for what lives on a table
    /// (`DROP TRIGGER t ON orders`, `COMMENT ON COLUMN orders.amount`).
    fn named_relation(&mut self, object_type: i32, object: Option<&pg_query::protobuf::Node>) {
        let whole = match ObjectType::try_from(object_type) {
            Ok(
                ObjectType::ObjectTable
                | ObjectType::ObjectView
                | ObjectType::ObjectMatview
                | ObjectType::ObjectSequence
                | ObjectType::ObjectForeignTable
                | ObjectType::ObjectIndex,
            ) => true,
            Ok(
                ObjectType::ObjectColumn
                | ObjectType::ObjectTrigger
                | ObjectType::ObjectRule
                | ObjectType::ObjectPolicy
                | ObjectType::ObjectTabconstraint,
            ) => false,
            _ => return,
        };
        let Some(NodeEnum::List(list)) = object.and_then(|o| o.node.as_ref()) else {
            return;
        };
        let mut parts: Vec<&str> = Vec::with_capacity(list.items.len());
        for item in &list.items {
            match &item.node {
                Some(NodeEnum::String(s)) => parts.push(&s.sval),
                _ => return,
            }
        }
        if !whole {
            parts.pop();
        }
        if !parts.is_empty() {
            push_unique(&mut self.tables, parts.join("."));
        }
    }

    fn func_call(&mut self, call: &FuncCall, executes: bool) {
        let parts: Vec<String> = call
            .funcname
            .iter()
            .map(|part| match &part.node {
                Some(NodeEnum::String(s)) => s.sval.to_lowercase(),
                _ => String::from("?"),
            })
            .collect();
        let qualified = parts.join(".");
        let name = parts.last().map_or("", String::as_str);
        let argc = call.args.len();
        if executes && let Some(kind) = functions::kind_of(&qualified, name, argc) {
            self.add_kind(kind);
        }
        if functions::runs_sql_text(&qualified, name, argc) {
            self.hazard(Hazard::RunsSqlText {
                function: qualified.clone(),
            });
        }
        if name == "set_config" {
            self.set_config(call);
        }
        if functions::takes_session_lock(name) {
            self.session_scoped(SessionScoped::AdvisoryLock {
                function: qualified.clone(),
            });
        }
        push_unique(&mut self.functions, qualified);
    }

    /// `set_config(setting_name, new_value, is_local)`, positionally or with named arguments.
    fn set_config(&mut self, call: &FuncCall) {
        let mut setting = None;
        let mut value = None;
        let mut is_local = None;
        for (i, arg) in call.args.iter().enumerate() {
            match &arg.node {
                Some(NodeEnum::NamedArgExpr(named)) => {
                    let slot = match named.name.to_lowercase().as_str() {
                        "setting_name" => &mut setting,
                        "new_value" => &mut value,
                        "is_local" => &mut is_local,
                        _ => continue,
                    };
                    *slot = named.arg.as_deref().and_then(|a| a.node.as_ref());
                }
                node if i == 0 => setting = node.as_ref(),
                node if i == 1 => value = node.as_ref(),
                node if i == 2 => is_local = node.as_ref(),
                _ => {}
            }
        }
        // Only a constant true keeps the change to the transaction; a variadic call's arguments
        // are not where they seem.
        let transaction_only =
            !call.func_variadic && constant_text(is_local).is_some_and(|v| is_true(&v));
        // Only a plain string constant names a setting; a variadic call or a cast does not.
        let setting = if call.func_variadic {
            None
        } else {
            string_constant(setting).map(|s| s.trim().to_lowercase())
        };
        match setting.as_deref() {
            Some("standard_conforming_strings")
                if !constant_text(value).is_some_and(|v| is_true(&v)) =>
            {
                self.hazard(Hazard::StandardConformingStringsOff);
            }
            Some("client_encoding") => {
                let name = constant_text(value).unwrap_or_default();
                if !is_ascii_safe_encoding(&name) {
                    self.hazard(Hazard::ClientEncoding { name });
                }
            }
            Some("search_path") => {
                let schemas = string_constant(value).map(|v| split_search_path(&v));
                self.hazard(Hazard::SearchPath { schemas });
            }
            _ => {}
        }
        if !transaction_only {
            self.session_scoped(SessionScoped::SetConfig {
                setting: setting.clone(),
            });
        }
        self.hazard(Hazard::SetConfig { setting });
    }

    fn variable_set(&mut self, set: &VariableSetStmt, root: bool) {
        let kind = VariableSetKind::try_from(set.kind).unwrap_or(VariableSetKind::Undefined);
        if kind == VariableSetKind::VarResetAll {
            if root {
                self.hazard(Hazard::ResetAll);
            }
            return;
        }
        // GUC names are case-insensitive (`guc_name_compare`).
        let name = set.name.trim().to_lowercase();
        match name.as_str() {
            "role" => self.hazard(Hazard::RoleChange),
            "session_authorization" => self.hazard(Hazard::SessionAuthorization),
            _ if name.starts_with("postern.") => self.hazard(Hazard::PosternSetting { name }),
            "standard_conforming_strings" if kind == VariableSetKind::VarSetValue => {
                let on = match &set.args[..] {
                    [value] => constant_text(value.node.as_ref()).is_some_and(|v| is_true(&v)),
                    _ => false,
                };
                if !on {
                    self.hazard(Hazard::StandardConformingStringsOff);
                }
            }
            "search_path" => {
                let schemas = match kind {
                    VariableSetKind::VarSetValue => set
                        .args
                        .iter()
                        .map(|arg| constant_text(arg.node.as_ref()))
                        .collect::<Option<Vec<String>>>(),
                    // Back to the login's value, which the session started with.
                    VariableSetKind::VarSetDefault | VariableSetKind::VarReset => Some(Vec::new()),
                    _ => None,
                };
                self.hazard(Hazard::SearchPath { schemas });
            }
            "client_encoding" if kind == VariableSetKind::VarSetValue => {
                let name = match &set.args[..] {
                    [value] => constant_text(value.node.as_ref()).unwrap_or_default(),
                    _ => String::new(),
                };
                if !is_ascii_safe_encoding(&name) {
                    self.hazard(Hazard::ClientEncoding { name });
                }
            }
            _ => {}
        }
    }
}

/// The schemas of a `search_path` value given as one string, as the server splits it
/// (`SplitIdentifierString`): comma-separated, double-quoted names kept as written, others folded
/// to lower case.
fn split_search_path(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(
            |name| match name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
                Some(quoted) => quoted.replace("\"\"", "\""),
                None => name.to_lowercase(),
            },
        )
        .collect()
}

/// The kind a node adds when it runs, for statement nodes.
fn statement_kind(node: NodeRef<'_>) -> Option<StatementKind> {
    use StatementKind::{Admin, Dcl, Ddl, Raw, Read, Session, Transaction, Write};
    let kind = match node {
        NodeRef::SelectStmt(s) => {
            if s.into_clause.is_some() {
                Ddl
            } else if s.locking_clause.is_empty() {
                Read
            } else {
                Write
            }
        }
        NodeRef::InsertStmt(_)
        | NodeRef::UpdateStmt(_)
        | NodeRef::DeleteStmt(_)
        | NodeRef::MergeStmt(_)
        | NodeRef::CallStmt(_)
        | NodeRef::RefreshMatViewStmt(_) => Write,
        NodeRef::CopyStmt(c) if c.is_program || !c.filename.is_empty() => Admin,
        NodeRef::CopyStmt(c) if c.is_from => Write,
        NodeRef::CopyStmt(_) | NodeRef::ExplainStmt(_) | NodeRef::VariableShowStmt(_) => Read,
        NodeRef::VariableSetStmt(_)
        | NodeRef::DiscardStmt(_)
        | NodeRef::ListenStmt(_)
        | NodeRef::UnlistenStmt(_)
        | NodeRef::NotifyStmt(_)
        | NodeRef::PrepareStmt(_)
        | NodeRef::ExecuteStmt(_)
        | NodeRef::DeallocateStmt(_)
        | NodeRef::DeclareCursorStmt(_)
        | NodeRef::FetchStmt(_)
        | NodeRef::ClosePortalStmt(_)
        | NodeRef::ConstraintsSetStmt(_) => Session,
        NodeRef::TransactionStmt(t) => match TransactionStmtKind::try_from(t.kind) {
            Ok(
                TransactionStmtKind::TransStmtCommitPrepared
                | TransactionStmtKind::TransStmtRollbackPrepared,
            ) => Admin,
            _ => Transaction,
        },
        NodeRef::DoStmt(_) => Raw,
        NodeRef::GrantStmt(_)
        | NodeRef::GrantRoleStmt(_)
        | NodeRef::CreateRoleStmt(_)
        | NodeRef::AlterRoleStmt(_)
        | NodeRef::AlterRoleSetStmt(_)
        | NodeRef::DropRoleStmt(_)
        | NodeRef::AlterDefaultPrivilegesStmt(_)
        | NodeRef::ReassignOwnedStmt(_)
        | NodeRef::DropOwnedStmt(_) => Dcl,
        NodeRef::RenameStmt(r) if r.rename_type == ObjectType::ObjectRole as i32 => Dcl,
        NodeRef::AlterSystemStmt(_)
        | NodeRef::CreateExtensionStmt(_)
        | NodeRef::AlterExtensionStmt(_)
        | NodeRef::AlterExtensionContentsStmt(_)
        | NodeRef::VacuumStmt(_)
        | NodeRef::CheckPointStmt(_)
        | NodeRef::LockStmt(_)
        | NodeRef::LoadStmt(_)
        | NodeRef::ClusterStmt(_)
        | NodeRef::ReindexStmt(_)
        | NodeRef::CreatedbStmt(_)
        | NodeRef::DropdbStmt(_)
        | NodeRef::AlterDatabaseStmt(_)
        | NodeRef::AlterDatabaseSetStmt(_)
        | NodeRef::AlterDatabaseRefreshCollStmt(_)
        | NodeRef::CreateTableSpaceStmt(_)
        | NodeRef::DropTableSpaceStmt(_)
        | NodeRef::AlterTableSpaceOptionsStmt(_)
        | NodeRef::AlterTableMoveAllStmt(_)
        | NodeRef::CreateSubscriptionStmt(_)
        | NodeRef::AlterSubscriptionStmt(_)
        | NodeRef::DropSubscriptionStmt(_)
        | NodeRef::CreatePublicationStmt(_)
        | NodeRef::AlterPublicationStmt(_)
        | NodeRef::CreateEventTrigStmt(_)
        | NodeRef::AlterEventTrigStmt(_)
        | NodeRef::CreatePlangStmt(_)
        | NodeRef::CreateFdwStmt(_)
        | NodeRef::AlterFdwStmt(_)
        | NodeRef::CreateForeignServerStmt(_)
        | NodeRef::AlterForeignServerStmt(_)
        | NodeRef::CreateUserMappingStmt(_)
        | NodeRef::AlterUserMappingStmt(_)
        | NodeRef::DropUserMappingStmt(_)
        | NodeRef::CreateAmStmt(_) => Admin,
        NodeRef::DropStmt(d) => match ObjectType::try_from(d.remove_type) {
            Ok(
                ObjectType::ObjectExtension
                | ObjectType::ObjectEventTrigger
                | ObjectType::ObjectLanguage
                | ObjectType::ObjectFdw
                | ObjectType::ObjectForeignServer
                | ObjectType::ObjectAccessMethod
                | ObjectType::ObjectPublication,
            ) => Admin,
            _ => Ddl,
        },
        NodeRef::AlterTableStmt(_)
        | NodeRef::AlterDomainStmt(_)
        | NodeRef::CreateStmt(_)
        | NodeRef::DefineStmt(_)
        | NodeRef::TruncateStmt(_)
        | NodeRef::CommentStmt(_)
        | NodeRef::IndexStmt(_)
        | NodeRef::CreateFunctionStmt(_)
        | NodeRef::AlterFunctionStmt(_)
        | NodeRef::RenameStmt(_)
        | NodeRef::RuleStmt(_)
        | NodeRef::ViewStmt(_)
        | NodeRef::CreateDomainStmt(_)
        | NodeRef::CreateTableAsStmt(_)
        | NodeRef::CreateSeqStmt(_)
        | NodeRef::AlterSeqStmt(_)
        | NodeRef::CreateTrigStmt(_)
        | NodeRef::CreateSchemaStmt(_)
        | NodeRef::CreateConversionStmt(_)
        | NodeRef::CreateCastStmt(_)
        | NodeRef::CreateOpClassStmt(_)
        | NodeRef::CreateOpFamilyStmt(_)
        | NodeRef::AlterOpFamilyStmt(_)
        | NodeRef::AlterObjectDependsStmt(_)
        | NodeRef::AlterObjectSchemaStmt(_)
        | NodeRef::AlterOwnerStmt(_)
        | NodeRef::AlterOperatorStmt(_)
        | NodeRef::AlterTypeStmt(_)
        | NodeRef::CompositeTypeStmt(_)
        | NodeRef::CreateEnumStmt(_)
        | NodeRef::CreateRangeStmt(_)
        | NodeRef::AlterEnumStmt(_)
        | NodeRef::AlterTsdictionaryStmt(_)
        | NodeRef::AlterTsconfigurationStmt(_)
        | NodeRef::SecLabelStmt(_)
        | NodeRef::CreateForeignTableStmt(_)
        | NodeRef::ImportForeignSchemaStmt(_)
        | NodeRef::ReplicaIdentityStmt(_)
        | NodeRef::CreatePolicyStmt(_)
        | NodeRef::AlterPolicyStmt(_)
        | NodeRef::CreateTransformStmt(_)
        | NodeRef::CreateStatsStmt(_)
        | NodeRef::AlterStatsStmt(_)
        | NodeRef::AlterCollationStmt(_) => Ddl,
        _ => return None,
    };
    Some(kind)
}

fn qualified_relation(r: &RangeVar) -> String {
    [&r.catalogname, &r.schemaname, &r.relname]
        .into_iter()
        .filter(|part| !part.is_empty())
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(".")
}

fn push_unique(list: &mut Vec<String>, item: String) {
    if !list.contains(&item) {
        list.push(item);
    }
}

/// The value of a string constant (escape and Unicode strings already decoded by the lexer).
fn string_constant(node: Option<&NodeEnum>) -> Option<String> {
    match node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(s.sval.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// A constant as the text a setting would receive: strings, numbers and booleans.
fn constant_text(node: Option<&NodeEnum>) -> Option<String> {
    match node {
        Some(NodeEnum::AConst(c)) => match &c.val {
            Some(a_const::Val::Sval(s)) => Some(s.sval.clone()),
            Some(a_const::Val::Ival(i)) => Some(i.ival.to_string()),
            Some(a_const::Val::Fval(f)) => Some(f.fval.clone()),
            Some(a_const::Val::Boolval(b)) => Some(b.boolval.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// The value of a utility-statement option (`EXPLAIN (ANALYZE false)`), which the grammar keeps
/// as a bare value node rather than a constant.
fn option_text(node: Option<&NodeEnum>) -> Option<String> {
    match node {
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        Some(NodeEnum::Boolean(b)) => Some(b.boolval.to_string()),
        Some(NodeEnum::Integer(i)) => Some(i.ival.to_string()),
        Some(NodeEnum::Float(f)) => Some(f.fval.clone()),
        other => constant_text(other),
    }
}

/// Whether PostgreSQL's `parse_bool` reads `value` as true.
fn is_true(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "on" | "t" | "tr" | "tru" | "true" | "y" | "ye" | "yes" | "1"
    )
}

/// Whether PostgreSQL's `parse_bool` reads `value` as false.
fn is_false(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "of" | "off" | "f" | "fa" | "fal" | "fals" | "false" | "n" | "no" | "0"
    )
}
