//! The router, the layer every request passes (token, drain, metrics), and the handlers
//! of the routes that answer in one piece: modules, `call`, `exec`, `/healthz`, `/metrics`.
//! A task's error is a result (`200` with `error`); HTTP errors are for the request.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, Visitor};
use serde_json::{json, Map, Value as JsonValue};
use wasmpool::{
    CommandOutput, Export, ExportKind, Limits, LoadError, Module, ModuleId, Origin, Output,
    QueueFull, TaskError, TaskSpec, TaskStats,
};

use super::body::read_whole;
use super::error::ApiError;
use super::store::Uploaded;
use super::{map, App, InFlight};
use crate::cli::call_line::{to_input, write_result_line};

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/v1/modules", post(upload))
        .route("/v1/modules/{id}", get(info).delete(remove))
        .route("/v1/modules/{id}/call/{export}", post(call))
        .route("/v1/modules/{id}/map/{export}", post(map::map))
        .route("/v1/modules/{id}/exec", post(exec))
        .fallback(|| async { ApiError::not_found("no such route; see `wasmpool serve --help`") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method; see `wasmpool serve --help`",
            )
        })
        .layer(middleware::from_fn_with_state(app.clone(), layer))
        .with_state(app)
}

/// Every request: the token (all routes but `/healthz`), then 503 while draining, then
/// the handler, counted in flight for the drain; its status and latency into the metrics.
async fn layer(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let authorized = match &app.token {
        Some(token) if req.uri().path() != "/healthz" => token.admits(
            req.headers()
                .get(header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
        ),
        _ => true,
    };
    let response = if !authorized {
        let mut r = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs `Authorization: Bearer TOKEN` with the token of its --token-file",
        )
        .into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        r
    } else {
        // Counted before the check, so that a drain that starts meanwhile waits for it.
        let in_flight = InFlight::new(&app);
        if app.draining.load(Ordering::SeqCst) && req.uri().path() != "/healthz" {
            drop(in_flight);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "draining",
                "the server is shutting down; try another instance or again later",
            )
            .retry_after(5)
            .into_response()
        } else {
            let response = next.run(req).await;
            drop(in_flight);
            response
        }
    };
    app.metrics
        .observe(response.status().as_u16(), started.elapsed());
    response
}

fn json_response(status: StatusCode, mut body: Vec<u8>) -> Response {
    if body.last() != Some(&b'\n') {
        body.push(b'\n');
    }
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_value(status: StatusCode, value: &JsonValue) -> Response {
    json_response(status, value.to_string().into_bytes())
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    if app.draining.load(Ordering::SeqCst) {
        json_value(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "draining" }),
        )
    } else {
        json_value(
            StatusCode::OK,
            &json!({ "status": "ok", "workers": app.pool.workers() }),
        )
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let pool = app.pool.clone();
    let stats = tokio::task::spawn_blocking(move || pool.stats())
        .await
        .unwrap_or_default();
    let text = app
        .metrics
        .render(&stats, app.store.len(), app.draining.load(Ordering::SeqCst));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// The HTTP error for a module that did not load.
fn load_error(e: LoadError) -> ApiError {
    let status = match e.kind() {
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "io" | "compile_failed" => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    };
    ApiError::new(status, e.kind(), wasmpool::error::Chain(&e).to_string())
}

/// 429 for a full queue.
pub fn queue_full(e: QueueFull) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "queue_full", e.to_string()).retry_after(1)
}

/// The module a path names, or 404.
pub async fn module(app: &App, id: &str) -> Result<Module, ApiError> {
    let unknown = || {
        ApiError::not_found(format!(
            "no module `{id}` here (an id is the 64 hex digits POST /v1/modules answered)"
        ))
    };
    let id = ModuleId::from_hex(id).ok_or_else(unknown)?;
    app.store
        .get(id)
        .await
        .map_err(load_error)?
        .ok_or_else(unknown)
}

/// The kind of `module`'s export `name`, or 404 naming those it has.
pub fn export_kind(module: &Module, name: &str) -> Result<ExportKind, ApiError> {
    match module.export(name) {
        Some(e) => Ok(e.kind.clone()),
        None => {
            let names: Vec<&str> = module.exports().iter().map(|e| e.name.as_str()).collect();
            Err(ApiError::not_found(format!(
                "the module has no export `{name}`; its exports: {}",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            )))
        }
    }
}

