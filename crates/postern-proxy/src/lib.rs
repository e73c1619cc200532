//! postern-proxy
