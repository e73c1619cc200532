//! Watching machines: for every `Service` identity, per target, the statement fingerprints it
//! runs and the networks it connects from. What is first seen within the observation window is
//! learned; what is first seen after it is an anomaly (an `anomaly` audit event, once), and where
//! `[[baselines.enforce]]` names the identity, a statement whose fingerprint was never learned is
//! refused. The baseline narrows what policy allows and never widens it: it is asked only after
//! the escape guard and policy have allowed a statement.
//!
//! A fingerprint groups texts that differ only in constants, which is what a learned allow list
//! wants (a service runs the same statements with other values) and why it must never be the
//! only check: `set_config('x', …)` and `set_config('role', …)` share one.
//!
//! Each process keeps the baselines its sessions use in memory, so a statement's check takes a
//! lock and a hash lookup, never the store. What is first seen is written to the store in the
//! background; a session start reads the store again and merges, so what another Postern sharing
//! the store learned or an operator accepted reaches this one at the identity's next connection.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use postern_config::BaselinesConfig;
use postern_identity::{Identity, IdentityKind};
use postern_sql::Analysis;
use postern_store::{Baseline, BaselineEntry, BaselineEntryKind, BaselineKey, Store, StoreError};
use serde_json::{Map, Value, json};

/// The baselines of the service identities this process has seen.
pub struct Baselines {
    config: BaselinesConfig,
    store: Store,
    watched: Mutex<HashMap<BaselineKey, Arc<Mutex<Watched>>>>,
}

/// One baseline as this process knows it.
#[derive(Debug)]
struct Watched {
    started_at: i64,
    /// Every fingerprint seen, and whether it is learned (`false`: an anomaly).
    fingerprints: HashMap<String, bool>,
    /// The same for networks.
    networks: HashMap<String, bool>,
}

/// What one sighting of a fingerprint or network was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sighting {
    /// In the baseline already.
    Known,
    /// New, within the observation window: now in the baseline.
    Learned,
    /// Not in the baseline: seen after the window. `first` the first time, when it is reported.
    Anomaly { first: bool },
}

impl Watched {
    fn from_stored(stored: Baseline) -> Self {
        let mut watched = Self {
            started_at: stored.started_at,
            fingerprints: HashMap::new(),
            networks: HashMap::new(),
        };
        watched.merge(stored);
        watched
    }

    /// Takes in what the store holds: a later start means the baseline was reset (by another
    /// Postern or an operator) and replaces what is known here; otherwise entries are added and
    /// accepted ones become learned. Nothing known here is dropped, since its write to the store
    /// may still be on its way.
    fn merge(&mut self, stored: Baseline) {
        if stored.started_at > self.started_at {
            self.reset(stored.started_at);
        }
        for entry in stored.entries {
            let learned = self.of(entry.kind).entry(entry.value).or_default();
            *learned |= entry.learned;
        }
    }

    /// Forgets every entry; observation starts again at `started_at`.
    fn reset(&mut self, started_at: i64) {
        self.started_at = started_at;
        self.fingerprints.clear();
        self.networks.clear();
    }

    fn of(&mut self, kind: BaselineEntryKind) -> &mut HashMap<String, bool> {
        match kind {
            BaselineEntryKind::Fingerprint => &mut self.fingerprints,
            BaselineEntryKind::Network => &mut self.networks,
        }
    }

    /// Sees `value` at `now` (unix seconds) with an observation window of `window` seconds.
    fn sight(&mut self, kind: BaselineEntryKind, value: &str, now: i64, window: i64) -> Sighting {
        let in_window = now < self.started_at.saturating_add(window);
        let entries = self.of(kind);
        if let Some(&learned) = entries.get(value) {
            return if learned {
                Sighting::Known
            } else {
                Sighting::Anomaly { first: false }
            };
        }
        entries.insert(value.to_owned(), in_window);
        if in_window {
            Sighting::Learned
        } else {
            Sighting::Anomaly { first: true }
        }
    }
}

