//! Deliveries to real HTTP receivers on loopback: what arrives, how it is signed, and how
//! failures are retried, given up on and recorded. Every wait is on something observable (a
//! request reaching the receiver, [`Notifier::idle`], an outcome), never on a sleep.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test fails by panicking"
)]

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use postern_notify::{
    DEFAULT_SIGNATURE_TOLERANCE, DeliveryState, Message, Notifier, RetryPolicy, WebhookConfig,
    verify_signature,
};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const SECRET: &str = "a webhook secret of at least 32 bytes";
/// Stands for the credential in a Slack webhook URL's path; must never show up anywhere.
const URL_TOKEN: &str = "T0000-B0000-XXXXXXXXXXXXXXXXXXXXXXXX";
/// Long enough that a test would time out rather than pass should a wait not be skipped.
const FOREVER: Duration = Duration::from_secs(3600);
/// A bound on each test, so a regression fails instead of hanging.
const TEST_LIMIT: Duration = Duration::from_secs(30);

/// What the receiver answers: a status, headers, and a body.
#[derive(Clone)]
enum Answer {
    Status(
        StatusCode,
        &'static [(&'static str, &'static str)],
        &'static str,
    ),
    /// Never answers.
    Hang,
}

/// A request as the receiver got it.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: Bytes,
}

impl Received {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }
}

struct Receiver {
    url: String,
    requests: mpsc::UnboundedReceiver<Received>,
}

impl Receiver {
    async fn next(&mut self) -> Received {
        tokio::time::timeout(TEST_LIMIT, self.requests.recv())
            .await
            .expect("no request reached the receiver")
            .expect("receiver stopped")
    }

    /// Asserts nothing more arrived; call after [`Notifier::idle`].
    fn assert_no_more(&mut self) {
        assert!(self.requests.try_recv().is_err(), "an unexpected request");
    }
}

#[derive(Clone)]
struct Script {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    requests: mpsc::UnboundedSender<Received>,
}

/// An HTTP receiver on loopback answering with `answers` in turn, then 200 `ok`.
async fn receiver(answers: Vec<Answer>) -> Receiver {
    let (sender, requests) = mpsc::unbounded_channel();
    let script = Script {
        answers: Arc::new(Mutex::new(answers.into())),
        requests: sender,
    };
    let app = Router::new()
        .route("/services/{token}", post(answer))
        .with_state(script);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Receiver {
        url: format!("http://{address}/services/{URL_TOKEN}"),
        requests,
    }
}

async fn answer(State(script): State<Script>, headers: HeaderMap, body: Bytes) -> Response {
    let next = script.answers.lock().unwrap().pop_front();
    script.requests.send(Received { headers, body }).unwrap();
    match next {
        None => (StatusCode::OK, "ok").into_response(),
        Some(Answer::Status(status, headers, body)) => {
            let mut response = (status, body).into_response();
            for (name, value) in headers {
                response.headers_mut().insert(*name, value.parse().unwrap());
            }
            response
        }
        Some(Answer::Hang) => std::future::pending().await,
    }
}

fn quick(attempts: u32) -> RetryPolicy {
    RetryPolicy {
        attempts,
        first_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(10),
    }
}

fn notifier(hooks: &[(&str, &str)], policy: RetryPolicy) -> Notifier {
    let webhooks = hooks
        .iter()
        .map(|(group, url)| {
            let config = WebhookConfig {
                url: (*url).to_owned(),
                secret: SECRET.to_owned(),
            };
            ((*group).to_owned(), config)
        })
        .collect::<BTreeMap<_, _>>();
    Notifier::new(webhooks, policy).unwrap()
}

fn message() -> Message {
    Message {
        event: "approval.requested".into(),
        request_id: "req-42".into(),
        text: "alice@example.com asks to run a write on prod as writer. Approve: postern approve req-42"
            .into(),
        fields: json!({
            "requester": "alice@example.com",
            "role": "writer",
            "target": "prod",
            "reason": "INC-7 <!channel>",
            "statement": "UPDATE orders SET status = $1 WHERE id = $2",
        }),
    }
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

async fn limited<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("the test took too long")
}

