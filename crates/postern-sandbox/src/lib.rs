//! Throwaway infrastructure for `postern quickstart` and for tests: a PostgreSQL cluster in a
//! temporary directory and a development identity provider on loopback.
//!
//! # Layout
//! - [`cluster`]: `initdb` + `pg_ctl` on a free port, stopped and removed on drop.
//! - [`idp`]: signing keys, a JWKS and OIDC discovery served over HTTP, token minting.
//!
//! Nothing here is needed by `postern serve`.

pub mod cluster;
pub mod demo;
pub mod idp;
