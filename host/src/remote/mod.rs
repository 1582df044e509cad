//! Remote pools over NATS JetStream (cargo feature `nats`): the same [`Call`](crate::Call)
//! and [`Task`](crate::Task) API, with the tasks run by agents on any number of machines.
//!
//! - [`client`]: what a pool made with [`Pool::connect`](crate::Pool::connect) (or
//!   [`PoolBuilder::remote`](crate::PoolBuilder::remote)) runs instead of a dispatcher:
//!   publishes each task on the task stream, gathers results from its own results subject.
//! - [`agent`]: `wasmpool agent`, a local pool (every wall and limit of a local run) that
//!   pulls tasks from the shared consumer, never more than it has free workers.
//! - [`wire`]: the messages, versioned.
//!
//! On the server (all created on first use, file storage):
//!
//! | name | what |
//! |---|---|
//! | stream `WASMPOOL_TASKS`, subject `wasmpool.tasks` | work-queue retention: a task leaves the stream when an agent acks it |
//! | consumer `agents` on it | durable pull consumer shared by every agent; `AckWait` short (agents send in-progress acks while a task runs), no server-side `MaxDeliver` (agents count deliveries per task) |
//! | stream `WASMPOOL_RESULTS`, subjects `wasmpool.results.<client>` | results until the client acks them; each client a consumer of its own subject |
//! | stream `WASMPOOL_DEAD`, subjects `wasmpool.dead.<client>` | dead letters: tasks given up after their last delivery, with their input |
//! | object store `wasmpool-modules` | modules by their full BLAKE3 hash (hex), kept 7 days |
//! | object store `wasmpool-blobs` | inputs and outcomes over the server's payload limit, kept one day (deleted when read) |

pub mod agent;
pub(crate) mod client;
pub mod wire;

use std::path::PathBuf;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, object_store, stream};

use crate::error::PoolError;

pub const TASKS_STREAM: &str = "WASMPOOL_TASKS";
pub const TASKS_SUBJECT: &str = "wasmpool.tasks";
pub const AGENTS_CONSUMER: &str = "agents";
pub const RESULTS_STREAM: &str = "WASMPOOL_RESULTS";
pub const RESULTS_PREFIX: &str = "wasmpool.results";
pub const DEAD_STREAM: &str = "WASMPOOL_DEAD";
pub const DEAD_PREFIX: &str = "wasmpool.dead";
pub const MODULES_BUCKET: &str = "wasmpool-modules";
pub const BLOBS_BUCKET: &str = "wasmpool-blobs";

/// Room left in a message for its headers and our framing, under the server's
/// `max_payload`: a payload bigger than that limit minus this goes to the blob store.
const PAYLOAD_MARGIN: usize = 4096;

/// Where and how to reach the NATS server: for [`PoolBuilder::remote`](crate::PoolBuilder::remote)
/// and the agent.
#[derive(Clone, Debug)]
pub struct Remote {
    pub(crate) url: String,
    pub(crate) creds: Option<PathBuf>,
    pub(crate) connect_timeout: Duration,
    pub(crate) reconnect_bound: Duration,
    pub(crate) ack_wait: Duration,
}

impl Remote {
    /// The server at `url` (`nats://host:4222`, several separated by commas; user and
    /// password may be in the URL).
    pub fn new(url: impl Into<String>) -> Self {
        Remote {
            url: url.into(),
            creds: None,
            connect_timeout: Duration::from_secs(5),
            reconnect_bound: Duration::from_secs(60),
            ack_wait: Duration::from_secs(10),
        }
    }

    /// Authenticates with a NATS credentials file (JWT and NKey seed).
    pub fn creds(mut self, path: impl Into<PathBuf>) -> Self {
        self.creds = Some(path.into());
        self
    }

    /// How long a first connection may take before it fails (default 5 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// How long the connection may stay lost before the tasks waiting on it fail with
    /// [`TaskError::WorkerLost`](crate::TaskError::WorkerLost) naming the server and this
    /// bound (default 60 s); a task submitted while it is still lost fails the same way.
    /// Until then the client reconnects (logging the loss, and how long it lasts every
    /// quarter of the bound) and the run goes on where it was.
    pub fn reconnect_bound(mut self, t: Duration) -> Self {
        self.reconnect_bound = t;
        self
    }

    /// The `AckWait` of the agents' consumer, set by the first agent that creates it
    /// (default 10 s): how long a task held by an agent that went silent (killed, cut off)
    /// waits before it is delivered again. Agents send in-progress acks every third of it
    /// while a task runs, so a slow task is never run twice for being slow.
    pub fn ack_wait(mut self, t: Duration) -> Self {
        self.ack_wait = t;
        self
    }
}

