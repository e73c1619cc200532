//! Against the real PostgreSQL programs: start, query over TCP with SCRAM, TLS with full
//! verification, caller-given directories and `pg_hba.conf` lines, and cleanup on drop.

use std::process::Command;

use super::*;

/// Runs the `psql` program with a full connection string (as a client of the sandbox would).
fn psql_as(cluster: &PgCluster, conninfo: &str, sql: &str) -> Result<String, String> {
    let output = Command::new(&cluster.binaries.psql)
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
            "-d",
            conninfo,
        ])
        .env_remove("PGPASSWORD")
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .unwrap();
    if output.status.success() {
        Ok(String::from_utf8(output.stdout)
            .unwrap()
            .trim_end()
            .to_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn accepts_connections(port: u16) -> bool {
    std::net::TcpStream::connect((HOST, port)).is_ok()
}

#[tokio::test]
async fn starts_runs_sql_over_tcp_with_scram_and_cleans_up_on_drop() {
    let cluster = PgCluster::start(ClusterOptions::default()).await.unwrap();
    assert_eq!(cluster.host(), "127.0.0.1");
    assert_eq!(cluster.superuser(), "postgres");
    assert!(cluster.ca_certificate_path().is_none());
    assert_eq!(cluster.psql("postgres", "SELECT 1").await.unwrap(), "1\n");

    // The helper's connection is TCP, and the superuser's password is stored as SCRAM.
    let facts = cluster
        .psql(
            "postgres",
            "SELECT inet_server_addr()::text, current_user;
             SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'postgres';
             SHOW fsync; SHOW max_connections; SHOW password_encryption;",
        )
        .await
        .unwrap();
    assert_eq!(facts, "127.0.0.1/32|postgres\nt\noff\n200\nscram-sha-256\n");

    // Several statements, including one that cannot run in a transaction block.
    cluster
        .psql(
            "postgres",
            "CREATE DATABASE app; CREATE ROLE alice LOGIN PASSWORD 'wonder land';",
        )
        .await
        .unwrap();

    // The connection string works for a client, and a wrong password is refused.
    let good = cluster.connection_string(cluster.superuser(), cluster.superuser_password(), "app");
    assert!(good.starts_with(&format!(
        "host=127.0.0.1 port={} user=postgres",
        cluster.port()
    )));
    assert_eq!(
        psql_as(&cluster, &good, "SELECT current_database()").unwrap(),
        "app"
    );
    let alice = cluster.connection_string("alice", "wonder land", "app");
    assert!(alice.contains("password='wonder land'"), "{alice}");
    assert_eq!(
        psql_as(&cluster, &alice, "SELECT current_user").unwrap(),
        "alice"
    );
    let wrong = cluster.connection_string("alice", "wonderland", "app");
    let refused = psql_as(&cluster, &wrong, "SELECT 1").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    // Errors carry psql's message.
    let error = cluster
        .psql("postgres", "SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no_such_table"), "{error}");

    let dir = cluster.dir().to_path_buf();
    let port = cluster.port();
    assert!(dir.join("data/PG_VERSION").exists());
    assert!(
        !dir.join("pwfile").exists(),
        "the password file is removed after initdb"
    );
    assert!(accepts_connections(port));
    drop(cluster);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(
        !accepts_connections(port),
        "the server still listens on {port}"
    );
}

#[tokio::test]
async fn tls_cluster_is_verified_with_its_ca() {
    let cluster = PgCluster::start(ClusterOptions {
        tls: true,
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let ca = cluster.ca_certificate_path().unwrap().to_path_buf();
    assert!(ca.exists());

    // The helper verifies the server too.
    assert_eq!(
        cluster
            .psql(
                "postgres",
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
            )
            .await
            .unwrap(),
        "t\n"
    );
    let conninfo = format!(
        "{} sslmode=verify-full sslrootcert={}",
        cluster.connection_string(
            cluster.superuser(),
            cluster.superuser_password(),
            "postgres"
        ),
        ca.display()
    );
    assert_eq!(
        psql_as(
            &cluster,
            &conninfo,
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        )
        .unwrap(),
        "t"
    );

    // Another CA does not verify it.
    let other = tempfile::tempdir().unwrap();
    let other_ca = tls::generate(other.path(), &ServerUser::Caller)
        .unwrap()
        .ca_certificate;
    let conninfo = format!(
        "{} sslmode=verify-full sslrootcert={}",
        cluster.connection_string(
            cluster.superuser(),
            cluster.superuser_password(),
            "postgres"
        ),
        other_ca.display()
    );
    let refused = psql_as(&cluster, &conninfo, "SELECT 1").unwrap_err();
    assert!(refused.contains("certificate verify failed"), "{refused}");

    cluster.stop().await.unwrap();
}

#[tokio::test]
async fn caller_directory_and_hba_lines_are_honoured() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("pg");
    let cluster = PgCluster::start(ClusterOptions {
        dir: Some(dir.clone()),
        extra_hba: vec!["host all mallory 127.0.0.1/32 reject".to_owned()],
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    cluster
        .psql("postgres", "CREATE ROLE mallory LOGIN PASSWORD 'secret'")
        .await
        .unwrap();
    let conninfo = cluster.connection_string("mallory", "secret", "postgres");
    let refused = psql_as(&cluster, &conninfo, "SELECT 1").unwrap_err();
    assert!(
        refused.contains("pg_hba.conf rejects connection"),
        "{refused}"
    );

    let port = cluster.port();
    cluster.stop().await.unwrap();
    assert!(!accepts_connections(port));
    assert!(
        dir.join("data/PG_VERSION").exists(),
        "a caller's directory is kept"
    );
    assert!(dir.join("postgres.log").exists());
}

#[test]
fn connection_string_values_are_quoted_for_libpq() {
    for (value, quoted) in [
        ("alice", "alice"),
        ("", "''"),
        ("two words", "'two words'"),
        ("it's", r"'it\'s'"),
        (r"back\slash", r"'back\\slash'"),
    ] {
        assert_eq!(conninfo_value(value), quoted);
    }
    assert_eq!(conf_string("/tmp/it's"), "'/tmp/it''s'");
}

#[test]
fn hba_puts_caller_lines_first() {
    let conf = hba_conf(&["hostssl all alice 127.0.0.1/32 cert".to_owned()]);
    let alice = conf.find("hostssl all alice").unwrap();
    let default = conf
        .find("host all all 127.0.0.1/32 scram-sha-256")
        .unwrap();
    assert!(alice < default);
    assert!(conf.contains("local all all trust"));
}

#[tokio::test]
async fn a_failed_start_quotes_the_server_log_and_leaves_nothing_behind() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("pg");
    let error = PgCluster::start(ClusterOptions {
        dir: Some(dir.clone()),
        extra_hba: vec!["hots all all 127.0.0.1/32 trust".to_owned()],
        ..ClusterOptions::default()
    })
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(message.starts_with("`pg_ctl start` failed"), "{message}");
    assert!(
        message.contains("last lines of the server log"),
        "{message}"
    );
    assert!(message.contains("pg_hba.conf"), "{message}");
    assert!(
        !dir.join("data/postmaster.pid").exists(),
        "no server left running"
    );
}
