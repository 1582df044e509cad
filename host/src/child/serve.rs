//! The worker process's main loop (`wasmpool __worker`): read requests from stdin, run tasks
//! one at a time in the sandbox, write replies to stdout. The main thread reads the pipe
//! itself (a request wakes the thread that runs it, no hand-off); a thread of its own reads
//! cancels from [`protocol::CANCEL_FD`] and acts on them at once. Replies are flushed
//! whenever no request is waiting, so bursts travel in batches.

use std::io::{BufReader, BufWriter, Write};
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::mount::Mount;
use crate::protocol::{self, Handshake, Reply, Request};
use crate::sandbox::{CallEnd, Forward, HostLink, Interrupter, Sandbox, Scratch};
use crate::walls::{harden, landlock, seccomp};

/// Longest a finished task's reply waits in the worker's buffer while more tasks are queued.
const FLUSH_EVERY: Duration = Duration::from_micros(200);

/// The same for the outcomes of coalesced calls (`Reply::Calls`). Longer: such calls are
/// queued deep (the dispatcher sends them only when it has more work than workers), and
/// every flush costs a wake-up of the host's reply reader, its dispatcher and the waiting
/// thread; at 200 µs those were about a sixteenth of the CPU time of a stream of tiny
/// calls (measured: 500 µs–600 µs costs 6 % less CPU than 200 µs). The dispatcher's queue
/// for a worker holds 2 ms of work and is refilled at half, so this stays well inside it.
/// (While a call holds up the main thread, [`Held`]'s thread sends what waits.)
const FLUSH_CALLS_EVERY: Duration = Duration::from_micros(500);

/// The walls a worker raises while it is still one thread, in order: no inherited fds, its
/// own `/proc` files opened, no privileges (`user` when the host is root), die with the
/// host, no new privileges, rlimits, not dumpable, Landlock. Returns where command
/// files may live and the resident-memory probe. (The seccomp filter comes later, once the
/// runtime is set up: [`seccomp::install`] with `files` when the scratch is a directory.)
pub fn raise_walls(
    user: Option<harden::WorkerUser>,
    scratch: Option<PathBuf>,
    mounts: &[Mount],
) -> std::io::Result<(Scratch, RssProbe)> {
    harden::close_inherited_fds(&[protocol::CANCEL_FD, protocol::DESCRIPTOR_FD])?;
    // Its own /proc files first: a change of user makes the kernel mark the process
    // non-dumpable, and a non-dumpable process's /proc files belong to root —
    // `/proc/self/pagemap` (kept by wasmtime for its slot resets; checks that the kernel has
    // PAGEMAP_SCAN) could no longer be opened, and every slot reset would fall back to
    // clearing memory (3.5× the cost of a small task, measured).
    let rss = RssProbe::open()?;
    let _ = wasmtime::PoolingAllocationConfig::is_pagemap_scan_available();
    // Before the parent-death signal, which a change of credentials clears.
    harden::drop_privileges(user)?;
    harden::die_with_parent();
    harden::no_new_privs()?;
    harden::limit_resources(None)?;
    harden::ignore_file_size_signal();
    // Whatever the user: no process of the same user may trace it or read its memory.
    harden::not_dumpable()?;
    // Still one thread: the Landlock ruleset binds every thread started from here on.
    let scratch = match (landlock::confine(scratch.as_deref(), mounts), scratch) {
        (Ok(()), Some(dir)) => Scratch::Dir(dir),
        (Ok(()), None) => Scratch::Unavailable("the host gave it no scratch directory".into()),
        (Err(why), _) => Scratch::Unavailable(why),
    };
    Ok((scratch, rss))
}