fn export_json(e: &Export) -> JsonValue {
    let kind = match e.kind {
        ExportKind::Numeric { .. } => "numeric",
        ExportKind::Task => "task",
        _ => "unsupported",
    };
    json!({ "name": e.name, "kind": kind, "signature": e.to_string() })
}

fn describe(m: &Module) -> JsonValue {
    let (origin, took) = match m.origin() {
        Origin::Compiled(t) => ("compiled", t),
        Origin::DiskCache(t) => ("disk_cache", t),
        _ => ("other", Default::default()),
    };
    json!({
        "id": m.id().to_hex(),
        "size": m.size(),
        "exports": m.exports().iter().map(export_json).collect::<Vec<_>>(),
        "command": m.export(wasmpool::command::ENTRY).is_some(),
        "origin": origin,
        "compile_ms": took.as_secs_f64() * 1e3,
    })
}

async fn upload(State(app): State<Arc<App>>, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let bytes = read_whole(
            body,
            &headers,
            app.max_module_size,
            "--max-module-size",
            app.read_timeout,
        )
        .await?;
        let (status, m) = match app.store.upload(bytes).await.map_err(load_error)? {
            Uploaded::Created(m) => (StatusCode::CREATED, m),
            Uploaded::Existing(m) => (StatusCode::OK, m),
        };
        let mut r = json_value(status, &describe(&m));
        if let Ok(location) = HeaderValue::from_str(&format!("/v1/modules/{}", m.id().to_hex())) {
            r.headers_mut().insert(header::LOCATION, location);
        }
        Ok::<_, ApiError>(r)
    };
    result.await.unwrap_or_else(IntoResponse::into_response)
}

async fn info(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let m = module(&app, &id).await?;
    Ok(json_value(StatusCode::OK, &describe(&m)))
}

async fn remove(State(app): State<Arc<App>>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let unknown = || ApiError::not_found(format!("no module `{id}` here"));
    let mid = ModuleId::from_hex(&id).ok_or_else(unknown)?;
    if app.store.delete(mid).await {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(unknown())
    }
}

/// A request's limits over the server's maxima (its defaults), each checked: in range,
/// and not over the server's own (a request cannot lift a limit the server sets).
pub fn capped(requested: Limits, max: &Limits) -> Result<Limits, ApiError> {
    requested
        .validate()
        .map_err(|e| ApiError::bad_request(format!("this request's {e}")))?;
    fn over<T: PartialOrd + std::fmt::Debug>(
        name: &str,
        flag: &str,
        asked: Option<T>,
        max: Option<T>,
    ) -> Result<(), ApiError> {
        match (asked, max) {
            (_, None) => Ok(()),
            (None, Some(m)) => Err(ApiError::bad_request(format!(
                "{name}: unlimited is over the server's maximum {m:?} ({flag})"
            ))),
            (Some(a), Some(m)) if a > m => Err(ApiError::bad_request(format!(
                "{name} {a:?} is over the server's maximum {m:?} ({flag})"
            ))),
            _ => Ok(()),
        }
    }
    over("fuel", "--max-fuel", requested.fuel, max.fuel)?;
    over("timeout", "--max-timeout", requested.timeout, max.timeout)?;
    over("memory_bytes", "--max-memory", requested.memory, max.memory)?;
    over(
        "stdout_cap_bytes",
        "the default",
        Some(requested.stdout_cap),
        Some(max.stdout_cap),
    )?;
    over(
        "stderr_cap_bytes",
        "the default",
        Some(requested.stderr_cap),
        Some(max.stderr_cap),
    )?;
    over(
        "max_input_bytes",
        "the default",
        Some(requested.max_input),
        Some(max.max_input),
    )?;
    over(
        "max_output_bytes",
        "the default",
        Some(requested.max_output),
        Some(max.max_output),
    )?;
    Ok(requested)
}

/// The limits of a `call` or `map` that asks for `fuel`, `timeout_ms`, `memory_bytes`
/// (each left out: the server's maximum).
pub fn call_limits(
    max: &Limits,
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
) -> Result<Limits, ApiError> {
    let mut limits = *max;
    if let Some(f) = fuel {
        limits.fuel = Some(f);
    }
    if let Some(t) = timeout_ms {
        limits.timeout = Some(std::time::Duration::from_millis(t));
    }
    if let Some(m) = memory_bytes {
        limits.memory = Some(m);
    }
    capped(limits, max)
}

