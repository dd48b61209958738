//! Reading and checking JSON request bodies of the management API.

use std::collections::BTreeMap;

use bytes::{Buf, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, EXPECT};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{Map, Value};

use crate::body::{BodyGap, BodyPace, BodyStalled, StallGuard};
use crate::error::ErrorReply;

/// How a body must arrive when the server did not say (it always does).
const DEFAULT_BODY_PACE: BodyPace = BodyPace {
    gap: std::time::Duration::from_secs(10),
    min_rate: 0,
};

pub const MAX_DESCRIPTION_CHARS: usize = 255;

/// The body as a JSON object: 415 unless `Content-Type` is JSON, 413 above
/// `limit` bytes, 400 unless it is one JSON object.
pub async fn json_object(
    req: Request<Incoming>,
    limit: usize,
) -> Result<Map<String, Value>, ErrorReply> {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ErrorReply::client(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "The request body must be JSON, sent with Content-Type: application/json",
        ));
    }
    let too_large = || {
        ErrorReply::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("The request body is larger than {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let pace = req
        .extensions()
        .get::<BodyGap>()
        .map_or(DEFAULT_BODY_PACE, |g| g.0);
    // A client waiting for `100 Continue` has not sent its body: reading it
    // would invite the upload only to drop it, so the 413 goes at once.
    let expects_continue = req
        .headers()
        .get(EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut body = std::pin::pin!(StallGuard::new(req.into_body(), pace));
    if let Some(n) = declared
        && n > limit as u64
    {
        if !expects_continue && n <= (limit + DISCARD_LIMIT) as u64 {
            discard_rest(body).await;
        }
        return Err(too_large());
    }
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if bytes.len() + data.len() > limit {
                    discard_rest(body).await;
                    return Err(too_large());
                }
                bytes.extend_from_slice(&data);
            }
            Err(e) if BodyStalled::is_cause_of(&*e) => {
                return Err(ErrorReply::client(
                    StatusCode::REQUEST_TIMEOUT,
                    "The request body was not received in time",
                ));
            }
            Err(_) => {
                return Err(ErrorReply::client(
                    StatusCode::BAD_REQUEST,
                    "The request body could not be read",
                ));
            }
        }
    }
    parse_object(&bytes)
}

/// How much of a refused body is read and dropped before answering.
const DISCARD_LIMIT: usize = 1 << 20;

/// Reads and drops what is left of a body refused as too large, up to
/// [`DISCARD_LIMIT`] bytes and at the body's pace, so that a client still
/// sending it reads the 413 (and may keep its connection) instead of a reset:
/// a socket closed with unread bytes resets the connection. A body declared
/// longer than that is not read at all, and its connection closes.
async fn discard_rest<B>(mut body: std::pin::Pin<&mut B>)
where
    B: hyper::body::Body,
{
    let mut read = 0usize;
    while read <= DISCARD_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.remaining()),
            _ => return,
        }
    }
}

/// [`json_object`], or an empty object for a request without a body (no
/// `Content-Type`, no length or 0): for operations whose fields all have
/// defaults.
pub async fn json_object_or_none(
    req: Request<Incoming>,
    limit: usize,
) -> Result<Map<String, Value>, ErrorReply> {
    let headers = req.headers();
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let chunked = headers.contains_key(http::header::TRANSFER_ENCODING);
    if !headers.contains_key(CONTENT_TYPE) && !chunked && declared.unwrap_or(0) == 0 {
        return Ok(Map::new());
    }
    json_object(req, limit).await
}

/// Bytes of a body as one JSON object; 400 otherwise.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, ErrorReply> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ErrorReply::client(
            StatusCode::BAD_REQUEST,
            "The request body must be a JSON object",
        )),
        Err(e) => Err(ErrorReply::client(
            StatusCode::BAD_REQUEST,
            format!("The request body is not valid JSON: {e}"),
        )),
    }
}

/// The key under which unknown fields whose names are not shown are reported.
pub const UNNAMED_FIELD: &str = "(unknown field)";

/// Adds an error for each field not in `known`. A field name is quoted back
/// only when it reads as a field name (letters and digits, at most 64): any
/// other name could be a token or a password pasted in the wrong place, and
/// errors never echo a secret.
pub fn unknown_fields(
    obj: &Map<String, Value>,
    known: &[&str],
    errors: &mut BTreeMap<String, String>,
) {
    let plain = |k: &str| {
        (1..=64).contains(&k.len())
            && k.starts_with(|c: char| c.is_ascii_alphabetic())
            && k.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    for key in obj.keys() {
        if !known.contains(&key.as_str()) {
            let shown = if plain(key) {
                key.as_str()
            } else {
                UNNAMED_FIELD
            };
            errors.insert(
                shown.to_string(),
                format!("unknown field; expected one of {}", known.join(", ")),
            );
        }
    }
}

/// Characters that reorder text when it is displayed (U+202A–U+202E,
/// U+2066–U+2069): a description with them can show something else than it
/// holds ("Trojan Source"), so they are refused like control characters.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `tokenDescription`: required, 1 to 255 characters, no control or
/// bidirectional-override characters.
pub fn description(
    obj: &Map<String, Value>,
    errors: &mut BTreeMap<String, String>,
) -> Option<String> {
    let field = "tokenDescription";
    let problem = match obj.get(field) {
        None | Some(Value::Null) => "is required",
        Some(Value::String(s)) if s.trim().is_empty() => "must not be empty",
        Some(Value::String(s)) if s.chars().count() > MAX_DESCRIPTION_CHARS => {
            "must be at most 255 characters"
        }
        Some(Value::String(s)) if s.chars().any(|c| c.is_control() || is_bidi_control(c)) => {
            "must not contain control characters or text-direction overrides"
        }
        Some(Value::String(s)) => return Some(s.clone()),
        Some(_) => "must be a string",
    };
    errors.insert(field.to_string(), problem.to_string());
    None
}

/// An optional whole number in `min..=max`.
pub fn optional_int(
    obj: &Map<String, Value>,
    field: &str,
    min: u64,
    max: u64,
    errors: &mut BTreeMap<String, String>,
) -> Option<u64> {
    match obj.get(field) {
        None => None,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(v) if (min..=max).contains(&v) => Some(v),
            _ => {
                errors.insert(
                    field.to_string(),
                    format!("must be a whole number from {min} to {max}"),
                );
                None
            }
        },
        Some(_) => {
            errors.insert(
                field.to_string(),
                format!("must be a whole number from {min} to {max}"),
            );
            None
        }
    }
}
