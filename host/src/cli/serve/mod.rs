//! `wasmpool serve`: the pool as an HTTP service (axum on hyper, on a tokio runtime this
//! command alone starts), built only on the library's public API.
//!
//! - [`routes`]: the router and the request handlers (modules, `call`, `exec`, health,
//!   metrics), the auth/drain/metrics layer, and how limits in a request are checked
//!   against the server's maxima.
//! - [`map`]: `POST /v1/modules/{id}/map/{export}`, JSON lines streamed both ways.
//! - [`store`]: uploaded modules by content hash, in memory and in `--modules-dir`, bounded
//!   and evicted least-recently-used.
//! - [`body`]: request bodies read under a size cap and a read timeout.
//! - [`auth`]: the bearer token, compared in constant time.
//! - [`metrics`]: the Prometheus text of `/metrics`.
//! - [`error`]: an HTTP error with a JSON body that says what was wrong.
//! - [`signals`]: SIGTERM and SIGINT, for the drain.

mod auth;
mod body;
mod error;
mod map;
mod metrics;
mod routes;
pub(super) mod signals;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::sync::Notify;
use wasmpool::{Limits, Pool};

use super::{Limit, EXIT_OK, EXIT_TASK_FAILED};

const SERVE_HELP: &str = "Routes: POST /v1/modules (body: a wasm or WAT module) → {\"id\", \
\"exports\", \"command\"}; POST /v1/modules/{id}/call/{export} (body: {\"input\": JSON, \
\"fuel\", \"timeout_ms\", \"memory_bytes\"}) → a `wasmpool run` result line; POST \
/v1/modules/{id}/map/{export}[?fuel=&timeout_ms=&memory_bytes=] (body: JSON lines) → result \
lines streamed in input order; POST /v1/modules/{id}/exec (body: an `exec --specs` line, \
files as {\"text\"} or {\"base64\"}) → the program's exit code, output and /out files; GET and \
DELETE /v1/modules/{id}; GET /healthz; GET /metrics. Every route but /healthz needs \
`Authorization: Bearer TOKEN` when --token-file is given (required unless --listen is a \
loopback address). SIGTERM or SIGINT drains: new requests get 503, those in flight finish \
(within --drain-timeout), then it exits. Exit status: 0 after a drain that finished; 1 when \
--drain-timeout cut requests off; 125 for a usage error or a bad configuration.";

#[derive(clap::Args)]
#[command(after_help = SERVE_HELP)]
pub struct ServeArgs {
    /// The address to listen on; port 0 picks a free port. The address bound is printed on
    /// stderr as `wasmpool: listening on http://ADDR`.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Number of worker processes (default: CPU count).
    #[arg(long, value_parser = super::parse_workers)]
    workers: Option<usize>,
    /// A file holding the bearer token clients send (`Authorization: Bearer TOKEN`), at
    /// least 16 bytes; surrounding whitespace is ignored. Required when --listen is not a
    /// loopback address.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Largest wall-clock limit a request may ask for, and the default of those that ask
    /// for none (`none`: no limit).
    #[arg(long, default_value = "30s", value_parser = super::parse_timeout)]
    max_timeout: Limit<Duration>,
    /// Largest memory limit a request may ask for, and the default.
    #[arg(long, default_value = "512MiB", value_parser = super::parse_memory)]
    max_memory: Limit<u64>,
    /// Largest fuel a request may ask for, and the default (default: none, no fuel
    /// metering unless a request asks for it).
    #[arg(long, default_value = "none", value_parser = super::parse_fuel)]
    max_fuel: Limit<u64>,
    /// Largest request body (a call's input, a map's whole stream of lines, an exec spec);
    /// a larger one gets 413 before it is read.
    #[arg(long, default_value = "64MiB", value_parser = parse_size_some)]
    max_body: u64,
    /// Largest module an upload may carry (separate from --max-body: an interpreter
    /// compiled to wasm can be 100 MB).
    #[arg(long, default_value = "256MiB", value_parser = parse_size_some)]
    max_module_size: u64,
    /// Calls waiting in the pool's queue before `call` and `exec` get 429 (a `map` waits
    /// for room instead).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_queued: u64,
    /// Keep uploaded modules here across restarts (made if missing); without it they live
    /// in memory only.
    #[arg(long, value_name = "DIR")]
    modules_dir: Option<PathBuf>,
    /// Bound on the uploaded modules' total size; past it the least recently used are
    /// evicted (from memory and --modules-dir).
    #[arg(long, default_value = "2GiB", value_parser = parse_size_some)]
    modules_limit: u64,
    /// A client that sends nothing for this long while a request (its headers or body) is
    /// due, or reads nothing of a streamed answer for this long, is cut off.
    #[arg(long, default_value = "30s", value_parser = parse_duration_some)]
    read_timeout: Duration,
    /// After SIGTERM or SIGINT: how long requests in flight may take to finish before the
    /// server exits anyway (their tasks are cancelled).
    #[arg(long, default_value = "30s", value_parser = parse_duration_some)]
    drain_timeout: Duration,
    /// When run as root: the user workers run as, UID:GID, or `none` (default: 65534:65534).
    #[arg(long, value_parser = super::parse_user)]
    worker_user: Option<Limit<wasmpool::WorkerUser>>,
}

fn parse_size_some(s: &str) -> Result<u64, String> {
    match super::parse_size(s)?.0 {
        Some(0) => Err("a size of 0 leaves no room; give a size such as 64MiB".into()),
        Some(n) => Ok(n),
        None => Err("this size cannot be `none`; give a size such as 64MiB".into()),
    }
}

