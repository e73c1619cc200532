//! The audit log handle and its writer.
//!
//! One [`Writer`] owns the file. [`AuditLog::record`] queues `(event, ack)`; whoever finds the
//! writer free becomes the *leader*: it takes everything queued (up to [`MAX_BATCH_EVENTS`] at a
//! time), chains and encodes each event, appends the batch with one write, flushes (and `fsync`s
//! if configured), acknowledges every event of the batch, and goes on while more is queued.
//! Sessions that record while a leader writes only queue their event and wait: concurrent
//! sessions therefore share one write (group commit), and in the common case no event crosses to
//! another thread, which on a loaded machine costs more than the write itself.
//!
//! Events that follow something already recorded (a statement's outcome, a session's end) are
//! *detached*: they are not waited for and do not start a write of their own. They go out with
//! the next recorded event, or, if none comes within [`DETACHED_DELAY`], in a write of their own.
//!
//! With [`Durability::Flush`] a write goes to the operating system's page cache, so the leader
//! writes on its own thread. With [`Durability::Fsync`] the leader waits for the disk inside
//! `block_in_place` on a multi-threaded runtime, so other sessions move to another worker.
//!
//! Failure rules, all fail closed:
//! - a failed write, flush or fsync fails every event of its batch, truncates the file back to
//!   the last complete event (`set_len`), and leaves the chain where it was on disk;
//! - if that truncation fails too, every later batch fails until it succeeds;
//! - before each batch the path is checked to still name the open file (device and inode), so a
//!   deleted or rotated log is never written to in secret.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, ErrorKind, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::Event;
use crate::chain::{self, ChainHead};
use crate::error::AuditError;
use crate::now_rfc3339;

/// Most events written in one batch, so one batch's buffer stays bounded.
pub const MAX_BATCH_EVENTS: usize = 1024;

/// Longest a detached event waits for a recorded one to share its write.
pub const DETACHED_DELAY: Duration = Duration::from_millis(2);

/// Longest last line read when continuing an existing file. A longer "line" is not an event this
/// writer produced.
pub const MAX_TAIL_LINE_BYTES: u64 = 64 * 1024 * 1024;

/// Unix permissions of a newly created log: it holds SQL text, so only its owner reads it.
const LOG_FILE_MODE: u32 = 0o600;

/// How far `record` waits before acknowledging an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Durability {
    /// Written and flushed to the operating system: survives a crash of Postern, not of the
    /// machine.
    #[default]
    Flush,
    /// Also `fsync`ed (`fdatasync`) before the acknowledgement: survives power loss, at the cost
    /// of one disk sync per batch.
    Fsync,
}

/// How an [`AuditLog`] is opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditOptions {
    pub durability: Durability,
}

/// Proof that one event is in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventReceipt {
    /// The event's `seq`.
    pub seq: u64,
    /// The event's `time`.
    pub time: String,
    /// Hex SHA-256 of the event's line: the next event's `prev`. Keeping the latest one outside
    /// the file detects a later cut at its end.
    pub hash: String,
}

/// A handle to an open audit log. Cheap to clone; every clone feeds the same writer.
///
/// The queue needs no bound: a session waits for its own recorded event before it goes on, so it
/// has at most that one and the detached events before it queued at any time.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The path as given to `open`, for errors and [`AuditLog::path`].
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// Events waiting for a leader, in the order they were queued.
    queue: Vec<Pending>,
    /// The file, while no leader holds it.
    writer: Option<Writer>,
    /// A write of detached events is scheduled for when [`DETACHED_DELAY`] has passed.
    flush_scheduled: bool,
    /// A leader panicked while holding the writer: nothing can be recorded any more.
    stopped: bool,
}

/// One event waiting for the writer.
#[derive(Debug)]
struct Pending {
    event: Event,
    /// `None` for a detached event: nobody waits for it.
    ack: Option<oneshot::Sender<Result<EventReceipt, AuditError>>>,
}

impl AuditLog {
    /// Opens (creating if absent) the log at `path` with default options. See
    /// [`AuditLog::open_with`].
    ///
    /// # Errors
    /// As [`AuditLog::open_with`].
    pub async fn open(path: &Path) -> Result<Self, AuditError> {
        Self::open_with(path, AuditOptions::default()).await
    }