#[tokio::test]
async fn delivers_a_signed_slack_message() {
    limited(async {
        let mut dba = receiver(vec![]).await;
        let mut security = receiver(vec![]).await;
        let notifier = notifier(&[("dba", &dba.url), ("security", &security.url)], quick(1));
        let mut outcomes = notifier.outcomes();
        let queued = notifier.notify(&groups(&["dba", "nobody", "dba", "security"]), &message());
        assert_eq!(queued, 2, "one per group with a webhook, each group once");

        let received = dba.next().await;
        let other = security.next().await;
        assert_eq!(received.header("content-type"), "application/json");
        assert_ne!(
            received.header("x-postern-delivery"),
            other.header("x-postern-delivery"),
            "each group's delivery has its own id"
        );
        let timestamp = received.header("x-postern-timestamp");
        let signature = received.header("x-postern-signature");
        let now = SystemTime::now();
        let verify = |body: &[u8], now: SystemTime| {
            verify_signature(
                SECRET.as_bytes(),
                timestamp,
                body,
                signature,
                now,
                DEFAULT_SIGNATURE_TOLERANCE,
            )
        };
        assert!(verify(&received.body, now));

        // What Slack needs (`text`), with user-supplied values escaped, and the structured copy.
        let body: Value = serde_json::from_slice(&received.body).unwrap();
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains("postern approve req-42")
        );
        assert!(
            body["blocks"]
                .to_string()
                .contains("INC-7 &lt;!channel&gt;")
        );
        assert_eq!(body["postern"]["event"], "approval.requested");
        assert_eq!(body["postern"]["request_id"], "req-42");
        assert_eq!(body["postern"]["fields"]["reason"], "INC-7 <!channel>");

        // A tampered body, a replay ten minutes later, or another secret: refused.
        let mut tampered = received.body.to_vec();
        let at = tampered.iter().position(|&byte| byte == b'w').unwrap();
        tampered[at] = b'W';
        assert!(!verify(&tampered, now));
        assert!(!verify(&received.body, now + Duration::from_secs(600)));
        assert!(!verify_signature(
            b"some other secret of thirty-two bytes",
            timestamp,
            &received.body,
            signature,
            now,
            DEFAULT_SIGNATURE_TOLERANCE,
        ));

        notifier.idle().await;
        let mut finished = vec![
            outcomes.recv().await.unwrap(),
            outcomes.recv().await.unwrap(),
        ];
        finished.sort_by(|a, b| a.group.cmp(&b.group));
        assert_eq!(finished[0].group, "dba");
        assert_eq!(finished[1].group, "security");
        for delivery in &finished {
            assert!(delivery.delivered(), "{delivery:?}");
            assert_eq!(delivery.attempts, 1);
            assert_eq!(delivery.last_status, Some(200));
            assert_eq!(delivery.event, "approval.requested");
            assert_eq!(delivery.request_id, "req-42");
            assert!(delivery.finished_at.is_some());
        }
        assert_eq!(finished[0].id, received.header("x-postern-delivery"));
        assert_eq!(notifier.deliveries().len(), 2);
        dba.assert_no_more();
        security.assert_no_more();
    })
    .await;
}

