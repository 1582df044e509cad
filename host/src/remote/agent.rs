//! `wasmpool agent`: a local [`Pool`] (every wall and limit of a local run) serving the
//! cluster. It pulls from the agents' shared consumer no more tasks than it has free
//! workers, runs each, publishes the result on the client's results subject, and acks the
//! task only once the server has stored the result. While a task runs it sends in-progress
//! acks every third of `AckWait`, so only a silent agent's tasks are delivered again.
//!
//! Deliveries are counted by the server; the agent gives a task up (a
//! [`TaskError::WorkerLost`] with the count as its result, and a dead letter with its
//! input) when its worker is lost on the last delivery it may have (`max_retries + 1`), or
//! when it arrives past that (the agents that held it before died with it). Task errors
//! (timeout, fuel, trap …) are results like any other, never retried.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{consumer, AckKind, Message};
use futures_util::StreamExt;
use tokio::sync::{watch, Semaphore};

use super::wire::{self, DeadLetter, ResultMsg, TaskMsg};
use super::{Conn, Remote};
use crate::error::{PoolError, TaskError};
use crate::module::Module;
use crate::pool::Pool;
use crate::protocol::TaskStats;

/// The largest task body an agent reads from the blob store: twice the largest
/// `max_input` a task may set (room for the encoding), plus 64 KiB. After decoding, its
/// input is held to the task's own `max_input` as a local call's is.
const MAX_BODY: u64 = 2 * u32::MAX as u64 + 65536;

/// How an agent runs.
#[derive(Clone, Debug)]
pub struct AgentOptions {
    pub remote: Remote,
    /// Its name in results and logs.
    pub name: String,
    /// How long a draining agent (SIGTERM) lets its running tasks finish before it
    /// stops them and hands them back.
    pub drain_timeout: Duration,
}

/// What an agent did, when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentSummary {
    /// Results published (task errors included).
    pub results: u64,
    /// Tasks handed back to the server (worker lost before the last delivery, drain).
    pub handed_back: u64,
    /// Messages on the task subject that were not tasks of ours, refused.
    pub refused: u64,
    /// Tasks given up and sent to the dead-letter subject.
    pub dead: u64,
}

#[derive(Default)]
struct Counts {
    results: AtomicU64,
    handed_back: AtomicU64,
    refused: AtomicU64,
    dead: AtomicU64,
}

struct Agent {
    conn: Conn,
    pool: Pool,
    name: String,
    heartbeat: Duration,
    modules: tokio::sync::Mutex<HashMap<[u8; 32], Module>>,
    counts: Counts,
}

/// Serves tasks with the local `pool` (its workers, walls and worker user) until `stop`
/// resolves (the CLI: SIGTERM or SIGINT), then drains: pulls nothing more, lets what it
/// holds finish (up to the drain timeout; the rest is stopped and handed back with a nak),
/// shuts the pool down and returns.
pub fn serve(
    options: AgentOptions,
    pool: Pool,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<AgentSummary, PoolError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("wasmpool-agent")
        .enable_all()
        .build()
        .map_err(|e| PoolError::Remote(format!("cannot start the agent's runtime: {e}")))?;
    let summary = runtime.block_on(run(options, pool.clone(), stop));
    pool.shutdown();
    summary
}