    /// Opens (creating if absent) the log at `path` for appending.
    ///
    /// An existing file's last line is read to continue its chain (`seq` and `prev`); the rest is
    /// not re-verified (that is [`crate::verify`]'s job).
    ///
    /// # Errors
    /// [`AuditError::Open`] if the file cannot be opened or read, [`AuditError::Locked`] if another
    /// writer holds it, [`AuditError::CorruptTail`] if its last line is not a complete, valid
    /// event: such a file is never silently continued with a new chain.
    pub async fn open_with(path: &Path, options: AuditOptions) -> Result<Self, AuditError> {
        let owned = path.to_path_buf();
        let durability = options.durability;
        let writer = tokio::task::spawn_blocking(move || Writer::open(owned, durability))
            .await
            .map_err(|e| open_error(path, io::Error::other(e)))??;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                state: Mutex::new(State {
                    queue: Vec::new(),
                    writer: Some(writer),
                    flush_scheduled: false,
                    stopped: false,
                }),
            }),
        })
    }

    /// Records one event and returns once it is written and flushed (and synced, with
    /// [`Durability::Fsync`]). Adds `seq`, `time` and `prev`, replacing any the caller passed, and
    /// redacts values under secret-looking keys.
    ///
    /// Not cancel safe: if this future is dropped after the event was queued, the event is still
    /// written, but its receipt is lost.
    ///
    /// # Errors
    /// Any [`AuditError`]; the statement must then be refused.
    pub async fn record(&self, event: impl Into<Event>) -> Result<EventReceipt, AuditError> {
        let (ack, receipt) = oneshot::channel();
        let pending = Pending {
            event: event.into(),
            ack: Some(ack),
        };
        self.submit(pending)?;
        receipt.await.map_err(|_| self.writer_stopped())?
    }

    /// Queues a recorded event and writes it, with everything queued before it, unless another
    /// session is writing already and so will.
    fn submit(&self, pending: Pending) -> Result<(), AuditError> {
        let mut state = self.inner.lock();
        if state.stopped {
            return Err(self.writer_stopped());
        }
        state.queue.push(pending);
        self.inner.lead(state);
        Ok(())
    }

    /// Queues one event without waiting for it to be written: for events that follow something
    /// already recorded (a statement's outcome, a session's end), where waiting would only add
    /// latency. Events are still written in the order they were queued, this one with the next
    /// recorded event or within [`DETACHED_DELAY`]; a write failure is reported to whoever records
    /// next. Outside a tokio runtime the event is written at once.
    ///
    /// # Errors
    /// [`AuditError::WriterStopped`] if the writer is gone.
    pub fn record_detached(&self, event: impl Into<Event>) -> Result<(), AuditError> {
        let pending = Pending {
            event: event.into(),
            ack: None,
        };
        let mut state = self.inner.lock();
        if state.stopped {
            return Err(self.writer_stopped());
        }
        state.queue.push(pending);
        if state.flush_scheduled || state.writer.is_none() {
            // A scheduled write or the current leader takes it.
            return Ok(());
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            state.flush_scheduled = true;
            drop(state);
            let inner = Arc::downgrade(&self.inner);
            runtime.spawn(async move {
                tokio::time::sleep(DETACHED_DELAY).await;
                write_deferred(&inner);
            });
        } else {
            self.inner.lead(state);
        }
        Ok(())
    }

    /// The path the log was opened at.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Drops this handle and, if it was the last one, writes every queued event and closes the
    /// file, so the same path can be opened again at once. With other handles still alive,
    /// returns immediately and the log stays open.
    #[expect(
        clippy::unused_async,
        reason = "closing may wait for the disk; callers should not depend on it being instant"
    )]
    pub async fn close(self) {
        // The last handle's drop writes what is queued and drops the file (see `Drop for Inner`);
        // a scheduled write of detached events holds only a weak reference.
        drop(self);
    }

    fn writer_stopped(&self) -> AuditError {
        AuditError::WriterStopped {
            path: self.inner.path.clone(),
        }
    }
}

/// A scheduled write of detached events, if the log is still open and nobody wrote them already.
fn write_deferred(inner: &Weak<Inner>) {
    let Some(inner) = inner.upgrade() else {
        return;
    };
    let mut state = inner.lock();
    state.flush_scheduled = false;
    inner.lead(state);
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while the lock is held (pushes and takes), so a poisoned lock still
        // guards consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes everything queued if no other leader is writing; otherwise that leader takes it.
    fn lead<'a>(&'a self, mut state: MutexGuard<'a, State>) {
        let Some(writer) = state.writer.take() else {
            return;
        };
        let mut leader = Leader {
            inner: self,
            writer: Some(writer),
        };
        loop {
            let batch = if state.queue.len() > MAX_BATCH_EVENTS {
                state.queue.drain(..MAX_BATCH_EVENTS).collect()
            } else {
                std::mem::take(&mut state.queue)
            };
            drop(state);
            if !batch.is_empty() {
                leader.write(batch);
            }
            state = self.lock();
            if state.queue.is_empty() {
                state.writer = leader.writer.take();
                return;
            }
        }
    }
}