/// Runs the worker until the host closes its stdin (or dies). `host` is the host's
/// handshake (its protocol and version already checked: the engine part is checked here,
/// once the engines exist); `user` is who to become when the host is root; `scratch` is the
/// directory the host made for this worker's command files; `mounts` the pool's mounts.
pub fn serve(
    host: &Handshake,
    user: Option<harden::WorkerUser>,
    scratch: Option<PathBuf>,
    mounts: std::io::Result<Vec<Mount>>,
) -> std::io::Result<()> {
    // Walls for the mounts if they could be read (none otherwise: it stops below).
    let (scratch, mut rss) = raise_walls(user, scratch, mounts.as_deref().unwrap_or(&[]))?;
    let files = matches!(scratch, Scratch::Dir(_));
    // The protocol owns fd 1; guests never touch it (their stdout is captured in memory, or
    // streamed as `Output` replies). The main loop and streaming pipes share one writer.
    // SAFETY: fd 1 is the protocol pipe the host gave this process, open for its whole
    // life; nothing else here writes to it (std's stdout is never used in a worker), so this
    // `File` is its only owner.
    let fd1 = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(1) };
    let out = Arc::new(Mutex::new(Writer {
        w: BufWriter::with_capacity(64 << 10, fd1),
        calls: protocol::CallsReply::default(),
    }));
    let link = HostLink {
        forward: forward_to(out.clone()),
    };
    let mut sandbox = Sandbox::new(scratch, link)
        .map_err(|e| std::io::Error::other(format!("cannot create the sandbox: {e:#}")))?;
    if let Err(message) = host.check_engine(&sandbox.engine_digest()) {
        eprintln!("{message}");
        std::process::exit(protocol::EXIT_VERSION_MISMATCH);
    }
    sandbox.set_mounts(mounts?);
    read_cancels(sandbox.interrupter())?;
    // Knows when a finished task's reply sits in `out`'s buffer; sends it from a thread of
    // its own when the main thread is held up in a guest.
    let held = Held::start(out.clone())?;
    let mut requests = BufReader::with_capacity(64 << 10, std::io::stdin().lock());
    let mut buf = Vec::new();
    // Once: every reply names its worker, and getpid is a system call.
    let pid = std::process::id();
    // Start the WASI runtime's threads now: after the filter, no new files may be opened
    // (it reads the CPU count from /sys and /proc when it starts).
    wasmtime_wasi::runtime::in_tokio(async {});
    seccomp::install(files)?;
    {
        let mut out = lock(&out);
        protocol::write(&mut out.w, &Reply::Ready { pid })?;
        out.w.flush()?;
    }
    let mut frame = Vec::new();
    // Whether this worker asked to be replaced.
    let mut retiring = false;
    loop {
        // How long replies may wait after this request.
        let mut flush_every = FLUSH_EVERY;
        let request = match protocol::read::<_, Request>(&mut requests, &mut buf) {
            Ok(Some(request)) => request,
            Ok(None) => break,
            Err(e) => {
                eprintln!("wasmpool worker: bad request stream: {e}");
                std::process::exit(3);
            }
        };
        match request {
            Request::Load {
                module,
                metering,
                artifact,
            } => {
                if let Err(e) = sandbox.load(module, metering, &artifact) {
                    // Tasks of a module that failed to load report it; the worker goes on.
                    eprintln!("wasmpool worker: cannot load module {module}: {e:#}");
                }
            }
            Request::LoadFile { module, metering } => {
                let loaded = protocol::receive_descriptor(module, metering)
                    .map_err(wasmtime::Error::from)
                    .and_then(|file| sandbox.load_file(module, metering, file));
                if let Err(e) = loaded {
                    eprintln!("wasmpool worker: cannot load module {module}: {e:#}");
                }
            }
            Request::Run(req) => {
                let (outcome, mut stats) = sandbox.run(&req);
                stats.worker = pid;
                stats.worker_rss = rss.read();
                frame.clear();
                protocol::encode(
                    &Reply::Done {
                        task: req.task,
                        outcome,
                        stats,
                    },
                    &mut frame,
                )?;
                if sandbox.scratch_spoiled() && !retiring {
                    protocol::encode(&Reply::Retire, &mut frame)?;
                    retiring = true;
                }
                lock(&out).w.write_all(&frame)?;
            }
            Request::Calls(mut req) => {
                // The calls' outcomes go out together (`Reply::Calls`): when
                // `FLUSH_CALLS_EVERY` has passed since the last flush (from here, or from
                // `Held`'s thread while a call holds up this one), and at the end of the
                // request if no request waits.
                flush_every = FLUSH_CALLS_EVERY;
                let mut failed = Ok(());
                sandbox.run_calls(&mut req, |task, end, mut stats, now| {
                    stats.worker = pid;
                    stats.worker_rss = rss.read_at(now);
                    let mut out = lock(&out);
                    let mut sent = match &end {
                        CallEnd::Numbers(values) => out.calls.push_numbers(task, values, &stats),
                        CallEnd::Outcome(outcome) => out.calls.push(task, outcome, &stats),
                    };
                    if held.since_flush(now) >= FLUSH_CALLS_EVERY {
                        sent = sent
                            .and_then(|()| out.send_calls())
                            .and_then(|()| out.w.flush());
                        held.flushed(now);
                    } else {
                        held.hold();
                    }
                    if failed.is_ok() {
                        failed = sent;
                    }
                });
                failed?;
                let mut out = lock(&out);
                out.send_calls()?;
                // As after a single command's `Done`: a run of the frame left its files.
                if sandbox.scratch_spoiled() && !retiring {
                    frame.clear();
                    protocol::encode(&Reply::Retire, &mut frame)?;
                    out.w.write_all(&frame)?;
                    retiring = true;
                }
            }
            Request::Cancel { task } => sandbox.interrupter().cancel(task),
        }
        // Replies go out in batches, but never sit long: the host refills this worker's
        // queue as soon as it hears back.
        let now = Instant::now();
        if !protocol::frame_buffered(requests.buffer()) || held.since_flush(now) >= flush_every {
            let mut out = lock(&out);
            out.w.flush()?;
            held.flushed(now);
        } else {
            held.hold();
        }
    }
    lock(&out).w.flush()?;
    Ok(())
}

