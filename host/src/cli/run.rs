//! `wasmpool run MODULE EXPORT`: one call per JSON input line, JSON lines out in input order.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use anyhow::{bail, Context};
use wasmpool::{Batch, TaskError, TaskStats};

use super::call_line::{to_args, write_answer_line, Answer, LineArgs};
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
    let pace = std::sync::Arc::new(Pace::default());
    let feeder = {
        let pace = pace.clone();
        std::thread::Builder::new()
            .name("wasmpool-run-input".into())
            .spawn(move || feed(Lines::new(reader, max_line), &kind, &call, &chunks, &pace))
            .context("cannot start the input thread")?
    };

    let mut out = open_output(&args.output)?;
    let progress = progress_bar(0, "tasks");
    // A hidden bar (stderr not a terminal) still reads the clock on every `inc`: a tenth of
    // this loop's time at 400k calls/s.
    let shown = !progress.is_hidden();
    let (mut total, mut failed) = (0usize, 0usize);
    // Each line is made here and written whole: serde_json's many small writes then go to
    // a vector, not through the output's `dyn Write`.
    let mut line = Vec::with_capacity(256);
    let mut write = |result: Result<Answer, TaskError>,
                     stats: &TaskStats,
                     out: &mut Box<dyn Write>|
     -> anyhow::Result<()> {
        total += 1;
        if result.is_err() {
            failed += 1;
        }
        line.clear();
        write_answer_line(&mut line, result, stats)?;
        out.write_all(&line)?;
        if shown {
            progress.inc(1);
        }
        Ok(())
    };
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
            progress.inc_length(chunk.iter().map(Piece::lines).sum::<usize>() as u64);
        }
        for piece in chunk {
            match piece {
                Piece::Refused(e) => write(Err(e), &TaskStats::default(), &mut out)?,
                Piece::Calls(batch) => {
                    // Results already written go out while long calls run.
                    if !batch.wait_timeout(FLUSH_AFTER) {
                        out.flush()?;
                    }
                    let results = batch.wait();
                    pace.record(&results);
                    for (result, stats) in results {
                        write(result, &stats, &mut out)?;
                    }
                }
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

/// Some input lines, in order: one refused before it could run, or calls submitted
/// together (one handle on their results, not one per call: see [`Call::submit_batch`]).
///
/// [`Call::submit_batch`]: wasmpool::Call::submit_batch
enum Piece {
    Refused(TaskError),
    Calls(Batch<Answer>),
}

impl Piece {
    fn lines(&self) -> usize {
        match self {
            Piece::Refused(_) => 1,
            Piece::Calls(batch) => batch.len(),
        }
    }
}

/// About how much work the calls of one batch should hold: enough that a batch costs the
/// host little per call, little enough that results still stream and the workers stay
/// evenly loaded.
const BATCH_WORK: std::time::Duration = std::time::Duration::from_millis(1);

/// Most calls in one batch (as many as one message to a worker carries).
const MAX_BATCH: usize = 64;

/// How many calls go in a batch, judged from how long the calls answered so far took:
/// one at a time until the first answers (a long call is never held up behind others),
/// then about [`BATCH_WORK`] of them.
#[derive(Default)]
struct Pace {
    /// The mean duration of the calls of the last batch written, in nanoseconds (0: none
    /// written yet).
    call_nanos: std::sync::atomic::AtomicU64,
}

impl Pace {
    fn batch_size(&self) -> usize {
        match self.call_nanos.load(std::sync::atomic::Ordering::Relaxed) {
            0 => 1,
            nanos => (BATCH_WORK.as_nanos() as u64 / nanos).clamp(1, MAX_BATCH as u64) as usize,
        }
    }

    fn record(&self, results: &[(Result<Answer, TaskError>, TaskStats)]) {
        let (count, sum) = results
            .iter()
            .filter(|(_, s)| s.worker != 0)
            .fold((0u64, 0u64), |(count, sum), (_, s)| {
                (count + 1, sum.saturating_add(s.duration.as_nanos() as u64))
            });
        if let Some(mean) = sum.checked_div(count) {
            self.call_nanos
                .store(mean.max(1), std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Reads `lines` to their end, submitting their calls in batches (as many as `pace` says,
/// never waiting for more input while calls wait to be submitted) and sending each chunk's
/// pieces (in line order) to the writer; stops early when the writer is gone, and sends a
/// read error as the last chunk.
fn feed(
    mut lines: Lines,
    kind: &wasmpool::ExportKind,
    call: &wasmpool::Call,
    chunks: &crossbeam_channel::Sender<anyhow::Result<Vec<Piece>>>,
    pace: &Pace,
) {
    loop {
        // Each line is converted and moved into its call: no copy of an input is kept.
        let mut pieces = Vec::new();
        let mut inputs: Vec<LineArgs> = Vec::new();
        let mut count = 0;
        let mut ended = false;
        let size = pace.batch_size();
        let submit = |inputs: &mut Vec<LineArgs>, pieces: &mut Vec<Piece>| {
            if !inputs.is_empty() {
                pieces.push(Piece::Calls(call.submit_batch(inputs.drain(..))));
            }
        };
        while count < CHUNK_LINES {
            // Never wait for more input while the chunk has lines to run.
            if count > 0 && !lines.buffered() {
                break;
            }
            let (number, line) = match lines.next() {
                Ok(Some(line)) => line,
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(e) => {
                    submit(&mut inputs, &mut pieces);
                    let _ = chunks.send(Ok(pieces));
                    let _ = chunks.send(Err(e));
                    return;
                }
            };
            count += 1;
            match line.and_then(|line| to_args(kind, line)) {
                Ok(input) => {
                    inputs.push(input);
                    if inputs.len() >= size {
                        submit(&mut inputs, &mut pieces);
                    }
                }
                Err(m) => {
                    submit(&mut inputs, &mut pieces);
                    pieces.push(Piece::Refused(TaskError::BadInput {
                        message: format!("input line {number}: {m}"),
                    }));
                }
            }
        }
        submit(&mut inputs, &mut pieces);
        if !pieces.is_empty() && chunks.send(Ok(pieces)).is_err() {
            return;
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

/// Most bytes of line buffer kept from one line to the next.
const KEPT_LINE_BUFFER: usize = 64 << 10;

/// Non-blank input lines with their 1-based line numbers, each read into the same buffer.
/// A line longer than `max_line` bytes (the calls' `max_input`) is not kept, only refused:
/// reading a huge line costs a bounded buffer, not the line.
struct Lines {
    reader: InputReader,
    max_line: usize,
    number: usize,
    line: Vec<u8>,
}

impl Lines {
    fn new(reader: InputReader, max_line: usize) -> Self {
        Lines {
            reader,
            max_line,
            number: 0,
            line: Vec::new(),
        }
    }

    /// Whether input is buffered (reading a line may still wait, for the rest of it).
    fn buffered(&mut self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// The next non-blank line, or why it cannot be a call; `None` at the end.
    fn next(&mut self) -> anyhow::Result<Option<(usize, Result<&str, String>)>> {
        // A long line's buffer is not kept for the short ones after it.
        if self.line.capacity() > KEPT_LINE_BUFFER {
            self.line = Vec::new();
        }
        loop {
            self.number += 1;
            let number = self.number;
            let read = read_line(&mut self.reader, self.max_line, &mut self.line)
                .with_context(|| format!("cannot read input line {number}"))?;
            let line = match read {
                None => return Ok(None),
                Some(Ok(())) => match std::str::from_utf8(&self.line) {
                    Ok(line) if line.trim().is_empty() => continue,
                    Ok(_) => Ok(()),
                    Err(_) => Err("the line is not valid UTF-8".to_string()),
                },
                Some(Err(len)) => Err(format!(
                    "the line is {len} bytes, more than a call may carry ({} bytes, Limits::max_input)",
                    self.max_line
                )),
            };
            // Checked just above.
            let line = line.map(|()| std::str::from_utf8(&self.line).unwrap_or_default());
            return Ok(Some((number, line)));
        }
    }
}

/// Reads one line into `line` (without its `\n` or `\r\n`): `None` at the end of input,
/// `Some(Err(len))` for a line of `len` bytes, over `max`: read to its end, but not kept.
fn read_line(
    r: &mut dyn BufRead,
    max: usize,
    line: &mut Vec<u8>,
) -> std::io::Result<Option<Result<(), usize>>> {
    line.clear();
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
            // Not kept: its memory goes too (a huge line's buffer is not held on to).
            *line = Vec::new();
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
    Ok(Some(if len > max { Err(len) } else { Ok(()) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_hold_about_a_millisecond_of_calls() {
        let pace = Pace::default();
        assert_eq!(pace.batch_size(), 1, "one at a time until a call answers");
        let ran = |micros| {
            let mut stats = TaskStats::default();
            stats.worker = 7;
            stats.duration = std::time::Duration::from_micros(micros);
            (Ok(Answer::One(wasmpool::Value::I64(0))), stats)
        };
        pace.record(&[ran(10), ran(10)]);
        assert_eq!(pace.batch_size(), MAX_BATCH);
        pace.record(&[ran(100), ran(300)]);
        assert_eq!(pace.batch_size(), 5);
        pace.record(&[ran(5000)]);
        assert_eq!(pace.batch_size(), 1);
        // Calls that never ran (refused, or lost) say nothing about the calls' length.
        pace.record(&[(
            Err(TaskError::BadInput {
                message: "no".into(),
            }),
            TaskStats::default(),
        )]);
        assert_eq!(pace.batch_size(), 1);
    }

    #[test]
    fn over_long_lines_are_counted_not_kept() {
        let text = format!("1\n{}\r\n\n  \n[2]\r\n{}", "x".repeat(100), "y".repeat(11));
        let mut r = std::io::BufReader::with_capacity(8, text.as_bytes());
        let mut line = Vec::new();
        let mut read = |r: &mut dyn BufRead| {
            read_line(r, 10, &mut line)
                .unwrap()
                .map(|kept| kept.map(|()| line.clone()))
        };
        assert_eq!(read(&mut r), Some(Ok(b"1".to_vec())));
        assert_eq!(read(&mut r), Some(Err(100)));
        assert_eq!(read(&mut r), Some(Ok(Vec::new())));
        assert_eq!(read(&mut r), Some(Ok(b"  ".to_vec())));
        assert_eq!(read(&mut r), Some(Ok(b"[2]".to_vec())));
        assert_eq!(read(&mut r), Some(Err(11)));
        assert_eq!(read(&mut r), None);
        // Exactly the limit is kept.
        let mut r = std::io::BufReader::with_capacity(4, &b"0123456789"[..]);
        assert_eq!(read(&mut r), Some(Ok(b"0123456789".to_vec())));
    }
}