impl Baselines {
    pub fn new(config: BaselinesConfig, store: Store) -> Self {
        Self {
            config,
            store,
            watched: Mutex::new(HashMap::new()),
        }
    }

    /// The baseline a new session of `identity` on `target` is watched with, and the anomaly
    /// event if it comes from a network its baseline does not hold. `None` for a person, or when
    /// learning is off. A store that cannot be read is an error: an enforced identity must not
    /// run unwatched, and the caller refuses the connection.
    pub async fn open_session(
        &self,
        identity: &Identity,
        target: &str,
        client: IpAddr,
        now: SystemTime,
        base_event: &Map<String, Value>,
    ) -> Result<(Option<SessionBaseline>, Option<Map<String, Value>>), StoreError> {
        if identity.kind != IdentityKind::Service || !self.config.learn {
            return Ok((None, None));
        }
        let key = BaselineKey {
            issuer: identity.issuer.clone(),
            subject: identity.subject.clone(),
            target: target.to_owned(),
        };
        let now = postern_store::unix_seconds(now);
        let stored = self.store.open_baseline(&key, now).await?;
        let watched = {
            let mut watched = self.watched.lock().unwrap_or_else(PoisonError::into_inner);
            match watched.get(&key) {
                Some(known) => {
                    known
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .merge(stored);
                    known.clone()
                }
                None => {
                    let fresh = Arc::new(Mutex::new(Watched::from_stored(stored)));
                    watched.insert(key.clone(), fresh.clone());
                    fresh
                }
            }
        };
        let enforcement = self
            .config
            .enforcement(&identity.issuer_name, &identity.subject, target);
        let window = enforcement
            .and_then(|rule| rule.observation_window)
            .unwrap_or(self.config.observation_window);
        let session = SessionBaseline {
            key,
            watched,
            window: i64::try_from(window.as_secs()).unwrap_or(i64::MAX),
            enforced: enforcement.is_some(),
            store: self.store.clone(),
        };
        let network = network_of(client, self.config.ipv4_prefix, self.config.ipv6_prefix);
        let sighting = session.sight(
            BaselineEntryKind::Network,
            &network,
            now,
            &client.to_string(),
        );
        let anomaly = (sighting == Sighting::Anomaly { first: true }).then(|| {
            let mut event = session.anomaly_event(base_event, "network");
            event.insert("network".into(), json!(network));
            event.insert("action".into(), json!("allowed"));
            event
        });
        Ok((Some(session), anomaly))
    }

    /// Accepts an anomaly into the baseline, in the store and here.
    pub async fn accept(
        &self,
        key: &BaselineKey,
        kind: BaselineEntryKind,
        value: &str,
        by: &str,
    ) -> Result<bool, StoreError> {
        let accepted = self
            .store
            .accept_baseline_entry(key, kind, value, by)
            .await?;
        if accepted && let Some(watched) = self.known(key) {
            watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .of(kind)
                .insert(value.to_owned(), true);
        }
        Ok(accepted)
    }

    /// Forgets a baseline and starts its observation window again at `now`, in the store and
    /// here.
    pub async fn reset(&self, key: &BaselineKey, now: SystemTime) -> Result<bool, StoreError> {
        let now = postern_store::unix_seconds(now);
        let reset = self.store.reset_baseline(key, now).await?;
        if let Some(watched) = self.known(key) {
            watched
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .reset(now);
        }
        Ok(reset)
    }

    /// The store the baselines are kept in, for reading them whole.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn known(&self, key: &BaselineKey) -> Option<Arc<Mutex<Watched>>> {
        self.watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .cloned()
    }
}

/// A session's view of its identity's baseline on its target.
pub struct SessionBaseline {
    key: BaselineKey,
    watched: Arc<Mutex<Watched>>,
    /// The observation window, in seconds.
    window: i64,
    /// Whether statements outside the baseline are refused once the window is over.
    enforced: bool,
    store: Store,
}

