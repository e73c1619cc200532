//! Command names for top-level statements, as PostgreSQL spells them in its command tags
//! (`CreateCommandTag` in `src/backend/tcop/utility.c`): what audit records and what client
//! messages call a statement.

use pg_query::NodeRef;
use pg_query::protobuf::{ObjectType, TransactionStmtKind, VariableSetKind};

/// The command tag of a top-level statement node.
pub(crate) fn command_tag(node: NodeRef<'_>) -> String {
    let fixed = match node {
        NodeRef::SelectStmt(s) if s.into_clause.is_some() => "SELECT INTO",
        NodeRef::SelectStmt(_) => "SELECT",
        NodeRef::InsertStmt(_) => "INSERT",
        NodeRef::UpdateStmt(_) => "UPDATE",
        NodeRef::DeleteStmt(_) => "DELETE",
        NodeRef::MergeStmt(_) => "MERGE",
        NodeRef::CopyStmt(_) => "COPY",
        NodeRef::ExplainStmt(_) => "EXPLAIN",
        NodeRef::VariableShowStmt(_) => "SHOW",
        NodeRef::VariableSetStmt(s) => match VariableSetKind::try_from(s.kind) {
            Ok(VariableSetKind::VarReset | VariableSetKind::VarResetAll) => "RESET",
            _ => "SET",
        },
        NodeRef::DiscardStmt(_) => "DISCARD",
        NodeRef::ListenStmt(_) => "LISTEN",
        NodeRef::UnlistenStmt(_) => "UNLISTEN",
        NodeRef::NotifyStmt(_) => "NOTIFY",
        NodeRef::PrepareStmt(_) => "PREPARE",
        NodeRef::ExecuteStmt(_) => "EXECUTE",
        NodeRef::DeallocateStmt(_) => "DEALLOCATE",
        NodeRef::DeclareCursorStmt(_) => "DECLARE CURSOR",
        NodeRef::FetchStmt(s) if s.ismove => "MOVE",
        NodeRef::FetchStmt(_) => "FETCH",
        NodeRef::ClosePortalStmt(_) => "CLOSE CURSOR",
        NodeRef::ConstraintsSetStmt(_) => "SET CONSTRAINTS",
        NodeRef::TransactionStmt(s) => match TransactionStmtKind::try_from(s.kind) {
            Ok(TransactionStmtKind::TransStmtBegin) => "BEGIN",
            Ok(TransactionStmtKind::TransStmtStart) => "START TRANSACTION",
            Ok(TransactionStmtKind::TransStmtCommit) => "COMMIT",
            Ok(
                TransactionStmtKind::TransStmtRollback | TransactionStmtKind::TransStmtRollbackTo,
            ) => "ROLLBACK",
            Ok(TransactionStmtKind::TransStmtSavepoint) => "SAVEPOINT",
            Ok(TransactionStmtKind::TransStmtRelease) => "RELEASE",
            Ok(TransactionStmtKind::TransStmtPrepare) => "PREPARE TRANSACTION",
            Ok(TransactionStmtKind::TransStmtCommitPrepared) => "COMMIT PREPARED",
            Ok(TransactionStmtKind::TransStmtRollbackPrepared) => "ROLLBACK PREPARED",
            _ => "TRANSACTION",
        },
        NodeRef::DoStmt(_) => "DO",
        NodeRef::CallStmt(_) => "CALL",
        NodeRef::LoadStmt(_) => "LOAD",
        NodeRef::CheckPointStmt(_) => "CHECKPOINT",
        NodeRef::LockStmt(_) => "LOCK TABLE",
        NodeRef::VacuumStmt(s) if s.is_vacuumcmd => "VACUUM",
        NodeRef::VacuumStmt(_) => "ANALYZE",
        NodeRef::ClusterStmt(_) => "CLUSTER",
        NodeRef::ReindexStmt(_) => "REINDEX",
        NodeRef::TruncateStmt(_) => "TRUNCATE TABLE",
        NodeRef::CommentStmt(_) => "COMMENT",
        NodeRef::SecLabelStmt(_) => "SECURITY LABEL",
        NodeRef::GrantStmt(s) if s.is_grant => "GRANT",
        NodeRef::GrantStmt(_) => "REVOKE",
        NodeRef::GrantRoleStmt(s) if s.is_grant => "GRANT ROLE",
        NodeRef::GrantRoleStmt(_) => "REVOKE ROLE",
        NodeRef::AlterDefaultPrivilegesStmt(_) => "ALTER DEFAULT PRIVILEGES",
        NodeRef::ReassignOwnedStmt(_) => "REASSIGN OWNED",
        NodeRef::DropOwnedStmt(_) => "DROP OWNED",
        NodeRef::CreateRoleStmt(_) => "CREATE ROLE",
        NodeRef::AlterRoleStmt(_) | NodeRef::AlterRoleSetStmt(_) => "ALTER ROLE",
        NodeRef::DropRoleStmt(_) => "DROP ROLE",
        NodeRef::AlterSystemStmt(_) => "ALTER SYSTEM",
        NodeRef::CreateStmt(_) => "CREATE TABLE",
        NodeRef::CreateForeignTableStmt(_) => "CREATE FOREIGN TABLE",
        NodeRef::CreateTableAsStmt(s) if s.is_select_into => "SELECT INTO",
        NodeRef::CreateTableAsStmt(s) if s.objtype == ObjectType::ObjectMatview as i32 => {
            "CREATE MATERIALIZED VIEW"
        }
        NodeRef::CreateTableAsStmt(_) => "CREATE TABLE AS",
        NodeRef::RefreshMatViewStmt(_) => "REFRESH MATERIALIZED VIEW",
        NodeRef::ViewStmt(_) => "CREATE VIEW",
        NodeRef::IndexStmt(_) => "CREATE INDEX",
        NodeRef::CreateSeqStmt(_) => "CREATE SEQUENCE",
        NodeRef::AlterSeqStmt(_) => "ALTER SEQUENCE",
        NodeRef::CreateSchemaStmt(_) => "CREATE SCHEMA",
        NodeRef::CreateFunctionStmt(s) if s.is_procedure => "CREATE PROCEDURE",
        NodeRef::CreateFunctionStmt(_) => "CREATE FUNCTION",
        NodeRef::AlterFunctionStmt(s) => {
            return format!("ALTER {}", object_type_name(s.objtype));
        }
        NodeRef::RuleStmt(_) => "CREATE RULE",
        NodeRef::CreateTrigStmt(_) => "CREATE TRIGGER",
        NodeRef::CreateEventTrigStmt(_) => "CREATE EVENT TRIGGER",
        NodeRef::AlterEventTrigStmt(_) => "ALTER EVENT TRIGGER",
        NodeRef::CreateDomainStmt(_) => "CREATE DOMAIN",
        NodeRef::AlterDomainStmt(_) => "ALTER DOMAIN",
        NodeRef::CompositeTypeStmt(_)
        | NodeRef::CreateEnumStmt(_)
        | NodeRef::CreateRangeStmt(_) => "CREATE TYPE",
        NodeRef::AlterEnumStmt(_) | NodeRef::AlterTypeStmt(_) => "ALTER TYPE",
        NodeRef::CreateCastStmt(_) => "CREATE CAST",
        NodeRef::CreateConversionStmt(_) => "CREATE CONVERSION",
        NodeRef::CreateTransformStmt(_) => "CREATE TRANSFORM",
        NodeRef::CreatePlangStmt(_) => "CREATE LANGUAGE",
        NodeRef::CreateOpClassStmt(_) => "CREATE OPERATOR CLASS",
        NodeRef::CreateOpFamilyStmt(_) => "CREATE OPERATOR FAMILY",
        NodeRef::AlterOpFamilyStmt(_) => "ALTER OPERATOR FAMILY",
        NodeRef::AlterOperatorStmt(_) => "ALTER OPERATOR",
        NodeRef::AlterTsdictionaryStmt(_) => "ALTER TEXT SEARCH DICTIONARY",
        NodeRef::AlterTsconfigurationStmt(_) => "ALTER TEXT SEARCH CONFIGURATION",
        NodeRef::AlterCollationStmt(_) => "ALTER COLLATION",
        NodeRef::CreateStatsStmt(_) => "CREATE STATISTICS",
        NodeRef::AlterStatsStmt(_) => "ALTER STATISTICS",
        NodeRef::CreatePolicyStmt(_) => "CREATE POLICY",
        NodeRef::AlterPolicyStmt(_) => "ALTER POLICY",
        NodeRef::CreateAmStmt(_) => "CREATE ACCESS METHOD",
        NodeRef::CreateExtensionStmt(_) => "CREATE EXTENSION",
        NodeRef::AlterExtensionStmt(_) | NodeRef::AlterExtensionContentsStmt(_) => {
            "ALTER EXTENSION"
        }
        NodeRef::CreatedbStmt(_) => "CREATE DATABASE",
        NodeRef::DropdbStmt(_) => "DROP DATABASE",
        NodeRef::AlterDatabaseStmt(_)
        | NodeRef::AlterDatabaseSetStmt(_)
        | NodeRef::AlterDatabaseRefreshCollStmt(_) => "ALTER DATABASE",
        NodeRef::CreateTableSpaceStmt(_) => "CREATE TABLESPACE",
        NodeRef::DropTableSpaceStmt(_) => "DROP TABLESPACE",
        NodeRef::AlterTableSpaceOptionsStmt(_) => "ALTER TABLESPACE",
        NodeRef::AlterTableMoveAllStmt(_) => "ALTER TABLE",
        NodeRef::CreateFdwStmt(_) => "CREATE FOREIGN DATA WRAPPER",
        NodeRef::AlterFdwStmt(_) => "ALTER FOREIGN DATA WRAPPER",
        NodeRef::CreateForeignServerStmt(_) => "CREATE SERVER",
        NodeRef::AlterForeignServerStmt(_) => "ALTER SERVER",
        NodeRef::CreateUserMappingStmt(_) => "CREATE USER MAPPING",
        NodeRef::AlterUserMappingStmt(_) => "ALTER USER MAPPING",
        NodeRef::DropUserMappingStmt(_) => "DROP USER MAPPING",
        NodeRef::ImportForeignSchemaStmt(_) => "IMPORT FOREIGN SCHEMA",
        NodeRef::CreatePublicationStmt(_) => "CREATE PUBLICATION",
        NodeRef::AlterPublicationStmt(_) => "ALTER PUBLICATION",
        NodeRef::CreateSubscriptionStmt(_) => "CREATE SUBSCRIPTION",
        NodeRef::AlterSubscriptionStmt(_) => "ALTER SUBSCRIPTION",
        NodeRef::DropSubscriptionStmt(_) => "DROP SUBSCRIPTION",
        NodeRef::ReplicaIdentityStmt(_) => "ALTER TABLE",
        NodeRef::AlterTableStmt(s) => return format!("ALTER {}", object_type_name(s.objtype)),
        NodeRef::DropStmt(s) => return format!("DROP {}", object_type_name(s.remove_type)),
        NodeRef::DefineStmt(s) => return format!("CREATE {}", object_type_name(s.kind)),
        NodeRef::RenameStmt(s) => return format!("ALTER {}", renamed_object(s)),
        NodeRef::AlterOwnerStmt(s) => return format!("ALTER {}", object_type_name(s.object_type)),
        NodeRef::AlterObjectSchemaStmt(s) => {
            return format!("ALTER {}", object_type_name(s.object_type));
        }
        NodeRef::AlterObjectDependsStmt(s) => {
            return format!("ALTER {}", object_type_name(s.object_type));
        }
        _ => "UNKNOWN",
    };
    fixed.to_owned()
}

