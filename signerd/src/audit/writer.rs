//! The [`AuditWriter`]: appends records durably, many per fsync.
//!
//! One thread owns the file. Requests queue up while it is busy; each round it takes everything
//! queued (up to a cap), seals the records into the chain, writes them with one `write` and
//! makes them durable with one `fdatasync`, and only then answers every waiting request. A
//! caller therefore learns its record is on disk before it may let a signature go, and under load
//! many requests share one fsync (group commit).
//!
//! The queue is bounded ([`QUEUE_CAPACITY`]): when the disk cannot keep up, an append is refused
//! at once with [`Error::ResourceExhausted`] (`RESOURCE_EXHAUSTED` to the caller) instead of
//! queueing without limit or blocking an async worker thread.
//!
//! If a write or fsync fails, the writer turns *failed* and stays so until restart: after a
//! failed fsync the file's state is unknown, and a signer that cannot prove what it signed must
//! stop signing. Every later append answers an error; health reports NOT_SERVING.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use super::chain;
use super::reader::{FILE_PREFIX, FILE_SUFFIX};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Records sealed and synced in one round at most.
const MAX_BATCH: usize = 4096;

/// Records waiting for the writer at most: four full rounds. Beyond this the disk is not keeping
/// up, and waiting longer would only grow memory and every caller's latency.
pub const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

/// Where a record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// Its seq.
    pub seq: u64,
    /// Its hash.
    pub hash: [u8; 32],
}

struct Append {
    members: String,
    reply: tokio::sync::oneshot::Sender<std::result::Result<Appended, String>>,
}

/// What the writer thread is asked to do.
enum Request {
    /// Append a record.
    Append(Append),
    /// Write everything queued before this, report the head, then append nothing else until
    /// the holder hands over one record (or lets go): a checkpoint must be the record right
    /// after the head it covers.
    Hold(Hold),
}

struct Hold {
    granted: tokio::sync::oneshot::Sender<Appended>,
    then: std::sync::mpsc::Receiver<Append>,
}

/// How long the writer waits for a holder to hand over its record before it lets go on its
/// own (a backend that hangs must not stop the log for longer).
const HOLD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// State shared between the writer thread and its handles.
struct Shared {
    /// The last durable record.
    head: Mutex<Appended>,
    failed: AtomicBool,
    /// Records made durable since the last checkpoint was requested.
    since_checkpoint: AtomicU64,
    checkpoint_every: u64,
    /// Woken when `checkpoint_every` records have accumulated.
    checkpoint_due: tokio::sync::Notify,
}

/// Appends sealed records to the log directory.
pub struct AuditWriter {
    requests: RwLock<Option<crossbeam_channel::Sender<Request>>>,
    shared: Arc<Shared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Where to write and when to rotate.
#[derive(Clone, Debug)]
pub struct WriterSettings {
    /// The log directory.
    pub dir: PathBuf,
    /// Start a new file once the current one reaches this size.
    pub rotate_bytes: u64,
    /// Ask for a checkpoint after this many records.
    pub checkpoint_every: u64,
}

impl AuditWriter {
    /// Starts the writer after the durable head `(seq, hash)` found by reading the log.
    pub fn start(settings: WriterSettings, head: Appended, metrics: Arc<Metrics>) -> Result<Self> {
        Self::start_with_capacity(settings, head, metrics, QUEUE_CAPACITY)
    }