impl Drop for Inner {
    /// The last handle is gone: write what is still queued (detached events), then drop the
    /// file and with it the lock.
    fn drop(&mut self) {
        let state = self.lock();
        if !state.stopped {
            self.lead(state);
        }
    }
}

/// The writer while one session writes for all.
struct Leader<'a> {
    inner: &'a Inner,
    /// Always `Some` until handed back; `None` after a panic in `write` only.
    writer: Option<Writer>,
}

impl Leader<'_> {
    fn write(&mut self, batch: Vec<Pending>) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let multi_threaded = tokio::runtime::Handle::try_current().is_ok_and(|runtime| {
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread
        });
        if writer.durability == Durability::Fsync && multi_threaded {
            tokio::task::block_in_place(|| writer.write_batch(batch));
        } else {
            writer.write_batch(batch);
        }
    }
}

impl Drop for Leader<'_> {
    /// Reached with the writer still held only when `write` panicked: the chain's state is
    /// unknown, so nothing more is recorded, and whoever waits is told.
    fn drop(&mut self) {
        if self.writer.is_some() {
            let mut state = self.inner.lock();
            state.stopped = true;
            // Dropping the acks tells every waiter that the writer stopped.
            state.queue.clear();
        }
    }
}

fn open_error(path: &Path, source: io::Error) -> AuditError {
    AuditError::Open {
        path: path.to_path_buf(),
        source: Arc::new(source),
    }
}

/// The writer's state: the file and the chain as it is on disk.
#[derive(Debug)]
struct Writer {
    path: PathBuf,
    file: File,
    /// `(device, inode)` of the open file, compared with the path before each batch.
    identity: (u64, u64),
    /// Regular files can be measured and truncated; devices and pipes cannot.
    regular: bool,
    durability: Durability,
    /// The last complete event on disk.
    head: ChainHead,
    /// Bytes of complete events on disk (regular files only): where a failed write is cut back to.
    len: u64,
    /// A failed write left bytes after `len` that could not yet be truncated.
    needs_repair: bool,
}