/// `ALTER TABLE t RENAME COLUMN` is tagged `ALTER TABLE`, not `ALTER COLUMN`.
fn renamed_object(s: &pg_query::protobuf::RenameStmt) -> &'static str {
    match ObjectType::try_from(s.rename_type) {
        Ok(
            ObjectType::ObjectColumn
            | ObjectType::ObjectTabconstraint
            | ObjectType::ObjectAttribute
            | ObjectType::ObjectPolicy
            | ObjectType::ObjectRule
            | ObjectType::ObjectTrigger,
        ) => object_type_name(s.relation_type),
        _ => object_type_name(s.rename_type),
    }
}

/// The SQL words for an object type, as in `ALTER <type>` / `DROP <type>`.
pub(crate) fn object_type_name(object_type: i32) -> &'static str {
    let Ok(object_type) = ObjectType::try_from(object_type) else {
        return "OBJECT";
    };
    match object_type {
        ObjectType::ObjectAccessMethod => "ACCESS METHOD",
        ObjectType::ObjectAggregate => "AGGREGATE",
        ObjectType::ObjectAmop | ObjectType::ObjectAmproc | ObjectType::ObjectOpfamily => {
            "OPERATOR FAMILY"
        }
        ObjectType::ObjectAttribute | ObjectType::ObjectType => "TYPE",
        ObjectType::ObjectCast => "CAST",
        ObjectType::ObjectColumn | ObjectType::ObjectTabconstraint | ObjectType::ObjectTable => {
            "TABLE"
        }
        ObjectType::ObjectCollation => "COLLATION",
        ObjectType::ObjectConversion => "CONVERSION",
        ObjectType::ObjectDatabase => "DATABASE",
        ObjectType::ObjectDefault => "DEFAULT",
        ObjectType::ObjectDefacl => "DEFAULT PRIVILEGES",
        ObjectType::ObjectDomain | ObjectType::ObjectDomconstraint => "DOMAIN",
        ObjectType::ObjectEventTrigger => "EVENT TRIGGER",
        ObjectType::ObjectExtension => "EXTENSION",
        ObjectType::ObjectFdw => "FOREIGN DATA WRAPPER",
        ObjectType::ObjectForeignServer => "SERVER",
        ObjectType::ObjectForeignTable => "FOREIGN TABLE",
        ObjectType::ObjectFunction => "FUNCTION",
        ObjectType::ObjectIndex => "INDEX",
        ObjectType::ObjectLanguage => "LANGUAGE",
        ObjectType::ObjectLargeobject => "LARGE OBJECT",
        ObjectType::ObjectMatview => "MATERIALIZED VIEW",
        ObjectType::ObjectOpclass => "OPERATOR CLASS",
        ObjectType::ObjectOperator => "OPERATOR",
        ObjectType::ObjectParameterAcl => "PARAMETER",
        ObjectType::ObjectPolicy => "POLICY",
        ObjectType::ObjectProcedure => "PROCEDURE",
        ObjectType::ObjectPublication
        | ObjectType::ObjectPublicationNamespace
        | ObjectType::ObjectPublicationRel => "PUBLICATION",
        ObjectType::ObjectRole => "ROLE",
        ObjectType::ObjectRoutine => "ROUTINE",
        ObjectType::ObjectRule => "RULE",
        ObjectType::ObjectSchema => "SCHEMA",
        ObjectType::ObjectSequence => "SEQUENCE",
        ObjectType::ObjectSubscription => "SUBSCRIPTION",
        ObjectType::ObjectStatisticExt => "STATISTICS",
        ObjectType::ObjectTablespace => "TABLESPACE",
        ObjectType::ObjectTransform => "TRANSFORM",
        ObjectType::ObjectTrigger => "TRIGGER",
        ObjectType::ObjectTsconfiguration => "TEXT SEARCH CONFIGURATION",
        ObjectType::ObjectTsdictionary => "TEXT SEARCH DICTIONARY",
        ObjectType::ObjectTsparser => "TEXT SEARCH PARSER",
        ObjectType::ObjectTstemplate => "TEXT SEARCH TEMPLATE",
        ObjectType::ObjectUserMapping => "USER MAPPING",
        ObjectType::ObjectView => "VIEW",
        ObjectType::Undefined => "OBJECT",
    }
}