#[tokio::test]
async fn retries_server_errors_with_the_same_delivery_id() {
    limited(async {
        let unavailable = Answer::Status(StatusCode::SERVICE_UNAVAILABLE, &[], "busy");
        let mut hook = receiver(vec![unavailable.clone(), unavailable]).await;
        let notifier = notifier(&[("dba", &hook.url)], quick(5));
        let mut outcomes = notifier.outcomes();
        assert_eq!(notifier.notify(&groups(&["dba"]), &message()), 1);

        let attempts = [hook.next().await, hook.next().await, hook.next().await];
        let id = attempts[0].header("x-postern-delivery");
        for attempt in &attempts {
            assert_eq!(attempt.header("x-postern-delivery"), id);
            assert_eq!(attempt.body, attempts[0].body, "the same body every time");
        }
        notifier.idle().await;
        hook.assert_no_more();

        let outcome = outcomes.recv().await.unwrap();
        assert_eq!(outcome.state, DeliveryState::Delivered);
        assert_eq!(outcome.attempts, 3);
        assert_eq!(outcome.id, id);
        assert_eq!(outcome.last_error, None);
        assert_eq!(notifier.deliveries(), [outcome]);
    })
    .await;
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    limited(async {
        let refused = Answer::Status(StatusCode::BAD_REQUEST, &[], "invalid_payload");
        let mut hook = receiver(vec![refused]).await;
        let notifier = notifier(&[("dba", &hook.url)], quick(5));
        assert_eq!(notifier.notify(&groups(&["dba"]), &message()), 1);
        hook.next().await;
        notifier.idle().await;
        hook.assert_no_more();

        let [delivery] = notifier.deliveries().try_into().unwrap();
        assert_eq!(delivery.state, DeliveryState::Failed);
        assert_eq!(delivery.attempts, 1);
        assert_eq!(delivery.last_status, Some(400));
        let error = delivery.last_error.as_ref().unwrap();
        assert!(!error.is_retryable());
        assert_eq!(error.to_string(), "HTTP 400: invalid_payload");
        // The console's view names the host, never the URL's secret path.
        let shown = serde_json::to_string(&notifier.deliveries()).unwrap();
        assert!(shown.contains("127.0.0.1"));
        assert!(!shown.contains(URL_TOKEN), "{shown}");
    })
    .await;
}

#[tokio::test]
async fn honours_retry_after() {
    limited(async {
        // Without Retry-After the next attempt would be an hour away.
        let slow_down = Answer::Status(
            StatusCode::TOO_MANY_REQUESTS,
            &[("retry-after", "0")],
            "rate limited",
        );
        let mut hook = receiver(vec![slow_down]).await;
        let policy = RetryPolicy {
            first_backoff: FOREVER,
            max_backoff: FOREVER,
            ..quick(3)
        };
        let notifier = notifier(&[("dba", &hook.url)], policy);
        notifier.notify(&groups(&["dba"]), &message());
        hook.next().await;
        hook.next().await;
        notifier.idle().await;
        let [delivery] = notifier.deliveries().try_into().unwrap();
        assert!(delivery.delivered());
        assert_eq!(delivery.attempts, 2);
    })
    .await;
}

#[tokio::test]
async fn redirects_are_not_followed() {
    limited(async {
        let moved = Answer::Status(
            StatusCode::FOUND,
            &[("location", "/services/elsewhere")],
            "",
        );
        let mut hook = receiver(vec![moved]).await;
        let notifier = notifier(&[("dba", &hook.url)], quick(5));
        notifier.notify(&groups(&["dba"]), &message());
        hook.next().await;
        notifier.idle().await;
        hook.assert_no_more();
        let [delivery] = notifier.deliveries().try_into().unwrap();
        assert_eq!(delivery.state, DeliveryState::Failed);
        assert_eq!(delivery.last_status, Some(302));
        assert_eq!(delivery.last_error.unwrap().kind(), "redirected");
    })
    .await;
}

#[tokio::test]
async fn gives_up_when_nobody_listens() {
    limited(async {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/services/{URL_TOKEN}",
            closed.local_addr().unwrap()
        );
        drop(closed);
        let notifier = notifier(&[("dba", &url)], quick(3));
        let mut outcomes = notifier.outcomes();
        assert_eq!(notifier.notify(&groups(&["dba"]), &message()), 1);
        notifier.idle().await;

        let outcome = outcomes.recv().await.unwrap();
        assert_eq!(outcome.state, DeliveryState::Failed);
        assert_eq!(outcome.attempts, 3);
        assert_eq!(outcome.last_status, None);
        assert_eq!(outcome.last_error.as_ref().unwrap().kind(), "connect");
        assert_eq!(notifier.deliveries(), [outcome]);
    })
    .await;
}

