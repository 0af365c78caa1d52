//! The batching history writer: a cloneable handle holding only a sender, and one task that
//! owns the batch and writes it every `flush_interval` or `batch_rows` rows.
//!
//! The queue is bounded. [`HistoryWriter::submit`] never waits: when the queue is full the
//! record is dropped and counted, so a burst of reports slows nothing on the publish path and
//! memory stays bounded. A batch the database refuses is counted as failed and not retried (a
//! retry would let a broken database hold the queue full forever).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Record, Store};

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterConfig {
    /// Records that may wait in the queue; beyond this they are dropped.
    pub queue_capacity: usize,
    /// A batch is written when it has this many rows…
    pub batch_rows: usize,
    /// …or when its oldest row has waited this long.
    pub flush_interval: Duration,
    /// When more rows are already waiting once a batch is due, it takes them too, up to this
    /// many: under load batches grow (fewer transactions per row) instead of the queue.
    pub max_batch_rows: usize,
}

impl Default for WriterConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            batch_rows: 1_000,
            flush_interval: Duration::from_millis(200),
            max_batch_rows: 20_000,
        }
    }
}

/// Counters, readable while the writer runs.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Rows committed.
    pub written: AtomicU64,
    /// Rows dropped because the queue was full.
    pub dropped: AtomicU64,
    /// Rows lost because the database refused their batch.
    pub failed: AtomicU64,
    /// Batches committed.
    pub batches: AtomicU64,
    /// Duration of the last committed batch, µs.
    pub last_batch_us: AtomicU64,
    /// Durations of committed batches.
    pub batch_latency: thingmq_server::metrics::LatencyHistogram,
}

// Records are the common case and a flush is rare; boxing records to shrink the enum would
// cost an allocation per record.
#[allow(clippy::large_enum_variant)]
enum Command {
    Record(Record),
    Flush(oneshot::Sender<()>),
}

/// Handle to the writer task. Dropping every handle makes the task write what it holds and
/// exit.
#[derive(Debug, Clone)]
pub struct HistoryWriter {
    tx: mpsc::Sender<Command>,
    stats: Arc<WriterStats>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Record(r) => f.debug_tuple("Record").field(r).finish(),
            Self::Flush(_) => f.write_str("Flush"),
        }
    }
}

impl HistoryWriter {
    /// Starts the writer task on the current tokio runtime.
    pub fn spawn(store: Store, config: WriterConfig) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let stats = Arc::new(WriterStats::default());
        let task = tokio::spawn(run(store, config, rx, stats.clone()));
        (Self { tx, stats }, task)
    }

    /// Queues a record without waiting. Returns `false` (and counts a drop) when the queue is
    /// full or the writer has stopped.
    pub fn submit(&self, record: Record) -> bool {
        match self.tx.try_send(Command::Record(record)) {
            Ok(()) => true,
            Err(_) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Waits until everything queued before this call is written (or failed).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// The counters.
    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// Records waiting in the queue for a batch.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

async fn run(
    store: Store,
    config: WriterConfig,
    mut rx: mpsc::Receiver<Command>,
    stats: Arc<WriterStats>,
) {
    let batch_rows = config.batch_rows.max(1);
    let max_batch_rows = config.max_batch_rows.max(batch_rows);
    let mut batch: Vec<Record> = Vec::with_capacity(batch_rows);
    let mut waiters: Vec<oneshot::Sender<()>> = Vec::new();
    let mut open = true;
    while open {
        let Some(first) = rx.recv().await else {
            break;
        };
        let deadline = Instant::now() + config.flush_interval;
        let mut due = take(first, &mut batch, &mut waiters);
        // Fill the batch from what is waiting; only an empty queue costs a timer.
        while !due && batch.len() < batch_rows {
            match rx.try_recv() {
                Ok(c) => due = take(c, &mut batch, &mut waiters),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
                Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(c) => due = take(c, &mut batch, &mut waiters),
                        None => {
                            open = false;
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                },
            }
        }
        // The batch is due; rows that queued while the last one was written come along.
        while batch.len() < max_batch_rows {
            match rx.try_recv() {
                Ok(c) => {
                    take(c, &mut batch, &mut waiters);
                }
                Err(_) => break,
            }
        }
        write(&store, &mut batch, &stats).await;
        for w in waiters.drain(..) {
            let _ = w.send(());
        }
    }
    write(&store, &mut batch, &stats).await;
    for w in waiters.drain(..) {
        let _ = w.send(());
    }
}

/// Adds a command to the batch; `true` when it asks for the batch to be written now.
fn take(cmd: Command, batch: &mut Vec<Record>, waiters: &mut Vec<oneshot::Sender<()>>) -> bool {
    match cmd {
        Command::Record(r) => {
            batch.push(r);
            false
        }
        Command::Flush(w) => {
            waiters.push(w);
            true
        }
    }
}

async fn write(store: &Store, batch: &mut Vec<Record>, stats: &WriterStats) {
    if batch.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    let n = batch.len() as u64;
    match store.write_records(batch).await {
        Ok(()) => {
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            stats.written.fetch_add(n, Ordering::Relaxed);
            stats.batches.fetch_add(1, Ordering::Relaxed);
            stats.last_batch_us.store(us, Ordering::Relaxed);
            stats.batch_latency.observe(started.elapsed());
            // The write latency the load benchmark (bench/things-load) reads; debug level so
            // it costs nothing unless asked for.
            tracing::debug!(rows = n, us, "history batch written");
        }
        Err(e) => {
            stats.failed.fetch_add(n, Ordering::Relaxed);
            tracing::warn!(rows = n, error = %e, "history batch not written");
        }
    }
    batch.clear();
}
