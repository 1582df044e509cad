//! Request bodies read under a cap and a read timeout: a body declared larger than its cap
//! is refused (413) before a byte of it is read, one that turns out larger is refused as
//! soon as it passes the cap (never held whole), and a client that sends nothing for
//! `--read-timeout` while its body is due gets 408 and loses the connection.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, StatusCode};
use http_body_util::BodyExt;

use super::error::ApiError;

/// The request's `Content-Length`, when it declares one.
fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// 413 for a body over `cap` bytes, naming the flag that sets it.
pub fn over_cap(cap: u64, flag: &str) -> ApiError {
    ApiError::too_large(format!(
        "the request body is over {cap} bytes, the server's {flag}"
    ))
}

/// Refuses at once a body whose declared length is over `cap`.
pub fn check_declared(headers: &HeaderMap, cap: u64, flag: &str) -> Result<(), ApiError> {
    match declared_len(headers) {
        Some(len) if len > cap => Err(over_cap(cap, flag)),
        _ => Ok(()),
    }
}

/// 408 for a client that stopped sending.
pub fn timed_out(timeout: Duration) -> ApiError {
    ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "read_timeout",
        format!(
            "the request body stopped arriving: nothing came for {} (the server's --read-timeout)",
            humantime::format_duration(timeout)
        ),
    )
}

/// The next piece of a body: `None` at its end; an error when the client stopped sending
/// for `timeout` or the body could not be read.
pub async fn next_chunk(body: &mut Body, timeout: Duration) -> Result<Option<Bytes>, ApiError> {
    loop {
        match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(timed_out(timeout)),
            Ok(None) => return Ok(None),
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
                // Trailers: nothing to read.
            }
        }
    }
}

/// The whole body, at most `cap` bytes (`flag` names the cap in the 413's message).
pub async fn read_whole(
    mut body: Body,
    headers: &HeaderMap,
    cap: u64,
    flag: &str,
    timeout: Duration,
) -> Result<Vec<u8>, ApiError> {
    check_declared(headers, cap, flag)?;
    let mut bytes = Vec::new();
    while let Some(chunk) = next_chunk(&mut body, timeout).await? {
        if (bytes.len() as u64).saturating_add(chunk.len() as u64) > cap {
            return Err(over_cap(cap, flag));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}
