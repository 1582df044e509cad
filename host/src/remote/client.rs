//! The client side of a remote pool: runs in place of the dispatcher. It takes the same
//! [`Event`]s, so `Call`, `Task`, `map`, `imap` and the rest work unchanged; each job is
//! published on the task stream (its module uploaded once, by hash, first), and each
//! result that comes back on this client's results subject completes its job's
//! `Completion` — the first result per task id stands, later ones (a task re-run after its
//! agent died with the result already published) are dropped. A result is acked on the
//! server only after it is recorded here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::{consumer, context::Publish};
use futures_util::StreamExt;
use tokio::sync::mpsc;

use super::wire::{self, ResultMsg, TaskBody, TaskMsg};
use super::{Conn, Remote};
use crate::dispatch::{Event, Job, PoolStats};
use crate::error::{PoolError, TaskError};
use crate::module::ModuleId;

/// Starts the client's thread (connected first, so a bad URL or refused credentials fail
/// `build`); the pool sends it its events.
pub(crate) fn start(
    remote: Remote,
    inbox: crossbeam_channel::Receiver<Event>,
) -> Result<JoinHandle<()>, PoolError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wasmpool-nats")
        .enable_all()
        .build()
        .map_err(|e| PoolError::Remote(format!("cannot start the NATS client's runtime: {e}")))?;
    let id = client_id();
    let (conn_tx, conn_rx) = mpsc::unbounded_channel();
    let conn = runtime.block_on(super::connect(
        &remote,
        &format!("wasmpool client {id}"),
        Some(conn_tx),
    ))?;
    let results = runtime.block_on(results_consumer(&conn, &id))?;
    // Events arrive on a crossbeam channel (the pool's, shared with the local dispatcher);
    // a thread hands them to the runtime.
    let (tx, events) = mpsc::unbounded_channel();
    std::thread::Builder::new()
        .name("wasmpool-nats-events".into())
        .spawn(move || {
            while let Ok(event) = inbox.recv() {
                if tx.send(event).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| PoolError::Remote(format!("cannot start a thread: {e}")))?;
    std::thread::Builder::new()
        .name("wasmpool-nats".into())
        .spawn(move || {
            let client = Client {
                id,
                remote,
                conn,
                pending: HashMap::new(),
                uploaded: Arc::new(tokio::sync::Mutex::new(HashSet::new())),
                done: 0,
                failed: std::collections::BTreeMap::new(),
                lost_since: None,
                reported: Instant::now(),
                duplicates: 0,
            };
            runtime.block_on(client.run(events, results, conn_rx));
        })
        .map_err(|e| PoolError::Remote(format!("cannot start the NATS client's thread: {e}")))
}

/// A name unique among the clients of one server: results come back on a subject of it.
fn client_id() -> String {
    let mut seed = [0u8; 16];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    seed[..8].copy_from_slice(&(now.as_nanos() as u64).to_le_bytes());
    seed[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    seed[12..].copy_from_slice(
        &NEXT
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    blake3::hash(&seed).to_hex()[..20].to_string()
}

async fn results_consumer(
    conn: &Conn,
    id: &str,
) -> Result<consumer::Consumer<consumer::pull::Config>, PoolError> {
    let stream = conn
        .js
        .get_stream(super::RESULTS_STREAM)
        .await
        .map_err(|e| PoolError::Remote(format!("cannot open the results stream: {e}")))?;
    let name = format!("results-{id}");
    stream
        .get_or_create_consumer(
            &name,
            consumer::pull::Config {
                durable_name: Some(name.clone()),
                filter_subject: format!("{}.{id}", super::RESULTS_PREFIX),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                // A client gone for an hour leaves no consumer behind.
                inactive_threshold: Duration::from_secs(3600),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| PoolError::Remote(format!("cannot open this client's results consumer: {e}")))
}

/// What the client's task publishing tells its loop.
enum Published {
    /// The server stored the task.
    Stored(u64),
    /// It could not be published (the server stayed away past the bound, the module could
    /// not be uploaded): the task fails with this error.
    Failed(u64, TaskError),
}

struct Client {
    id: String,
    remote: Remote,
    conn: Conn,
    /// Tasks published (or being published) and not answered, by id.
    pending: HashMap<u64, Job>,
    /// Modules known to be in the module store.
    uploaded: Arc<tokio::sync::Mutex<HashSet<ModuleId>>>,
    done: u64,
    failed: std::collections::BTreeMap<&'static str, u64>,
    /// Since when the connection is lost, if it is.
    lost_since: Option<Instant>,
    /// When the loss was last reported.
    reported: Instant,
    /// Results dropped because their task was answered already.
    duplicates: u64,
}

/// How long the client's last words to the server (deleting its results consumer, the
/// final flush) may take when it stops: with the server away they would wait for it.
const FAREWELL: Duration = Duration::from_secs(2);

/// The results stream being opened: bounded, so a server that is away does not hold it.
type Opening =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<consumer::pull::Stream>> + Send>>;

fn open(results: &consumer::Consumer<consumer::pull::Config>) -> Opening {
    let results = results.clone();
    Box::pin(async move {
        tokio::time::timeout(Duration::from_secs(2), results.messages())
            .await
            .ok()
            .and_then(Result::ok)
    })
}

impl Client {
    async fn run(
        mut self,
        mut events: mpsc::UnboundedReceiver<Event>,
        results: consumer::Consumer<consumer::pull::Config>,
        mut conn_events: mpsc::UnboundedReceiver<async_nats::Event>,
    ) {
        let (published_tx, mut published) = mpsc::unbounded_channel();
        let mut stream = None;
        // Opened here and (after a reconnect, or a failed try) on a tick, never in the way
        // of the loop: events, the reconnect bound and progress reports go on meanwhile.
        let mut opening = Some(open(&results));
        let mut shutdown: Option<(bool, crossbeam_channel::Sender<()>)> = None;
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            if let Some((drain, _)) = &shutdown {
                if !drain || self.pending.is_empty() {
                    break;
                }
            }
            tokio::select! {
                event = events.recv() => match event {
                    None => {
                        shutdown.get_or_insert((false, crossbeam_channel::bounded(1).0));
                    }
                    Some(Event::Submit(jobs)) => self.submit(jobs, &published_tx),
                    Some(Event::Cancel(id, completion)) => {
                        completion.fail(TaskError::Cancelled {
                            message: "cancelled by the caller".into(),
                        });
                        self.pending.remove(&id);
                    }
                    Some(Event::Stats(tx)) => {
                        let _ = tx.send(self.stats());
                    }
                    Some(Event::Pids(tx)) => {
                        let _ = tx.send(Vec::new());
                    }
                    Some(Event::Shutdown { drain, done }) => shutdown = Some((drain, done)),
                    Some(
                        Event::Submitted
                        | Event::Replies(..)
                        | Event::Exited(..)
                        | Event::Reaped(..),
                    ) => {}
                },
                Some(p) = published.recv() => match p {
                    Published::Stored(id) => {
                        if let Some(job) = self.pending.get(&id) {
                            job.completion.leave_queue();
                            job.completion.mark_running();
                        }
                    }
                    Published::Failed(id, error) => {
                        if let Some(job) = self.pending.remove(&id) {
                            self.count(&Err(error.clone()));
                            job.completion.fail(error);
                        }
                    }
                },
                opened = async {
                    match opening.as_mut() {
                        Some(o) => o.await,
                        None => std::future::pending().await,
                    }
                }, if opening.is_some() => {
                    opening = None;
                    stream = opened;
                }
                message = next(&mut stream) => match message {
                    Some(Ok(message)) => self.result(message).await,
                    Some(Err(e)) => tracing::debug!("results stream: {e}"),
                    None => stream = None,
                },
                Some(event) = conn_events.recv() => match event {
                    async_nats::Event::Disconnected => {
                        if self.lost_since.is_none() {
                            tracing::warn!(
                                "lost the NATS server at {}; reconnecting ({} tasks waiting; they fail if it is away for {:?})",
                                self.remote.url, self.pending.len(), self.remote.reconnect_bound
                            );
                            let now = Instant::now();
                            self.lost_since = Some(now);
                            self.reported = now;
                        }
                    }
                    async_nats::Event::Connected => {
                        if let Some(since) = self.lost_since.take() {
                            tracing::warn!(
                                "the NATS server at {} is back after {:.1?}; the run goes on ({} tasks waiting)",
                                self.remote.url, since.elapsed(), self.pending.len()
                            );
                            stream = None;
                            opening = None;
                        }
                    }
                    other => tracing::debug!("NATS: {other}"),
                },
                _ = tick.tick() => {
                    self.check_connection();
                    if stream.is_none() && opening.is_none() && self.lost_since.is_none() {
                        opening = Some(open(&results));
                    }
                }
            }
        }
        let cancelled = self.pending.len();
        for (_, job) in self.pending.drain() {
            job.completion.fail(TaskError::Cancelled {
                message: "the pool was terminated".into(),
            });
        }
        if cancelled > 0 {
            tracing::debug!(cancelled, "remote pool terminated with tasks outstanding");
        }
        if self.lost_since.is_none() {
            let farewell = async {
                if let Ok(s) = self.conn.js.get_stream(super::RESULTS_STREAM).await {
                    let _ = s.delete_consumer(&format!("results-{}", self.id)).await;
                }
                let _ = self.conn.client.flush().await;
            };
            if tokio::time::timeout(FAREWELL, farewell).await.is_err() {
                tracing::debug!("the NATS server did not answer the client's farewell");
            }
        }
        if let Some((_, done)) = shutdown {
            let _ = done.send(());
        }
    }

    fn stats(&self) -> PoolStats {
        let (queued, running) = self.pending.values().fold((0, 0), |(q, r), j| {
            if j.completion.is_running() {
                (q, r + 1)
            } else {
                (q + 1, r)
            }
        });
        PoolStats {
            queued,
            running,
            done: self.done,
            failed: self.failed.clone(),
            ..PoolStats::default()
        }
    }

    fn count(&mut self, outcome: &wire::Outcome) {
        match outcome {
            Ok(_) => self.done += 1,
            Err(e) => *self.failed.entry(e.kind()).or_default() += 1,
        }
    }

    /// While the server is away: reports how long, now and then, and fails every waiting
    /// task once it has been away for the reconnect bound.
    fn check_connection(&mut self) {
        let Some(since) = self.lost_since else {
            return;
        };
        let away = since.elapsed();
        let bound = self.remote.reconnect_bound;
        if away < bound || self.pending.is_empty() {
            let every = (bound / 4).clamp(Duration::from_secs(1), Duration::from_secs(15));
            if self.reported.elapsed() >= every && !self.pending.is_empty() {
                self.reported = Instant::now();
                tracing::warn!(
                    "the NATS server at {} has been unreachable for {:.0?} of the {:?} reconnect bound; {} tasks waiting ({} done, {} failed)",
                    self.remote.url,
                    away,
                    bound,
                    self.pending.len(),
                    self.done,
                    self.failed.values().sum::<u64>()
                );
            }
            return;
        }
        let error = TaskError::WorkerLost {
            message: format!(
                "the NATS server at {} has been unreachable for {away:.1?}, past the reconnect bound of {bound:?}",
                self.remote.url
            ),
            deliveries: None,
        };
        tracing::error!("{error}; {} waiting tasks fail", self.pending.len());
        for (_, job) in self.pending.drain() {
            *self.failed.entry(error.kind()).or_default() += 1;
            job.completion.fail(error.clone());
        }
    }

    fn submit(&mut self, jobs: Vec<Job>, published: &mpsc::UnboundedSender<Published>) {
        let mut batch = Vec::with_capacity(jobs.len());
        for mut job in jobs {
            if job.completion.is_done() {
                continue;
            }
            // The input travels; the job kept here needs only its completion and limits.
            let input = std::mem::replace(
                &mut job.input,
                crate::protocol::JobInput::Numbers(Vec::new()),
            )
            .into_input();
            let body = TaskBody::of(input, job.shape.limits, job.retries, &job.shape.env);
            let msg = TaskMsg {
                client: self.id.clone(),
                task: job.id,
                module: job.shape.module.id().0,
                export: job.shape.export.to_string(),
                body: wire::Blob::Inline(wire::body(&body)),
            };
            let module = (job.shape.module.id(), job.shape.module.inner.bytes.clone());
            batch.push((job.id, module, msg));
            self.pending.insert(job.id, job);
        }
        if batch.is_empty() {
            return;
        }
        let conn = self.conn.clone();
        let uploaded = self.uploaded.clone();
        let published = published.clone();
        let bound = self.remote.reconnect_bound;
        tokio::spawn(async move {
            publish(conn, uploaded, batch, published, bound).await;
        });
    }

    async fn result(&mut self, message: async_nats::jetstream::Message) {
        let decoded = wire::decode::<ResultMsg>(&message.payload);
        match decoded {
            Err(e) => tracing::warn!("dropped a message on this client's results subject: {e}"),
            Ok(result) => match self.pending.remove(&result.task) {
                None => {
                    self.duplicates += 1;
                    tracing::debug!(task = result.task, agent = %result.agent, "dropped a second result");
                }
                Some(job) => {
                    let outcome = match super::from_blob(
                        &self.conn,
                        result.outcome,
                        u64::from(job.shape.limits.max_output).saturating_mul(2) + 65536,
                    )
                    .await
                    {
                        Ok((bytes, stored)) => {
                            if let Some(name) = stored {
                                let _ = self.conn.blobs.delete(name).await;
                            }
                            wire::from_body::<wire::Outcome>(&bytes).unwrap_or_else(|e| {
                                Err(TaskError::BadOutput {
                                    message: format!(
                                        "the result from agent {} does not decode: {e}",
                                        result.agent
                                    ),
                                })
                            })
                        }
                        Err(e) => Err(TaskError::BadOutput {
                            message: format!("the result from agent {}: {e}", result.agent),
                        }),
                    };
                    self.count(&outcome);
                    job.completion.complete(outcome, result.stats);
                }
            },
        }
        // Acked only now: the result is recorded (or was a duplicate, or not ours).
        if let Err(e) = message.ack().await {
            tracing::debug!("ack of a result: {e}");
        }
    }
}

async fn next(
    stream: &mut Option<consumer::pull::Stream>,
) -> Option<Result<async_nats::jetstream::Message, String>> {
    match stream {
        Some(s) => s.next().await.map(|r| r.map_err(|e| e.to_string())),
        None => std::future::pending().await,
    }
}

/// A task on its way out: its id, its module (id and bytes) and its message.
type Outgoing = (u64, (ModuleId, Arc<[u8]>), TaskMsg);

/// Uploads the batch's modules (once each) and publishes its tasks, awaiting the server's
/// acks together; a publish that fails (the server away) is tried again until `bound`.
async fn publish(
    conn: Conn,
    uploaded: Arc<tokio::sync::Mutex<HashSet<ModuleId>>>,
    batch: Vec<Outgoing>,
    published: mpsc::UnboundedSender<Published>,
    bound: Duration,
) {
    let started = Instant::now();
    let mut acks = futures_util::stream::FuturesOrdered::new();
    for (id, (module, bytes), mut msg) in batch {
        if let Err(e) = upload(&conn, &uploaded, module, &bytes, started, bound).await {
            let _ = published.send(Published::Failed(id, TaskError::bad_input(e)));
            continue;
        }
        if let wire::Blob::Inline(body) = &mut msg.body {
            if body.len() > conn.max_inline {
                let bytes = std::mem::take(body);
                match super::to_blob(&conn, format!("in-{}-{id}", msg.client), bytes).await {
                    Ok(blob) => msg.body = blob,
                    Err(e) => {
                        let _ = published.send(Published::Failed(id, TaskError::bad_input(e)));
                        continue;
                    }
                }
            }
        }
        let payload = bytes::Bytes::from(wire::encode(&msg));
        let msg_id = format!("{}-{id}", msg.client);
        let js = conn.js.clone();
        acks.push_back(async move {
            loop {
                let attempt = async {
                    js.send_publish(
                        super::TASKS_SUBJECT,
                        Publish::build()
                            .payload(payload.clone())
                            .message_id(msg_id.as_str()),
                    )
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())
                };
                match attempt.await {
                    Ok(_) => return Published::Stored(id),
                    Err(e) if started.elapsed() < bound => {
                        tracing::debug!(task = id, "publish failed, trying again: {e}");
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    Err(e) => {
                        return Published::Failed(
                            id,
                            TaskError::WorkerLost {
                                message: format!("cannot publish the task: {e}"),
                                deliveries: Some(0),
                            },
                        )
                    }
                }
            }
        });
        // Many publishes in flight, a bounded number: the server's acks come back together.
        while acks.len() >= 256 {
            if let Some(p) = acks.next().await {
                let _ = published.send(p);
            }
        }
    }
    while let Some(p) = acks.next().await {
        let _ = published.send(p);
    }
}

/// Puts a module in the module store under its full hash, unless it is there already.
async fn upload(
    conn: &Conn,
    uploaded: &tokio::sync::Mutex<HashSet<ModuleId>>,
    module: ModuleId,
    bytes: &[u8],
    started: Instant,
    bound: Duration,
) -> Result<(), String> {
    let mut known = uploaded.lock().await;
    if known.contains(&module) {
        return Ok(());
    }
    let name = super::hex(&module.0);
    loop {
        let done = match conn.modules.info(&name).await {
            Ok(info) if info.size == bytes.len() => Ok(()),
            _ => conn
                .modules
                .put(name.as_str(), &mut &bytes[..])
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        };
        match done {
            Ok(()) => break,
            Err(e) if started.elapsed() < bound => {
                tracing::debug!("module upload failed, trying again: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(format!("cannot upload the module {name}: {e}")),
        }
    }
    known.insert(module);
    Ok(())
}