async fn run(
    options: AgentOptions,
    pool: Pool,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<AgentSummary, PoolError> {
    let conn = super::connect(
        &options.remote,
        &format!("wasmpool agent {}", options.name),
        None,
    )
    .await?;
    let stream = conn
        .js
        .get_stream(super::TASKS_STREAM)
        .await
        .map_err(|e| PoolError::Remote(format!("cannot open the task stream: {e}")))?;
    let consumer: consumer::PullConsumer = stream
        .get_consumer(super::AGENTS_CONSUMER)
        .await
        .map_err(|e| PoolError::Remote(format!("cannot open the agents' consumer: {e}")))?;
    let ack_wait = consumer.cached_info().config.ack_wait;
    let workers = pool.workers();
    let agent = Arc::new(Agent {
        conn,
        pool,
        name: options.name.clone(),
        heartbeat: (ack_wait / 3).max(Duration::from_millis(50)),
        modules: tokio::sync::Mutex::new(HashMap::new()),
        counts: Counts::default(),
    });
    tracing::info!(agent = %agent.name, workers, ?ack_wait, "agent serving");
    let free = Arc::new(Semaphore::new(workers));
    let (abort_tx, abort) = watch::channel(false);
    let mut stop = std::pin::pin!(stop);
    // The tasks this agent holds (running, or publishing their results).
    let mut held = tokio::task::JoinSet::new();
    'serve: loop {
        while held.try_join_next().is_some() {}
        let first = tokio::select! {
            _ = &mut stop => break 'serve,
            p = free.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'serve },
        };
        let mut permits = vec![first];
        while let Ok(p) = free.clone().try_acquire_owned() {
            permits.push(p);
        }
        let fetched = tokio::select! {
            _ = &mut stop => break 'serve,
            b = consumer.fetch().max_messages(permits.len()).expires(Duration::from_secs(1)).messages() => b,
        };
        let mut batch = match fetched {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot pull tasks: {e}; trying again");
                tokio::select! {
                    _ = &mut stop => break 'serve,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'serve,
                }
            }
        };
        let mut stopping = false;
        loop {
            let next = tokio::select! {
                _ = &mut stop, if !stopping => { stopping = true; continue; }
                m = batch.next() => m,
            };
            match next {
                None => break,
                Some(Err(e)) => tracing::debug!("pull: {e}"),
                // Pulled as the agent stops: handed back at once.
                Some(Ok(message)) if stopping => {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    agent.counts.handed_back.fetch_add(1, Ordering::Relaxed);
                }
                Some(Ok(message)) => {
                    let permit = permits.pop();
                    let agent = agent.clone();
                    let abort = abort.clone();
                    held.spawn(async move { agent.handle(message, abort, permit).await });
                }
            }
        }
        if stopping {
            break 'serve;
        }
    }
    // Drain: what is held finishes, within the bound; then the rest is handed back.
    tracing::info!(agent = %agent.name, "draining");
    let drained = tokio::time::timeout(options.drain_timeout, async {
        while held.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        let _ = abort_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), async {
            while held.join_next().await.is_some() {}
        })
        .await;
    }
    // Bounded: with the server away a flush waits for it.
    let _ = tokio::time::timeout(Duration::from_secs(2), agent.conn.client.flush()).await;
    let c = &agent.counts;
    Ok(AgentSummary {
        results: c.results.load(Ordering::Relaxed),
        handed_back: c.handed_back.load(Ordering::Relaxed),
        refused: c.refused.load(Ordering::Relaxed),
        dead: c.dead.load(Ordering::Relaxed),
    })
}