/// The worker's protocol output (fd 1), and the outcomes of coalesced calls not sent yet.
struct Writer {
    w: BufWriter<std::fs::File>,
    /// The finished calls of the running `Calls` request not sent yet, encoded.
    calls: protocol::CallsReply,
}

impl Writer {
    /// Writes the finished calls held (if any) as one `Reply::Calls` into the buffer.
    fn send_calls(&mut self) -> std::io::Result<()> {
        self.calls.write_to(&mut self.w)
    }
}

type Out = Arc<Mutex<Writer>>;

fn lock(out: &Out) -> std::sync::MutexGuard<'_, Writer> {
    out.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sends a streaming task's output to the host at once, as `Output` replies. (A failed write
/// means the host is gone; the main loop finds out on its next write.)
fn forward_to(out: Out) -> Forward {
    Arc::new(move |task, chunk| {
        let mut frame = Vec::new();
        if protocol::encode(&Reply::Output { task, chunk }, &mut frame).is_ok() {
            let mut out = lock(&out);
            let _ = out.w.write_all(&frame).and_then(|()| out.w.flush());
        }
    })
}

/// Replies that wait in the worker's output buffer, and a thread that sends them when the
/// main thread has not for a while. The main thread may be held up in a guest that blocks
/// in a host call (a sleep: epochs do not interrupt host code) until the host kills this
/// worker; the host must hear first which tasks finished (each has a kill deadline of its
/// own), and their results must not go down with the worker. While tasks come, the thread
/// looks every [`WATCH_EVERY`] (a wake-up per period, not a system call per task); after two
/// looks that found nothing held it sleeps until a reply is held again.
struct Held {
    out: Out,
    /// Set while a finished task's reply (or coalesced calls' outcomes) sits in `out`.
    held: AtomicBool,
    /// Set while the thread sleeps until something is held.
    idle: AtomicBool,
    /// When replies were last flushed, in nanoseconds since `base`.
    flushed_at: AtomicU64,
    base: Instant,
    thread: OnceLock<std::thread::Thread>,
}

/// How often [`Held`]'s thread looks for replies the main thread has held too long, and how
/// long is too long: a reply is sent at most about twice this late while the main thread is
/// held up (a late reply only moves the host's kill deadline of the task after it later,
/// never earlier). Each look
/// is a wake-up taken from the tasks: at 1 ms, `wasmpool run` of tiny calls was about 1 %
/// slower than with no thread.
const WATCH_EVERY: Duration = Duration::from_millis(5);

impl Held {
    fn start(out: Out) -> std::io::Result<Arc<Held>> {
        let held = Arc::new(Held {
            out,
            held: AtomicBool::new(false),
            idle: AtomicBool::new(false),
            flushed_at: AtomicU64::new(0),
            base: Instant::now(),
            thread: OnceLock::new(),
        });
        let flusher = held.clone();
        let thread = std::thread::Builder::new()
            .name("wasmpool-flush".into())
            .spawn(move || flusher.run())?;
        let _ = held.thread.set(thread.thread().clone());
        Ok(held)
    }

    /// How long since replies were last flushed.
    fn since_flush(&self, now: Instant) -> Duration {
        let at = self.base + Duration::from_nanos(self.flushed_at.load(Ordering::Relaxed));
        now.saturating_duration_since(at)
    }