fn remote_error(what: &str, e: impl std::fmt::Display) -> PoolError {
    PoolError::Remote(format!("{what}: {e}"))
}

/// What both sides hold: the connection and the JetStream handles.
#[derive(Clone)]
pub(crate) struct Conn {
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub modules: object_store::ObjectStore,
    pub blobs: object_store::ObjectStore,
    /// The largest payload we put in a message; bigger ones go to `blobs`.
    pub max_inline: usize,
}

/// Connects to the server (failing after the connect timeout, with the server's words for
/// refused credentials) and makes sure the streams and stores exist. `events` is told of
/// every connection event (disconnects and reconnects).
pub(crate) async fn connect(
    remote: &Remote,
    name: &str,
    events: Option<tokio::sync::mpsc::UnboundedSender<async_nats::Event>>,
) -> Result<Conn, PoolError> {
    let mut options = async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(remote.connect_timeout)
        .max_reconnects(None)
        .event_callback(move |event| {
            let events = events.clone();
            async move {
                if let Some(tx) = events {
                    let _ = tx.send(event);
                }
            }
        });
    // async-nats takes a user and password from options only, not from the URL.
    if let Some((user, pass)) = user_pass(&remote.url) {
        options = options.user_and_password(user, pass);
    }
    if let Some(path) = &remote.creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| remote_error(&format!("cannot read credentials {}", path.display()), e))?;
    }
    let connecting = options.connect(remote.url.as_str());
    let client = tokio::time::timeout(remote.connect_timeout + Duration::from_secs(1), connecting)
        .await
        .map_err(|_| {
            PoolError::Remote(format!(
                "cannot connect to {}: no answer within {:?}",
                remote.url, remote.connect_timeout
            ))
        })?
        .map_err(|e| remote_error(&format!("cannot connect to {}", remote.url), e))?;
    let js = jetstream::new(client.clone());
    let (modules, blobs) = prepare_server(&js, remote).await?;
    let max_inline = client
        .server_info()
        .max_payload
        .saturating_sub(PAYLOAD_MARGIN)
        .max(1024);
    Ok(Conn {
        client,
        js,
        modules,
        blobs,
        max_inline,
    })
}

/// Makes sure the streams, the agents' consumer and both object stores exist (creating
/// what is missing) and returns the stores: modules, then blobs.
///
/// Every client and agent does this when it connects, so several may create the same thing
/// at once. The server can then refuse the loser's creation although the stream it asked
/// for now exists (nats-server 2.9 answers "subjects overlap with an existing stream"), so
/// each creation that fails looks again and takes what the winner made when it is ours.
#[doc(hidden)]
pub async fn prepare_server(
    js: &jetstream::Context,
    remote: &Remote,
) -> Result<(object_store::ObjectStore, object_store::ObjectStore), PoolError> {
    ensure_streams(js, remote).await?;
    let modules = store(js, MODULES_BUCKET, Duration::from_secs(7 * 24 * 3600)).await?;
    let blobs = store(js, BLOBS_BUCKET, Duration::from_secs(24 * 3600)).await?;
    Ok((modules, blobs))
}

