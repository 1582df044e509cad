//! `wasmpool run MODULE EXPORT`: one call per JSON input line, JSON lines out in input order.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use serde::Serialize;
use serde_json::{json, Value as JsonValue};
use wasmpool::{ExportKind, Input, Output, Task, TaskError, TaskStats, Value};

use super::{load_module, open_output, progress_bar, PoolArgs, EXIT_OK, EXIT_TASK_FAILED};

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
    /// Set an environment variable for the guest (repeatable; e.g. `RUST_BACKTRACE=1` for a
    /// Rust guest's panics); the environment is otherwise empty.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = super::exec::parse_env)]
    env: Vec<(String, String)>,
    #[command(flatten)]
    pool: PoolArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // The CLI keeps the default input cap (64 MiB) for every call.
    let max_line = wasmpool::Limits::default().max_input as usize;
    let lines = read_lines(&args.inputs, max_line)?;
    let pool = args.pool.build()?;
    let module = load_module(&pool, &args.module)?;
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

    // Each line is converted and moved into its call: no copy of an input is kept here.
    let mut inputs = Vec::new();
    let mut entries: Vec<Result<(), TaskError>> = Vec::with_capacity(lines.len());
    for (number, line) in lines {
        let input = line
            .and_then(|line| to_input(&kind, line))
            .map_err(|m| TaskError::BadInput {
                message: format!("input line {number}: {m}"),
            });
        entries.push(input.map(|input| inputs.push(input)));
    }
    let call = args
        .env
        .iter()
        .fold(pool.call(&module, &args.export), |call, (k, v)| {
            call.env(k, v)
        });
    let mut tasks = call.submit_many::<Output, Input>(inputs).into_iter();

    let mut out = open_output(&args.output)?;
    let total = entries.len();
    let progress = progress_bar(total as u64, "tasks");
    let mut failed = 0usize;
    for entry in entries {
        let (result, stats) = match entry {
            Ok(()) => {
                let task: Task<Output> = tasks.next().expect("one task per accepted input");
                let result = task.wait();
                (result, task.stats().unwrap_or_default())
            }
            Err(e) => (Err(e), TaskStats::default()),
        };
        if result.is_err() {
            failed += 1;
        }
        write_result_line(&mut out, result, &stats)?;
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

/// Non-blank input lines with their 1-based line numbers. A line longer than `max_line`
/// bytes (the calls' `max_input`) is not kept, only refused: reading a huge line costs a
/// bounded buffer, not the line.
fn read_lines(
    source: &str,
    max_line: usize,
) -> anyhow::Result<Vec<(usize, Result<String, String>)>> {
    let mut reader: Box<dyn BufRead> = match source {
        "-" => Box::new(std::io::stdin().lock()),
        path => Box::new(std::io::BufReader::new(
            std::fs::File::open(path).with_context(|| format!("cannot open inputs file {path}"))?,
        )),
    };
    let mut lines = Vec::new();
    let mut number = 0;
    loop {
        number += 1;
        let line = match read_line(&mut reader, max_line)
            .with_context(|| format!("cannot read input line {number}"))?
        {
            None => break,
            Some(Ok(bytes)) => match String::from_utf8(bytes) {
                Ok(line) if line.trim().is_empty() => continue,
                Ok(line) => Ok(line),
                Err(_) => Err("the line is not valid UTF-8".to_string()),
            },
            Some(Err(len)) => Err(format!(
                "the line is {len} bytes, more than a call may carry ({max_line} bytes, Limits::max_input)"
            )),
        };
        lines.push((number, line));
    }
    Ok(lines)
}

/// Reads one line (without its `\n` or `\r\n`): `None` at the end of input,
/// `Some(Err(len))` for a line of `len` bytes, over `max`: read to its end, but not kept.
fn read_line(r: &mut dyn BufRead, max: usize) -> std::io::Result<Option<Result<Vec<u8>, usize>>> {
    let mut line = Vec::new();
    let mut len = 0usize;
    let mut any = false;
    let mut ends_in_cr = false;
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        any = true;
        let (part, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        len = len.saturating_add(part.len());
        if let Some(&last) = part.last() {
            ends_in_cr = last == b'\r';
        }
        if len <= max.saturating_add(1) {
            line.extend_from_slice(part);
        } else {
            line = Vec::new();
        }
        let used = done.unwrap_or(part.len());
        r.consume(used);
        if done.is_some() {
            break;
        }
    }
    if !any {
        return Ok(None);
    }
    if ends_in_cr {
        line.pop();
        len -= 1;
    }
    Ok(Some(if len > max { Err(len) } else { Ok(line) }))
}

/// Converts one JSON line into the call's input for an export of `kind`.
fn to_input(kind: &ExportKind, line: String) -> Result<Input, String> {
    // Checked without building it: an SDK task gets the line's own bytes, a numeric call
    // only its numbers.
    serde_json::from_str::<serde::de::IgnoredAny>(&line)
        .map_err(|e| format!("not valid JSON: {e}"))?;
    match kind {
        ExportKind::Task => {
            let start = line.len() - line.trim_start().len();
            let end = line.trim_end().len();
            let mut bytes = line.into_bytes();
            bytes.truncate(end);
            bytes.drain(..start);
            Ok(Input::Json(bytes))
        }
        ExportKind::Numeric { params, .. } => {
            let numbers = numeric_args(&line, params.len())?;
            if numbers.len() != params.len() {
                return Err(format!(
                    "the export takes {} argument(s), the line has {}",
                    params.len(),
                    numbers.len()
                ));
            }
            numbers
                .into_iter()
                .zip(params)
                .enumerate()
                .map(|(i, (n, &ty))| {
                    let j = JsonValue::Number(n);
                    Value::from_json(&j, ty)
                        .ok_or_else(|| format!("argument {} ({j}) is not a valid {ty}", i + 1))
                })
                .collect::<Result<_, _>>()
                .map(Input::Numbers)
        }
        ExportKind::Unsupported { signature } => Err(format!(
            "the export's signature {signature} is not callable"
        )),
        other => Err(format!(
            "`run` cannot call an export of this kind ({other:?})"
        )),
    }
}

/// A numeric call's arguments: `null` (none), a number (one) or an array of numbers. The
/// parse stops at the first element past `max` or the first that is not a number, so a
/// line costs no more memory than its arguments, whatever it holds.
fn numeric_args(line: &str, max: usize) -> Result<Vec<serde_json::Number>, String> {
    use serde::de::{DeserializeSeed, Error, SeqAccess, Visitor};

    struct Args {
        max: usize,
    }
    impl<'de> DeserializeSeed<'de> for Args {
        type Value = Vec<serde_json::Number>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
    }
    impl<'de> Visitor<'de> for Args {
        type Value = Vec<serde_json::Number>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(
                f,
                "null, a number or an array of at most {} numbers",
                self.max
            )
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(vec![v.into()])
        }
        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(vec![v.into()])
        }
        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            serde_json::Number::from_f64(v)
                .map(|n| vec![n])
                .ok_or_else(|| E::custom("not a finite number"))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut numbers = Vec::new();
            while let Some(n) = seq.next_element::<serde_json::Number>()? {
                if numbers.len() == self.max {
                    return Err(A::Error::custom(format_args!(
                        "the export takes {} argument(s), the line has more",
                        self.max
                    )));
                }
                numbers.push(n);
            }
            Ok(numbers)
        }
    }
    let mut de = serde_json::Deserializer::from_str(line);
    Args { max }
        .deserialize(&mut de)
        .and_then(|n| de.end().map(|()| n))
        .map_err(|e| e.to_string())
}

