//! `POST /v1/modules/{id}/map/{export}`: JSON lines in, a `wasmpool run` result line out
//! per input, in input order, both streamed.
//!
//! Two tasks per request, joined by bounded channels:
//! - the reader takes the body as it arrives, cuts it into lines (a line over the calls'
//!   `max_input` is counted, not kept: its result is a `bad_input` line), and submits each
//!   with [`Call::submit_async`](wasmpool::Call::submit_async): on a full pool queue it
//!   waits for room, so the stream slows down instead of failing. At most [`WINDOW`]
//!   submitted calls wait to be written;
//! - the writer awaits them in input order and writes their lines in chunks into the
//!   response, at most [`OUT_CHUNKS`] chunks of about [`CHUNK`] bytes ahead of what the
//!   client has read.
//!
//! So neither side holds the whole stream, and a client that sends everything before it
//! reads still completes as long as its unread results fit those buffers and the sockets'.
//! A client that hangs up (or reads nothing for `--read-timeout`) ends the writer, which
//! drops the calls not yet written: they are cancelled, and the reader stops.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use tokio::sync::mpsc;
use wasmpool::{Call, ExportKind, Output, Task, TaskError, TaskStats};

use super::body::{check_declared, next_chunk, over_cap};
use super::error::ApiError;
use super::routes::{call_limits, export_kind, module};
use super::{App, InFlight};
use crate::cli::call_line::{to_input, write_result_line};

/// Calls submitted and not yet written, per request.
const WINDOW: usize = 1024;
/// Chunks of result lines written and not yet taken by the client, per request.
const OUT_CHUNKS: usize = 512;
/// A chunk of result lines is sent once it is this big (or when the next result is not
/// ready yet).
const CHUNK: usize = 16 << 10;

/// One input's place in the output.
enum Entry {
    /// Its line, already written (an input that could not become a call).
    Line(Vec<u8>),
    Task(Task<Output>),
    /// The request body failed (read timeout, over --max-body): a last line saying so.
    Abort(ApiError),
}

/// The limits a map asks for in its URI (`?fuel=&timeout_ms=&memory_bytes=`).
#[derive(Debug, Default, PartialEq, Eq)]
struct QueryLimits {
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
}

