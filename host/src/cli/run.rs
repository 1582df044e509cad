//! `wasmpool run MODULE EXPORT`: one call per JSON input line, JSON lines out in input order.

use std::io::{BufRead, Read, Write};
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

/// Most chunks of submitted lines waiting for the writer: with [`CHUNK_LINES`], the bound on
/// calls in flight (and on the memory they hold), whatever the length of the input.
const CHUNKS_AHEAD: usize = 64;

/// How long the writer waits for a call before it sends the results it holds.
const FLUSH_AFTER: std::time::Duration = std::time::Duration::from_millis(10);

/// Most lines in a chunk. A chunk also ends where the input has nothing more buffered, so
/// lines typed (or piped slowly) get their results at once.
const CHUNK_LINES: usize = 1024;

pub fn run(args: RunArgs) -> anyhow::Result<i32> {
    // The CLI keeps the default input cap (64 MiB) for every call.
    let max_line = wasmpool::Limits::default().max_input as usize;
    let reader = open_inputs(&args.inputs)?;
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
    let call = args
        .env
        .iter()
        .fold(pool.call(&module, &args.export), |call, (k, v)| {
            call.env(k, v)
        });

    // Lines are read, converted and submitted on a thread of their own, a chunk at a time,
    // while this one waits for results in order and writes them: the input streams (an
    // endless one runs in bounded memory, and results come while it is still being read).
    let (chunks, submitted) = crossbeam_channel::bounded(CHUNKS_AHEAD);
    let feeder = std::thread::Builder::new()
        .name("wasmpool-run-input".into())
        .spawn(move || feed(Lines::new(reader, max_line), &kind, &call, &chunks))
        .context("cannot start the input thread")?;

    let mut out = open_output(&args.output)?;
    let progress = progress_bar(0, "tasks");
    // A hidden bar (stderr not a terminal) still reads the clock on every `inc`: a tenth of
    // this loop's time at 400k calls/s.
    let shown = !progress.is_hidden();
    let (mut total, mut failed) = (0usize, 0usize);
    // Each line is made here and written whole: serde_json's many small writes then go to
    // a vector, not through the output's `dyn Write`.
    let mut line = Vec::with_capacity(256);
    loop {
        // What waits in the output goes out before a wait for more input.
        let chunk = match submitted.try_recv() {
            Ok(chunk) => chunk,
            Err(crossbeam_channel::TryRecvError::Empty) => {
                out.flush()?;
                match submitted.recv() {
                    Ok(chunk) => chunk,
                    Err(_) => break,
                }
            }
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
        };
        let chunk = chunk?;
        if shown {
            progress.inc_length(chunk.len() as u64);
        }
        total += chunk.len();
        for entry in chunk {
            let (result, stats) = match entry {
                Ok(task) => {
                    // Results already written go out while a long call runs.
                    let result = match task.wait_timeout(FLUSH_AFTER) {
                        Some(result) => result,
                        None => {
                            out.flush()?;
                            task.wait()
                        }
                    };
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
    }
    let _ = feeder.join();
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

/// One input line's call, or why it was refused.
type Entry = Result<Task<Output>, TaskError>;

/// Reads `lines` to their end, submitting each chunk's calls together and sending the
/// chunk's entries (in line order) to the writer; stops early when the writer is gone, and
/// sends a read error as the last chunk.
fn feed(
    mut lines: Lines,
    kind: &wasmpool::ExportKind,
    call: &wasmpool::Call,
    chunks: &crossbeam_channel::Sender<anyhow::Result<Vec<Entry>>>,
) {
    loop {
        // Each line is converted and moved into its call: no copy of an input is kept.
        let mut inputs = Vec::new();
        let mut accepted: Vec<Result<(), TaskError>> = Vec::new();
        let mut ended = false;
        while accepted.len() < CHUNK_LINES {
            // Never wait for more input while the chunk has lines to run.
            if !accepted.is_empty() && !lines.buffered() {
                break;
            }
            let (number, line) = match lines.next() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(e) => {
                    let _ = chunks.send(Err(e));
                    return;
                }
            };
            let input =
                line.and_then(|line| to_input(kind, line))
                    .map_err(|m| TaskError::BadInput {
                        message: format!("input line {number}: {m}"),
                    });
            accepted.push(input.map(|input| inputs.push(input)));
        }
        if !accepted.is_empty() {
            let mut tasks = call.submit_many::<Output, Input>(inputs).into_iter();
            let entries = accepted
                .into_iter()
                .map(|a| a.map(|()| tasks.next().expect("one task per accepted input")))
                .collect();
            if chunks.send(Ok(entries)).is_err() {
                return;
            }
        }
        if ended {
            return;
        }
    }
}

/// The input of `run`: `-` for stdin, else a file, opened now (so a missing file is an
/// error before the pool starts).
fn open_inputs(source: &str) -> anyhow::Result<InputReader> {
    let read: Box<dyn Read + Send> = match source {
        "-" => Box::new(std::io::stdin()),
        path => Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open inputs file {path}"))?,
        ),
    };
    Ok(std::io::BufReader::with_capacity(64 << 10, read))
}

/// What `run` reads its lines from.
type InputReader = std::io::BufReader<Box<dyn Read + Send>>;

/// Non-blank input lines with their 1-based line numbers. A line longer than `max_line`
/// bytes (the calls' `max_input`) is not kept, only refused: reading a huge line costs a
/// bounded buffer, not the line.
struct Lines {
    reader: InputReader,
    max_line: usize,
    number: usize,
}

impl Lines {
    fn new(reader: InputReader, max_line: usize) -> Self {
        Lines {
            reader,
            max_line,
            number: 0,
        }
    }

    /// Whether input is buffered (reading a line may still wait, for the rest of it).
    fn buffered(&mut self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// The next non-blank line, or why it cannot be a call; `None` at the end.
    fn next(&mut self) -> anyhow::Result<Option<(usize, Result<String, String>)>> {
        loop {
            self.number += 1;
            let number = self.number;
            let line = match read_line(&mut self.reader, self.max_line)
                .with_context(|| format!("cannot read input line {number}"))?
            {
                None => return Ok(None),
                Some(Ok(bytes)) => match String::from_utf8(bytes) {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(line) => Ok(line),
                    Err(_) => Err("the line is not valid UTF-8".to_string()),
                },
                Some(Err(len)) => Err(format!(
                    "the line is {len} bytes, more than a call may carry ({} bytes, Limits::max_input)",
                    self.max_line
                )),
            };
            return Ok(Some((number, line)));
        }
    }
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
