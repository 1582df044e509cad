//! Running the Python anchors and reading their JSON lines into the figures. An anchor that
//! cannot run (no python3, no venv, a crash, a hang) is skipped with the reason; the bench
//! goes on. wasmpool's own Python rows (`python_rows.py`, the package in `python/`) run the
//! same way, after the anchors.

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::report::Figures;
use crate::Ctx;

/// What happened to one anchor.
pub struct Outcome {
    pub name: &'static str,
    /// `None` when it ran; otherwise why it was skipped.
    pub skipped: Option<String>,
    /// Its JSON lines as printed.
    pub lines: Vec<Value>,
    pub seconds: f64,
}

struct Anchor {
    name: &'static str,
    program: PathBuf,
    args: Vec<OsString>,
    /// Checked before starting: a missing file and how to provide it.
    needs: Vec<(PathBuf, &'static str)>,
}

/// The anchors, run one after the other (never beside each other or the pool, which would
/// share the CPUs).
fn anchors(ctx: &Ctx) -> Vec<Anchor> {
    let stdlib = ctx.anchors.join("stdlib_pool.py");
    let peer = ctx.anchors.join("wasm_pool_peer.py");
    let venv = ctx.root.join(".venv/bin/python");
    let mut peer_args = vec![peer.clone().into(), ctx.wasm.clone().into()];
    let rows = ctx.root.join("benches/pool/python_rows.py");
    let mut rows_args = vec![rows.into(), ctx.wasm.clone().into()];
    if ctx.sizes.quick {
        peer_args.push("--quick".into());
        rows_args.push("--quick".into());
    }
    // The venv the Python package is installed in (`.ci/run` makes it).
    let package_venv = std::env::var_os("WASMPOOL_PYTHON")
        .map_or_else(|| ctx.target.join("python-venv/bin/python"), PathBuf::from);
    vec![
        Anchor {
            name: "stdlib_pool.py",
            program: "python3".into(),
            args: vec![stdlib.clone().into()],
            needs: vec![(stdlib, "set WASMPOOL_ANCHORS to the anchors directory")],
        },
        Anchor {
            name: "wasm_pool_peer.py",
            program: venv.clone(),
            args: peer_args,
            needs: vec![
                (peer, "set WASMPOOL_ANCHORS to the anchors directory"),
                (
                    venv,
                    "create it: python3 -m venv .venv && \
                     .venv/bin/pip install -r ../shared/anchors/requirements.txt",
                ),
            ],
        },
        Anchor {
            name: "python_rows.py (wasmpool from Python)",
            program: package_venv.clone(),
            args: rows_args,
            needs: vec![(
                package_venv,
                "the Python package is not installed: python3 -m venv target/python-venv && \
                 target/python-venv/bin/pip install ./python (or set WASMPOOL_PYTHON)",
            )],
        },
    ]
}

/// Runs every anchor and records its numeric fields as `<impl>/<bench>/<field>`.
pub fn run_all(ctx: &Ctx, figs: &mut Figures) -> Vec<Outcome> {
    let limit = if ctx.sizes.quick {
        Duration::from_secs(180)
    } else {
        Duration::from_secs(600)
    };
    anchors(ctx)
        .into_iter()
        .map(|a| {
            eprintln!("  [anchor] {} …", a.name);
            let t = Instant::now();
            let (lines, skipped) = match run(ctx, &a, limit) {
                Ok(lines) => (lines, None),
                Err((lines, why)) => (lines, Some(why)),
            };
            for line in &lines {
                record(figs, line);
            }
            let seconds = t.elapsed().as_secs_f64();
            match &skipped {
                None => eprintln!(
                    "  [anchor] {}: {} figures in {seconds:.0} s",
                    a.name,
                    lines.len()
                ),
                Some(why) => eprintln!("  [anchor] {} SKIPPED: {why}", a.name),
            }
            Outcome {
                name: a.name,
                skipped,
                lines,
                seconds,
            }
        })
        .collect()
}

/// Runs one anchor to the end (or `limit`); its JSON lines, or those it printed and why it
/// failed.
fn run(ctx: &Ctx, a: &Anchor, limit: Duration) -> Result<Vec<Value>, (Vec<Value>, String)> {
    for (path, hint) in &a.needs {
        if !path.exists() {
            return Err((vec![], format!("{} not found ({hint})", path.display())));
        }
    }
    let mut child = Command::new(&a.program)
        .args(&a.args)
        .current_dir(&ctx.root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| (vec![], format!("cannot start {}: {e}", a.program.display())))?;
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                // Its own children may still hold the pipes: don't wait for the readers.
                return Err((
                    vec![],
                    format!("no result within {} s; killed", limit.as_secs()),
                ));
            }
        }
    };
    let lines: Vec<Value> = stdout
        .join()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l.trim()).ok())
        .filter(Value::is_object)
        .collect();
    let stderr = stderr.join().unwrap_or_default();
    if status.success() {
        Ok(lines)
    } else {
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        Err((lines, format!("exited with {status}: {}", last.trim())))
    }
}

/// Records one JSON line's numeric fields.
fn record(figs: &mut Figures, line: &Value) {
    let (Some(bench), Some(imp)) = (line["bench"].as_str(), line["impl"].as_str()) else {
        return;
    };
    if let Some(fields) = line.as_object() {
        for (field, v) in fields {
            if let Some(v) = v.as_f64() {
                figs.set(imp, bench, field, v);
            }
        }
    }
}
