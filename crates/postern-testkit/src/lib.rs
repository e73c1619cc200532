//! postern-testkit