/// How long `open` waits for another writer to let go of the file. A lock is held by whoever has
/// the file open, including, for an instant, a child process forked by the previous holder before
/// it runs `exec`; a restarting Postern may also still be closing it.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Tries to take the exclusive lock until `wait` has passed.
fn lock_within(file: &std::fs::File, wait: std::time::Duration) -> Result<(), TryLockError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl Writer {
    fn open(path: PathBuf, durability: Durability) -> Result<Self, AuditError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(LOG_FILE_MODE)
            .open(&path)
            .map_err(|e| open_error(&path, e))?;
        let metadata = file.metadata().map_err(|e| open_error(&path, e))?;
        let regular = metadata.file_type().is_file();
        if regular {
            match lock_within(&file, LOCK_WAIT) {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Err(AuditError::Locked { path }),
                Err(TryLockError::Error(e)) => tracing::warn!(
                    path = %path.display(),
                    error = %e,
                    "cannot lock the audit log; make sure no other process writes to it"
                ),
            }
        }
        let len = if regular { metadata.len() } else { 0 };
        let head = if len == 0 {
            ChainHead::genesis()
        } else {
            let last = read_last_line(&file, len).map_err(|e| open_error(&path, e))?;
            let corrupt = |problem| AuditError::CorruptTail {
                path: path.clone(),
                problem,
            };
            let Some(content) = last.strip_suffix(b"\n") else {
                return Err(corrupt(crate::Problem::Incomplete));
            };
            let fields = chain::parse(content).map_err(|(_, problem)| corrupt(problem))?;
            ChainHead {
                seq: fields.seq,
                hash: chain::line_hash(&last),
            }
        };
        Ok(Self {
            identity: (metadata.dev(), metadata.ino()),
            path,
            file,
            regular,
            durability,
            head,
            len,
            needs_repair: false,
        })
    }

    fn write_batch(&mut self, batch: Vec<Pending>) {
        if let Err(error) = self.preflight() {
            tracing::error!(path = %self.path.display(), error = %error, label = error.label(), "audit batch refused");
            for ack in batch.into_iter().filter_map(|pending| pending.ack) {
                let _ = ack.send(Err(error.clone()));
            }
            return;
        }
        let mut buf = Vec::new();
        let mut events = 0_usize;
        let mut waiting = Vec::with_capacity(batch.len());
        let mut head = self.head.clone();
        for Pending { event, ack } in batch {
            let time = now_rfc3339();
            let start = buf.len();
            if let Err(e) = chain::encode_into(&mut buf, &event, head.seq + 1, &time, &head.hash) {
                buf.truncate(start);
                let error = AuditError::Encode(Arc::new(e));
                tracing::error!(path = %self.path.display(), error = %error, "audit event not encodable");
                if let Some(ack) = ack {
                    let _ = ack.send(Err(error));
                }
                continue;
            }
            head = ChainHead {
                seq: head.seq + 1,
                hash: chain::line_hash(&buf[start..]),
            };
            events += 1;
            if let Some(ack) = ack {
                let receipt = EventReceipt {
                    seq: head.seq,
                    time,
                    hash: head.hash.clone(),
                };
                waiting.push((ack, receipt));
            }
        }
        if events == 0 {
            return;
        }
        match self.append(&buf) {
            Ok(()) => {
                self.head = head;
                self.len += buf.len() as u64;
                for (ack, receipt) in waiting {
                    let _ = ack.send(Ok(receipt));
                }
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), error = %error, events, "audit write failed");
                for (ack, _) in waiting {
                    let _ = ack.send(Err(error.clone()));
                }
            }
        }
    }

    /// Checks, before a batch, that the path still names the open file, that nobody else wrote to
    /// it, and that no partial write is left over.
    fn preflight(&mut self) -> Result<(), AuditError> {
        // One `stat` of the path answers both questions: whether it still names the open file,
        // and (being that file) how long the file is.
        let on_disk = match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => m,
            Ok(_) => return Err(self.file_gone()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.file_gone()),
            Err(e) => return Err(self.write_failed(e)),
        };
        if !self.regular {
            return if self.needs_repair {
                Err(AuditError::Unrepaired {
                    path: self.path.clone(),
                    source: Arc::new(io::Error::other("not a regular file")),
                })
            } else {
                Ok(())
            };
        }
        let mut found = on_disk.len();
        if self.needs_repair {
            self.file
                .set_len(self.len)
                .map_err(|e| AuditError::Unrepaired {
                    path: self.path.clone(),
                    source: Arc::new(e),
                })?;
            self.needs_repair = false;
            found = self
                .file
                .metadata()
                .map_err(|e| self.write_failed(e))?
                .len();
        }
        if found != self.len {
            return Err(AuditError::Modified {
                path: self.path.clone(),
                expected: self.len,
                found,
            });
        }
        Ok(())
    }

    /// Appends `buf` in full and makes it as durable as configured, or cuts the file back to the
    /// last complete event.
    fn append(&mut self, buf: &[u8]) -> Result<(), AuditError> {
        let mut written = 0;
        let result = write_fully(&mut self.file, buf, &mut written).and_then(|()| {
            self.file.flush()?;
            if self.durability == Durability::Fsync {
                self.file.sync_data()?;
            }
            Ok(())
        });
        let Err(e) = result else {
            return Ok(());
        };
        if self.regular {
            // Cut back even when `written` is 0: a failed write may still have extended the file.
            if let Err(truncate) = self.file.set_len(self.len) {
                tracing::error!(path = %self.path.display(), error = %truncate, "cannot remove a partly written audit event");
                self.needs_repair = true;
            }
        } else if written > 0 {
            self.needs_repair = true;
        }
        Err(self.write_failed(e))
    }

    fn file_gone(&self) -> AuditError {
        AuditError::FileGone {
            path: self.path.clone(),
        }
    }

    fn write_failed(&self, source: io::Error) -> AuditError {
        AuditError::WriteFailed {
            path: self.path.clone(),
            source: Arc::new(source),
        }
    }
}

/// `write_all`, but counting what reached the file so a failure knows whether bytes were left.
fn write_fully(file: &mut File, buf: &[u8], written: &mut usize) -> io::Result<()> {
    while *written < buf.len() {
        match file.write(&buf[*written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => *written += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the last line of a file of `len` bytes, with its trailing newline if it has one.
fn read_last_line(file: &File, len: u64) -> io::Result<Vec<u8>> {
    const CHUNK: u64 = 64 * 1024;
    let mut tail: Vec<u8> = Vec::new();
    let mut end = len;
    loop {
        let start = end.saturating_sub(CHUNK);
        let mut chunk = vec![0; usize::try_from(end - start).map_err(io::Error::other)?];
        file.read_exact_at(&mut chunk, start)?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        // The newline that ends the line before the last one; the file's final byte is skipped
        // because it is the last line's own newline.
        let search = &tail[..tail.len() - 1];
        if let Some(pos) = search.iter().rposition(|&b| b == b'\n') {
            return Ok(tail.split_off(pos + 1));
        }
        if start == 0 {
            return Ok(tail);
        }
        if len - start > MAX_TAIL_LINE_BYTES {
            return Err(io::Error::new(
                ErrorKind::InvalidData,
                format!("its last line is longer than {MAX_TAIL_LINE_BYTES} bytes"),
            ));
        }
        end = start;
    }
}
