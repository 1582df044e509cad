//! Remote pools over NATS JetStream: each test starts its own `nats-server` (JetStream, file
//! storage in a temporary directory, a free loopback port) and stops it; agents run in this
//! process (`remote::agent::serve`, whose pool the test can reach) or as `wasmpool agent`
//! processes (to SIGKILL and SIGTERM).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::{builder, guest, WORKER};
use wasmpool::remote::agent::{self, AgentOptions, AgentSummary};
use wasmpool::remote::wire::{self, Blob, DeadLetter, ResultMsg, Run, TaskBody, TaskMsg};
use wasmpool::{CommandSpec, Input, Pool, PoolError, Remote, Task, TaskError, TaskSpec, Value};

/// A `nats-server` of this test, killed (and its store removed) when dropped.
struct Nats {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    config: Option<std::path::PathBuf>,
}

impl Nats {
    fn start() -> Nats {
        Nats::start_with(None)
    }

    /// A server with these lines in its configuration file.
    fn start_with(config: Option<&str>) -> Nats {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = config.map(|text| {
            let path = dir.path().join("nats.conf");
            std::fs::write(&path, text).expect("write the server's configuration");
            path
        });
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut nats = Nats {
            child: None,
            port,
            dir,
            config,
        };
        nats.launch();
        nats
    }

    /// Starts the server and returns once it says it is ready.
    fn launch(&mut self) {
        let mut cmd = Command::new("nats-server");
        cmd.args([
            "-a",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-js",
            "-sd",
        ])
        .arg(self.dir.path().join("store"));
        if let Some(c) = &self.config {
            cmd.arg("-c").arg(c);
        }
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nats-server is installed (apt-get install nats-server; .ci/run does)");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Server is ready") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(30))
            .expect("nats-server says it is ready");
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
    }
}

const ACK_WAIT: Duration = Duration::from_secs(1);

fn remote(nats: &Nats) -> Remote {
    Remote::new(nats.url())
        .ack_wait(ACK_WAIT)
        .reconnect_bound(Duration::from_secs(60))
}

/// A client pool on `nats`.
fn client(nats: &Nats) -> Pool {
    builder()
        .remote(remote(nats))
        .build()
        .expect("connect the client")
}

/// An agent in this process: its pool is the test's to look into.
struct InAgent {
    pool: Pool,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<AgentSummary, PoolError>>>,
}

fn agent_in(nats: &Nats, name: &str, workers: usize) -> InAgent {
    let pool = builder()
        .workers(workers)
        .build()
        .expect("the agent's pool");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let options = AgentOptions {
        remote: remote(nats),
        name: name.into(),
        drain_timeout: Duration::from_secs(30),
    };
    let p = pool.clone();
    let thread = std::thread::spawn(move || {
        agent::serve(options, p, async move {
            let _ = rx.await;
        })
    });
    InAgent {
        pool,
        stop: Some(tx),
        thread: Some(thread),
    }
}

impl InAgent {
    fn stop(mut self) -> AgentSummary {
        let _ = self.stop.take().unwrap().send(());
        self.thread
            .take()
            .unwrap()
            .join()
            .unwrap()
            .expect("the agent ran")
    }
}

impl Drop for InAgent {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `wasmpool agent` as a process (killed when dropped).
struct ProcAgent(Child);

fn agent_process(nats: &Nats, name: &str, workers: usize, extra: &[&str]) -> ProcAgent {
    let child = common::cli()
        .args(["agent", "--nats", &nats.url(), "--name", name])
        .args(["--workers", &workers.to_string(), "--ack-wait", "1s"])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmpool agent");
    ProcAgent(child)
}

impl ProcAgent {
    fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.0.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).expect("signal the agent");
    }

    /// Waits for the agent's exit (bounded); its status and what it printed.
    fn wait(mut self) -> (std::process::ExitStatus, String) {
        let mut err = String::new();
        let stderr = self.0.stderr.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "the agent exits");
            std::thread::sleep(Duration::from_millis(20));
        };
        err.push_str(&reader.join().unwrap());
        (status, err)
    }
}

impl Drop for ProcAgent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The agents' consumer as the server sees it.
fn consumer_info(nats: &Nats) -> jetstream::consumer::Info {
    runtime().block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client);
        let mut c: jetstream::consumer::PullConsumer = js
            .get_stream(wasmpool::remote::TASKS_STREAM)
            .await
            .unwrap()
            .get_consumer(wasmpool::remote::AGENTS_CONSUMER)
            .await
            .unwrap();
        c.info().await.unwrap().clone()
    })
}