/// Writes one result line. An SDK task's JSON output is copied token by token into the
/// line (validated first), never built as a tree: a 64 MiB reply of small numbers would
/// otherwise take gigabytes.
fn write_result_line(
    out: &mut dyn Write,
    result: Result<Output, TaskError>,
    stats: &TaskStats,
) -> anyhow::Result<()> {
    let result = result.and_then(|output| match output {
        Output::Json(bytes) => serde_json::from_slice::<serde::de::IgnoredAny>(&bytes)
            .map(|_| Ok::<_, JsonValue>(bytes))
            .map_err(|e| TaskError::BadOutput {
                message: format!("guest output is not valid JSON: {e}"),
            }),
        other => other.to_json().map(Err),
    });
    let mut line = serde_json::Serializer::new(&mut *out);
    ResultLine {
        result: &result,
        stats,
    }
    .serialize(&mut line)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// A result line, keys in the order they always had (alphabetical).
struct ResultLine<'a> {
    /// `Ok(Ok(raw JSON))` for SDK output (validated), `Ok(Err(value))` for numbers.
    result: &'a Result<Result<Vec<u8>, JsonValue>, TaskError>,
    stats: &'a TaskStats,
}

impl serde::Serialize for ResultLine<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let stats = self.stats;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("duration_us", &(stats.duration.as_micros() as u64))?;
        if let Err(e) = self.result {
            m.serialize_entry(
                "error",
                &json!({ "kind": e.kind(), "message": e.to_string() }),
            )?;
        }
        m.serialize_entry("fuel", &stats.fuel_used)?;
        match self.result {
            Ok(Ok(raw)) => {
                let mut de = serde_json::Deserializer::from_slice(raw);
                m.serialize_entry("ok", &serde_transcode::Transcoder::new(&mut de))?;
            }
            Ok(Err(value)) => m.serialize_entry("ok", value)?,
            Err(_) => {}
        }
        if stats.output_truncated {
            m.serialize_entry("output_truncated", &true)?;
        }
        if !stats.stderr.is_empty() {
            m.serialize_entry("stderr", &String::from_utf8_lossy(&stats.stderr))?;
        }
        if !stats.stdout.is_empty() {
            m.serialize_entry("stdout", &String::from_utf8_lossy(&stats.stdout))?;
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmpool::ValType;

    fn s(line: &str) -> String {
        line.to_string()
    }

    #[test]
    fn lines_become_inputs_by_signature() {
        let k = ExportKind::Numeric {
            params: vec![ValType::I32, ValType::F64],
            results: vec![],
        };
        assert_eq!(
            to_input(&k, s("[1, 2.5]")),
            Ok(Input::Numbers(vec![Value::I32(1), Value::F64(2.5)]))
        );
        assert!(to_input(&k, s("[1]")).unwrap_err().contains("takes 2"));
        assert!(to_input(&k, s("[1, 2, 3]"))
            .unwrap_err()
            .contains("takes 2"));
        assert!(to_input(&k, s("[1.5, 2]"))
            .unwrap_err()
            .contains("not a valid i32"));
        assert!(to_input(&k, s("{oops"))
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(to_input(&k, s(r#"{"a": 1}"#))
            .unwrap_err()
            .contains("expected null, a number or an array of at most 2 numbers"));
        assert!(to_input(&k, s("[1, 2] x"))
            .unwrap_err()
            .contains("not valid JSON"));
        assert!(to_input(&k, s(r#"[1, "2"]"#))
            .unwrap_err()
            .contains("invalid type"));
        let one = ExportKind::Numeric {
            params: vec![ValType::I64],
            results: vec![],
        };
        assert_eq!(
            to_input(&one, s("7")),
            Ok(Input::Numbers(vec![Value::I64(7)]))
        );
        assert_eq!(
            to_input(&ExportKind::Task, s(r#" {"a":1} "#)),
            Ok(Input::Json(br#"{"a":1}"#.to_vec()))
        );
        assert!(to_input(&ExportKind::Task, s("{oops"))
            .unwrap_err()
            .contains("not valid JSON"));
    }

    #[test]
    fn a_numeric_line_is_refused_at_its_first_extra_element() {
        // Ten million elements where two are taken: the parse stops at the third, it never
        // holds the rest (the old parse built all of them as a JSON tree first).
        let k = ExportKind::Numeric {
            params: vec![ValType::I64, ValType::I64],
            results: vec![],
        };
        let line = format!("[{}1]", "1,".repeat(10_000_000));
        let e = numeric_args(&line, 2).unwrap_err();
        assert!(e.contains("takes 2 argument(s), the line has more"), "{e}");
        assert!(to_input(&k, line).is_err());
        let nested = format!("[{}]", "[1],".repeat(1000) + "1");
        assert!(numeric_args(&nested, 2)
            .unwrap_err()
            .contains("invalid type"));
    }

    #[test]
    fn over_long_lines_are_counted_not_kept() {
        let text = format!("1\n{}\r\n\n  \n[2]\r\n{}", "x".repeat(100), "y".repeat(11));
        let mut r = std::io::BufReader::with_capacity(8, text.as_bytes());
        assert_eq!(read_line(&mut r, 10).unwrap(), Some(Ok(b"1".to_vec())));
        assert_eq!(read_line(&mut r, 10).unwrap(), Some(Err(100)));
        assert_eq!(read_line(&mut r, 10).unwrap(), Some(Ok(Vec::new())));
        assert_eq!(read_line(&mut r, 10).unwrap(), Some(Ok(b"  ".to_vec())));
        assert_eq!(read_line(&mut r, 10).unwrap(), Some(Ok(b"[2]".to_vec())));
        assert_eq!(read_line(&mut r, 10).unwrap(), Some(Err(11)));
        assert_eq!(read_line(&mut r, 10).unwrap(), None);
        // Exactly the limit is kept.
        let mut r = std::io::BufReader::with_capacity(4, &b"0123456789"[..]);
        assert_eq!(
            read_line(&mut r, 10).unwrap(),
            Some(Ok(b"0123456789".to_vec()))
        );
    }

    #[test]
    fn result_lines_copy_guest_json_onto_one_line() {
        let mut stats = TaskStats::default();
        stats.fuel_used = 3;
        stats.stdout = b"hi".to_vec();
        let mut out = Vec::new();
        let pretty = b"{\n  \"b\": [1,\n 2],\r\n  \"a\": \"x\\ny\"\n}".to_vec();
        write_result_line(&mut out, Ok(Output::Json(pretty)), &stats).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"duration_us\":0,\"fuel\":3,\"ok\":{\"b\":[1,2],\"a\":\"x\\ny\"},\"stdout\":\"hi\"}\n"
        );
        let mut out = Vec::new();
        write_result_line(&mut out, Ok(Output::Json(b"{oops".to_vec())), &stats).unwrap();
        let line: JsonValue = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["error"]["kind"], "bad_output");
        assert!(line.get("ok").is_none());
        let mut out = Vec::new();
        write_result_line(&mut out, Ok(Output::Numbers(vec![Value::I64(7)])), &stats).unwrap();
        let line: JsonValue = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["ok"], 7);
    }
}