/// The body of a `call`: `{"input": JSON, "fuel": n, "timeout_ms": n, "memory_bytes": n}`.
/// The input is copied as compact JSON text token by token (never built as a tree: a
/// 64 MiB array of small numbers would otherwise take gigabytes), to become the call's
/// input as a `run` line does.
#[derive(Debug, Default)]
struct CallBody {
    input: Option<String>,
    fuel: Option<u64>,
    timeout_ms: Option<u64>,
    memory_bytes: Option<u64>,
}

impl CallBody {
    fn parse(bytes: &[u8]) -> Result<CallBody, ApiError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let body = de
            .deserialize_map(CallBodyVisitor)
            .and_then(|b| de.end().map(|()| b))
            .map_err(|e| ApiError::bad_request(format!("the request body: {e}")))?;
        Ok(body)
    }
}

struct CallBodyVisitor;

impl<'de> Visitor<'de> for CallBodyVisitor {
    type Value = CallBody;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(r#"an object {"input": ..., "fuel": n, "timeout_ms": n, "memory_bytes": n}"#)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CallBody, A::Error> {
        let mut body = CallBody::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "input" => body.input = Some(map.next_value_seed(Compact)?),
                "fuel" => body.fuel = map.next_value()?,
                "timeout_ms" => body.timeout_ms = map.next_value()?,
                "memory_bytes" => body.memory_bytes = map.next_value()?,
                other => {
                    return Err(A::Error::custom(format_args!(
                        "unknown field `{other}`, expected one of `input`, `fuel`, `timeout_ms`, `memory_bytes`"
                    )))
                }
            }
        }
        Ok(body)
    }
}

/// A JSON value as compact JSON text, copied token by token.
struct Compact;

impl<'de> DeserializeSeed<'de> for Compact {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let mut out = Vec::new();
        serde_transcode::transcode(d, &mut serde_json::Serializer::new(&mut out))
            .map_err(D::Error::custom)?;
        String::from_utf8(out).map_err(D::Error::custom)
    }
}

async fn call(
    State(app): State<Arc<App>>,
    Path((id, export)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let module = module(&app, &id).await?;
    let kind = export_kind(&module, &export)?;
    let bytes = read_whole(body, &headers, app.max_body, "--max-body", app.read_timeout).await?;
    let req = CallBody::parse(&bytes)?;
    drop(bytes);
    let limits = call_limits(&app.limits, req.fuel, req.timeout_ms, req.memory_bytes)?;
    let input = to_input(&kind, req.input.unwrap_or_else(|| "null".into()));
    let (result, stats) = match input {
        Err(message) => (Err(TaskError::BadInput { message }), TaskStats::default()),
        Ok(input) => {
            let call = app.pool.call(&module, &export).limits(limits);
            // Dropped with this future (a client that hangs up): the task is cancelled.
            let mut task = call.try_submit::<Output>(input).map_err(queue_full)?;
            let result = (&mut task).await;
            (result, task.stats().unwrap_or_default())
        }
    };
    let mut line = Vec::new();
    write_result_line(&mut line, result, &stats).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot write the result: {e}"),
        )
    })?;
    Ok(json_response(StatusCode::OK, line))
}

/// Bytes as `key` when they are UTF-8 text, else as `<key>_base64`.
fn text_or_base64(obj: &mut Map<String, JsonValue>, key: &str, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => obj.insert(key.into(), text.into()),
        Err(_) => obj.insert(
            format!("{key}_base64"),
            base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into(),
        ),
    };
}