/// Waits (bounded) until `f` holds.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The task's result, waited for a bounded time: a test fails, never hangs, when a task is
/// lost.
fn answer<T: wasmpool::FromOutput>(task: &Task<T>) -> Result<T, TaskError> {
    task.wait_timeout(Duration::from_secs(60))
        .expect("the task is answered within 60 s")
}

/// Every dead letter stored so far.
fn dead_letters(nats: &Nats) -> Vec<DeadLetter> {
    runtime().block_on(async {
        use futures_util::StreamExt;
        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client);
        let stream = js.get_stream(wasmpool::remote::DEAD_STREAM).await.unwrap();
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut batch = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        while let Some(Ok(m)) = batch.next().await {
            out.push(wire::decode::<DeadLetter>(&m.payload).expect("a dead letter of ours"));
        }
        out
    })
}

#[test]
fn calls_run_on_an_agent_with_the_same_api() {
    let nats = Nats::start();
    let _agent = agent_in(&nats, "a1", 2);
    let pool = client(&nats);
    let math = pool.load_file(guest("math")).unwrap();
    // map (batched messages), submit, imap, a task error, bad input refused up front.
    let squares: Vec<i64> = pool
        .map(&math, "square", 0..500i64)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(squares, (0..500i64).map(|x| x * x).collect::<Vec<_>>());
    assert_eq!(answer(&pool.submit::<i64>(&math, "square", 12i64)), Ok(144));
    let fibs: Vec<i64> = pool
        .imap(&math, "fib", (0..20i32).collect::<Vec<_>>())
        .map(Result::unwrap)
        .collect();
    assert_eq!(fibs[10], 55);
    match answer(&pool.submit::<i32>(&math, "div", (1i32, 0i32))) {
        Err(TaskError::Trap { .. }) => {}
        other => panic!("division by zero: {other:?}"),
    }
    assert!(matches!(
        answer(&pool.submit::<i64>(&math, "nope", 1i64)),
        Err(TaskError::BadInput { .. })
    ));
    let stats = pool.stats();
    assert_eq!(stats.queued + stats.running, 0, "{stats:?}");
    pool.shutdown();
}

#[test]
fn inputs_over_the_payload_limit_travel_through_the_object_store() {
    // (The object store's chunks are 128 KiB: the limit must be above that.)
    let nats = Nats::start_with(Some("max_payload: 200000\n"));
    let _agent = agent_in(&nats, "a1", 1);
    let pool = client(&nats);
    let wc = pool.load_file(guest("wordcount")).unwrap();
    let text = "lorem ipsum dolor ".repeat(20_000); // 360 kB, over the limit
    let counts: serde_json::Value = pool
        .submit(
            &wc,
            "wordcount",
            wasmpool::Json(serde_json::json!({ "text": text })),
        )
        .wait_timeout(Duration::from_secs(60))
        .expect("answered")
        .map(|wasmpool::Json(v)| v)
        .expect("the task ran");
    assert_eq!(counts["words"], 60_000, "{counts}");
    pool.shutdown();
}

#[test]
fn a_slow_task_that_is_alive_is_never_run_twice() {
    let nats = Nats::start();
    let a1 = agent_in(&nats, "a1", 1);
    let a2 = agent_in(&nats, "a2", 1);
    let pool = client(&nats);
    let hostile = pool.load_file(guest("hostile")).unwrap();
    // Four times the AckWait: without in-progress acks the other agent would get it.
    let slept: i64 = pool
        .submit(&hostile, "sleep_ms", 4000i64)
        .wait_timeout(Duration::from_secs(60))
        .expect("answered")
        .expect("the task ran");
    assert_eq!(slept, 4000);
    let (s1, s2) = (a1.stop(), a2.stop());
    assert_eq!(s1.results + s2.results, 1, "{s1:?} {s2:?}");
    assert_eq!(s1.handed_back + s2.handed_back, 0, "{s1:?} {s2:?}");
    pool.shutdown();
}

#[test]
fn task_errors_are_results_delivered_once() {
    let nats = Nats::start();
    let a = agent_in(&nats, "a1", 2);
    let pool = client(&nats);
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let spin = pool
        .call(&hostile, "spin")
        .timeout(Duration::from_millis(200))
        .max_retries(3)
        .submit::<i64>(());
    let trap = pool
        .call(&hostile, "unreachable")
        .max_retries(3)
        .submit::<i64>(());
    assert!(matches!(answer(&spin), Err(TaskError::Timeout { .. })));
    assert!(matches!(answer(&trap), Err(TaskError::Trap { .. })));
    let s = a.stop();
    assert_eq!((s.results, s.handed_back, s.dead), (2, 0, 0), "{s:?}");
    pool.shutdown();
}

