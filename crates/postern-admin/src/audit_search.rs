//! `GET /v1/audit`: searching the audit log, newest first.
//!
//! `?kind=statement,control&subject=…&request=…&session=…&since=…&until=…&limit=100`. Who may
//! search, and the record that they did, is [`Control::audit_search`]'s (`view_audit` on every
//! target; the search is itself an audit event). This reads the file.
//!
//! The log is read backwards from its end in chunks, one line at a time, so memory holds one
//! line and the events found, never the file. Every search is bounded: at most
//! [`MAX_SCAN_BYTES`] read, lines longer than [`MAX_LINE_BYTES`] skipped, at most
//! [`MAX_RESULT_BYTES`] of events returned. Events are in time order in the file (the single
//! writer stamps them as it writes), so the search stops at the first event older than `since`.
//! The answer says whether it reached the start of the log (or `since`): if not, there may be
//! older matches, which a search with `until` set to the oldest event returned finds.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use postern_proxy::control::Control;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, caller};

/// Events returned when the caller gives no `limit`.
const DEFAULT_LIMIT: usize = 100;
/// The largest `limit`.
const MAX_LIMIT: usize = 1000;
/// Most bytes of the log one search reads (from the end).
pub(crate) const MAX_SCAN_BYTES: u64 = 256 << 20;
/// Longest line considered: a statement event quotes at most 1 MiB of SQL text, which JSON
/// escaping can grow several times.
pub(crate) const MAX_LINE_BYTES: usize = 16 << 20;
/// Most bytes of events (as written in the log) one answer carries.
pub(crate) const MAX_RESULT_BYTES: usize = 32 << 20;
/// How much is read at a time (more when a line is longer).
const CHUNK_BYTES: usize = 64 << 10;
/// Longest filter value, in characters: longer than any name Postern writes.
const MAX_FILTER_CHARS: usize = 256;

/// Fields naming who an event is by or about, at its top level or in its `details`.
const SUBJECT_FIELDS: &[&str] = &["subject", "by", "requester", "requester_subject"];
/// Where an event names its approval request: `request` at the top level, in `details`, or in
/// the `approval` of a statement run under a grant.
const REQUEST_FIELDS: &[&str] = &["request", "request_id"];
const SESSION_FIELDS: &[&str] = &["session", "session_id"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SearchQuery {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    subject: Option<String>,
    #[serde(default)]
    request: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
}

/// A search, checked.
#[derive(Debug, Default)]
struct Filter {
    kinds: Vec<String>,
    subject: Option<String>,
    request: Option<String>,
    session: Option<String>,
    /// Events at or after.
    since: Option<SystemTime>,
    /// Events before.
    until: Option<SystemTime>,
    limit: usize,
}

/// What a search found.
#[derive(Debug)]
struct Found {
    /// Newest first.
    events: Vec<Value>,
    /// The search reached the start of the log or `since`: nothing older matches.
    exhausted: bool,
}

pub(crate) async fn search(
    State(control): State<Control>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<SearchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&control, &headers, peer).await?;
    let Query(query) = query.map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.body_text()))?;
    let filter = Filter::from_query(query)?;
    let path = control.audit_search(&caller, filter.describe()).await?;
    let found =
        tokio::task::spawn_blocking(move || search_file(&path, &filter).map_err(|e| (path, e)))
            .await
            .map_err(|e| {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the audit search failed: {e}"),
                )
            })?
            .map_err(|(path, e)| {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read the audit log {}: {e}", path.display()),
                )
            })?;
    Ok(Json(json!({"events": found.events, "exhausted": found.exhausted})).into_response())
}

