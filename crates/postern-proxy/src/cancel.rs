//! Cancel keys. Every client session gets its own random process id and secret from Postern;
//! the registry maps them to the upstream backend's real key. A CancelRequest reaches the
//! database only when both halves match a live session, so a client can cancel only its own
//! queries and a guessed key reaches nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use postern_wire::backend::BackendKeyData;

use crate::target::fill_random;
use crate::upstream::Endpoint;

/// The server backend a session's statements run on. A session holding one server connection
/// has one for its whole life; with transaction pooling it changes with every transaction, and
/// between transactions there is none (nothing runs, so there is nothing to cancel).
#[derive(Clone, Default)]
pub struct BackendSlot(Arc<Mutex<Option<BackendKeyData>>>);

impl BackendSlot {
    /// A slot that always names `key`.
    pub fn fixed(key: BackendKeyData) -> Self {
        Self(Arc::new(Mutex::new(Some(key))))
    }

    pub fn set(&self, key: Option<BackendKeyData>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = key;
    }

    pub fn get(&self) -> Option<BackendKeyData> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where a cancel for one client session goes.
#[derive(Clone)]
struct Entry {
    secret_key: i32,
    endpoint: Arc<Endpoint>,
    upstream: BackendSlot,
    /// The session's own signal: a statement Postern holds for approval has not reached the
    /// server, so only Postern can cancel it.
    signal: Arc<CancelSignal>,
}

/// Raised by each CancelRequest for a session. A waiter compares the count before and after, so
/// a cancel that arrived before it started waiting does not cancel what it waits for.
#[derive(Default)]
pub struct CancelSignal {
    raised: std::sync::atomic::AtomicU64,
    notify: tokio::sync::Notify,
}

impl CancelSignal {
    /// How many cancels have arrived so far.
    pub fn count(&self) -> u64 {
        self.raised.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn raise(&self) {
        self.raised
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Resolves once a cancel arrives after `seen` (a value of [`Self::count`]).
    pub async fn raised_after(&self, seen: u64) {
        loop {
            let notified = self.notify.notified();
            if self.count() > seen {
                return;
            }
            notified.await;
        }
    }
}

/// The live sessions' cancel keys.
#[derive(Default)]
pub struct CancelRegistry {
    entries: Mutex<HashMap<i32, Entry>>,
}

impl CancelRegistry {
    /// Allocates a fresh key for a session whose upstream backend is in `upstream`, at
    /// `endpoint`. The returned guard removes it when the session ends.
    pub fn register(self: &Arc<Self>, endpoint: Arc<Endpoint>, upstream: BackendSlot) -> CancelKey {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let mut bytes = [0u8; 8];
            fill_random(&mut bytes);
            let process_id = i32::from_be_bytes([bytes[0] & 0x7f, bytes[1], bytes[2], bytes[3]]);
            let secret_key = i32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
            if process_id == 0 || entries.contains_key(&process_id) {
                continue;
            }
            entries.insert(
                process_id,
                Entry {
                    secret_key,
                    endpoint: endpoint.clone(),
                    upstream: upstream.clone(),
                    signal: Arc::new(CancelSignal::default()),
                },
            );
            return CancelKey {
                key: BackendKeyData {
                    process_id,
                    secret_key,
                },
                registry: Arc::clone(self),
            };
        }
    }

    /// The signal a session's CancelRequests raise.
    pub fn signal(&self, key: &CancelKey) -> Arc<CancelSignal> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(&key.key.process_id)
            .map_or_else(Arc::default, |entry| Arc::clone(&entry.signal))
    }

    /// Where to send a cancel for `key`, if it names a live session exactly and a statement of
    /// it may be running on a server; raises the session's signal.
    pub fn resolve(&self, key: BackendKeyData) -> Option<(Arc<Endpoint>, BackendKeyData)> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = entries.get(&key.process_id)?;
        let matches = aws_lc_rs::constant_time::verify_slices_are_equal(
            &entry.secret_key.to_be_bytes(),
            &key.secret_key.to_be_bytes(),
        )
        .is_ok();
        if matches {
            entry.signal.raise();
        }
        if !matches {
            return None;
        }
        entry
            .upstream
            .get()
            .map(|upstream| (entry.endpoint.clone(), upstream))
    }
}

/// A session's cancel key; dropping it unregisters the key.
pub struct CancelKey {
    pub key: BackendKeyData,
    registry: Arc<CancelRegistry>,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry
            .entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key.process_id);
    }
}