/// What the baseline says of one statement.
pub struct StatementCheck {
    /// The `anomaly` event to record, the first time the statement's fingerprint is seen after
    /// the window.
    pub anomaly: Option<Map<String, Value>>,
    /// Why the statement is refused, where the baseline is enforced and does not hold it.
    pub refusal: Option<String>,
}

impl SessionBaseline {
    /// Sees a statement that the guard and policy have allowed.
    pub fn statement(
        &self,
        analysis: &Analysis,
        now: SystemTime,
        base_event: &postern_audit::EventBase,
    ) -> StatementCheck {
        let Some(fingerprint) = fingerprint_of(analysis) else {
            // An empty query runs nothing.
            return StatementCheck {
                anomaly: None,
                refusal: None,
            };
        };
        let now = postern_store::unix_seconds(now);
        let sighting = self.sight(
            BaselineEntryKind::Fingerprint,
            &fingerprint,
            now,
            &analysis.redacted,
        );
        let refused = self.enforced && matches!(sighting, Sighting::Anomaly { .. });
        let anomaly = (sighting == Sighting::Anomaly { first: true }).then(|| {
            let mut event = self.anomaly_event(&base_event.fields(), "statement");
            event.insert("fingerprint".into(), json!(fingerprint));
            event.insert("sql".into(), json!(analysis.redacted));
            event.insert(
                "action".into(),
                json!(if refused { "refused" } else { "allowed" }),
            );
            event
        });
        let refusal = refused.then(|| {
            format!(
                "statement refused: {} is held to the statements it was seen running on target \
                 \"{}\" during its observation window, and this one (fingerprint {fingerprint}) is \
                 not among them; an operator may accept it into the baseline \
                 (postern baseline accept)",
                self.key.subject, self.key.target
            )
        });
        StatementCheck { anomaly, refusal }
    }

    /// Sees `value`, writing it to the store when it is new.
    fn sight(&self, kind: BaselineEntryKind, value: &str, now: i64, sample: &str) -> Sighting {
        let sighting = self
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sight(kind, value, now, self.window);
        let learned = match sighting {
            Sighting::Known | Sighting::Anomaly { first: false } => return sighting,
            Sighting::Learned => true,
            Sighting::Anomaly { first: true } => false,
        };
        let entry = BaselineEntry {
            kind,
            value: value.to_owned(),
            learned,
            first_seen: now,
            sample: sample.to_owned(),
            accepted_by: None,
        };
        let store = self.store.clone();
        let key = self.key.clone();
        // Off the statement's path: the decision above already stands in memory, and a write
        // that fails costs only its survival across a restart.
        tokio::spawn(async move {
            if let Err(error) = store.record_baseline_entry(&key, &entry).await {
                tracing::error!(error = %error, subject = %key.subject, "cannot record a baseline entry");
            }
        });
        sighting
    }

    fn anomaly_event(&self, base_event: &Map<String, Value>, what: &str) -> Map<String, Value> {
        let mut event = base_event.clone();
        event.insert("kind".into(), json!("anomaly"));
        event.insert("anomaly".into(), json!(what));
        event.insert("enforced".into(), json!(self.enforced));
        let started_at = self
            .watched
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .started_at;
        event.insert(
            "observed_until".into(),
            json!(started_at.saturating_add(self.window)),
        );
        event
    }
}

/// The statement's fingerprint: pg_query's, or for a text that does not parse (allowed only by a
/// `raw` grant) `sha256:` and the hash of the exact text. `None` for an empty query.
fn fingerprint_of(analysis: &Analysis) -> Option<Cow<'_, str>> {
    if let Some(fingerprint) = &analysis.fingerprint {
        return Some(Cow::Borrowed(fingerprint));
    }
    if analysis.parse_error.is_none() && analysis.statements.is_empty() {
        return None;
    }
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, analysis.text.as_bytes());
    Some(Cow::Owned(format!(
        "sha256:{}",
        hex::encode(digest.as_ref())
    )))
}

