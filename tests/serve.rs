//! `wasmpool serve` end to end: the real binary on a loopback port, a real HTTP client
//! (ureq; raw sockets where a test needs to misbehave or stream both ways at once).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{c_program, guest, WORKER};
use serde_json::{json, Value};

/// A generous bound on waiting for something the server does.
const WAIT: Duration = Duration::from_secs(60);

struct Server {
    child: Child,
    addr: String,
    token: Option<String>,
    agent: ureq::Agent,
    /// Everything the server wrote on stderr after its "listening" line.
    stderr: Arc<Mutex<String>>,
    _cache: tempfile::TempDir,
}

/// Starts `wasmpool serve` on a free loopback port with 2 workers and `args`; returns once
/// it said where it listens.
fn start(args: &[&str]) -> Server {
    start_with(args, None)
}

fn start_with(args: &[&str], token: Option<&str>) -> Server {
    let cache = tempfile::tempdir().unwrap();
    let workers: &[&str] = if args.contains(&"--workers") {
        &[]
    } else {
        &["--workers", "2"]
    };
    let mut child = Command::new(WORKER)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(workers)
        .args(args)
        .env("XDG_CACHE_HOME", cache.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wasmpool serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    let addr = loop {
        let mut line = String::new();
        if lines.read_line(&mut line).unwrap() == 0 {
            let _ = child.kill();
            panic!("wasmpool serve exited before listening: {seen}");
        }
        seen.push_str(&line);
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in lines.lines() {
            let Ok(line) = line else { break };
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    Server {
        child,
        addr,
        token: token.map(String::from),
        agent,
        stderr,
        _cache: cache,
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An answer: status, `Retry-After`, body.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The error kind of an HTTP error, after checking its message says something.
    fn error_kind(&self) -> String {
        let v = self.json();
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(message.len() > 10, "an error body says what was wrong: {v}");
        v["error"]["kind"].as_str().unwrap().to_string()
    }
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answer(&self, r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
        let mut r = r.expect("an HTTP answer");
        Answer {
            status: r.status().as_u16(),
            retry_after: r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string()),
            body: r
                .body_mut()
                .with_config()
                .limit(u64::MAX)
                .read_to_string()
                .unwrap(),
        }
    }

    fn post(&self, path: &str, body: impl AsRef<[u8]>) -> Answer {
        let mut req = self.agent.post(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.answer(req.send(body.as_ref()))
    }

    fn get(&self, path: &str) -> Answer {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.answer(req.call())
    }

    fn delete(&self, path: &str) -> Answer {
        let mut req = self.agent.delete(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        self.answer(req.call())
    }

    /// Uploads the module file at `path`; its id.
    fn upload(&self, path: &Path) -> String {
        let a = self.post("/v1/modules", std::fs::read(path).unwrap());
        assert!(
            a.status == 201 || a.status == 200,
            "{} {}",
            a.status,
            a.body
        );
        a.json()["id"].as_str().unwrap().to_string()
    }

    fn call(&self, id: &str, export: &str, body: Value) -> Answer {
        self.post(&format!("/v1/modules/{id}/call/{export}"), body.to_string())
    }

    /// The value of the metric line starting with `prefix` (0 when absent).
    fn metric(&self, prefix: &str) -> f64 {
        let text = self.get("/metrics").body;
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// Waits (up to [`WAIT`]) until `cond` holds.
    fn wait_for(&self, what: &str, mut cond: impl FnMut(&Server) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&mut self) -> ExitStatus {
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < WAIT,
                "the server did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn line_without_duration(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("duration_us");
    v
}

#[test]
fn upload_inspect_call_map_and_delete_a_module() {
    let s = start(&[]);
    let health = s.get("/healthz");
    assert_eq!(
        (health.status, health.json()["status"].clone()),
        (200, json!("ok"))
    );

    let bytes = std::fs::read(guest("math")).unwrap();
    let first = s.post("/v1/modules", &bytes);
    assert_eq!(first.status, 201, "{}", first.body);
    let id = first.json()["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(first.json()["command"], false);
    let exports = first.json()["exports"].clone();
    assert!(exports
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["name"] == "square" && e["kind"] == "numeric"));
    // Idempotent: the same bytes, the same module.
    let again = s.post("/v1/modules", &bytes);
    assert_eq!(again.status, 200);
    assert_eq!(again.json()["id"], id.as_str());
    let info = s.get(&format!("/v1/modules/{id}")).json();
    assert_eq!(info["size"], bytes.len());
    assert_eq!(info["exports"], exports);
    assert!(info["compile_ms"].as_f64().is_some());

    // A call answers with the line `wasmpool run` prints for the same input.
    let answer = s.call(&id, "square", json!({"input": 7}));
    assert_eq!(answer.status, 200);
    let run = common::wasmpool(&["run", guest("math").to_str().unwrap(), "square"], "7\n");
    let run_line: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(
        line_without_duration(answer.json()),
        line_without_duration(run_line)
    );
    assert_eq!(answer.json()["ok"], 49);
    let add = s.call(&id, "add", json!({"input": [2, 3], "fuel": 100000}));
    assert_eq!(add.json()["ok"], 5);
    assert!(add.json()["fuel"].as_u64().unwrap() > 0);
    // A task error is a result: 200 with `error`.
    let bad = s.call(&id, "add", json!({"input": [1]}));
    assert_eq!(bad.status, 200);
    assert_eq!(bad.json()["error"]["kind"], "bad_input");
    let trap = s.call(&id, "div", json!({"input": [1, 0]}));
    assert_eq!(trap.json()["error"]["kind"], "trap");

    // An SDK task takes and returns JSON.
    let wc = s.upload(&guest("wordcount"));
    let words = s.call(
        &wc,
        "wordcount",
        json!({"input": {"text": "to be or not to be"}}),
    );
    assert_eq!(words.json()["ok"]["words"], 6, "{}", words.body);

    // Map: a result line per input line, in input order (a bad line is its own error).
    let inputs: String = (0..10_000).map(|i| format!("{i}\n")).collect::<String>() + "oops\n";
    let map = s.post(&format!("/v1/modules/{id}/map/square"), inputs);
    assert_eq!(map.status, 200);
    let lines: Vec<Value> = map
        .body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 10_001);
    for (i, line) in lines[..10_000].iter().enumerate() {
        assert_eq!(line["ok"], (i * i) as u64, "line {i}: {line}");
    }
    assert_eq!(lines[10_000]["error"]["kind"], "bad_input");
    assert!(lines[10_000]["error"]["message"]
        .as_str()
        .unwrap()
        .contains("input line 10001"));

    let metrics = s.get("/metrics").body;
    for name in [
        "wasmpool_tasks_total{outcome=\"ok\"}",
        "wasmpool_tasks_total{outcome=\"trap\"} 1",
        "wasmpool_queue_depth ",
        "wasmpool_running ",
        "wasmpool_workers_restarted_total ",
        "wasmpool_worker_rss_bytes{pid=",
        "wasmpool_http_request_duration_seconds_bucket{le=\"+Inf\"}",
        "wasmpool_http_requests_total{code=\"201\"} 2",
    ] {
        assert!(metrics.contains(name), "{name} in\n{metrics}");
    }

    assert_eq!(s.delete(&format!("/v1/modules/{id}")).status, 204);
    assert_eq!(s.get(&format!("/v1/modules/{id}")).status, 404);
    assert_eq!(s.call(&id, "square", json!({"input": 7})).status, 404);
    assert_eq!(s.delete(&format!("/v1/modules/{id}")).status, 404);
}

#[test]
fn exec_runs_a_c_program_with_stdin_input_files_and_out_files() {
    let s = start(&[]);
    let wc = s.upload(&c_program("wc"));
    assert_eq!(s.get(&format!("/v1/modules/{wc}")).json()["command"], true);
    let a = s.post(
        &format!("/v1/modules/{wc}/exec"),
        json!({"stdin": "one two\nthree\n"}).to_string(),
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let v = a.json();
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["stdout"], "2 3 14\n");

    let transform = s.upload(&c_program("transform"));
    let a = s.post(
        &format!("/v1/modules/{transform}/exec"),
        json!({
            "args": ["/in/data.txt", "/out/upper.txt"],
            "inputs": {"data.txt": {"text": "hello"}},
            "output_dir": true,
        })
        .to_string(),
    );
    let v = a.json();
    assert_eq!(v["exit_code"], 0, "{v}");
    // Base64 of "HELLO".
    assert_eq!(v["files"]["upper.txt"], "SEVMTE8=", "{v}");
    // Binary input as base64; its program's status is a result.
    let a = s.post(
        &format!("/v1/modules/{transform}/exec"),
        json!({"args": ["/in/missing", "/out/x"], "output_dir": true,
               "inputs": {"b.bin": {"base64": "AP8="}}})
        .to_string(),
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["exit_code"], 2);
    assert!(a.json()["stderr"].as_str().unwrap().contains("/in/missing"));

    // The service's host files are not the client's: a host path is refused.
    let a = s.post(
        &format!("/v1/modules/{transform}/exec"),
        json!({"args": ["/in/p", "/out/x"], "inputs": {"p": "/etc/passwd"}}).to_string(),
    );
    assert_eq!(a.status, 400);
    assert!(a.body.contains("host paths are refused"), "{}", a.body);
    // A module without `_start` cannot be exec'd.
    let math = s.upload(&guest("math"));
    let a = s.post(&format!("/v1/modules/{math}/exec"), "{}");
    assert_eq!((a.status, a.error_kind()), (404, "not_found".into()));
}

#[test]
fn every_http_error_has_its_status_and_says_what_was_wrong() {
    let s = start(&[
        "--max-body",
        "4KiB",
        "--max-module-size",
        "300KiB",
        "--max-timeout",
        "5s",
        "--max-fuel",
        "1000000000",
    ]);
    let id = s.upload(&guest("math"));
    let call = format!("/v1/modules/{id}/call/square");
    let cases: Vec<(Answer, u16, &str)> = vec![
        (s.post(&call, "{not json"), 400, "bad_request"),
        (
            s.post(&call, r#"{"input": 1, "colour": 2}"#),
            400,
            "bad_request",
        ),
        (
            s.post(&call, r#"{"input": 1, "timeout_ms": 6000}"#),
            400,
            "bad_request",
        ),
        (
            s.post(&call, r#"{"input": 1, "fuel": 0}"#),
            400,
            "bad_request",
        ),
        (
            s.post(&call, r#"{"input": 1, "memory_bytes": 8589934592}"#),
            400,
            "bad_request",
        ),
        (
            s.post(
                &format!("/v1/modules/{id}/map/square?fuel=2000000000"),
                "1\n",
            ),
            400,
            "bad_request",
        ),
        (
            s.post(&format!("/v1/modules/{id}/call/nope"), "{}"),
            404,
            "not_found",
        ),
        (
            s.post(&format!("/v1/modules/{}/call/square", "0".repeat(64)), "{}"),
            404,
            "not_found",
        ),
        (
            s.post("/v1/modules/short/call/square", "{}"),
            404,
            "not_found",
        ),
        (s.get("/v2/whatever"), 404, "not_found"),
        (s.get("/v1/modules"), 405, "method_not_allowed"),
        // A module may be over --max-body: uploads have their own cap.
        (
            s.post("/v1/modules", format!("(module) ;; {}", "x".repeat(8000))),
            201,
            "",
        ),
        (
            s.post("/v1/modules", b"\0asm\x01\0\0\0garbage"),
            400,
            "invalid_module",
        ),
        (s.post("/v1/modules", "not a module"), 400, "invalid_module"),
    ];
    for (i, (answer, status, kind)) in cases.into_iter().enumerate() {
        assert_eq!(answer.status, status, "case {i}: {}", answer.body);
        if status >= 400 {
            assert_eq!(answer.error_kind(), kind, "case {i}");
        }
    }
    // Over --max-body (a call) or --max-module-size (an upload), declared by
    // Content-Length: refused before a byte of the body is sent.
    for (path, len, flag) in [
        (&call[..], 5000, "--max-body"),
        ("/v1/modules", 400 << 10, "--max-module-size"),
    ] {
        let mut conn = TcpStream::connect(&s.addr).unwrap();
        write!(
            conn,
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len}\r\n\r\n"
        )
        .unwrap();
        let (status, body) = read_answer(&mut conn);
        assert_eq!(status, 413, "{body}");
        assert!(body.contains(flag) && body.contains("too_large"), "{body}");
    }

    // A body without a declared length is cut at the cap too (chunked transfer).
    let mut conn = TcpStream::connect(&s.addr).unwrap();
    write!(
        conn,
        "POST {call} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .unwrap();
    for _ in 0..5 {
        write!(conn, "400\r\n{}\r\n", " ".repeat(1024)).unwrap();
    }
    let (status, body) = read_answer(&mut conn);
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("--max-body"), "{body}");
}

/// Reads one HTTP/1.1 answer from `conn`: its status and body (by Content-Length or
/// chunked).
fn read_answer(conn: &mut TcpStream) -> (u16, String) {
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut r = BufReader::new(conn);
    let mut status_line = String::new();
    r.read_line(&mut status_line).unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {status_line:?}"));
    let (mut len, mut chunked) = (None, false);
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse::<usize>().ok();
        }
        chunked |= h == "transfer-encoding: chunked";
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            r.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        body.resize(len.unwrap_or(0), 0);
        r.read_exact(&mut body).unwrap();
    }
    (status, String::from_utf8(body).unwrap())
}

#[test]
fn a_token_is_needed_on_every_route_but_healthz_and_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    let token = "s3cret-token-0123456789";
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let mut s = start_with(&["--token-file", file.to_str().unwrap()], Some(token));
    let id = s.upload(&guest("math"));
    assert_eq!(s.call(&id, "square", json!({"input": 3})).json()["ok"], 9);
    s.token = None;
    for a in [
        s.call(&id, "square", json!({"input": 3})),
        s.get("/metrics"),
        s.get(&format!("/v1/modules/{id}")),
        s.post("/v1/modules", "(module)"),
        s.delete(&format!("/v1/modules/{id}")),
    ] {
        assert_eq!((a.status, a.error_kind()), (401, "unauthorized".into()));
    }
    s.token = Some("s3cret-token-012345678".into());
    assert_eq!(s.get("/metrics").status, 401);
    s.token = Some(format!("{token}x"));
    assert_eq!(s.get("/metrics").status, 401);
    s.token = None;
    assert_eq!(s.get("/healthz").status, 200);
    s.token = Some(token.into());
    assert_eq!(s.get(&format!("/v1/modules/{id}")).status, 200);

    // Off loopback, no token: the server refuses to start.
    let out = Command::new(WORKER)
        .args(["serve", "--listen", "0.0.0.0:0", "--workers", "1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a loopback address") && stderr.contains("--token-file"),
        "{stderr}"
    );
    // A token too short to be one is refused too.
    std::fs::write(&file, "short").unwrap();
    let out = Command::new(WORKER)
        .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}

#[test]
fn a_full_queue_answers_429_with_retry_after_and_the_rest_succeed() {
    let s = Arc::new(start(&["--workers", "1", "--max-queued", "1"]));
    let id = s.upload(&guest("hostile"));
    let answers: Vec<Answer> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..24)
            .map(|_| {
                let (s, id) = (&s, &id);
                scope.spawn(move || s.call(id, "sleep_ms", json!({"input": 300})))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let full: Vec<&Answer> = answers.iter().filter(|a| a.status == 429).collect();
    assert!(!full.is_empty(), "no 429 among 24 calls on a queue of 1");
    for a in &full {
        assert_eq!(a.retry_after.as_deref(), Some("1"));
        assert_eq!(a.error_kind(), "queue_full");
    }
    for a in answers.iter().filter(|a| a.status != 429) {
        assert_eq!(
            (a.status, a.json()["ok"].clone()),
            (200, json!(300)),
            "{}",
            a.body
        );
    }
    // A map on the same full queue waits for room instead: every line succeeds.
    let inputs: String = (0..50).map(|_| "1\n").collect();
    let map = s.post(&format!("/v1/modules/{id}/map/sleep_ms"), inputs);
    assert_eq!(map.status, 200);
    assert_eq!(
        map.body.lines().filter(|l| l.contains("\"ok\":1")).count(),
        50
    );
}

#[test]
fn sigterm_drains_requests_in_flight_and_refuses_new_ones() {
    let mut s = start(&["--drain-timeout", "60s"]);
    let id = s.upload(&guest("hostile"));
    std::thread::scope(|scope| {
        let inflight: Vec<_> = (0..3)
            .map(|_| {
                let (s, id) = (&s, &id);
                scope.spawn(move || s.call(id, "sleep_ms", json!({"input": 1500})))
            })
            .collect();
        s.wait_for("three calls in the pool", |s| {
            s.metric("wasmpool_running ") + s.metric("wasmpool_queue_depth ") >= 3.0
        });
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
        s.wait_for("the drain", |s| s.get("/healthz").status == 503);
        let refused = s.call(&id, "sleep_ms", json!({"input": 1}));
        assert_eq!(
            (refused.status, refused.error_kind()),
            (503, "draining".into())
        );
        assert!(refused.retry_after.is_some());
        for h in inflight {
            let a = h.join().unwrap();
            assert_eq!(
                (a.status, a.json()["ok"].clone()),
                (200, json!(1500)),
                "{}",
                a.body
            );
        }
    });
    let status = s.terminate();
    assert!(status.success(), "{status:?}: {}", s.stderr.lock().unwrap());
    assert!(s.stderr.lock().unwrap().contains("drained"));
}

#[test]
fn a_drain_that_outlasts_drain_timeout_exits_anyway_and_cancels() {
    let mut s = start(&["--drain-timeout", "500ms", "--workers", "1"]);
    let id = s.upload(&guest("hostile"));
    std::thread::scope(|scope| {
        let slow = scope.spawn(|| {
            let body = json!({"input": 60000}).to_string();
            s.agent
                .post(s.url(&format!("/v1/modules/{id}/call/sleep_ms")))
                .send(body.as_bytes())
                .map(|r| r.status().as_u16())
        });
        s.wait_for("the call to run", |s| s.metric("wasmpool_running ") >= 1.0);
        // SAFETY: kill(2) on our own child's pid, which we have not waited for yet.
        unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
        // The call gets no answer: its connection closes when the server exits.
        assert!(slow.join().unwrap().is_err());
    });
    let status = s.terminate();
    assert_eq!(status.code(), Some(1), "{}", s.stderr.lock().unwrap());
    assert!(s
        .stderr
        .lock()
        .unwrap()
        .contains("still in flight at --drain-timeout"));
}

#[test]
fn hostile_modules_get_typed_errors_while_well_behaved_calls_all_succeed() {
    let s = start(&[
        "--workers",
        "2",
        "--max-memory",
        "64MiB",
        "--max-timeout",
        "10s",
    ]);
    let hostile = s.upload(&guest("hostile"));
    let math = s.upload(&guest("math"));
    std::thread::scope(|scope| {
        let good: Vec<_> = (0..3)
            .map(|t| {
                let (s, math) = (&s, &math);
                scope.spawn(move || {
                    for i in 0..40i64 {
                        let a = s.call(math, "square", json!({"input": i + t}));
                        assert_eq!(a.json()["ok"], (i + t) * (i + t), "{}", a.body);
                    }
                })
            })
            .collect();
        let cases = [
            ("spin", json!({"timeout_ms": 300}), "timeout"),
            ("spin", json!({"fuel": 1000000}), "fuel_exhausted"),
            (
                "sleep_ms",
                json!({"input": 60000, "timeout_ms": 300}),
                "timeout",
            ),
            ("grow_forever", json!({}), "memory_limit"),
            ("unreachable", json!({}), "trap"),
        ];
        for (export, body, kind) in cases {
            let a = s.call(&hostile, export, body);
            assert_eq!(a.status, 200, "{export}: {}", a.body);
            assert_eq!(a.json()["error"]["kind"], kind, "{export}: {}", a.body);
        }
        // A stdout flood is cut at the cap; the call itself succeeds.
        let a = s.call(&hostile, "flood", json!({"input": 50_000_000}));
        assert_eq!(
            a.json()["output_truncated"],
            true,
            "{}",
            &a.body[..200.min(a.body.len())]
        );
        assert!(a.body.len() < 4 << 20);
        for h in good {
            h.join().unwrap();
        }
    });
}

#[test]
fn a_worker_killed_mid_call_fails_that_call_and_the_server_goes_on() {
    let s = start(&["--workers", "1"]);
    let hostile = s.upload(&guest("hostile"));
    std::thread::scope(|scope| {
        let victim = scope.spawn(|| s.call(&hostile, "sleep_ms", json!({"input": 20000})));
        s.wait_for("the call to run", |s| s.metric("wasmpool_running ") >= 1.0);
        let metrics = s.get("/metrics").body;
        let pid: i32 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("wasmpool_worker_rss_bytes{pid=\""))
            .and_then(|l| l.split('"').next())
            .and_then(|p| p.parse().ok())
            .expect("a worker pid in /metrics");
        // SAFETY: kill(2) of a worker process of the server this test started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let a = victim.join().unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["error"]["kind"], "worker_lost", "{}", a.body);
    });
    assert_eq!(s.call(&hostile, "counter", json!({})).json()["ok"], 1);
    assert!(s.metric("wasmpool_workers_restarted_total ") >= 1.0);
}

/// Sends a chunked `POST` of `lines` to `path` from a thread while the answer is read
/// here as it arrives; the answer's lines.
fn duplex_map(s: &Server, path: &str, lines: usize) -> Vec<String> {
    let conn = TcpStream::connect(&s.addr).unwrap();
    let mut writer = conn.try_clone().unwrap();
    let path = path.to_string();
    let sender = std::thread::spawn(move || {
        write!(
            writer,
            "POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        .unwrap();
        for block in (0..lines).collect::<Vec<_>>().chunks(1000) {
            let text: String = block.iter().map(|i| format!("{i}\n")).collect();
            write!(writer, "{:x}\r\n{text}\r\n", text.len()).unwrap();
        }
        writer.write_all(b"0\r\n\r\n").unwrap();
    });
    let mut conn = conn;
    let (status, body) = read_answer(&mut conn);
    sender.join().unwrap();
    assert_eq!(status, 200, "{body}");
    body.lines().map(String::from).collect()
}

#[test]
fn a_map_of_100k_inputs_streams_both_ways_and_a_client_that_sends_first_completes() {
    let s = start(&[]);
    let id = s.upload(&guest("math"));
    let lines = duplex_map(&s, &format!("/v1/modules/{id}/map/square"), 100_000);
    assert_eq!(lines.len(), 100_000);
    for (i, line) in lines.iter().enumerate() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["ok"], (i * i) as u64, "line {i}");
    }
    // ureq sends the whole body before it reads a byte of the answer.
    let inputs: String = (0..100_000).map(|i| format!("{i}\n")).collect();
    let map = s.post(&format!("/v1/modules/{id}/map/square"), inputs);
    assert_eq!(map.status, 200);
    assert_eq!(map.body.lines().count(), 100_000);
    assert!(map.body.lines().last().unwrap().contains("9999800001"));

    // A client that hangs up in the middle of a streamed answer costs the server nothing
    // but that answer (a write to its closed socket is an error, not a SIGPIPE).
    for _ in 0..3 {
        let mut conn = TcpStream::connect(&s.addr).unwrap();
        let inputs: String = (0..200_000).map(|i| format!("{i}\n")).collect();
        write!(
            conn,
            "POST /v1/modules/{id}/map/square HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inputs}",
            inputs.len()
        )
        .unwrap();
        let mut first = [0u8; 4096];
        conn.read_exact(&mut first).unwrap();
        drop(conn);
    }
    s.wait_for("the abandoned maps to end", |s| {
        s.metric("wasmpool_running ") == 0.0 && s.metric("wasmpool_queue_depth ") == 0.0
    });
    assert_eq!(s.call(&id, "square", json!({"input": 3})).json()["ok"], 9);
}

#[test]
fn slow_clients_are_cut_off_and_a_client_that_hangs_up_cancels_its_task() {
    let s = start(&["--read-timeout", "1s", "--max-timeout", "120s"]);
    let hostile = s.upload(&guest("hostile"));
    // Headers that never end: the connection is closed.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    slow.write_all(b"POST /v1/modules HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(WAIT)).unwrap();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(
        rest.is_empty() || String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // A body that stops arriving: 408.
    let mut slow = TcpStream::connect(&s.addr).unwrap();
    write!(
        slow,
        "POST /v1/modules/{hostile}/call/counter HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{{\"inp"
    )
    .unwrap();
    let (status, body) = read_answer(&mut slow);
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("--read-timeout"), "{body}");

    // A client that hangs up while its call runs: the task is cancelled, its worker freed
    // long before the call's own 120 s.
    let mut gone = TcpStream::connect(&s.addr).unwrap();
    let body = json!({"input": 120000}).to_string();
    write!(
        gone,
        "POST /v1/modules/{hostile}/call/sleep_ms HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    s.wait_for("the call to run", |s| s.metric("wasmpool_running ") >= 1.0);
    drop(gone);
    s.wait_for("the call to be cancelled", |s| {
        s.metric("wasmpool_tasks_total{outcome=\"cancelled\"}") >= 1.0
            && s.metric("wasmpool_running ") == 0.0
    });
    // And a map whose client hangs up stops too.
    let mut gone = TcpStream::connect(&s.addr).unwrap();
    let inputs: String = (0..4).map(|_| "120000\n").collect();
    write!(
        gone,
        "POST /v1/modules/{hostile}/map/sleep_ms HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{inputs}",
        inputs.len()
    )
    .unwrap();
    s.wait_for("the map to run", |s| s.metric("wasmpool_running ") >= 1.0);
    drop(gone);
    s.wait_for("the map's calls to be cancelled", |s| {
        s.metric("wasmpool_running ") == 0.0 && s.metric("wasmpool_queue_depth ") == 0.0
    });
}

#[test]
fn modules_dir_keeps_modules_across_restarts_and_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().to_str().unwrap();
    // Three modules of about 1.1 KB each; room for two.
    let module = |n: u32| {
        format!(
            "(module (memory 1) (data (i32.const 0) \"{}\") (func (export \"f\") (result i32) (i32.const {n})))",
            "x".repeat(1000)
        )
    };
    let args = [
        "--modules-dir",
        modules,
        "--modules-limit",
        "2500B",
        "--max-module-size",
        "2KiB",
    ];
    let ids: Vec<String> = {
        let s = start(&args);
        let ids: Vec<String> = (1..=2)
            .map(|n| {
                let a = s.post("/v1/modules", module(n));
                assert_eq!(a.status, 201, "{}", a.body);
                a.json()["id"].as_str().unwrap().to_string()
            })
            .collect();
        ids
    };
    // A new server on the same directory has them.
    let s = start(&args);
    assert_eq!(s.call(&ids[0], "f", json!({})).json()["ok"], 1);
    assert_eq!(s.post("/v1/modules", module(2)).status, 200);
    // The first is used after the second: the second is the least recently used.
    assert_eq!(s.call(&ids[0], "f", json!({})).json()["ok"], 1);
    let set_old = |id: &str| {
        let f = std::fs::File::options()
            .append(true)
            .open(dir.path().join(format!("{id}.wasm")))
            .unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH).unwrap();
    };
    set_old(&ids[1]);
    let third = s.post("/v1/modules", module(3));
    assert_eq!(third.status, 201);
    let third = third.json()["id"].as_str().unwrap().to_string();
    assert_eq!(s.call(&ids[1], "f", json!({})).status, 404);
    assert!(!dir.path().join(format!("{}.wasm", ids[1])).exists());
    assert_eq!(s.call(&ids[0], "f", json!({})).json()["ok"], 1);
    assert_eq!(s.call(&third, "f", json!({})).json()["ok"], 3);
}

#[test]
fn serve_is_listed_in_help() {
    let out = common::wasmpool(&["--help"], "");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.lines().any(|l| l.trim_start().starts_with("serve ")),
        "{help}"
    );
}
