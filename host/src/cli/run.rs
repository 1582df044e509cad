//! `wasmpool run MODULE EXPORT`: one call per JSON input line, JSON lines out in input order.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde_json::{json, Value as JsonValue};
use wasmpool::{ExportKind, Input, Output, Task, TaskError, TaskStats, Value};

use super::{open_output, progress_bar, PoolArgs, EXIT_OK, EXIT_TASK_FAILED};

#[derive(clap::Args)]
pub struct RunArgs {
    /// The module (.wasm or .wat).
    module: PathBuf,
    /// The export to call: a plain numeric export or an SDK task.
    export: String,
    /// JSON lines, one call each: a number, an array for several arguments, or any JSON
    /// value (an object…) for SDK tasks. `-` reads stdin.
    #[arg(long, default_value = "-")]
    inputs: String,
    /// Where to write the JSON lines of results; `-` is stdout.
    #[arg(long, default_value = "-")]
    output: String,
    #[command(flatten)]
    pool: PoolArgs,
}

/// One input line, ready to submit or already rejected.
enum Entry {
    Submitted(Task<Output>),
    Rejected(TaskError),
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    let lines = read_lines(&args.inputs)?;
    let pool = args.pool.builder().build()?;
    let module = pool
        .load_file(&args.module)
        .with_context(|| format!("cannot load {}", args.module.display()))?;
    let Some(export) = module.export(&args.export) else {
        let names: Vec<String> = module.exports().iter().map(|e| e.to_string()).collect();
        bail!(
            "{} has no export `{}`; its callable exports are:\n  {}",
            args.module.display(),
            args.export,
            names.join("\n  ")
        );
    };
    let kind = export.kind.clone();

    let parsed: Vec<Result<Input, TaskError>> = lines
        .iter()
        .map(|(number, line)| {
            to_input(&kind, line).map_err(|m| TaskError::BadInput {
                message: format!("input line {number}: {m}"),
            })
        })
        .collect();
    let call = pool.call(&module, &args.export);
    let mut tasks = call
        .submit_many::<Output, Input>(parsed.iter().filter_map(|p| p.as_ref().ok().cloned()))
        .into_iter();
    let entries: Vec<Entry> = parsed
        .into_iter()
        .map(|p| match p {
            Ok(_) => Entry::Submitted(tasks.next().expect("one task per accepted input")),
            Err(e) => Entry::Rejected(e),
        })
        .collect();

    let mut out = open_output(&args.output)?;
    let total = entries.len();
    let progress = progress_bar(total as u64, "tasks");
    let mut failed = 0usize;
    for entry in entries {
        let (result, stats) = match entry {
            Entry::Submitted(task) => {
                let result = task.wait();
                (result, task.stats().unwrap_or_default())
            }
            Entry::Rejected(e) => (Err(e), TaskStats::default()),
        };
        if result.is_err() {
            failed += 1;
        }
        let line = result_line(result, &stats);
        serde_json::to_writer(&mut out, &line)?;
        out.write_all(b"\n")?;
        progress.inc(1);
    }
    out.flush()?;
    progress.finish_and_clear();
    pool.shutdown();
    if failed > 0 {
        eprintln!("wasmpool: {failed} of {total} task(s) failed");
        Ok(EXIT_TASK_FAILED)
    } else {
        Ok(EXIT_OK)
    }
}

/// Non-blank input lines with their 1-based line numbers.
fn read_lines(source: &str) -> anyhow::Result<Vec<(usize, String)>> {
    let reader: Box<dyn BufRead> = match source {
        "-" => Box::new(std::io::stdin().lock()),
        path => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open inputs file {path}"))?,
        )),
    };
    let mut lines = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.with_context(|| format!("cannot read input line {}", i + 1))?;
        if !line.trim().is_empty() {
            lines.push((i + 1, line));
        }
    }
    Ok(lines)
}

/// Converts one JSON line into the call's input for an export of `kind`.
fn to_input(kind: &ExportKind, line: &str) -> Result<Input, String> {
    let json: JsonValue = serde_json::from_str(line).map_err(|e| format!("not valid JSON: {e}"))?;
    match kind {
        ExportKind::Task => Ok(Input::Json(line.trim().as_bytes().to_vec())),
        ExportKind::Numeric { params, .. } => {
            let items: Vec<JsonValue> = match json {
                JsonValue::Array(items) => items,
                JsonValue::Null => Vec::new(),
                single => vec![single],
            };
            if items.len() != params.len() {
                return Err(format!(
                    "the export takes {} argument(s), the line has {}",
                    params.len(),
                    items.len()
                ));
            }
            items
                .iter()
                .zip(params)
                .enumerate()
                .map(|(i, (j, &ty))| {
                    Value::from_json(j, ty)
                        .ok_or_else(|| format!("argument {} ({j}) is not a valid {ty}", i + 1))
                })
                .collect::<Result<_, _>>()
                .map(Input::Numbers)
        }
        ExportKind::Unsupported { signature } => Err(format!(
            "the export's signature {signature} is not callable"
        )),
    }
}

fn result_line(result: Result<Output, TaskError>, stats: &TaskStats) -> JsonValue {
    let mut line = match result.and_then(|o| o.to_json()) {
        Ok(value) => json!({ "ok": value }),
        Err(e) => json!({ "error": { "kind": e.kind(), "message": e.to_string() } }),
    };
    let obj = line.as_object_mut().expect("an object");
    obj.insert("fuel".into(), stats.fuel_used.into());
    obj.insert(
        "duration_us".into(),
        (stats.duration.as_micros() as u64).into(),
    );
    if !stats.stdout.is_empty() {
        obj.insert(
            "stdout".into(),
            String::from_utf8_lossy(&stats.stdout).into(),
        );
    }
    if !stats.stderr.is_empty() {
        obj.insert(
            "stderr".into(),
            String::from_utf8_lossy(&stats.stderr).into(),
        );
    }
    if stats.output_truncated {
        obj.insert("output_truncated".into(), true.into());
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpool::ValType;

    #[test]
    fn lines_become_inputs_by_signature() {
        let k = ExportKind::Numeric {
            params: vec![ValType::I32, ValType::F64],
            results: vec![],
        };
        assert_eq!(
            to_input(&k, "[1, 2.5]"),
            Ok(Input::Numbers(vec![Value::I32(1), Value::F64(2.5)]))
        );
        assert!(to_input(&k, "[1]").unwrap_err().contains("takes 2"));
        assert!(to_input(&k, "[1.5, 2]")
            .unwrap_err()
            .contains("not a valid i32"));
        assert!(to_input(&k, "{oops")
            .unwrap_err()
            .contains("not valid JSON"));
        let one = ExportKind::Numeric {
            params: vec![ValType::I64],
            results: vec![],
        };
        assert_eq!(to_input(&one, "7"), Ok(Input::Numbers(vec![Value::I64(7)])));
        assert_eq!(
            to_input(&ExportKind::Task, r#" {"a":1} "#),
            Ok(Input::Json(br#"{"a":1}"#.to_vec()))
        );
    }
}