fn query_limits(uri: &Uri) -> Result<QueryLimits, ApiError> {
    let mut q = QueryLimits::default();
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let n: u64 = value.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "query parameter `{key}`: `{value}` is not a whole number"
            ))
        })?;
        match key {
            "fuel" => q.fuel = Some(n),
            "timeout_ms" => q.timeout_ms = Some(n),
            "memory_bytes" => q.memory_bytes = Some(n),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{key}` (map takes fuel, timeout_ms, memory_bytes)"
                )))
            }
        }
    }
    Ok(q)
}

pub async fn map(
    State(app): State<Arc<App>>,
    Path((id, export)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let module = module(&app, &id).await?;
    let kind = export_kind(&module, &export)?;
    let q = query_limits(&uri)?;
    let limits = call_limits(&app.limits, q.fuel, q.timeout_ms, q.memory_bytes)?;
    check_declared(&headers, app.max_body, "--max-body")?;
    let call = app.pool.call(&module, &export).limits(limits);
    let (entries, pending) = mpsc::channel(WINDOW);
    let (out, chunks) = mpsc::channel(OUT_CHUNKS);
    let reader = Reader {
        call,
        kind,
        max_line: limits.max_input as usize,
        max_body: app.max_body,
        timeout: app.read_timeout,
        entries,
    };
    tokio::spawn(reader.run(body));
    // The request stays in flight (for a drain) until its last line is written.
    tokio::spawn(write(pending, out, app.read_timeout, InFlight::new(&app)));
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::new(Chunks(chunks)),
    )
        .into_response())
}

struct Reader {
    call: Call,
    kind: ExportKind,
    max_line: usize,
    max_body: u64,
    timeout: Duration,
    entries: mpsc::Sender<Entry>,
}

impl Reader {
    /// Reads the body to its end (or the writer's), submitting each line's call.
    async fn run(self, mut body: Body) {
        let mut line = Vec::new();
        // The current line's length so far (kept only up to `max_line`).
        let mut len = 0usize;
        let mut number = 0usize;
        let mut total = 0u64;
        loop {
            let chunk = match next_chunk(&mut body, self.timeout).await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    let _ = self.entries.send(Entry::Abort(e)).await;
                    return;
                }
            };
            total = total.saturating_add(chunk.len() as u64);
            if total > self.max_body {
                let e = over_cap(self.max_body, "--max-body");
                let _ = self.entries.send(Entry::Abort(e)).await;
                return;
            }
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let (part, done) = match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => (&rest[..i], true),
                    None => (rest, false),
                };
                rest = &rest[part.len() + usize::from(done)..];
                len = len.saturating_add(part.len());
                if len <= self.max_line.saturating_add(1) {
                    line.extend_from_slice(part);
                }
                if done {
                    number += 1;
                    if !self.line(number, &mut line, len).await {
                        return;
                    }
                    len = 0;
                }
            }
        }
        if len > 0 {
            self.line(number + 1, &mut line, len).await;
        }
    }

    /// Submits line `number`, `len` bytes long (all of them in `line` unless it is over
    /// the limit), and empties `line`; false once the writer is gone.
    async fn line(&self, number: usize, line: &mut Vec<u8>, len: usize) -> bool {
        let mut bytes = std::mem::take(line);
        let too_long = |len: usize| {
            format!(
                "the line is {len} bytes, more than a call may carry ({} bytes, max_input)",
                self.max_line
            )
        };
        let input = if len > self.max_line.saturating_add(1) {
            Err(too_long(len))
        } else {
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
            if bytes.trim_ascii().is_empty() {
                return true;
            }
            if bytes.len() > self.max_line {
                Err(too_long(bytes.len()))
            } else {
                String::from_utf8(bytes)
                    .map_err(|_| "the line is not valid UTF-8".to_string())
                    .and_then(|text| to_input(&self.kind, text))
            }
        };
        let entry = match input {
            Ok(input) => Entry::Task(self.call.submit_async::<Output>(input).await),
            Err(message) => {
                let e = TaskError::BadInput {
                    message: format!("input line {number}: {message}"),
                };
                let mut out = Vec::new();
                let _ = write_result_line(&mut out, Err(e), &TaskStats::default());
                Entry::Line(out)
            }
        };
        self.entries.send(entry).await.is_ok()
    }
}

/// Writes each entry's line in input order into `out`, in chunks; ends at the last entry,
/// when the client is gone, or when it has read nothing for `timeout`.
async fn write(
    mut pending: mpsc::Receiver<Entry>,
    out: mpsc::Sender<Bytes>,
    timeout: Duration,
    _in_flight: InFlight,
) {
    let mut buf = Vec::with_capacity(CHUNK);
    let send = |buf: &mut Vec<u8>| {
        let chunk = Bytes::from(std::mem::replace(buf, Vec::with_capacity(CHUNK)));
        let out = out.clone();
        async move {
            matches!(
                tokio::time::timeout(timeout, out.send(chunk)).await,
                Ok(Ok(()))
            )
        }
    };
    loop {
        let entry = match pending.try_recv() {
            Ok(entry) => entry,
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                if !buf.is_empty() && !send(&mut buf).await {
                    return;
                }
                match pending.recv().await {
                    Some(entry) => entry,
                    None => break,
                }
            }
        };
        match entry {
            Entry::Line(line) => buf.extend_from_slice(&line),
            Entry::Abort(e) => {
                let line = serde_json::json!({ "error": { "kind": e.kind, "message": e.message } });
                buf.extend_from_slice(line.to_string().as_bytes());
                buf.push(b'\n');
                break;
            }
            Entry::Task(mut task) => {
                if !task.is_done() && !buf.is_empty() && !send(&mut buf).await {
                    return;
                }
                // A client that hangs up meanwhile ends the wait: dropping the task
                // cancels it.
                let result = tokio::select! {
                    result = &mut task => result,
                    () = out.closed() => return,
                };
                let stats = task.stats().unwrap_or_default();
                let _ = write_result_line(&mut buf, result, &stats);
            }
        }
        if buf.len() >= CHUNK && !send(&mut buf).await {
            return;
        }
    }
    if !buf.is_empty() {
        send(&mut buf).await;
    }
}

/// The response body: the chunks the writer sends, until it ends.
struct Chunks(mpsc::Receiver<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_limits_come_from_the_query() {
        let uri: Uri = "/v1/modules/x/map/f?fuel=5&timeout_ms=100".parse().unwrap();
        let q = QueryLimits {
            fuel: Some(5),
            timeout_ms: Some(100),
            memory_bytes: None,
        };
        assert_eq!(query_limits(&uri).unwrap(), q);
        let uri: Uri = "/v1/modules/x/map/f".parse().unwrap();
        assert_eq!(query_limits(&uri).unwrap(), QueryLimits::default());
        for bad in ["/m?fuel=x", "/m?fuel", "/m?color=1", "/m?fuel=-1"] {
            let uri: Uri = bad.parse().unwrap();
            assert_eq!(
                query_limits(&uri).unwrap_err().status,
                StatusCode::BAD_REQUEST
            );
        }
    }
}