/// `address` masked to its network, as CIDR.
fn network_of(address: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> String {
    match address {
        IpAddr::V4(v4) => {
            let prefix = ipv4_prefix.min(32);
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            let network = std::net::Ipv4Addr::from(u32::from(v4) & mask);
            format!("{network}/{prefix}")
        }
        IpAddr::V6(v6) => {
            // An IPv4 client on a dual-stack socket is compared as IPv4.
            if let Some(v4) = v6.to_ipv4_mapped() {
                return network_of(IpAddr::V4(v4), ipv4_prefix, ipv6_prefix);
            }
            let prefix = ipv6_prefix.min(128);
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            let network = std::net::Ipv6Addr::from(u128::from(v6) & mask);
            format!("{network}/{prefix}")
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use postern_store::{Baseline, BaselineEntry, BaselineEntryKind, BaselineKey};

    use super::{Sighting, Watched, network_of};

    const FP: BaselineEntryKind = BaselineEntryKind::Fingerprint;

    fn watched(started_at: i64) -> Watched {
        Watched::from_stored(Baseline {
            key: BaselineKey {
                issuer: "i".into(),
                subject: "s".into(),
                target: "t".into(),
            },
            started_at,
            entries: Vec::new(),
        })
    }

    #[test]
    fn learned_in_the_window_known_after_and_new_after_is_an_anomaly_once() {
        let mut baseline = watched(1000);
        assert_eq!(baseline.sight(FP, "a", 1000, 60), Sighting::Learned);
        assert_eq!(baseline.sight(FP, "a", 1059, 60), Sighting::Known);
        assert_eq!(
            baseline.sight(FP, "b", 1060, 60),
            Sighting::Anomaly { first: true }
        );
        assert_eq!(
            baseline.sight(FP, "b", 1100, 60),
            Sighting::Anomaly { first: false }
        );
        assert_eq!(baseline.sight(FP, "a", 5000, 60), Sighting::Known);
        // The same value of another kind is another entry.
        assert_eq!(
            baseline.sight(BaselineEntryKind::Network, "a", 5000, 60),
            Sighting::Anomaly { first: true }
        );
    }

    #[test]
    fn the_store_adds_accepts_and_resets_but_never_forgets_what_is_known_here() {
        let mut baseline = watched(1000);
        baseline.sight(FP, "mine", 1000, 60);
        baseline.sight(FP, "late", 2000, 60);
        let stored = |started_at, entries: Vec<(&str, bool)>| Baseline {
            key: BaselineKey {
                issuer: "i".into(),
                subject: "s".into(),
                target: "t".into(),
            },
            started_at,
            entries: entries
                .into_iter()
                .map(|(value, learned)| BaselineEntry {
                    kind: FP,
                    value: value.into(),
                    learned,
                    first_seen: 0,
                    sample: String::new(),
                    accepted_by: None,
                })
                .collect(),
        };
        baseline.merge(stored(1000, vec![("other", true), ("late", true)]));
        assert_eq!(baseline.sight(FP, "mine", 3000, 60), Sighting::Known);
        assert_eq!(baseline.sight(FP, "other", 3000, 60), Sighting::Known);
        assert_eq!(
            baseline.sight(FP, "late", 3000, 60),
            Sighting::Known,
            "accepted"
        );
        baseline.merge(stored(4000, vec![]));
        assert_eq!(
            baseline.sight(FP, "mine", 4001, 60),
            Sighting::Learned,
            "a reset starts learning again"
        );
    }

    #[test]
    fn networks_are_masked_to_their_prefix() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(network_of(ip("10.1.2.3"), 32, 64), "10.1.2.3/32");
        assert_eq!(network_of(ip("10.1.2.3"), 24, 64), "10.1.2.0/24");
        assert_eq!(
            network_of(ip("2001:db8:1:2:3:4:5:6"), 32, 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(network_of(ip("::ffff:10.1.2.3"), 16, 64), "10.1.0.0/16");
    }
}