#[tokio::test]
async fn attempts_time_out() {
    limited(async {
        let mut hook = receiver(vec![Answer::Hang, Answer::Hang]).await;
        let policy = RetryPolicy {
            timeout: Duration::from_millis(200),
            ..quick(2)
        };
        let notifier = notifier(&[("dba", &hook.url)], policy);
        notifier.notify(&groups(&["dba"]), &message());
        hook.next().await;
        hook.next().await;
        notifier.idle().await;
        let [delivery] = notifier.deliveries().try_into().unwrap();
        assert_eq!(delivery.state, DeliveryState::Failed);
        assert_eq!(delivery.attempts, 2);
        assert_eq!(delivery.last_error.unwrap().kind(), "timeout");
    })
    .await;
}

#[tokio::test]
async fn groups_without_a_webhook_are_skipped() {
    let notifier = notifier(&[("dba", "https://hooks.example.com/x")], quick(1));
    assert_eq!(
        notifier.notify(&groups(&["security", "ops"]), &message()),
        0
    );
    assert_eq!(notifier.notify(&[], &message()), 0);
    assert!(notifier.has_webhook("dba"));
    assert!(!notifier.has_webhook("security"));
    // Nothing in flight: resolves at once.
    notifier.idle().await;
    assert!(notifier.deliveries().is_empty());
}

#[test]
fn outside_a_runtime_the_failure_is_recorded() {
    let notifier = notifier(&[("dba", "https://hooks.example.com/x")], quick(1));
    let mut outcomes = notifier.outcomes();
    assert_eq!(notifier.notify(&groups(&["dba"]), &message()), 0);
    let outcome = outcomes.try_recv().unwrap();
    assert_eq!(outcome.state, DeliveryState::Failed);
    assert_eq!(outcome.last_error.unwrap().kind(), "no_runtime");
    assert_eq!(notifier.deliveries().len(), 1);
}

#[test]
fn configuration_problems_are_all_reported() {
    let hook = |url: &str, secret: &str| WebhookConfig {
        url: url.to_owned(),
        secret: secret.to_owned(),
    };
    let webhooks = BTreeMap::from([
        ("dba".to_owned(), hook("http://hooks.example.com/x", SECRET)),
        (
            "ops".to_owned(),
            hook("https://hooks.example.com/y", "short"),
        ),
        (
            "sec".to_owned(),
            hook("https://hooks.example.com/z", SECRET),
        ),
    ]);
    let policy = RetryPolicy {
        attempts: 0,
        ..RetryPolicy::default()
    };
    let err = Notifier::new(webhooks, policy).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("attempts"), "{message}");
    assert!(message.contains("'dba': plain http"), "{message}");
    assert!(message.contains("'ops': the secret"), "{message}");
    assert!(!message.contains("'sec'"), "{message}");
    assert!(!message.contains("/x"), "no URL path: {message}");
}

/// A log sink for [`logs_name_the_host_never_the_path`].
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_name_the_host_never_the_path() {
    // The test runtime has one thread, so the delivery tasks log through this subscriber too.
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("postern_notify=trace"))
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    limited(async {
        let unavailable = Answer::Status(StatusCode::BAD_GATEWAY, &[], "upstream down");
        let mut dba = receiver(vec![unavailable.clone(), unavailable]).await;
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let nobody = format!(
            "http://{}/services/{URL_TOKEN}",
            closed.local_addr().unwrap()
        );
        drop(closed);
        let notifier = notifier(&[("dba", &dba.url), ("ops", &nobody)], quick(2));
        assert_eq!(notifier.notify(&groups(&["dba", "ops"]), &message()), 2);
        dba.next().await;
        dba.next().await;
        notifier.idle().await;
    })
    .await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    for expected in [
        "will retry",
        "giving up",
        "group=dba",
        "group=ops",
        "host=127.0.0.1:",
        "status=502",
        "could not connect",
    ] {
        assert!(logs.contains(expected), "no {expected:?} in:\n{logs}");
    }
    assert!(!logs.contains(URL_TOKEN), "a URL path was logged:\n{logs}");
    assert!(
        !logs.contains("/services"),
        "a URL path was logged:\n{logs}"
    );
    assert!(!logs.contains(SECRET), "the secret was logged:\n{logs}");
}
