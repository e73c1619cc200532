//! Postern's end-to-end tests, one module per capability, linked into one test binary: every
//! binary links all of Postern and its dependencies (about 180 MB in a debug build), so one
//! binary instead of thirty-four saves minutes of linking and gigabytes of disk on every clean
//! build. Each test still starts its own PostgreSQL, identity provider and proxy.

#[macro_use]
mod common;

mod admin_api;
mod admin_metrics;
mod approval_preview;
mod approvals;
mod audit;
mod backchannel_logout;
mod baseline;
mod baseline_admin;
mod claims;
mod cli;
mod console_browser;
mod ephemeral;
mod escapes;
mod lifetime;
mod limits;
mod login;
mod malformed;
mod mtls;
mod oauthbearer;
mod policy_conditions;
mod policy_reload;
mod policy_table;
mod pool;
mod prepared_policy;
mod protocol;
mod readme;
mod revocation;
mod scim;
mod search_path;
mod sessions;
mod smoke;
mod startup;
mod token_exchange;
mod tokens;
mod transaction_pool;
mod upstream;
mod workload_identity;