/// A client name is a subject token of ours: letters, digits, `-` and `_`.
fn valid_client(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Agent {
    /// Runs one task; `worker` (its room among the agent's free workers) is let go as soon
    /// as the local pool is done with it, before the result is published.
    async fn handle(
        &self,
        message: Message,
        mut abort: watch::Receiver<bool>,
        worker: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let delivery = message
            .info()
            .map(|i| u32::try_from(i.delivered).unwrap_or(u32::MAX).max(1))
            .unwrap_or(1);
        let task = match wire::decode::<TaskMsg>(&message.payload) {
            Ok(t) if valid_client(&t.client) => t,
            Ok(t) => {
                self.refuse(
                    &message,
                    &format!(
                        "a task whose client name {:?} is not a subject token",
                        t.client
                    ),
                )
                .await;
                return;
            }
            Err(e) => {
                self.refuse(&message, &e.to_string()).await;
                return;
            }
        };
        // A task of ours whose body cannot be read is answered (its client waits), once.
        let local = match self.body(&task).await {
            Ok(l) => l,
            Err(e) => {
                self.finish(
                    &message,
                    &task,
                    delivery,
                    Err(e),
                    TaskStats::default(),
                    None,
                )
                .await;
                return;
            }
        };
        let most = local.max_retries.saturating_add(1);
        if delivery > most {
            // The agents that held it before died with it.
            let error = TaskError::WorkerLost {
                message: format!(
                    "the task was lost with its agent on each of its {most} deliveries"
                ),
                deliveries: Some(most),
            };
            self.finish(
                &message,
                &task,
                delivery,
                Err(error),
                TaskStats::default(),
                Some(most),
            )
            .await;
            return;
        }
        let call = match self.module(&task.module).await {
            Ok(module) => local.env.iter().fold(
                self.pool
                    .call(&module, &task.export)
                    .limits(local.limits)
                    .max_retries(0),
                |c, (k, v)| c.env(k, v),
            ),
            Err(e) => {
                self.finish(
                    &message,
                    &task,
                    delivery,
                    Err(e),
                    TaskStats::default(),
                    None,
                )
                .await;
                return;
            }
        };
        let mut local = call.submit_input(local.input);
        let mut beat = tokio::time::interval(self.heartbeat);
        beat.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut local => break outcome,
                _ = beat.tick() => {
                    if let Err(e) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!("in-progress ack: {e}");
                    }
                }
                _ = abort.changed() => {
                    local.cancel();
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    self.counts.handed_back.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        };
        drop(worker);
        let stats = local.stats().unwrap_or_default();
        match outcome {
            Err(TaskError::WorkerLost { message: why, .. }) if delivery < most => {
                tracing::info!(
                    task = task.task,
                    delivery,
                    "worker lost ({why}); handing the task back"
                );
                let _ = message.ack_with(AckKind::Nak(None)).await;
                self.counts.handed_back.fetch_add(1, Ordering::Relaxed);
            }
            Err(TaskError::WorkerLost { message: why, .. }) => {
                let error = TaskError::WorkerLost {
                    message: format!("{why} (on the last of {most} deliveries)"),
                    deliveries: Some(most),
                };
                self.finish(&message, &task, delivery, Err(error), stats, Some(most))
                    .await;
            }
            outcome => {
                self.finish(&message, &task, delivery, outcome, stats, None)
                    .await
            }
        }
    }

    /// A message that is not a task of ours: logged, and terminated on the server (never
    /// delivered again); nothing else is touched.
    async fn refuse(&self, message: &Message, why: &str) {
        tracing::warn!(agent = %self.name, subject = %message.subject, "refused a message on the task subject: {why}");
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        let _ = message.ack_with(AckKind::Term).await;
    }

    /// The task's body (from the blob store when it was large), decoded and checked, as
    /// the agent's local pool runs it.
    async fn body(&self, task: &TaskMsg) -> Result<wire::LocalTask, TaskError> {
        let (bytes, _stored) = super::from_blob(&self.conn, task.body.clone(), MAX_BODY)
            .await
            .map_err(TaskError::bad_input)?;
        wire::TaskBody::decode(&bytes)
            .map_err(|e| TaskError::bad_input(e.to_string()))?
            .into_local()
            .map_err(TaskError::bad_input)
    }

    /// The task's module: fetched by hash on first use (capped at the local pool's module
    /// size limit) and compiled by the local pool, whose disk cache keeps it.
    async fn module(&self, hash: &[u8; 32]) -> Result<Module, TaskError> {
        let mut modules = self.modules.lock().await;
        if let Some(m) = modules.get(hash) {
            return Ok(m.clone());
        }
        let name = super::hex(hash);
        let bytes = super::read_object(
            &self.conn.modules,
            &name,
            self.pool.max_module_size() as u64,
        )
        .await
        .map_err(|e| TaskError::bad_input(format!("module {name}: {e}")))?;
        if blake3::hash(&bytes).as_bytes() != hash {
            return Err(TaskError::bad_input(format!(
                "module {name} in the object store does not match its hash"
            )));
        }
        let pool = self.pool.clone();
        let module = tokio::task::spawn_blocking(move || pool.load(bytes))
            .await
            .map_err(|e| TaskError::bad_input(format!("module {name}: {e}")))?
            .map_err(|e| {
                TaskError::bad_input(format!(
                    "module {name} does not load on agent {}: {}",
                    self.name,
                    crate::error::Chain(&e)
                ))
            })?;
        modules.insert(*hash, module.clone());
        Ok(module)
    }

    /// Publishes the result (and, when the task is given up after its last delivery
    /// `dead`, the dead letter), and acks the task once the server has stored the result;
    /// if it cannot, the task is handed back to run again.
    async fn finish(
        &self,
        message: &Message,
        task: &TaskMsg,
        delivery: u32,
        outcome: wire::Outcome,
        stats: TaskStats,
        dead: Option<u32>,
    ) {
        if let Some(most) = dead {
            let letter = DeadLetter {
                deliveries: delivery.min(most),
                reason: outcome
                    .as_ref()
                    .err()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                task: task.clone(),
            };
            let subject = format!("{}.{}", super::DEAD_PREFIX, task.client);
            match self
                .conn
                .js
                .publish(subject, wire::encode(&letter).into())
                .await
            {
                Ok(ack) => {
                    if let Err(e) = ack.await {
                        tracing::warn!("dead letter not stored: {e}");
                    }
                }
                Err(e) => tracing::warn!("dead letter not published: {e}"),
            }
            self.counts.dead.fetch_add(1, Ordering::Relaxed);
        }
        let body = wire::body(&outcome);
        let blob = match super::to_blob(
            &self.conn,
            format!("out-{}-{}-{delivery}", task.client, task.task),
            body,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => wire::Blob::Inline(wire::body::<wire::Outcome>(&Err(TaskError::BadOutput {
                message: e,
            }))),
        };
        let result = ResultMsg {
            task: task.task,
            agent: self.name.clone(),
            delivery,
            outcome: blob,
            stats,
        };
        let subject = format!("{}.{}", super::RESULTS_PREFIX, task.client);
        let stored = async {
            self.conn
                .js
                .send_publish(
                    subject,
                    // A second result of a re-run within the server's duplicate window is
                    // dropped by the server; later ones by the client.
                    async_nats::jetstream::context::Publish::build()
                        .payload(wire::encode(&result).into())
                        .message_id(format!("r-{}-{}", task.client, task.task)),
                )
                .await
                .map_err(|e| e.to_string())?
                .await
                .map_err(|e| e.to_string())
        };
        match stored.await {
            Ok(_) => {
                self.counts.results.fetch_add(1, Ordering::Relaxed);
                // A plain ack (no round trip): if it is lost, the task runs again and its
                // second result is dropped.
                if let Err(e) = message.ack().await {
                    // The result is stored; the task may run again, and its client keeps
                    // the first result.
                    tracing::debug!("ack of a finished task: {e}");
                }
            }
            Err(e) => {
                tracing::warn!(
                    task = task.task,
                    "result not stored ({e}); handing the task back"
                );
                let _ = message.ack_with(AckKind::Nak(None)).await;
                self.counts.handed_back.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