fn parse_duration_some(s: &str) -> Result<Duration, String> {
    match super::parse_duration(s)?.0 {
        Some(d) if d.is_zero() => {
            Err("a duration of 0 leaves no time; give one such as 30s".into())
        }
        Some(d) => Ok(d),
        None => Err("this duration cannot be `none`; give one such as 30s".into()),
    }
}

/// What every handler shares: the pool, the modules, the settings, and the server's state.
pub struct App {
    pub pool: Pool,
    pub store: store::Store,
    /// The server's maxima as limits: the pool's defaults, and the cap on a request's own.
    pub limits: Limits,
    pub max_body: u64,
    pub max_module_size: u64,
    pub read_timeout: Duration,
    pub token: Option<auth::Token>,
    pub metrics: metrics::Metrics,
    pub draining: AtomicBool,
    /// Requests being answered (a streamed answer until its end), for the drain.
    in_flight: AtomicUsize,
    idle: Notify,
}

/// One request in flight: counted while it lives (see [`App::in_flight`]).
pub struct InFlight(Arc<App>);

impl InFlight {
    pub fn new(app: &Arc<App>) -> Self {
        app.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(app.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl App {
    /// Waits until no request is in flight.
    async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if self.in_flight.load(Ordering::SeqCst) == 0 {
                return;
            }
            idle.await;
        }
    }
}

pub fn serve(args: ServeArgs) -> anyhow::Result<i32> {
    signals::ignore_sigpipe();
    // Checked before anything starts: a public listener without a token is refused.
    let token = match &args.token_file {
        Some(path) => Some(auth::Token::load(path)?),
        None if auth::needs_token(&args.listen) => bail!(
            "--listen {} is not a loopback address: give --token-file FILE so that only \
             clients with the token are served (or listen on 127.0.0.1)",
            args.listen
        ),
        None => None,
    };
    if args.max_module_size > args.modules_limit {
        bail!(
            "--max-module-size ({} bytes) is over --modules-limit ({} bytes): such a module \
             could never be kept",
            args.max_module_size,
            args.modules_limit
        );
    }
    let limits = Limits::default()
        .with_fuel(args.max_fuel.0)
        .with_timeout(args.max_timeout.0)
        .with_memory(args.max_memory.0);
    let mut builder = Pool::builder()
        .limits(limits)
        .max_queued(args.max_queued as usize)
        .max_module_size(usize::try_from(args.max_module_size).unwrap_or(usize::MAX));
    if let Some(n) = args.workers {
        builder = builder.workers(n);
    }
    if let Some(Limit(u)) = args.worker_user {
        builder = builder.worker_user(u);
    }
    // The pool (and its threads) before the runtime's: `worker_main` ran first in `main`.
    let pool = builder.build()?;
    let store = store::Store::open(pool.clone(), args.modules_dir.clone(), args.modules_limit)?;
    let app = Arc::new(App {
        pool: pool.clone(),
        store,
        limits,
        max_body: args.max_body,
        max_module_size: args.max_module_size,
        read_timeout: args.read_timeout,
        token,
        metrics: metrics::Metrics::default(),
        draining: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        idle: Notify::new(),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("wasmpool-serve")
        .build()
        .context("cannot start the async runtime")?;
    let drained = runtime.block_on(run(app, &args))?;
    // Whatever is still in flight (only past --drain-timeout) goes with the runtime: its
    // tasks are dropped, so cancelled. Then the workers stop.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if drained {
        pool.shutdown();
        Ok(EXIT_OK)
    } else {
        pool.terminate();
        Ok(EXIT_TASK_FAILED)
    }
}

/// Serves until SIGTERM or SIGINT, then drains; whether the drain finished in time.
async fn run(app: Arc<App>, args: &ServeArgs) -> anyhow::Result<bool> {
    let mut stop = signals::termination()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let router = routes::router(app.clone());
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(args.read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    eprintln!(
        "wasmpool: listening on http://{addr} ({} workers{})",
        app.pool.workers(),
        if app.token.is_some() {
            ", token required"
        } else {
            ""
        }
    );
    let accept = |stream: tokio::net::TcpStream| {
        let _ = stream.set_nodelay(true);
        let conn = http.serve_connection(
            TokioIo::new(stream),
            TowerToHyperService::new(router.clone()),
        );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    };
    loop {
        tokio::select! {
            conn = listener.accept() => match conn {
                Ok((stream, _)) => accept(stream),
                // Out of descriptors and the like: the listener stays; try again shortly.
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    // Draining: requests still arriving get 503 (the listener stays open for them to be
    // told so) while those in flight finish.
    app.draining.store(true, Ordering::SeqCst);
    eprintln!(
        "wasmpool: draining: {} request(s) in flight, waiting up to {}",
        app.in_flight.load(Ordering::SeqCst),
        humantime::format_duration(args.drain_timeout)
    );
    let deadline = tokio::time::sleep(args.drain_timeout);
    tokio::pin!(deadline);
    let drained = loop {
        tokio::select! {
            () = app.drained() => break true,
            () = &mut deadline => break false,
            conn = listener.accept() => if let Ok((stream, _)) = conn { accept(stream) },
        }
    };
    drop(listener);
    if drained {
        eprintln!("wasmpool: drained; exiting");
    } else {
        eprintln!(
            "wasmpool: {} request(s) still in flight at --drain-timeout; exiting anyway",
            app.in_flight.load(Ordering::SeqCst)
        );
    }
    // Connections still open close once their current answer is written (briefly).
    let _ = tokio::time::timeout(Duration::from_secs(1), graceful.shutdown()).await;
    Ok(drained)
}
