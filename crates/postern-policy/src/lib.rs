//! postern-policy
pub mod guard;
pub mod roles;
pub mod startup;