    /// Replies were flushed at `now` (with `out` locked).
    fn flushed(&self, now: Instant) {
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        self.flushed_at
            .store(u64::try_from(nanos).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.held.store(false, Ordering::SeqCst);
    }

    /// A reply was left in the buffer: the thread sends it if nobody else does in time.
    fn hold(&self) {
        if !self.held.swap(true, Ordering::SeqCst) && self.idle.load(Ordering::SeqCst) {
            if let Some(thread) = self.thread.get() {
                thread.unpark();
            }
        }
    }

    /// The thread's loop. (A write that fails means the host is gone; the main thread finds
    /// out on its own next write.)
    fn run(&self) {
        let mut empty_looks = 0;
        loop {
            if empty_looks >= 2 {
                // Announce the sleep, then look again: a `hold` between the two unparks.
                self.idle.store(true, Ordering::SeqCst);
                if !self.held.load(Ordering::SeqCst) {
                    std::thread::park();
                }
                self.idle.store(false, Ordering::SeqCst);
                empty_looks = 0;
            }
            std::thread::park_timeout(WATCH_EVERY);
            if !self.held.load(Ordering::SeqCst) {
                empty_looks += 1;
                continue;
            }
            empty_looks = 0;
            if self.since_flush(Instant::now()) < WATCH_EVERY {
                continue;
            }
            let mut out = lock(&self.out);
            if self.held.load(Ordering::SeqCst) {
                let _ = out.send_calls().and_then(|()| out.w.flush());
                self.flushed(Instant::now());
            }
        }
    }
}

/// Reads cancels on a thread of their own, so they reach a task while it runs. (Without the
/// pipe — a worker started by hand — there are no cancels; the host's kill still stops it.)
fn read_cancels(interrupter: Arc<Interrupter>) -> std::io::Result<()> {
    let fd = protocol::CANCEL_FD;
    // SAFETY: only asks whether the descriptor is open.
    if rustix::io::fcntl_getfd(unsafe { rustix::fd::BorrowedFd::borrow_raw(fd) }).is_err() {
        return Ok(());
    }
    // SAFETY: the host placed the read end of the cancel pipe at this descriptor; it was kept
    // open by `close_inherited_fds` and nothing else in this process refers to it.
    let pipe = unsafe { std::fs::File::from_raw_fd(fd) };
    std::thread::Builder::new()
        .name("wasmpool-cancels".into())
        .spawn(move || {
            let mut input = BufReader::new(pipe);
            let mut buf = Vec::new();
            loop {
                match protocol::read::<_, Request>(&mut input, &mut buf) {
                    Ok(Some(Request::Cancel { task })) => interrupter.cancel(task),
                    Ok(None) => return,
                    Ok(Some(_)) | Err(_) => {
                        eprintln!("wasmpool worker: bad cancel stream");
                        std::process::exit(3);
                    }
                }
            }
        })?;
    Ok(())
}

/// Reads this process's resident memory for the host's `max_worker_rss`, at most every
/// `RSS_EVERY` (a read is a system call; tasks can be much shorter).
pub struct RssProbe {
    /// `/proc/self/statm`, opened before the seccomp filter forbids opening files.
    statm: std::fs::File,
    read_at: Instant,
    bytes: u64,
}

/// How stale a reported resident-memory figure may be.
const RSS_EVERY: Duration = Duration::from_millis(10);

impl RssProbe {
    fn open() -> std::io::Result<Self> {
        let statm = std::fs::File::open("/proc/self/statm")?;
        let mut probe = RssProbe {
            statm,
            read_at: Instant::now(),
            bytes: 0,
        };
        probe.bytes = probe.measure();
        Ok(probe)
    }

    fn read(&mut self) -> u64 {
        self.read_at(Instant::now())
    }

    /// [`Self::read`] when the time is `now`.
    fn read_at(&mut self, now: Instant) -> u64 {
        if now.saturating_duration_since(self.read_at) >= RSS_EVERY {
            self.bytes = self.measure();
            self.read_at = now;
        }
        self.bytes
    }

    /// The second field of statm: resident pages.
    fn measure(&self) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 128];
        let n = self.statm.read_at(&mut buf, 0).unwrap_or(0);
        let pages = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0);
        pages * rustix::param::page_size() as u64
    }
}