/// The answer to an `exec`: the program's exit code, output and `/out` files (base64), or
/// the task's error with what it printed before.
fn exec_object(result: Result<CommandOutput, TaskError>, stats: &TaskStats) -> JsonValue {
    let mut obj = Map::new();
    let (fuel, duration) = match &result {
        Ok(out) => (out.fuel_used, out.duration),
        Err(_) => (stats.fuel_used, stats.duration),
    };
    match result {
        Ok(out) => {
            obj.insert("exit_code".into(), out.exit_code.into());
            text_or_base64(&mut obj, "stdout", &out.stdout);
            text_or_base64(&mut obj, "stderr", &out.stderr);
            if out.output_truncated {
                obj.insert("output_truncated".into(), true.into());
            }
            let files: Map<String, JsonValue> = out
                .files
                .iter()
                .map(|f| {
                    let data = base64::engine::general_purpose::STANDARD.encode(&f.data);
                    (f.path.clone(), data.into())
                })
                .collect();
            obj.insert("files".into(), files.into());
        }
        Err(e) => {
            obj.insert(
                "error".into(),
                json!({ "kind": e.kind(), "message": e.to_string() }),
            );
            text_or_base64(&mut obj, "stdout", &stats.stdout);
            text_or_base64(&mut obj, "stderr", &stats.stderr);
        }
    }
    obj.insert("fuel".into(), fuel.into());
    obj.insert("duration_us".into(), (duration.as_micros() as u64).into());
    obj.into()
}

async fn exec(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let module = module(&app, &id).await?;
    if module.export(wasmpool::command::ENTRY).is_none() {
        return Err(ApiError::not_found(format!(
            "the module is not a WASI command: it has no `{}` export",
            wasmpool::command::ENTRY
        )));
    }
    let bytes = read_whole(body, &headers, app.max_body, "--max-body", app.read_timeout).await?;
    let spec: TaskSpec = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("the request body: {e}")))?;
    drop(bytes);
    if spec.reads_host_files() {
        return Err(ApiError::bad_request(
            "the request body: inputs must be {\"text\": ...} or {\"base64\": ...}; host paths are refused"
                .to_string(),
        ));
    }
    let requested = spec
        .limits_over(app.limits)
        .map_err(|e| ApiError::bad_request(format!("the request body: {e}")))?;
    let limits = capped(requested, &app.limits)?;
    let mut call = app.pool.command(&module).limits(limits);
    if let Some(n) = spec.max_retries {
        call = call.max_retries(n);
    }
    let mut task = call.try_submit(spec.command).map_err(queue_full)?;
    let result = (&mut task).await;
    let stats = task.stats().unwrap_or_default();
    Ok(json_value(StatusCode::OK, &exec_object(result, &stats)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_call_body_keeps_its_input_as_compact_text_and_refuses_unknown_fields() {
        let b = CallBody::parse(br#"{"input": {"a": [1, 2.5, "x"]}, "fuel": 5}"#).unwrap();
        assert_eq!(b.input.as_deref(), Some(r#"{"a":[1,2.5,"x"]}"#));
        assert_eq!(b.fuel, Some(5));
        assert!(CallBody::parse(b"{}").unwrap().input.is_none());
        for bad in [
            &br#"{"inputs": 1}"#[..],
            b"[1]",
            b"{",
            br#"{"fuel": -1}"#,
            b"{} x",
        ] {
            let e = CallBody::parse(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
        }
        let deep = format!(
            "{{\"input\": {}{}}}",
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(CallBody::parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn requests_cannot_lift_the_servers_limits() {
        let max = Limits::default()
            .with_fuel(Some(1000))
            .with_timeout(Some(Duration::from_secs(2)));
        let l = call_limits(&max, Some(10), Some(500), None).unwrap();
        assert_eq!(l.fuel, Some(10));
        assert_eq!(l.timeout, Some(Duration::from_millis(500)));
        assert_eq!(call_limits(&max, None, None, None).unwrap(), max);
        let e = call_limits(&max, Some(1001), None, None).unwrap_err();
        assert!(e.message.contains("--max-fuel"), "{}", e.message);
        let e = call_limits(&max, None, Some(3000), None).unwrap_err();
        assert!(e.message.contains("--max-timeout"), "{}", e.message);
        let e = call_limits(&max, None, None, Some(1 << 40)).unwrap_err();
        assert!(e.message.contains("memory"), "{}", e.message);
        let e = call_limits(&max, Some(0), None, None).unwrap_err();
        assert!(e.message.contains("fuel of 0"), "{}", e.message);
        let unlimited = max.with_fuel(None);
        assert!(capped(unlimited, &max).is_err());
        assert!(capped(max.with_fuel(Some(7)), &unlimited).is_ok());
    }
}
