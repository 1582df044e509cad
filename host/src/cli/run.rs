//! `wasmpool run MODULE EXPORT`: one call per JSON input line, JSON lines out in input order.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use wasmpool::{Input, Output, Task, TaskError, TaskStats};

use super::call_line::{to_input, write_result_line};
use super::{
    load_module_with, open_output, progress_bar, InitArgs, PoolArgs, EXIT_OK, EXIT_TASK_FAILED,
};

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
    init: InitArgs,
    #[command(flatten)]
    pool: PoolArgs,
}

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // The CLI keeps the default input cap (64 MiB) for every call.
    let max_line = wasmpool::Limits::default().max_input as usize;
    let lines = read_lines(&args.inputs, max_line)?;
    let pool = args.pool.build()?;
    let name = args
        .module
        .file_name()
        .map_or("program".into(), |n| n.to_string_lossy().into_owned());
    let init = args.init.init(name, None);
    let module = load_module_with(&pool, &args.module, init.as_ref())?;
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
    let mut inputs = Vec::with_capacity(lines.len());
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
    // A hidden bar (stderr not a terminal) still reads the clock on every `inc`: a tenth of
    // this loop's time at 400k calls/s.
    let shown = !progress.is_hidden();
    let mut failed = 0usize;
    // Each line is made here and written whole: serde_json's many small writes then go to
    // a vector, not through the output's `dyn Write`.
    let mut line = Vec::with_capacity(256);
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
        line.clear();
        write_result_line(&mut line, result, &stats)?;
        out.write_all(&line)?;
        if shown {
            progress.inc(1);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