impl Filter {
    fn from_query(query: SearchQuery) -> Result<Self, ApiError> {
        let kinds = match query.kind {
            Some(kinds) => {
                let kinds: Vec<String> = kinds
                    .split(',')
                    .map(str::trim)
                    .filter(|k| !k.is_empty())
                    .map(str::to_owned)
                    .collect();
                if kinds.iter().any(|k| {
                    k.len() > 32 || !k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                }) {
                    return Err(invalid(
                        "kind: event kinds are lowercase words (connection, statement, \
                         statement_end, session_end, approval, control), separated by commas",
                    ));
                }
                kinds
            }
            None => Vec::new(),
        };
        let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(invalid(&format!("limit: from 1 to {MAX_LIMIT}")));
        }
        let since = query
            .since
            .as_deref()
            .map(|t| time("since", t))
            .transpose()?;
        let until = query
            .until
            .as_deref()
            .map(|t| time("until", t))
            .transpose()?;
        Ok(Self {
            kinds,
            subject: bounded("subject", query.subject)?,
            request: bounded("request", query.request)?,
            session: bounded("session", query.session)?,
            since,
            until,
            limit,
        })
    }

    /// The search as its audit event records it.
    fn describe(&self) -> Value {
        let time = |t: Option<SystemTime>| t.map(|t| humantime::format_rfc3339(t).to_string());
        json!({
            "kind": self.kinds,
            "subject": self.subject,
            "request": self.request,
            "session": self.session,
            "since": time(self.since),
            "until": time(self.until),
            "limit": self.limit,
        })
    }

    /// Whether `event`, written at `time`, matches (`since` is checked by the caller, which
    /// stops there).
    fn matches(&self, event: &Value, time: Option<SystemTime>) -> bool {
        if let Some(until) = self.until
            && time.is_none_or(|t| t >= until)
        {
            return false;
        }
        if self.since.is_some() && time.is_none() {
            return false;
        }
        if !self.kinds.is_empty()
            && !event["kind"]
                .as_str()
                .is_some_and(|k| self.kinds.iter().any(|wanted| wanted == k))
        {
            return false;
        }
        let wanted = [
            (&self.subject, SUBJECT_FIELDS),
            (&self.request, REQUEST_FIELDS),
            (&self.session, SESSION_FIELDS),
        ];
        wanted.iter().all(|(value, fields)| {
            value
                .as_deref()
                .is_none_or(|value| names(event, fields, value))
        })
    }
}

/// Whether one of `fields` of `event` (at its top level, in `details` or in `approval`) is
/// `value`, or a list holding it.
fn names(event: &Value, fields: &[&str], value: &str) -> bool {
    let is = |v: &Value| match v {
        Value::String(s) => s == value,
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(value)),
        _ => false,
    };
    [event, &event["details"], &event["approval"]]
        .into_iter()
        .any(|object| fields.iter().any(|field| is(&object[*field])))
}

fn invalid(message: &str) -> ApiError {
    ApiError(StatusCode::UNPROCESSABLE_ENTITY, message.to_owned())
}

fn bounded(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.is_empty() || v.chars().count() > MAX_FILTER_CHARS => Err(invalid(&format!(
            "{name}: give 1 to {MAX_FILTER_CHARS} characters"
        ))),
        other => Ok(other),
    }
}

/// `since` and `until`: unix seconds, or RFC 3339 in UTC.
fn time(name: &str, given: &str) -> Result<SystemTime, ApiError> {
    if !given.is_empty() && given.bytes().all(|b| b.is_ascii_digit()) {
        return given
            .parse::<u64>()
            .ok()
            .and_then(|secs| UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
            .ok_or_else(|| invalid(&format!("{name}: {given} is out of range")));
    }
    humantime::parse_rfc3339(given).map_err(|e| {
        invalid(&format!(
            "{name}: {e}; write unix seconds or RFC 3339 in UTC, such as 2025-01-02T03:04:05Z"
        ))
    })
}

/// Searches the log at `path` with `filter`. Blocking: run off the reactor.
fn search_file(path: &Path, filter: &Filter) -> std::io::Result<Found> {
    let mut lines = Backwards::open(path, MAX_SCAN_BYTES)?;
    let mut events = Vec::new();
    let mut bytes = 0;
    let exhausted = loop {
        let line = match lines.next_line()? {
            None => break !lines.out_of_budget,
            Some(Line::TooLong) => continue,
            Some(Line::Text(line)) => line,
        };
        // The empty rest after the final newline, and a line cut short by a write in progress.
        let Ok(event) = serde_json::from_slice::<Value>(&line) else {
            continue;
        };
        let time = event["time"]
            .as_str()
            .and_then(|t| humantime::parse_rfc3339(t).ok());
        if let (Some(since), Some(time)) = (filter.since, time)
            && time < since
        {
            break true;
        }
        if !filter.matches(&event, time) {
            continue;
        }
        bytes += line.len();
        if bytes > MAX_RESULT_BYTES {
            break false;
        }
        events.push(event);
        if events.len() >= filter.limit {
            break lines.at_start();
        }
    };
    Ok(Found { events, exhausted })
}

/// One line read backwards.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// Its bytes, without the newline.
    Text(Vec<u8>),
    /// Longer than [`MAX_LINE_BYTES`]: skipped without being kept.
    TooLong,
}