#[test]
fn a_task_that_kills_its_worker_every_time_ends_with_worker_lost_and_a_dead_letter() {
    let nats = Nats::start();
    let a = agent_in(&nats, "a1", 1);
    let pool = client(&nats);
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let task = pool
        .call(&hostile, "sleep_ms")
        .timeout(Duration::from_secs(600))
        .max_retries(2)
        .submit::<i64>(600_000i64);
    // Each time the agent's worker runs it, kill that worker (each worker once: a new
    // one has a new process id).
    let mut killed = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !task.is_done() {
        assert!(Instant::now() < deadline, "the task ends");
        if a.pool.stats().running == 1 {
            for pid in a.pool.worker_pids() {
                if killed.insert(pid) {
                    let pid = rustix::process::Pid::from_raw(pid as i32).unwrap();
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let kills = killed.len();
    match answer(&task) {
        Err(TaskError::WorkerLost { deliveries, .. }) => assert_eq!(deliveries, Some(3)),
        other => panic!("expected WorkerLost after 3 deliveries, got {other:?}"),
    }
    assert!(kills >= 3, "{kills} workers killed");
    let dead = dead_letters(&nats);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].deliveries, 3);
    assert_eq!(dead[0].task.export, "sleep_ms");
    let Blob::Inline(body) = &dead[0].task.body else {
        panic!("a small body travels inline")
    };
    let body = TaskBody::decode(body).unwrap();
    assert_eq!(
        body.run,
        Run::Call(Input::Numbers(vec![Value::I64(600_000)]))
    );
    assert_eq!(body.spec.max_retries, Some(2));
    let s = a.stop();
    assert_eq!((s.handed_back, s.dead, s.results), (2, 1, 1), "{s:?}");
    pool.shutdown();
}

#[test]
fn an_agent_killed_mid_run_has_its_tasks_finished_elsewhere() {
    let nats = Nats::start();
    let doomed = agent_process(&nats, "doomed", 2, &[]);
    let pool = client(&nats);
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let again = pool
        .call(&hostile, "sleep_ms")
        .max_retries(1)
        .submit::<i64>(1500i64);
    let once = pool
        .call(&hostile, "sleep_ms")
        .max_retries(0)
        .submit::<i64>(1500i64);
    wait_until("the doomed agent holds both tasks", || {
        consumer_info(&nats).num_ack_pending == 2
    });
    doomed.signal(rustix::process::Signal::KILL);
    drop(doomed);
    let b = agent_in(&nats, "b", 2);
    assert_eq!(answer(&again), Ok(1500), "re-run on the agent that lives");
    match answer(&once) {
        Err(TaskError::WorkerLost { deliveries, .. }) => assert_eq!(deliveries, Some(1)),
        other => panic!("a task with no retries lost with its agent: {other:?}"),
    }
    let s = b.stop();
    assert_eq!((s.results, s.dead), (2, 1), "{s:?}");
    pool.shutdown();
}

#[test]
fn an_agent_drains_on_sigterm() {
    let nats = Nats::start();
    let leaving = agent_process(&nats, "leaving", 1, &[]);
    let pool = client(&nats);
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let first = pool.submit::<i64>(&hostile, "sleep_ms", 1500i64);
    wait_until("the agent holds the first task", || {
        consumer_info(&nats).num_ack_pending == 1
    });
    let second = pool.submit::<i64>(&hostile, "sleep_ms", 10i64);
    leaving.signal(rustix::process::Signal::TERM);
    let (status, stderr) = leaving.wait();
    assert!(status.success(), "{status:?}: {stderr}");
    assert!(stderr.contains("1 results"), "{stderr}");
    assert_eq!(answer(&first), Ok(1500), "finished before the agent left");
    assert!(!second.is_done(), "the draining agent took nothing more");
    let b = agent_in(&nats, "b", 1);
    assert_eq!(answer(&second), Ok(10));
    drop(b);
    pool.shutdown();
}

#[test]
fn the_server_restarting_mid_run_loses_nothing() {
    let mut nats = Nats::start();
    let a = agent_in(&nats, "a1", 2);
    let pool = client(&nats);
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let tasks = pool
        .call(&hostile, "sleep_ms")
        .submit_many::<i64, _>(std::iter::repeat_n(20i64, 150));
    wait_until("some tasks are done", || {
        tasks.iter().filter(|t| t.is_done()).count() >= 20
    });
    nats.kill();
    nats.launch();
    for (i, t) in tasks.iter().enumerate() {
        assert_eq!(answer(t), Ok(20), "task {i}");
    }
    drop(a);
    pool.shutdown();
}

/// Clients and agents that connect to a fresh server at the same moment all race to make the
/// streams, the consumer and the stores. nats-server can refuse the loser of two concurrent
/// creations of one stream ("subjects overlap with an existing stream") although the stream
/// it asked for exists a moment later; every one of them must still connect. A round is 12
/// connections that prepare a fresh server at once: without the second look, about one
/// round in 30 had a refusal (2 to 4 in each of three runs of 80 rounds).
#[test]
fn clients_preparing_a_fresh_server_at_once_all_succeed() {
    let mut refused = Vec::new();
    for round in 0..80 {
        let nats = Nats::start();
        let url = nats.url();
        let remote = remote(&nats);
        let errors = runtime().block_on(async {
            let mut contexts = Vec::new();
            for _ in 0..12 {
                let client = async_nats::connect(&url).await.expect("connect");
                contexts.push(jetstream::new(client));
            }
            let preparing = contexts
                .iter()
                .map(|js| wasmpool::remote::prepare_server(js, &remote));
            futures_util::future::join_all(preparing).await
        });
        refused.extend(
            errors
                .into_iter()
                .filter_map(Result::err)
                .map(|e| format!("round {round}: {e}")),
        );
    }
    assert!(refused.is_empty(), "{refused:#?}");
}

#[test]
fn bad_urls_and_credentials_are_clear_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let err = builder()
        .remote(Remote::new(&url).connect_timeout(Duration::from_secs(2)))
        .build()
        .unwrap_err();
    assert!(matches!(err, PoolError::Remote(_)), "{err:?}");
    assert!(err.to_string().contains(&url), "{err}");

    let nats = Nats::start_with(Some("authorization { user: alice, password: s3cret }\n"));
    let wrong = format!("nats://alice:wrong@127.0.0.1:{}", nats.port);
    let err = builder()
        .remote(Remote::new(&wrong).connect_timeout(Duration::from_secs(2)))
        .build()
        .unwrap_err();
    assert!(
        err.to_string().to_lowercase().contains("authori"),
        "names the refusal: {err}"
    );
    let right = format!("nats://alice:s3cret@127.0.0.1:{}", nats.port);
    builder()
        .remote(Remote::new(&right))
        .build()
        .expect("the right password connects")
        .shutdown();
}

#[test]
fn foreign_messages_and_unknown_modules_fail_alone() {
    let nats = Nats::start();
    let a = agent_in(&nats, "a1", 1);
    let pool = client(&nats);
    let math = pool.load_file(guest("math")).unwrap();
    assert_eq!(answer(&pool.submit::<i64>(&math, "square", 3i64)), Ok(9));
    // On the task subject: a stranger's message, one of another wire version, a task of a
    // module nobody stored, and a task whose input file is a host path (an agent reads no
    // file of its host: a client sends the contents).
    let unknown = [7u8; 32];
    let outcomes = runtime().block_on(async {
        use futures_util::StreamExt;
        let client = async_nats::connect(nats.url()).await.unwrap();
        let mut results = client.subscribe("wasmpool.results.stranger").await.unwrap();
        let js = jetstream::new(client);
        let mut old = wire::MAGIC.to_vec();
        old.extend_from_slice(&1u16.to_le_bytes());
        old.extend_from_slice(&[0, 1, 2, 3]);
        let host_path = TaskBody {
            spec: TaskSpec::new().command(CommandSpec::new().input_file("x", "/etc/hostname")),
            run: Run::Command,
        };
        let square = TaskBody {
            spec: TaskSpec::new(),
            run: Run::Call(Input::Numbers(vec![Value::I64(2)])),
        };
        let tasks = [
            (1, unknown, "square", square),
            (2, math.id().0, "_start", host_path),
        ];
        let mut payloads = vec![b"hello".to_vec(), old];
        payloads.extend(tasks.into_iter().map(|(task, module, export, body)| {
            wire::encode(&TaskMsg {
                client: "stranger".into(),
                task,
                module,
                export: export.into(),
                body: Blob::Inline(wire::body(&body)),
            })
        }));
        for payload in payloads {
            js.publish(wasmpool::remote::TASKS_SUBJECT, payload.into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut outcomes = std::collections::BTreeMap::new();
        while outcomes.len() < 2 {
            let m = tokio::time::timeout(Duration::from_secs(30), results.next())
                .await
                .expect("a result for each task of ours")
                .unwrap();
            let r: ResultMsg = wire::decode(&m.payload).unwrap();
            let outcome = match r.outcome {
                Blob::Inline(b) => wire::from_body::<wire::Outcome>(&b).unwrap(),
                other => panic!("{other:?}"),
            };
            outcomes.insert(r.task, outcome);
        }
        outcomes
    });
    match &outcomes[&1] {
        Err(TaskError::BadInput { message }) => {
            assert!(message.contains(&wasmpool_hex(&unknown)), "{message}")
        }
        other => panic!("unknown module: {other:?}"),
    }
    match &outcomes[&2] {
        Err(TaskError::BadInput { message }) => {
            assert!(message.contains("host path"), "{message}")
        }
        other => panic!("a host path for an input file: {other:?}"),
    }
    // The agent goes on, and nothing stays behind on the server: the foreign messages were
    // terminated, not left to be delivered again after AckWait.
    assert_eq!(answer(&pool.submit::<i64>(&math, "square", 4i64)), Ok(16));
    wait_until("the task stream is empty", || {
        let info = consumer_info(&nats);
        info.num_pending == 0 && info.num_ack_pending == 0
    });
    let s = a.stop();
    assert_eq!(s.refused, 2, "each foreign message refused once: {s:?}");
    pool.shutdown();
}

fn wasmpool_hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn the_cli_runs_and_execs_through_nats_with_the_same_lines() {
    let nats = Nats::start();
    let _agent = agent_process(&nats, "cli", 2, &[]);
    let inputs = "1\n2\n\"x\"\n30\n";
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(WORKER);
        cmd.arg("run")
            .arg(guest("math"))
            .arg("square")
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(inputs.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("duration_us");
                v
            })
            .collect();
        (out.status.code(), lines)
    };
    let local = run(&[]);
    let remote = run(&["--nats", &nats.url()]);
    assert_eq!(local.1.len(), 4);
    assert_eq!(local, remote);

    let out = Command::new(WORKER)
        .arg("exec")
        .arg(common::c_program("wc"))
        .args(["--nats", &nats.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"one two\nthree\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        !out.stdout.is_empty(),
        "the program's output came back: {out:?}"
    );
}

/// What one input of the big run must come back as.
#[derive(Debug)]
enum Expect {
    Square(i64),
    Timeout,
    Trap,
    Exit(i32),
}

#[test]
fn three_agents_ten_thousand_tasks_one_killed_one_added_every_input_answered_once_in_order() {
    let nats = Nats::start();
    let doomed = agent_process(&nats, "a1", 2, &[]);
    let _a2 = agent_process(&nats, "a2", 2, &[]);
    let _a3 = agent_process(&nats, "a3", 2, &[]);
    let pool = client(&nats);
    let math = pool.load_file(guest("math")).unwrap();
    let hostile = pool.load_file(guest("hostile")).unwrap();
    let square = pool.call(&math, "square").max_retries(3);
    let spin = pool
        .call(&hostile, "spin")
        .timeout(Duration::from_millis(100))
        .max_retries(3);
    let trap = pool.call(&hostile, "unreachable").max_retries(3);
    let exit = pool.call(&hostile, "exit").max_retries(3);
    let n = 10_000i64;
    let started = Instant::now();
    let tasks: Vec<(Expect, wasmpool::Task<Value>)> = (0..n)
        .map(|i| match i % 500 {
            7 => (Expect::Timeout, spin.submit(())),
            13 => (Expect::Trap, trap.submit(())),
            21 => (Expect::Exit(3), exit.submit(3i32)),
            _ => (Expect::Square(i * i), square.submit(i)),
        })
        .collect();
    wait_until("3000 tasks are done", || {
        tasks.iter().filter(|(_, t)| t.is_done()).count() >= 3000
    });
    doomed.signal(rustix::process::Signal::KILL);
    let held = consumer_info(&nats).num_ack_pending;
    drop(doomed);
    let _a4 = agent_process(&nats, "a4", 2, &[]);
    let mut counts = [0usize; 4];
    for (i, (expect, task)) in tasks.iter().enumerate() {
        let got = answer(task);
        match (expect, &got) {
            (Expect::Square(x), Ok(Value::I64(y))) if x == y => counts[0] += 1,
            (Expect::Timeout, Err(TaskError::Timeout { .. })) => counts[1] += 1,
            (Expect::Trap, Err(TaskError::Trap { .. })) => counts[2] += 1,
            (Expect::Exit(c), Err(TaskError::Exit { code })) if c == code => counts[3] += 1,
            _ => panic!("input {i}: expected {expect:?}, got {got:?}"),
        }
    }
    eprintln!(
        "10k tasks over 3 (then 3 again) agents in {:.1?}: {counts:?} (squares, timeouts, traps, exits); {held} tasks unacked when a1 was killed",
        started.elapsed()
    );
    assert_eq!(counts, [10_000 - 60, 20, 20, 20]);
    let stats = pool.stats();
    assert_eq!(stats.done, 10_000 - 60, "{stats:?}");
    assert_eq!(
        stats.failed_total(),
        60,
        "each input answered once: {stats:?}"
    );
    pool.shutdown();
}

#[test]
fn the_server_away_past_the_reconnect_bound_fails_every_waiting_task_clearly() {
    let mut nats = Nats::start();
    let bound = Duration::from_secs(2);
    let pool = builder()
        .remote(remote(&nats).reconnect_bound(bound))
        .build()
        .expect("connect the client");
    let math = pool.load_file(guest("math")).unwrap();
    // No agent: the tasks wait on the server, stored.
    let tasks: Vec<Task<i64>> = (0..5i64).map(|i| pool.submit(&math, "square", i)).collect();
    wait_until("the server stored the tasks", || pool.stats().running == 5);
    nats.kill();
    let killed = Instant::now();
    let clear = |result: Option<Result<i64, TaskError>>| match result {
        Some(Err(TaskError::WorkerLost { message, .. })) => {
            assert!(message.contains(&nats.url()), "names the server: {message}");
            assert!(
                message.contains("reconnect bound of 2s"),
                "and the bound: {message}"
            );
        }
        other => panic!("expected WorkerLost naming the server and the bound, got {other:?}"),
    };
    for task in &tasks {
        clear(task.wait_timeout(bound + Duration::from_secs(5)));
    }
    let took = killed.elapsed();
    assert!(took >= bound, "failed after {took:?}, before the bound");
    assert!(
        took < bound + Duration::from_secs(3),
        "failed only after {took:?}"
    );
    // A task submitted while the server is still away fails the same way, soon.
    clear(
        pool.submit::<i64>(&math, "square", 9i64)
            .wait_timeout(bound + Duration::from_secs(5)),
    );
    let stats = pool.stats();
    assert_eq!(stats.failed.get("worker_lost"), Some(&6), "{stats:?}");
    // Shutting down does not wait for the server either.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        pool.shutdown();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the pool shuts down with the server away");
}

#[test]
fn the_cli_reports_a_lost_server_and_fails_each_line_past_the_bound() {
    let mut nats = Nats::start();
    let mut run = common::cli()
        .args(["run", "--nats", &nats.url(), "--reconnect-bound", "3s"])
        .arg(guest("math"))
        .arg("square")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = run.stdin.take().unwrap();
    use std::io::Write;
    stdin.write_all(b"1\n2\n3\n").unwrap();
    drop(stdin);
    // No agent: once the three tasks wait on the server, it goes away.
    wait_until("the three tasks are stored", || {
        // (The stream exists once the client has connected.)
        runtime().block_on(async {
            let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
            match js.get_stream(wasmpool::remote::TASKS_STREAM).await {
                Ok(mut s) => s.info().await.unwrap().state.messages == 3,
                Err(_) => false,
            }
        })
    });
    nats.kill();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(run.wait_with_output());
    });
    let out = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("run exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lost the NATS server"), "{stderr}");
    assert!(
        stderr.contains("unreachable for"),
        "progress while waiting: {stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for line in &lines {
        assert_eq!(line["error"]["kind"], "worker_lost", "{line}");
        let message = line["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&nats.url()) && message.contains("3s"),
            "{message}"
        );
    }
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn a_second_result_for_a_task_is_dropped() {
    let nats = Nats::start();
    let pool = client(&nats);
    let math = pool.load_file(guest("math")).unwrap();
    // This test is the agent: it answers the task twice, as a re-run past the server's
    // duplicate window would (each result its own message id).
    let outcome = |v: i64| {
        Blob::Inline(wire::body::<wire::Outcome>(&Ok(wasmpool::Output::Numbers(
            vec![Value::I64(v)],
        ))))
    };
    let rt = runtime();
    let (client, mut published) = rt.block_on(async {
        let client = async_nats::connect(nats.url()).await.unwrap();
        let published = client
            .subscribe(wasmpool::remote::TASKS_SUBJECT)
            .await
            .unwrap();
        (client, published)
    });
    let task = pool.submit::<i64>(&math, "square", 5i64);
    // (`move`: the subscription ends inside the runtime.)
    rt.block_on(async move {
        use futures_util::StreamExt;
        let m = tokio::time::timeout(Duration::from_secs(30), published.next())
            .await
            .expect("the task is published")
            .unwrap();
        let msg: TaskMsg = wire::decode(&m.payload).unwrap();
        let js = jetstream::new(client);
        for (delivery, value) in [(1, 25), (2, -1)] {
            let result = ResultMsg {
                task: msg.task,
                agent: "test".into(),
                delivery,
                outcome: outcome(value),
                stats: Default::default(),
            };
            js.publish(
                format!("{}.{}", wasmpool::remote::RESULTS_PREFIX, msg.client),
                wire::encode(&result).into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        }
    });
    assert_eq!(answer(&task), Ok(25), "the first result stands");
    // The second one is taken off the server and dropped: counted nowhere.
    wait_until("the results are consumed", || {
        runtime().block_on(async {
            let client = async_nats::connect(nats.url()).await.unwrap();
            let js = jetstream::new(client);
            let mut s = js
                .get_stream(wasmpool::remote::RESULTS_STREAM)
                .await
                .unwrap();
            s.info().await.unwrap().state.messages == 0
        })
    });
    let stats = pool.stats();
    assert_eq!((stats.done, stats.failed_total()), (1, 0), "{stats:?}");
    pool.shutdown();
}

/// The output of `report` as lines, for comparing runs.
fn report_lines(out: &wasmpool::CommandOutput) -> Vec<String> {
    out.stdout_text().lines().map(str::to_string).collect()
}

#[test]
fn a_remote_command_or_call_carries_what_a_local_one_does() {
    let nats = Nats::start();
    let _agent = agent_in(&nats, "a1", 2);
    let remote_pool = client(&nats);
    let local_pool = builder().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let host_file = dir.path().join("host.bin");
    std::fs::write(&host_file, [0u8, 1, 2, 0xff]).unwrap();
    // argv0, arguments, environment, stdin, an input file from a host path (read by the
    // client) and one given as data, /out.
    let spec = TaskSpec::new().max_retries(1).command(
        CommandSpec::new()
            .argv0("/usr/local/bin/report")
            .args(["cat:/in/h.bin", "cat:/in/t.txt", "plain"])
            .env("K", "V")
            .env("EMPTY", "")
            .stdin(vec![0xfe, b'\n', 0])
            .input_file("h.bin", &host_file)
            .input("t.txt", "text")
            .output_dir(),
    );
    let run = |pool: &Pool| {
        let report = pool.load_file(common::c_program("report")).unwrap();
        let out = answer(&pool.run_spec(&report, &spec)).expect("report ran");
        assert_eq!(out.exit_code, 0, "{}", out.stderr_text());
        out
    };
    let (local, remote) = (run(&local_pool), run(&remote_pool));
    assert_eq!(report_lines(&local), report_lines(&remote));
    assert_eq!(local.files, remote.files);
    let lines = report_lines(&remote);
    for expected in [
        "argv 0 /usr/local/bin/report",
        "argv 3 plain",
        "env K=V",
        "env EMPTY=",
        "stdin 3 fe0a00",
        "file /in/h.bin 4 000102ff",
        "file /in/t.txt 4 74657874",
    ] {
        assert!(
            lines.iter().any(|l| l == expected),
            "{expected} in {lines:#?}"
        );
    }
    assert_eq!(remote.files.len(), 1, "/out/seen.txt came back");

    // A reactor's export (`invoke`) runs on the agent.
    let reactor = r#"(module
      (global $g (mut i32) (i32.const 0))
      (memory (export "memory") 1)
      (func (export "_initialize") (global.set $g (i32.const 40)))
      (func (export "run") (result i32) (i32.add (global.get $g) (i32.const 2))))"#;
    let m = remote_pool.load(reactor).unwrap();
    let out = answer(&remote_pool.run_command(&m, CommandSpec::new().invoke("run"))).unwrap();
    assert_eq!(out.exit_code, 42);

    // A plain call's environment (Call::env) and limits travel too.
    let probe = remote_pool
        .load_file(common::guest_wat("env_probe.wat"))
        .unwrap();
    let count = remote_pool
        .call(&probe, "count")
        .env("A", "1")
        .env("B", "22")
        .submit::<i32>(());
    assert_eq!(answer(&count), Ok(2));
    let bytes = remote_pool
        .call(&probe, "bytes")
        .env("A", "1")
        .env("B", "22")
        .submit::<i32>(());
    assert_eq!(answer(&bytes), Ok(4 + 5));
    let hostile = remote_pool.load_file(guest("hostile")).unwrap();
    let fuel = remote_pool
        .call(&hostile, "spin")
        .fuel(1_000_000)
        .submit::<i64>(());
    assert!(
        matches!(answer(&fuel), Err(TaskError::FuelExhausted { .. })),
        "the call's fuel limit held on the agent"
    );
    remote_pool.shutdown();
    local_pool.shutdown();
}

