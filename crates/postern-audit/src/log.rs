//! The audit log handle and its writer.
//!
//! One writer thread owns the file. [`AuditLog::record`] queues `(event, ack)` on a bounded
//! channel; the writer takes whatever is queued (up to [`MAX_BATCH_EVENTS`]), chains and encodes
//! each event, appends the batch with one write, flushes (and `fsync`s if configured), and only
//! then acknowledges every event of the batch. Concurrent sessions therefore share one write.
//!
//! The writer is a plain thread rather than a task: file writes block, and a thread keeps them off
//! the reactor without borrowing tokio's blocking pool for the life of the process. It ends when
//! every handle is gone and the queue is drained; [`AuditLog::close`] waits for that.
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
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::Event;
use crate::chain::{self, ChainHead};
use crate::error::AuditError;
use crate::now_rfc3339;

/// Default bound of the queue between sessions and the writer. When it is full, `record` waits:
/// backpressure on statements rather than unbounded memory.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Most events written in one batch, so one batch's buffer stays bounded.
pub const MAX_BATCH_EVENTS: usize = 1024;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    pub durability: Durability,
    /// Bound of the queue to the writer; at least 1.
    pub queue_capacity: usize,
}

impl Default for AuditOptions {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
        }
    }
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
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The path as given to `open`, for errors and [`AuditLog::path`].
    path: PathBuf,
    /// Queue to the writer thread; the thread ends when the last sender is dropped.
    queue: mpsc::Sender<Pending>,
    /// Closed by the writer thread after it has dropped the file (and so its lock).
    finished: oneshot::Receiver<()>,
}

/// One event waiting for the writer.
struct Pending {
    event: Event,
    ack: oneshot::Sender<Result<EventReceipt, AuditError>>,
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

    /// Opens (creating if absent) the log at `path` for appending and starts its writer.
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
        let (queue, receiver) = mpsc::channel(options.queue_capacity.max(1));
        let (finished_tx, finished) = oneshot::channel();
        std::thread::Builder::new()
            .name("postern-audit-writer".to_owned())
            .spawn(move || {
                writer.run(receiver);
                drop(finished_tx);
            })
            .map_err(|e| open_error(path, e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                queue,
                finished,
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
        let event = event.into();
        self.inner
            .queue
            .send(Pending { event, ack })
            .await
            .map_err(|_| self.writer_stopped())?;
        receipt.await.map_err(|_| self.writer_stopped())?
    }

    /// Queues one event without waiting for it to be written: for events that follow something
    /// already recorded (a statement's outcome, a session's end), where waiting would only add
    /// latency. Events are still written in the order they were queued; a write failure is
    /// reported to whoever records next.
    ///
    /// # Errors
    /// [`AuditError::WriterStopped`] if the writer is gone.
    pub async fn record_detached(&self, event: impl Into<Event>) -> Result<(), AuditError> {
        let (ack, _receipt) = oneshot::channel();
        let event = event.into();
        self.inner
            .queue
            .send(Pending { event, ack })
            .await
            .map_err(|_| self.writer_stopped())
    }

    /// The path the log was opened at.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Drops this handle and, if it was the last one, waits until the writer has written every
    /// queued event and closed the file, so the same path can be opened again at once. With other
    /// handles still alive, returns immediately and the writer keeps running.
    pub async fn close(self) {
        if let Ok(inner) = Arc::try_unwrap(self.inner) {
            let Inner {
                queue, finished, ..
            } = inner;
            drop(queue);
            // Err means the thread dropped its sender: the only signal there is.
            let _ = finished.await;
        }
    }

    fn writer_stopped(&self) -> AuditError {
        AuditError::WriterStopped {
            path: self.inner.path.clone(),
        }
    }
}

fn open_error(path: &Path, source: io::Error) -> AuditError {
    AuditError::Open {
        path: path.to_path_buf(),
        source: Arc::new(source),
    }
}

/// The writer thread's state: the file and the chain as it is on disk.
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

    /// Serves the queue until every handle is dropped and the queue is empty.
    fn run(mut self, mut queue: mpsc::Receiver<Pending>) {
        while let Some(first) = queue.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH_EVENTS {
                match queue.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
            self.write_batch(batch);
        }
    }

    fn write_batch(&mut self, batch: Vec<Pending>) {
        if let Err(error) = self.preflight() {
            tracing::error!(path = %self.path.display(), error = %error, label = error.label(), "audit batch refused");
            for pending in batch {
                let _ = pending.ack.send(Err(error.clone()));
            }
            return;
        }
        let mut buf = Vec::new();
        let mut staged = Vec::with_capacity(batch.len());
        let mut head = self.head.clone();
        for Pending { event, ack } in batch {
            let time = now_rfc3339();
            match chain::encode(&event, head.seq + 1, &time, &head.hash) {
                Ok(line) => {
                    head = ChainHead {
                        seq: head.seq + 1,
                        hash: chain::line_hash(&line),
                    };
                    buf.extend_from_slice(&line);
                    let receipt = EventReceipt {
                        seq: head.seq,
                        time,
                        hash: head.hash.clone(),
                    };
                    staged.push((ack, receipt));
                }
                Err(e) => {
                    let _ = ack.send(Err(AuditError::Encode(Arc::new(e))));
                }
            }
        }
        if staged.is_empty() {
            return;
        }
        match self.append(&buf) {
            Ok(()) => {
                self.head = head;
                self.len += buf.len() as u64;
                for (ack, receipt) in staged {
                    let _ = ack.send(Ok(receipt));
                }
            }
            Err(error) => {
                tracing::error!(path = %self.path.display(), error = %error, events = staged.len(), "audit write failed");
                for (ack, _) in staged {
                    let _ = ack.send(Err(error.clone()));
                }
            }
        }
    }

    /// Checks, before a batch, that the path still names the open file, that nobody else wrote to
    /// it, and that no partial write is left over.
    fn preflight(&mut self) -> Result<(), AuditError> {
        match std::fs::metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == self.identity => {}
            Ok(_) => return Err(self.file_gone()),
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.file_gone()),
            Err(e) => return Err(self.write_failed(e)),
        }
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
        if self.needs_repair {
            self.file
                .set_len(self.len)
                .map_err(|e| AuditError::Unrepaired {
                    path: self.path.clone(),
                    source: Arc::new(e),
                })?;
            self.needs_repair = false;
        }
        let found = self
            .file
            .metadata()
            .map_err(|e| self.write_failed(e))?
            .len();
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