    /// [`AuditWriter::start`] with a queue of `capacity` records.
    fn start_with_capacity(
        settings: WriterSettings,
        head: Appended,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> Result<Self> {
        let mut file = LogFile::open_last(&settings.dir)?;
        file.sync_dir()?;
        let shared = Arc::new(Shared {
            head: Mutex::new(head),
            failed: AtomicBool::new(false),
            since_checkpoint: AtomicU64::new(0),
            checkpoint_every: settings.checkpoint_every.max(1),
            checkpoint_due: tokio::sync::Notify::new(),
        });
        let (requests, queue) = crossbeam_channel::bounded::<Request>(capacity.max(1));
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || {
                let mut head = head;
                let mut next = None;
                loop {
                    let first = match next.take() {
                        Some(request) => request,
                        None => match queue.recv() {
                            Ok(request) => request,
                            Err(_) => break,
                        },
                    };
                    let first = match first {
                        Request::Append(append) => append,
                        Request::Hold(hold) => {
                            if hold.granted.send(head).is_err() {
                                continue;
                            }
                            match hold.then.recv_timeout(HOLD_TIMEOUT) {
                                Ok(append) => append,
                                Err(_) => continue,
                            }
                        }
                    };
                    let mut batch = vec![first];
                    while batch.len() < MAX_BATCH {
                        match queue.try_recv() {
                            Ok(Request::Append(more)) => batch.push(more),
                            Ok(hold) => {
                                next = Some(hold);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    write_batch(
                        &mut file,
                        &settings,
                        &thread_shared,
                        &metrics,
                        &mut head,
                        batch,
                    );
                }
            })
            .map_err(|e| Error::io("starting the audit writer", e))?;
        Ok(AuditWriter {
            requests: RwLock::new(Some(requests)),
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Appends one record (its JSON members) and waits until it is durable. Refused at once with
    /// [`Error::ResourceExhausted`] when the queue is full.
    pub async fn append(&self, members: String) -> Result<Appended> {
        let result = self.enqueue(members)?;
        outcome(result).await
    }

    /// Queues one record without waiting for it to be durable, for paths that cannot wait (a
    /// value being dropped at shutdown). It lands if queued before [`AuditWriter::close`], which
    /// drains the queue.
    pub fn append_detached(&self, members: String) -> Result<()> {
        self.enqueue(members).map(drop)
    }

    /// Queues one record without waiting; never blocks (the caller is an async task).
    fn enqueue(
        &self,
        members: String,
    ) -> Result<tokio::sync::oneshot::Receiver<std::result::Result<Appended, String>>> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.send(Request::Append(Append { members, reply }))?;
        Ok(result)
    }

    /// Waits until everything queued so far is durable and holds the writer there: the next
    /// record written is the one handed to [`HeldWriter::append`], right after
    /// [`HeldWriter::head`]. Requests queue up meanwhile; dropping the hold lets them through.
    pub async fn hold(&self) -> Result<HeldWriter> {
        if !self.healthy() {
            return Err(Error::Unavailable(
                "audit log cannot be written: an earlier write failed".into(),
            ));
        }
        let (granted, head) = tokio::sync::oneshot::channel();
        let (handover, then) = std::sync::mpsc::channel();
        self.send(Request::Hold(Hold { granted, then }))?;
        let head = head
            .await
            .map_err(|_| Error::Unavailable("audit log closed".into()))?;
        Ok(HeldWriter { head, handover })
    }

    fn send(&self, request: Request) -> Result<()> {
        let requests = self.requests.read().unwrap_or_else(|p| p.into_inner());
        let sender = requests
            .as_ref()
            .ok_or_else(|| Error::Unavailable("audit log closed".into()))?;
        // Never blocks: the callers are async tasks, and a full queue means the disk is behind.
        match sender.try_send(request) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::TrySendError::Full(_)) => Err(Error::ResourceExhausted(
                "audit log queue is full; retry later".into(),
            )),
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {
                Err(Error::Unavailable("audit log closed".into()))
            }
        }
    }

    /// The last durable record.
    pub fn head(&self) -> Appended {
        *self.shared.head.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// False once a write or fsync has failed.
    pub fn healthy(&self) -> bool {
        !self.shared.failed.load(Ordering::SeqCst)
    }

    /// Marks the log failed from outside (its history failed verification): every later append
    /// answers an error, as after a failed write.
    pub fn fail(&self) {
        self.shared.failed.store(true, Ordering::SeqCst);
    }

    /// Waits until enough records have accumulated to call for a checkpoint.
    pub async fn checkpoint_due(&self) {
        self.shared.checkpoint_due.notified().await;
    }

    /// Stops accepting records, lets the writer finish what is queued, and waits for it.
    pub fn close(&self) {
        self.requests
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
    }
}

/// The writer, stopped right after [`HeldWriter::head`] until a record is handed over.
pub struct HeldWriter {
    head: Appended,
    handover: std::sync::mpsc::Sender<Append>,
}

impl HeldWriter {
    /// The last durable record: the next one written gets `head().seq + 1`.
    pub fn head(&self) -> Appended {
        self.head
    }

    /// Appends `members` as the record right after [`Self::head`] and waits until it is
    /// durable; then the writer goes on with what queued up meanwhile.
    pub async fn append(self, members: String) -> Result<Appended> {
        let (reply, result) = tokio::sync::oneshot::channel();
        self.handover
            .send(Append { members, reply })
            .map_err(|_| Error::Unavailable("audit log hold timed out or closed".into()))?;
        outcome(result).await
    }
}

async fn outcome(
    result: tokio::sync::oneshot::Receiver<std::result::Result<Appended, String>>,
) -> Result<Appended> {
    match result.await {
        Ok(Ok(appended)) => Ok(appended),
        Ok(Err(why)) => Err(Error::Unavailable(format!(
            "audit log cannot be written: {why}"
        ))),
        Err(_) => Err(Error::Unavailable("audit log closed".into())),
    }
}

fn write_batch(
    file: &mut LogFile,
    settings: &WriterSettings,
    shared: &Shared,
    metrics: &Metrics,
    head: &mut Appended,
    batch: Vec<Append>,
) {
    if shared.failed.load(Ordering::SeqCst) {
        for request in batch {
            let _ = request.reply.send(Err("an earlier write failed".into()));
        }
        return;
    }
    let mut buffer = String::with_capacity(batch.len() * 600);
    let mut results = Vec::with_capacity(batch.len());
    let mut next = *head;
    for request in &batch {
        let seq = next.seq + 1;
        let (line, hash) = chain::seal(seq, &next.hash, &request.members);
        buffer.push_str(&line);
        next = Appended { seq, hash };
        results.push(next);
    }
    let started = Instant::now();
    let written = file
        .rotate_if_full(settings)
        .and_then(|()| file.append(buffer.as_bytes()));
    match written {
        Ok(()) => {
            metrics
                .audit_fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            metrics.audit_batch_records.observe(batch.len() as f64);
            metrics.audit_records.inc_by(batch.len() as u64);
            *head = next;
            *shared.head.lock().unwrap_or_else(|p| p.into_inner()) = next;
            let since = shared
                .since_checkpoint
                .fetch_add(batch.len() as u64, Ordering::SeqCst)
                + batch.len() as u64;
            if since >= shared.checkpoint_every {
                shared.since_checkpoint.store(0, Ordering::SeqCst);
                shared.checkpoint_due.notify_one();
            }
            for (request, appended) in batch.into_iter().zip(results) {
                let _ = request.reply.send(Ok(appended));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "audit log write failed: refusing to sign until restarted");
            shared.failed.store(true, Ordering::SeqCst);
            for request in batch {
                let _ = request.reply.send(Err(e.to_string()));
            }
        }
    }
}

/// The file currently appended to.
struct LogFile {
    dir: PathBuf,
    index: u64,
    file: File,
    len: u64,
}

impl LogFile {
    /// Opens the newest `audit-N.jsonl` for appending, or creates `audit-00000001.jsonl`.
    fn open_last(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("audit.dir {}", dir.display()), e))?;
        let last = super::reader::log_files(dir)
            .map_err(|e| Error::io(format!("audit.dir {}", dir.display()), e))?
            .last()
            .and_then(|p| file_index(p));
        match last {
            Some(index) => Self::open(dir, index, false),
            None => Self::open(dir, 1, true),
        }
    }

    /// Opens file `index` for appending; `new`: it must not exist yet. A new file is created
    /// with `O_EXCL`, which also refuses a symlink planted under its name.
    fn open(dir: &Path, index: u64, new: bool) -> Result<Self> {
        let path = dir.join(file_name(index));
        if !new {
            super::reader::regular_file(&path)
                .map_err(|e| Error::io(format!("audit log {}", path.display()), e))?;
        }
        let file = OpenOptions::new()
            .create_new(new)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(format!("opening audit log {}", path.display()), e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io(format!("audit log {}", path.display()), e))?
            .len();
        Ok(LogFile {
            dir: dir.to_path_buf(),
            index,
            file,
            len,
        })
    }

    fn rotate_if_full(&mut self, settings: &WriterSettings) -> std::io::Result<()> {
        if self.len < settings.rotate_bytes || self.len == 0 {
            return Ok(());
        }
        let next = Self::open(&self.dir, self.index + 1, true).map_err(std::io::Error::other)?;
        *self = next;
        self.sync_dir().map_err(std::io::Error::other)
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all(bytes)?;
        self.file.sync_data()?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Makes the file's directory entry durable (a new file must survive a crash too).
    fn sync_dir(&mut self) -> Result<()> {
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::io(format!("syncing audit.dir {}", self.dir.display()), e))
    }
}

/// `audit-00000042.jsonl` for 42.
pub fn file_name(index: u64) -> String {
    format!("{FILE_PREFIX}{index:08}{FILE_SUFFIX}")
}

fn file_index(path: &Path) -> Option<u64> {
    path.file_name()?
        .to_str()?
        .strip_prefix(FILE_PREFIX)?
        .strip_suffix(FILE_SUFFIX)?
        .parse()
        .ok()
}
#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path, capacity: usize) -> AuditWriter {
        let settings = WriterSettings {
            dir: dir.to_path_buf(),
            rotate_bytes: 1 << 20,
            checkpoint_every: 1_000,
        };
        let head = Appended {
            seq: 0,
            hash: [0; 32],
        };
        AuditWriter::start_with_capacity(settings, head, Metrics::new(), capacity)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_queued_records_still_land() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let capacity = 2;
        let writer = writer(dir.path(), capacity);
        // Hold the head lock: the writer thread writes its round, then waits for the lock before
        // it answers anyone or takes more from the queue.
        let stalled = writer.shared.head.lock().unwrap_or_else(|p| p.into_inner());
        let first = writer
            .enqueue("\"kind\":\"test\",\"n\":0".into())
            .unwrap_or_else(|e| panic!("{e}"));
        // Once its line is in the file, the thread holds that one record and the queue is empty.
        let file = dir.path().join(file_name(1));
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::metadata(&file).map_or(0, |m| m.len()) == 0 {
            assert!(Instant::now() < deadline, "the writer never wrote");
            std::thread::yield_now();
        }
        let mut queued = vec![first];
        for i in 1..=capacity {
            queued.push(
                writer
                    .enqueue(format!("\"kind\":\"test\",\"n\":{i}"))
                    .unwrap_or_else(|e| panic!("slot {i}: {e}")),
            );
        }
        assert!(matches!(
            writer.enqueue("\"kind\":\"test\"".into()),
            Err(Error::ResourceExhausted(_))
        ));
        // The async path refuses the same way, at once: its first poll is already the answer.
        let refused = futures::FutureExt::now_or_never(writer.append("\"kind\":\"test\"".into()));
        assert!(
            matches!(refused, Some(Err(Error::ResourceExhausted(_)))),
            "append waited for room in a full queue"
        );
        drop(stalled);
        let mut seqs = Vec::new();
        for reply in queued {
            let appended = reply
                .await
                .unwrap_or_else(|e| panic!("{e}"))
                .unwrap_or_else(|e| panic!("{e}"));
            seqs.push(appended.seq);
        }
        assert_eq!(
            seqs,
            [1, 2, 3],
            "every accepted record is durable, in order"
        );
        writer.close();
    }
}
