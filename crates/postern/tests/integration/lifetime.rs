//! A session never outlives its token: at expiry it ends with a message saying so, and a
//! statement still running upstream is cancelled rather than left to finish.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking, helpers included"
)]

use crate::common;

use std::time::Duration;

use crate::common::RawClient;
use postern_wire::backend;

#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let stack = common::stack(postern_config::UpstreamMode::RoleLogin).await;
    let mut request = stack.request("alice@example.com");
    request.groups = vec!["analysts".to_owned()];
    request.ttl = Duration::from_secs(3);
    let token = stack.mint(&request).unwrap();
    let (mut client, _) = RawClient::login(stack.addr, "reader", &token).await;
    client.query("SELECT pg_sleep(60)").await;

    // The FATAL arrives at expiry, long before the sleep could end (RawClient waits 10 s at most).
    let message = client.read().await.expect("a FATAL at expiry");
    assert_eq!(message.tag, backend::ERROR_RESPONSE);
    let error = message.error();
    assert_eq!(
        (error.severity.as_str(), error.code.as_str()),
        ("FATAL", "57P01"),
        "{}",
        error.message
    );
    assert!(
        error.message.contains("your token expired at"),
        "{}",
        error.message
    );
    assert!(error.message.contains("log in again"), "{}", error.message);
    assert!(client.read_to_end().await.is_empty());

    // The upstream statement was cancelled and its backend is gone.
    let direct = stack.direct().await.unwrap();
    common::wait_until("the sleeping backend to end", || {
        let direct = &direct;
        async move {
            let row = direct
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)'",
                    &[],
                )
                .await
                .unwrap();
            row.get::<_, i64>(0) == 0
        }
    })
    .await;
}