/// The lines of a file from its end, read in chunks: memory holds at most about twice
/// [`MAX_LINE_BYTES`] (a line, and the chunk read before it).
struct Backwards {
    file: File,
    /// Where `pending` starts in the file: everything before is unread.
    start: u64,
    /// Bytes read and not yet returned; the newline that ended the last of them is dropped.
    pending: Vec<u8>,
    /// Inside a line longer than [`MAX_LINE_BYTES`], whose bytes are being dropped.
    skipping: bool,
    /// Bytes that may still be read.
    budget: u64,
    /// The budget ran out before the start of the file.
    out_of_budget: bool,
}

impl Backwards {
    fn open(path: &Path, budget: u64) -> std::io::Result<Self> {
        let file = File::open(path)?;
        let start = file.metadata()?.len();
        Ok(Self {
            file,
            start,
            pending: Vec::new(),
            skipping: false,
            budget,
            out_of_budget: false,
        })
    }

    /// Nothing is left to return.
    fn at_start(&self) -> bool {
        self.start == 0 && self.pending.is_empty()
    }

    /// The line before the last one returned; `None` at the start of the file, or when the
    /// budget is spent (`out_of_budget`).
    fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        loop {
            if let Some(newline) = self.pending.iter().rposition(|&b| b == b'\n') {
                let line = self.pending.split_off(newline + 1);
                self.pending.truncate(newline);
                return Ok(Some(self.line(line)));
            }
            if self.start == 0 {
                if self.pending.is_empty() && !self.skipping {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.pending);
                return Ok(Some(self.line(line)));
            }
            if self.pending.len() > MAX_LINE_BYTES {
                self.pending = Vec::new();
                self.skipping = true;
            }
            if self.budget == 0 {
                self.out_of_budget = true;
                return Ok(None);
            }
            self.read_before()?;
        }
    }

    fn line(&mut self, bytes: Vec<u8>) -> Line {
        if std::mem::take(&mut self.skipping) || bytes.len() > MAX_LINE_BYTES {
            Line::TooLong
        } else {
            Line::Text(bytes)
        }
    }

    /// Reads the chunk before `start` in front of `pending`: as large as what is pending, so a
    /// long line costs linear time, and never past the budget.
    fn read_before(&mut self) -> std::io::Result<()> {
        let size = CHUNK_BYTES.max(self.pending.len()) as u64;
        let size = size.min(self.start).min(self.budget);
        self.start -= size;
        self.budget -= size;
        let mut chunk = vec![0; usize::try_from(size).unwrap_or(CHUNK_BYTES)];
        self.file.seek(SeekFrom::Start(self.start))?;
        self.file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&self.pending);
        self.pending = chunk;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::{Backwards, Filter, Line, MAX_LINE_BYTES, search_file};

    fn lines_backwards(content: &[u8], budget: u64) -> (Vec<Line>, bool) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(content).unwrap();
        let mut reader = Backwards::open(file.path(), budget).unwrap();
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            lines.push(line);
        }
        (lines, reader.out_of_budget)
    }

    fn text(s: &str) -> Line {
        Line::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn reads_lines_from_the_end() {
        let (lines, cut) = lines_backwards(b"one\ntwo\n\nthree\n", u64::MAX);
        assert_eq!(
            lines,
            [text(""), text("three"), text(""), text("two"), text("one")]
        );
        assert!(!cut);
        let (lines, _) = lines_backwards(b"partial", u64::MAX);
        assert_eq!(lines, [text("partial")]);
        assert!(lines_backwards(b"", u64::MAX).0.is_empty());
        // Lines across many chunks.
        let long = "x".repeat(200_000);
        let content = format!("a\n{long}\nb\n");
        let (lines, _) = lines_backwards(content.as_bytes(), u64::MAX);
        assert_eq!(lines, [text(""), text("b"), text(&long), text("a")]);
    }

    #[test]
    fn stops_at_the_budget_and_skips_overlong_lines() {
        let content = "line\n".repeat(100_000);
        let (lines, cut) = lines_backwards(content.as_bytes(), 100_000);
        assert!(cut);
        assert!(lines.len() <= 20_001, "{}", lines.len());
        let huge = "y".repeat(MAX_LINE_BYTES + 10);
        let content = format!("first\n{huge}\nlast\n");
        let (lines, _) = lines_backwards(content.as_bytes(), u64::MAX);
        assert_eq!(
            lines,
            [text(""), text("last"), Line::TooLong, text("first")]
        );
    }

    fn event(seq: u64, secs: u64, fields: serde_json::Value) -> String {
        let mut event = json!({
            "seq": seq,
            "time": humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_secs(secs)).to_string(),
            "prev": "0",
        });
        event
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        format!("{event}\n")
    }

    #[test]
    fn filters_and_orders_newest_first() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let log = [
            event(
                1,
                1000,
                json!({"kind": "connection", "subject": "alice", "session": "s1"}),
            ),
            event(
                2,
                1001,
                json!({"kind": "statement", "subject": "alice", "session": "s1"}),
            ),
            event(
                3,
                1002,
                json!({"kind": "statement", "subject": "bob", "session": "s2"}),
            ),
            event(
                4,
                1003,
                json!({"kind": "control", "by": "olga", "details": {"session": "s2"}}),
            ),
            event(
                5,
                1004,
                json!({"kind": "approval", "request": "r1", "by": ["olga", "omar"]}),
            ),
            event(
                6,
                1005,
                json!({"kind": "statement", "subject": "bob", "approval": {"request": "r1"}}),
            ),
        ]
        .concat();
        file.write_all(log.as_bytes()).unwrap();
        let seqs = |filter: &Filter| -> (Vec<u64>, bool) {
            let found = search_file(file.path(), filter).unwrap();
            (
                found
                    .events
                    .iter()
                    .map(|e| e["seq"].as_u64().unwrap())
                    .collect(),
                found.exhausted,
            )
        };
        let all = Filter {
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(seqs(&all), (vec![6, 5, 4, 3, 2, 1], true));
        let statements = Filter {
            kinds: vec!["statement".into()],
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(seqs(&statements).0, [6, 3, 2]);
        let alice = Filter {
            subject: Some("alice".into()),
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(seqs(&alice).0, [2, 1]);
        let omar = Filter {
            subject: Some("omar".into()),
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(seqs(&omar).0, [5]);
        let s2 = Filter {
            session: Some("s2".into()),
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(seqs(&s2).0, [4, 3]);
        let r1 = Filter {
            request: Some("r1".into()),
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(seqs(&r1).0, [6, 5]);
        let window = Filter {
            since: Some(UNIX_EPOCH + Duration::from_secs(1001)),
            until: Some(UNIX_EPOCH + Duration::from_secs(1004)),
            limit: 100,
            ..Filter::default()
        };
        assert_eq!(seqs(&window), (vec![4, 3, 2], true));
        let two = Filter {
            limit: 2,
            ..Filter::default()
        };
        assert_eq!(seqs(&two), (vec![6, 5], false));
    }

    #[test]
    fn queries_are_checked() {
        use super::SearchQuery;
        let query = |kind: Option<&str>, since: Option<&str>, limit: Option<usize>| SearchQuery {
            kind: kind.map(str::to_owned),
            subject: None,
            request: None,
            session: None,
            since: since.map(str::to_owned),
            until: None,
            limit,
        };
        let filter =
            Filter::from_query(query(Some("statement, control"), Some("1700000000"), None))
                .map_err(|e| e.1)
                .unwrap();
        assert_eq!(filter.kinds, ["statement", "control"]);
        assert_eq!(
            filter.since,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(filter.limit, 100);
        let filter = Filter::from_query(query(None, Some("2023-11-14T22:13:20Z"), None))
            .map_err(|e| e.1)
            .unwrap();
        assert_eq!(
            filter.since,
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        for bad in [
            query(Some("State\"ment"), None, None),
            query(None, Some("yesterday"), None),
            query(None, None, Some(0)),
            query(None, None, Some(1001)),
        ] {
            assert!(Filter::from_query(bad).is_err());
        }
    }
}