#[test]
fn exec_through_nats_gives_the_program_what_a_local_exec_does() {
    let nats = Nats::start();
    let _agent = agent_process(&nats, "cli", 1, &[]);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("data.bin");
    std::fs::write(&input, [9u8, 8, 7]).unwrap();
    let report = common::c_program("report");
    let exec = |extra: &[&str]| {
        let out = common::cli()
            .arg("exec")
            .args(extra)
            .args(["--argv0", "rep", "--env", "X=1", "--input"])
            .arg(&input)
            .arg(&report)
            .args(["--", "cat:/in/data.bin", "two"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"in")?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let local = exec(&[]);
    let remote = exec(&["--nats", &nats.url()]);
    assert_eq!(local, remote);
    for expected in [
        "argv 0 rep",
        "argv 2 two",
        "env X=1",
        "stdin 2 696e",
        "file /in/data.bin 3 090807",
    ] {
        assert!(
            remote.lines().any(|l| l == expected),
            "{expected} in {remote}"
        );
    }
}

/// A module with an import no sandbox provides: `plain` never calls it, `hook` does.
const HOOKED: &str = r#"(module
  (import "host" "call" (func $call (param i32) (result i32)))
  (func (export "plain") (result i32) (i32.const 5))
  (func (export "hook") (result i32) (call $call (i32.const 1))))"#;

#[test]
fn an_agent_takes_the_local_pool_flags_mounts_and_unknown_imports() {
    use std::os::unix::fs::PermissionsExt;
    let nats = Nats::start();
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("hello.txt"), "hello mount\n").unwrap();
    for p in [base.path(), data.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mount = format!("{}:/data:ro", data.display());
    let pool = builder()
        .remote(remote(&nats))
        .unknown_imports(wasmpool::UnknownImports::Trap)
        .build()
        .unwrap();
    let probe = pool.load_file(common::c_program("mountprobe")).unwrap();
    let hooked = pool.load(HOOKED).unwrap();
    let probe_lines = || {
        let out = answer(&pool.run_command(
            &probe,
            CommandSpec::new().args(["read:/data/hello.txt", "write:/data/new.txt"]),
        ))
        .expect("the probe ran");
        out.stdout_text()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };

    // An agent with neither flag: no /data, and the module is refused.
    let plain = agent_process(&nats, "plain", 1, &[]);
    let lines = probe_lines();
    assert!(lines[0].contains("denied"), "{lines:?}");
    match answer(&pool.submit::<i32>(&hooked, "plain", ())) {
        Err(TaskError::BadInput { message }) => {
            assert!(
                message.contains("host") && message.contains("plain"),
                "{message}"
            )
        }
        other => panic!("an unknown import refused by the agent: {other:?}"),
    }
    plain.signal(rustix::process::Signal::TERM);
    let (status, stderr) = plain.wait();
    assert!(status.success(), "{stderr}");

    // With them: /data is there, read-only, and the import is linked to a trap.
    let _agent = agent_process(
        &nats,
        "flags",
        1,
        &["--mount", &mount, "--unknown-imports", "trap"],
    );
    let lines = probe_lines();
    assert_eq!(
        lines[0], "read:/data/hello.txt: OK hello mount",
        "{lines:?}"
    );
    assert!(lines[1].contains("denied"), "read-only: {lines:?}");
    assert_eq!(answer(&pool.submit::<i32>(&hooked, "plain", ())), Ok(5));
    assert!(matches!(
        answer(&pool.submit::<i32>(&hooked, "hook", ())),
        Err(TaskError::Trap { .. })
    ));
    pool.shutdown();
}