async fn store(
    js: &jetstream::Context,
    bucket: &str,
    max_age: Duration,
) -> Result<object_store::ObjectStore, PoolError> {
    if let Ok(s) = js.get_object_store(bucket).await {
        return Ok(s);
    }
    let created = js
        .create_object_store(object_store::Config {
            bucket: bucket.into(),
            max_age,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await;
    match created {
        Ok(s) => Ok(s),
        // Another client made it meanwhile.
        Err(e) => js
            .get_object_store(bucket)
            .await
            .map_err(|_| remote_error(&format!("cannot open the object store {bucket}"), e)),
    }
}

/// The stream of `config`, created when missing. A creation refused because another
/// client made the stream meanwhile takes that stream, when its subjects are the same.
async fn open_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, PoolError> {
    let name = config.name.clone();
    let subjects = config.subjects.clone();
    match js.get_or_create_stream(config).await {
        Ok(s) => Ok(s),
        Err(e) => match js.get_stream(&name).await {
            Ok(s) if s.cached_info().config.subjects == subjects => Ok(s),
            _ => Err(remote_error(
                &format!("cannot open the stream {name} (is JetStream on? nats-server -js)"),
                e,
            )),
        },
    }
}

async fn ensure_streams(js: &jetstream::Context, remote: &Remote) -> Result<(), PoolError> {
    let config = |name: &str, subject: String, retention, max_age| stream::Config {
        name: name.into(),
        subjects: vec![subject],
        retention,
        storage: stream::StorageType::File,
        max_age,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    };
    let day = Duration::from_secs(24 * 3600);
    let tasks = open_stream(
        js,
        config(
            TASKS_STREAM,
            TASKS_SUBJECT.into(),
            stream::RetentionPolicy::WorkQueue,
            7 * day,
        ),
    )
    .await?;
    open_stream(
        js,
        config(
            RESULTS_STREAM,
            format!("{RESULTS_PREFIX}.*"),
            stream::RetentionPolicy::WorkQueue,
            day,
        ),
    )
    .await?;
    open_stream(
        js,
        config(
            DEAD_STREAM,
            format!("{DEAD_PREFIX}.*"),
            stream::RetentionPolicy::Limits,
            7 * day,
        ),
    )
    .await?;
    let agents = consumer::pull::Config {
        durable_name: Some(AGENTS_CONSUMER.into()),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: remote.ack_wait,
        max_deliver: -1,
        max_ack_pending: 100_000,
        max_waiting: 4096,
        ..Default::default()
    };
    match tasks.get_or_create_consumer(AGENTS_CONSUMER, agents).await {
        Ok(_) => Ok(()),
        // Another client or agent made it meanwhile.
        Err(e) => tasks
            .get_consumer::<consumer::pull::Config>(AGENTS_CONSUMER)
            .await
            .map(drop)
            .map_err(|_| remote_error("cannot open the agents' consumer", e)),
    }
}

/// The `user:password@` of the first server of a URL (`nats://u:p@host:4222,...`).
fn user_pass(url: &str) -> Option<(String, String)> {
    let first = url.split(',').next()?;
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (user, pass) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    Some((user.to_string(), pass.to_string()))
}

/// Hex of a full hash: a module's (or blob's) name in its store.
pub(crate) fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores `bytes` in the blob store under `name` when they are over the inline bound.
pub(crate) async fn to_blob(
    conn: &Conn,
    name: String,
    bytes: Vec<u8>,
) -> Result<wire::Blob, String> {
    if bytes.len() <= conn.max_inline {
        return Ok(wire::Blob::Inline(bytes));
    }
    let hash = *blake3::hash(&bytes).as_bytes();
    let len = bytes.len() as u64;
    conn.blobs
        .put(name.as_str(), &mut bytes.as_slice())
        .await
        .map_err(|e| format!("cannot store a payload of {len} bytes in {BLOBS_BUCKET}: {e}"))?;
    Ok(wire::Blob::Stored { name, len, hash })
}

/// The bytes of a blob (read from the store, bounded by `max` and checked against its
/// hash), and the name to delete once it is used.
pub(crate) async fn from_blob(
    conn: &Conn,
    blob: wire::Blob,
    max: u64,
) -> Result<(Vec<u8>, Option<String>), String> {
    match blob {
        wire::Blob::Inline(bytes) => Ok((bytes, None)),
        wire::Blob::Stored { name, len, hash } => {
            if len > max {
                return Err(format!(
                    "a stored payload of {len} bytes is over the cap of {max} bytes"
                ));
            }
            let bytes = read_object(&conn.blobs, &name, max).await?;
            if blake3::hash(&bytes).as_bytes() != &hash {
                return Err(format!("the stored payload {name} does not match its hash"));
            }
            Ok((bytes, Some(name)))
        }
    }
}

/// Reads an object whole, refusing one over `max` bytes.
pub(crate) async fn read_object(
    store: &object_store::ObjectStore,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, String> {
    use tokio::io::AsyncReadExt;
    let object = store
        .get(name)
        .await
        .map_err(|e| format!("cannot fetch {name} from the object store: {e}"))?;
    if object.info().size as u64 > max {
        return Err(format!(
            "{name} in the object store is {} bytes, over the cap of {max} bytes",
            object.info().size
        ));
    }
    let mut bytes = Vec::new();
    object
        .take(max + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| format!("cannot read {name} from the object store: {e}"))?;
    if bytes.len() as u64 > max {
        return Err(format!(
            "{name} in the object store is over the cap of {max} bytes"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_and_password_come_from_the_url() {
        assert_eq!(
            super::user_pass("nats://alice:s3cret@10.0.0.1:4222,nats://b:4222"),
            Some(("alice".into(), "s3cret".into()))
        );
        assert_eq!(super::user_pass("nats://10.0.0.1:4222"), None);
        assert_eq!(
            super::user_pass("bob@h"),
            Some(("bob".into(), String::new()))
        );
    }
}
