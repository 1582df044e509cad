//! Remote pools over NATS JetStream beside the local pool, in the same run: submit → result
//! latency, tiny-task throughput through one agent, and throughput with 1, 2 and 3 agents on
//! tasks that wait in host-side sleeps (so that 2 cores do not hide the scaling). Needs
//! `nats-server` (the Debian package) on `PATH`, else skipped with a note. Everything is on
//! loopback: this machine has network namespaces and veth links, but its kernel has no
//! `netem` qdisc, so no added delay is measured (the notes say so).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use wasmpool::{Pool, Remote};

use super::{progress, submit_latency, Ctx};
use crate::report::Figures;

/// A `nats-server` of this run on a free loopback port, JetStream in a temporary directory.
struct Server {
    child: Child,
    dir: std::path::PathBuf,
    url: String,
}

impl Server {
    fn start(ctx: &Ctx) -> anyhow::Result<Server> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let dir = ctx
            .target
            .join(format!("bench/nats-{}", std::process::id()));
        let mut child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("start nats-server")?;
        let stderr = child.stderr.take().context("nats-server's stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .context("nats-server did not say it is ready")?;
        Ok(Server {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `wasmpool agent` processes, stopped (SIGTERM, then waited for) when dropped.
struct Agents(Vec<Child>);

impl Agents {
    fn add(&mut self, program: &std::path::Path, url: &str, workers: usize) -> anyhow::Result<()> {
        let name = format!("bench-{}", self.0.len() + 1);
        self.0.push(
            Command::new(program)
                .args(["agent", "--nats", url, "--name", &name])
                .args(["--workers", &workers.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("start wasmpool agent")?,
        );
        Ok(())
    }
}

impl Drop for Agents {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let pid = rustix::process::Pid::from_raw(c.id() as i32);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
    }
}

/// Runs the remote workloads; returns the notes (the side-by-side table, or why skipped).
pub fn run(ctx: &Ctx, figs: &mut Figures) -> anyhow::Result<Vec<String>> {
    let which = Command::new("nats-server").arg("--version").output();
    if !matches!(which, Ok(o) if o.status.success()) {
        progress("nats", "remote pools", "SKIPPED, no nats-server".into());
        return Ok(vec![
            "remote (NATS): SKIPPED, nats-server is not installed (apt-get install nats-server)"
                .into(),
        ]);
    }
    let Some(program) = ctx.worker_program() else {
        return Ok(vec![
            "remote (NATS): SKIPPED, no target/release/wasmpool: run `cargo build --release`"
                .into(),
        ]);
    };
    let s = &ctx.sizes;
    let server = Server::start(ctx)?;
    let local = ctx.pool(true)?;
    let client = Pool::builder()
        .worker_program(&program)
        .workers(ctx.workers)
        .remote(Remote::new(&server.url))
        .build()
        .context("connect the remote pool")?;
    let mut agents = Agents(Vec::new());
    agents.add(&program, &server.url, ctx.workers)?;
    let mut lines = Vec::new();

    // Latency, one task at a time.
    for (name, pool) in [("local", &local), ("nats", &client)] {
        let m = pool.load_file(&ctx.wasm)?;
        let call = pool.call(&m, "square");
        call.submit::<i64>(1i64).wait()?; // warm: module fetched and compiled by the agent
        let (p50, p99) = submit_latency(&call, s.latency)?;
        figs.set(&format!("remote-{name}"), "submit_latency", "p50_us", p50);
        figs.set(&format!("remote-{name}"), "submit_latency", "p99_us", p99);
        progress(
            "nats",
            &format!("submit → wait, {name}"),
            format!("p50 {p50:.0} µs, p99 {p99:.0} µs"),
        );
        lines.push(format!(
            "submit → result, one at a time ({} samples), {name:5}: p50 {p50:>7.0} µs, p99 {p99:>7.0} µs",
            s.latency
        ));
    }

    // Tiny tasks: one submit each (one message each way per task), and map (64 calls a
    // message).
    let tiny = s.stream / 2;
    for (name, pool) in [("local", &local), ("nats", &client)] {
        let m = pool.load_file(&ctx.wasm)?;
        let call = pool.call(&m, "square");
        let t = Instant::now();
        let tasks = call.submit_many::<i64, _>(0..tiny);
        for (i, task) in tasks.iter().enumerate() {
            ensure!(task.wait()? == (i * i) as i64, "square({i})");
        }
        let each = tiny as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        let out = call.map::<i64, _>(0..s.map);
        ensure!(out.iter().all(Result::is_ok), "a map call failed");
        let mapped = s.map as f64 / t.elapsed().as_secs_f64();
        figs.set(
            &format!("remote-{name}"),
            "tiny_submit",
            "tasks_per_s",
            each,
        );
        figs.set(&format!("remote-{name}"), "tiny_map", "tasks_per_s", mapped);
        progress(
            "nats",
            &format!("tiny tasks, {name}"),
            format!("{each:.0}/s one each, {mapped:.0}/s map"),
        );
        let who = if name == "nats" {
            "nats, one agent"
        } else {
            "local pool"
        };
        lines.push(format!(
            "square, {tiny} one task each / map ×{}, {who:15}: {each:>8.0} / {mapped:>8.0} tasks/s",
            s.map
        ));
    }

    // Host-side sleeps: 1, 2, 3 agents of 2 workers each (and the local pool of 2).
    let sleepers = if s.quick { 60 } else { 240 };
    let sleep_ms = 50i64;
    let hostile = ctx
        .root
        .join("guests/target/wasm32-wasip1/release/hostile.wasm");
    drop(agents);
    let mut agents = Agents(Vec::new());
    let local2 = Pool::builder()
        .worker_program(&program)
        .workers(2)
        .build()?;
    let mut rates = Vec::new();
    for n in 0..=3usize {
        let pool = if n == 0 { &local2 } else { &client };
        if n > 0 {
            agents.add(&program, &server.url, 2)?;
        }
        let m = pool.load_file(&hostile)?;
        let call = pool.call(&m, "sleep_ms");
        // Warm every agent (each fetches and compiles the module once).
        for t in call.submit_many::<i64, _>(std::iter::repeat_n(1i64, 4 * n.max(1))) {
            t.wait()?;
        }
        let t = Instant::now();
        for task in call.submit_many::<i64, _>(std::iter::repeat_n(sleep_ms, sleepers)) {
            ensure!(task.wait()? == sleep_ms, "sleep_ms");
        }
        let rate = sleepers as f64 / t.elapsed().as_secs_f64();
        let who = if n == 0 {
            "local pool, 2 workers".to_string()
        } else {
            format!("{n} agent(s) × 2 workers")
        };
        figs.set(
            "remote-nats",
            &format!("sleep_{n}_agents"),
            "tasks_per_s",
            rate,
        );
        progress(
            "nats",
            &format!("sleep_ms({sleep_ms}), {who}"),
            format!("{rate:.1} tasks/s"),
        );
        rates.push(format!("{who}: {rate:.1}"));
    }
    lines.push(format!(
        "sleep_ms({sleep_ms}) ×{sleepers} (ideal {:.0}/s per worker) — {}",
        1000.0 / sleep_ms as f64,
        rates.join(", ")
    ));
    lines.push(
        "netem: not measured — network namespaces and veth links work here, but the kernel has no netem qdisc (`tc qdisc add … netem` → \"Specified qdisc kind is unknown\")".into(),
    );
    client.shutdown();
    local.shutdown();
    local2.shutdown();
    drop(agents);
    drop(server);
    Ok(lines
        .into_iter()
        .map(|l| format!("remote (NATS, loopback): {l}"))
        .collect())
}
