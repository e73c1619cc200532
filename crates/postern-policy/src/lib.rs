//! postern-policy
pub mod cedar;
pub mod guard;
pub mod roles;
pub mod startup;
