//! Postern's Cedar schema (`schema/postern.cedarschema`, built into the binary) and the Cedar
//! names Postern uses to speak to it.
//!
//! The schema is part of Postern, not of a deployment: it describes what Postern puts into every
//! request, so it changes only with Postern's code. Policies are validated against it in strict
//! mode at load time.

use std::str::FromStr;

use cedar_policy::{EntityId, EntityTypeName, EntityUid, Schema};

use super::decision::Action;

/// The schema's text, as shipped in `crates/postern-policy/schema/postern.cedarschema`. Printed
/// by `postern policy schema` so that editors and `cedar validate` can check policies offline.
pub const SCHEMA_TEXT: &str = include_str!("../../schema/postern.cedarschema");

/// Where errors in the schema itself are reported from (only a broken build could have them).
pub(crate) const SCHEMA_ORIGIN: &str = "postern.cedarschema (built in)";

/// The parsed schema and the entity type names and action ids, parsed once per load.
pub(crate) struct Vocabulary {
    pub(crate) schema: Schema,
    pub(crate) names: Names,
}

/// Why the built-in schema could not be used: a bug in Postern, reported as a load error.
pub(crate) type SchemaProblem = String;

impl Vocabulary {
    pub(crate) fn load() -> Result<Self, SchemaProblem> {
        let (schema, _warnings) =
            Schema::from_cedarschema_str(SCHEMA_TEXT).map_err(|e| e.to_string())?;
        let names = Names::new()?;
        Ok(Self { schema, names })
    }
}

/// Entity type names and action ids, parsed once so that building a request never parses.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub(crate) user: EntityTypeName,
    pub(crate) service: EntityTypeName,
    pub(crate) group: EntityTypeName,
    pub(crate) target: EntityTypeName,
    pub(crate) role: EntityTypeName,
    pub(crate) table: EntityTypeName,
    /// One uid per [`Action`], indexed by [`Action::index`].
    actions: Vec<EntityUid>,
}

impl Names {
    fn new() -> Result<Self, SchemaProblem> {
        let parse = |name: &str| EntityTypeName::from_str(name).map_err(|e| e.to_string());
        let action = parse("Action")?;
        Ok(Self {
            user: parse("User")?,
            service: parse("Service")?,
            group: parse("Group")?,
            target: parse("Target")?,
            role: parse("Role")?,
            table: parse("Table")?,
            actions: Action::ALL
                .iter()
                .map(|a| {
                    EntityUid::from_type_name_and_id(action.clone(), EntityId::new(a.as_str()))
                })
                .collect(),
        })
    }

    pub(crate) fn action(&self, action: Action) -> &EntityUid {
        &self.actions[action.index()]
    }

    pub(crate) fn uid(&self, ty: &EntityTypeName, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(ty.clone(), EntityId::new(id))
    }
}

#[cfg(test)]
mod tests {
    use super::{SCHEMA_TEXT, Vocabulary};
    use crate::cedar::decision::Action;

    #[test]
    fn schema_parses_and_declares_every_action() {
        let vocabulary = Vocabulary::load().unwrap();
        let declared: Vec<String> = vocabulary
            .schema
            .actions()
            .map(|a| a.id().unescaped().to_owned())
            .collect();
        for action in Action::ALL {
            assert!(declared.iter().any(|d| d == action.as_str()), "{action}");
        }
        assert_eq!(declared.len(), Action::ALL.len(), "{declared:?}");
        // The COPY actions sit under read and write.
        let actions = vocabulary.schema.action_entities().unwrap();
        let names = &vocabulary.names;
        assert!(actions.is_ancestor_of(names.action(Action::Write), names.action(Action::CopyIn)));
        assert!(actions.is_ancestor_of(names.action(Action::Read), names.action(Action::CopyOut)));
        assert!(!actions.is_ancestor_of(names.action(Action::Read), names.action(Action::CopyIn)));
        assert!(SCHEMA_TEXT.contains("tags String"));
    }
}
