//! JSON-RPC 2.0 envelope: parsing requests, writing responses, and the one
//! table that maps gateway errors to wire codes and close codes.
//!
//! Owns the wire shape only. Must not know about rights, sessions or sockets.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// Error codes of the wire contract (docs/PROTOCOL.md), with their messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    ParseError,
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    Internal,
    NotAuthenticated,
    LoginFailed,
    Forbidden,
    NoProvider,
    ProviderTimeout,
    TooManyPending,
    TooManySessions,
    StaleRevision,
    RateLimited,
    ClusterUnavailable,
}

impl Code {
    pub const fn code(self) -> i32 {
        match self {
            Code::ParseError => -32700,
            Code::InvalidRequest => -32600,
            Code::MethodNotFound => -32601,
            Code::InvalidParams => -32602,
            Code::Internal => -32000,
            Code::NotAuthenticated => -32001,
            Code::LoginFailed => -32002,
            Code::Forbidden => -32003,
            Code::NoProvider => -32004,
            Code::ProviderTimeout => -32005,
            Code::TooManyPending => -32006,
            Code::TooManySessions => -32007,
            Code::StaleRevision => -32040,
            Code::RateLimited => -32029,
            Code::ClusterUnavailable => -32050,
        }
    }

    pub const fn message(self) -> &'static str {
        match self {
            Code::ParseError => "parse error",
            Code::InvalidRequest => "invalid request",
            Code::MethodNotFound => "method not found",
            Code::InvalidParams => "invalid params",
            Code::Internal => "internal error",
            Code::NotAuthenticated => "not authenticated",
            Code::LoginFailed => "login failed",
            Code::Forbidden => "forbidden",
            Code::NoProvider => "no provider",
            Code::ProviderTimeout => "provider timeout",
            Code::TooManyPending => "too many pending requests",
            Code::TooManySessions => "too many sessions for this user",
            Code::StaleRevision => "stale revision",
            Code::RateLimited => "rate limited",
            Code::ClusterUnavailable => "cluster unavailable",
        }
    }
}

/// WebSocket close codes the gateway sends (RFC 6455 section 7.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    Normal,
    ShuttingDown,
    Protocol,
    BinaryFrame,
    InvalidUtf8,
    Policy,
    TooBig,
    TryAgain,
}

impl Close {
    pub const fn code(self) -> u16 {
        match self {
            Close::Normal => 1000,
            Close::ShuttingDown => 1001,
            Close::Protocol => 1002,
            Close::BinaryFrame => 1003,
            Close::InvalidUtf8 => 1007,
            Close::Policy => 1008,
            Close::TooBig => 1009,
            Close::TryAgain => 1013,
        }
    }
}

/// An error answer: a code from the table, optionally a more precise message and data.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    pub code: Code,
    pub message: Cow<'static, str>,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: Code) -> Self {
        RpcError {
            code,
            message: Cow::Borrowed(code.message()),
            data: None,
        }
    }

    pub fn with_message(code: Code, message: impl Into<Cow<'static, str>>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// Adds `data.topic` (for refusals of one topic among several).
    pub fn with_topic(mut self, topic: &str) -> Self {
        let mut data = self.data.take().unwrap_or_else(|| serde_json::json!({}));
        data["topic"] = Value::String(topic.chars().take(256).collect());
        self.data = Some(data);
        self
    }

    pub fn invalid_params(why: impl Into<Cow<'static, str>>) -> Self {
        Self::with_message(Code::InvalidParams, why)
    }

    /// -32003 naming the missing right, as clients expect in `data.right`.
    pub fn forbidden(right: crate::rights::Right) -> Self {
        Self::new(Code::Forbidden).with_data(serde_json::json!({ "right": right.name() }))
    }
}

/// One request as it arrived. `id: None` means a notification (no answer).
#[derive(Debug)]
pub struct Request<'a> {
    pub id: Option<&'a RawValue>,
    pub method: Cow<'a, str>,
    pub params: Option<&'a RawValue>,
}

/// A provider's answer to a request the gateway routed to it.
#[derive(Debug)]
pub struct Answer<'a> {
    pub id: &'a RawValue,
    /// `Ok(result)` or `Err(error object)`, both raw JSON passed on untouched.
    pub outcome: Result<&'a RawValue, &'a RawValue>,
}

/// One element of a frame: a request, or an answer from a provider.
#[derive(Debug)]
pub enum Item<'a> {
    Call(Request<'a>),
    Answer(Answer<'a>),
}

/// What one text frame holds.
#[derive(Debug)]
pub enum Incoming<'a> {
    Single(Result<Item<'a>, Invalid<'a>>),
    Batch(Vec<Result<Item<'a>, Invalid<'a>>>),
    /// Not a request at all; answered with this error and `id: null`.
    Unusable(RpcError),
}

/// A request that cannot be served; `id` is echoed when it could be found.
#[derive(Debug)]
pub struct Invalid<'a> {
    pub id: Option<&'a RawValue>,
    pub error: RpcError,
}

/// Loose shape first, so a bad member still lets us echo the id.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    method: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<&'a RawValue>,
}

/// A call exactly as well-behaved clients send it: borrowed strings without
/// escapes. Extra members are ignored, as the loose envelope ignores them.
#[derive(Deserialize)]
struct Call<'a> {
    jsonrpc: &'a str,
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    method: &'a str,
    #[serde(borrow, default, deserialize_with = "present")]
    params: Option<&'a RawValue>,
}

/// The fastest path: the canonical envelope a well-behaved client or
/// provider sends, scanned by hand, or `None` when the frame is anything else.
///
/// Accepted: one object whose members are `jsonrpc` (`"2.0"`) and either
/// - a call: `method` (a string without escapes or control characters), and
///   optionally `id` (a string, a number or `null`) and `params` (an object
///   or an array); or
/// - a provider's answer: `id` (as above) and exactly one of `result` (any
///   value) or `error` (an object),
///
/// each member once, in any order, with JSON whitespace between tokens.
/// Keys with escapes, duplicate, extra or mixed members, and any other shape
/// return `None`, and the frame takes the typed and loose paths, which stay
/// the reference: whatever this returns, they would return too
/// (`the_scanner_agrees_with_the_loose_path`, the `rpc_envelope` fuzz target).
///
/// The `id`, `params`, `result` and `error` values are read by serde itself,
/// one value from where they start (no copy, no allocation): the same code
/// that reads them inside the whole document, so a value is valid here
/// exactly when it is there. Its raw-value reader keeps no depth count, so
/// reading one value alone cannot be let through where the whole document
/// is not.
fn canonical(text: &str) -> Option<Item<'_>> {
    let b = text.as_bytes();
    let mut at = skip_ws(b, 0);
    if b.get(at) != Some(&b'{') {
        return None;
    }
    let (mut jsonrpc, mut id, mut method, mut params) = (false, None, None, None);
    let (mut result, mut error) = (None, None);
    loop {
        // The key, recognised by its first letter and then in full with
        // its closing quote: any other key (escaped ones too) ends the scan.
        at = skip_ws(b, at + 1);
        // Each arm compares a key of known length: inlined, not a memcmp call.
        let key = |k: &[u8]| b.get(at..at + k.len()) == Some(k);
        let (member, len) = match b.get(at..at + 2)? {
            b"\"j" if key(K_JSONRPC) => (Member::Jsonrpc, K_JSONRPC.len()),
            b"\"i" if key(K_ID) => (Member::Id, K_ID.len()),
            b"\"m" if key(K_METHOD) => (Member::Method, K_METHOD.len()),
            b"\"p" if key(K_PARAMS) => (Member::Params, K_PARAMS.len()),
            b"\"r" if key(K_RESULT) => (Member::Result, K_RESULT.len()),
            b"\"e" if key(K_ERROR) => (Member::Error, K_ERROR.len()),
            _ => return None,
        };
        at = skip_ws(b, at + len);
        if b.get(at) != Some(&b':') {
            return None;
        }
        at = skip_ws(b, at + 1);
        let rest = text.get(at..)?;
        let len = match member {
            Member::Jsonrpc if !jsonrpc && rest.starts_with("\"2.0\"") => {
                jsonrpc = true;
                5
            }
            Member::Method if method.is_none() => {
                let m = plain_string(rest)?;
                method = Some(m);
                m.len() + 2
            }
            Member::Id if id.is_none() => {
                let raw = match rest.as_bytes().first()? {
                    b'n' if rest.starts_with("null") => RawValue::NULL,
                    b'"' | b'-' | b'0'..=b'9' => raw_prefix(rest)?,
                    _ => return None,
                };
                id = Some(raw);
                raw.get().len()
            }
            Member::Params if matches!(rest.as_bytes().first(), Some(b'{' | b'[')) => {
                read_once(&mut params, rest)?
            }
            Member::Result => read_once(&mut result, rest)?,
            // An error that is not an object is not an answer (the loose
            // path names what is wrong).
            Member::Error if rest.starts_with('{') => read_once(&mut error, rest)?,
            _ => return None,
        };
        at = skip_ws(b, at + len);
        match b.get(at)? {
            b',' => {}
            b'}' => break,
            _ => return None,
        }
    }
    if !jsonrpc || skip_ws(b, at + 1) != b.len() {
        return None;
    }
    match (method, result, error) {
        (Some(method), None, None) => Some(Item::Call(Request {
            id,
            method: Cow::Borrowed(method),
            params,
        })),
        (None, Some(result), None) if params.is_none() => Some(Item::Answer(Answer {
            id: id?,
            outcome: Ok(result),
        })),
        (None, None, Some(error)) if params.is_none() => Some(Item::Answer(Answer {
            id: id?,
            outcome: Err(error),
        })),
        _ => None,
    }
}

/// Reads the value `rest` starts with into `slot`, which must still be
/// empty (a member given twice is not canonical); its length in bytes.
fn read_once<'a>(slot: &mut Option<&'a RawValue>, rest: &'a str) -> Option<usize> {
    if slot.is_some() {
        return None;
    }
    let raw = raw_prefix(rest)?;
    *slot = Some(raw);
    Some(raw.get().len())
}

/// The canonical envelope's keys, quotes included.
const K_JSONRPC: &[u8] = b"\"jsonrpc\"";
const K_ID: &[u8] = b"\"id\"";
const K_METHOD: &[u8] = b"\"method\"";
const K_PARAMS: &[u8] = b"\"params\"";
const K_RESULT: &[u8] = b"\"result\"";
const K_ERROR: &[u8] = b"\"error\"";

/// The members of the canonical envelope.
#[derive(Clone, Copy)]
enum Member {
    Jsonrpc,
    Id,
    Method,
    Params,
    Result,
    Error,
}

/// The JSON whitespace serde skips, from `at`.
fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while matches!(b.get(at), Some(b' ' | b'\n' | b'\t' | b'\r')) {
        at += 1;
    }
    at
}

/// Bytes that end a string's plain run: the quote, a backslash, and the
/// control characters JSON does not allow raw.
const STOPS: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// The contents of the string `text` starts with, when it needs no
/// decoding (no escape, no control character).
fn plain_string(text: &str) -> Option<&str> {
    let b = text.as_bytes();
    if b.first() != Some(&b'"') {
        return None;
    }
    // A u8 always indexes the 256 entries.
    let len = b.get(1..)?.iter().position(|&c| STOPS[usize::from(c)])?;
    (b.get(1 + len) == Some(&b'"')).then_some(text.get(1..1 + len)?)
}

/// The one JSON value `text` starts with, borrowed: serde reads it and
/// stops, leaving what follows to the caller.
fn raw_prefix(text: &str) -> Option<&RawValue> {
    let mut de = serde_json::Deserializer::from_str(text);
    let raw = <&RawValue>::deserialize(&mut de).ok()?;
    // The value starts at `text`'s first byte (no whitespace was skipped).
    (raw.get().as_ptr() == text.as_ptr()).then_some(raw)
}

/// The fast path: a well-formed call in one typed pass, or `None`.
fn strict(text: &str) -> Option<Request<'_>> {
    let call = serde_json::from_str::<Call>(text).ok()?;
    call.is_valid().then_some(Request {
        id: call.id,
        method: Cow::Borrowed(call.method),
        params: call.params,
    })
}

impl Call<'_> {
    /// What `from_envelope` would accept as a call, and nothing else.
    fn is_valid(&self) -> bool {
        self.jsonrpc == "2.0"
            && !self.id.is_some_and(|id| {
                matches!(id.get().as_bytes().first(), Some(b'{' | b'[' | b't' | b'f'))
            })
            && self
                .params
                .is_none_or(|p| matches!(p.get().as_bytes().first(), Some(b'{' | b'[')))
    }
}

/// Keeps an explicit `null` as `Some`, so `"id": null` is not a notification.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Bounds a frame must keep to (`[limits]`).
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Elements in one batch.
    pub max_batch: usize,
    /// Nesting of arrays and objects, the envelope included.
    pub max_depth: usize,
}

/// Parses one text frame within `bounds`.
pub fn parse(text: &str, bounds: Bounds) -> Incoming<'_> {
    parse_with::<true>(text, bounds)
}

/// `parse` without the canonical-envelope scanner: the reference the
/// scanner is checked against (the `rpc_envelope` fuzz target).
#[doc(hidden)]
pub fn parse_reference(text: &str, bounds: Bounds) -> Incoming<'_> {
    parse_with::<false>(text, bounds)
}

/// The canonical-envelope scanner alone (for the `rpc_envelope` fuzz target).
#[doc(hidden)]
pub fn scan_canonical(text: &str) -> Option<Item<'_>> {
    canonical(text)
}

/// The scanner, when `SCAN` (the reference runs without it).
fn scan<const SCAN: bool>(text: &str) -> Option<Item<'_>> {
    if SCAN {
        canonical(text)
    } else {
        None
    }
}

fn parse_with<const SCAN: bool>(text: &str, bounds: Bounds) -> Incoming<'_> {
    let max_batch = bounds.max_batch;
    // A canonical envelope nests one level above its params (or its
    // answer's value): only that value needs the depth count.
    if let Some(item) = scan::<SCAN>(text) {
        let value = match &item {
            Item::Call(req) => req.params,
            Item::Answer(a) => Some(a.outcome.unwrap_or_else(|e| e)),
        };
        let fits = bounds.max_depth >= 1
            && value.is_none_or(|v| !nested_deeper_than(v.get().as_bytes(), bounds.max_depth - 1));
        if fits {
            return Incoming::Single(Ok(item));
        }
    }
    if nested_deeper_than(text.as_bytes(), bounds.max_depth) {
        return Incoming::Unusable(RpcError::with_message(
            Code::InvalidRequest,
            format!("JSON nested deeper than {}", bounds.max_depth),
        ));
    }
    let first = text.trim_start().as_bytes().first().copied();
    match first {
        Some(b'[') => match serde_json::from_str::<Vec<&RawValue>>(text) {
            Ok(items) if items.is_empty() => {
                Incoming::Unusable(RpcError::with_message(Code::InvalidRequest, "empty batch"))
            }
            Ok(items) if items.len() > max_batch => Incoming::Unusable(RpcError::with_message(
                Code::InvalidRequest,
                format!("batch larger than {max_batch}"),
            )),
            Ok(items) => Incoming::Batch(
                items
                    .into_iter()
                    .map(|raw| parse_one::<SCAN>(raw.get()))
                    .collect(),
            ),
            Err(e) => Incoming::Unusable(classify(e)),
        },
        // Not the canonical envelope (tried above): a well-formed call
        // typed strictly, in one pass. Anything else takes the loose path,
        // which names what is wrong.
        Some(b'{') => match strict(text) {
            Some(req) => Incoming::Single(Ok(Item::Call(req))),
            None => match serde_json::from_str::<Envelope>(text) {
                Ok(env) => Incoming::Single(from_envelope(env)),
                Err(_) => single::<SCAN>(text),
            },
        },
        _ => single::<SCAN>(text),
    }
}

/// A frame that is not an array, classified the slow way.
fn single<const SCAN: bool>(text: &str) -> Incoming<'_> {
    match serde_json::from_str::<&RawValue>(text) {
        Ok(raw) => Incoming::Single(parse_one::<SCAN>(raw.get())),
        Err(e) => Incoming::Unusable(classify(e)),
    }
}

/// One pass over the bytes, strings skipped: is any array or object nested
/// deeper than `max`? Runs before serde so a deep document costs no recursion.
fn nested_deeper_than(bytes: &[u8], max: usize) -> bool {
    // Fewer openers than the bound cannot nest past it (the common case).
    // `[` and `{` differ in one bit; counted per 255 bytes in a u8, the
    // compiler vectorizes it.
    let openers: usize = bytes
        .chunks(255)
        .map(|c| {
            let n = c
                .iter()
                .fold(0u8, |n, &b| n.wrapping_add(u8::from(b | 0x20 == b'{')));
            usize::from(n)
        })
        .sum();
    if openers <= max {
        return false;
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

fn classify(e: serde_json::Error) -> RpcError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => RpcError::new(Code::InvalidRequest),
        _ => RpcError::new(Code::ParseError),
    }
}

fn parse_one<const SCAN: bool>(text: &str) -> Result<Item<'_>, Invalid<'_>> {
    let invalid = |id, why: &'static str| Invalid {
        id,
        error: RpcError::with_message(Code::InvalidRequest, why),
    };
    if !text.starts_with('{') {
        return Err(invalid(None, "request must be an object"));
    }
    if let Some(item) = scan::<SCAN>(text).or_else(|| strict(text).map(Item::Call)) {
        return Ok(item);
    }
    let env: Envelope =
        serde_json::from_str(text).map_err(|_| invalid(None, "request must be an object"))?;
    from_envelope(env)
}

fn from_envelope(env: Envelope<'_>) -> Result<Item<'_>, Invalid<'_>> {
    let invalid = |id, why: &'static str| Invalid {
        id,
        error: RpcError::with_message(Code::InvalidRequest, why),
    };
    let id = match env.id {
        Some(id) if matches!(id.get().as_bytes().first(), Some(b'{' | b'[' | b't' | b'f')) => {
            return Err(invalid(None, "id must be a string, a number or null"));
        }
        other => other,
    };
    if env.jsonrpc.map(RawValue::get) != Some("\"2.0\"") {
        return Err(invalid(id, "jsonrpc must be \"2.0\""));
    }
    if env.method.is_none() {
        let outcome = match (env.result, env.error) {
            (Some(r), None) => Some(Ok(r)),
            (None, Some(e)) if e.get().starts_with('{') => Some(Err(e)),
            _ => None,
        };
        if let (Some(id), Some(outcome)) = (id, outcome) {
            return Ok(Item::Answer(Answer { id, outcome }));
        }
    }
    let method = match env
        .method
        .map(|m| serde_json::from_str::<Cow<str>>(m.get()))
    {
        Some(Ok(m)) => m,
        _ => return Err(invalid(id, "method must be a string")),
    };
    if let Some(p) = env.params {
        if !matches!(p.get().as_bytes().first(), Some(b'{' | b'[')) {
            return Err(invalid(id, "params must be an object or an array"));
        }
    }
    Ok(Item::Call(Request {
        id,
        method,
        params: env.params,
    }))
}

const NULL_ID: &str = "null";

/// Appends what every answer starts with, `{"jsonrpc":"2.0","id":…` and
/// then `member` (`,"result":` or `,"error":{…`).
fn open_answer(out: &mut Vec<u8>, id: Option<&RawValue>, member: &[u8]) {
    out.extend_from_slice(b"{\"jsonrpc\":\"2.0\",\"id\":");
    out.extend_from_slice(id.map_or(NULL_ID, RawValue::get).as_bytes());
    out.extend_from_slice(member);
}

/// Appends `{"jsonrpc":"2.0","id":…,"result":…}`.
pub fn write_result(out: &mut Vec<u8>, id: Option<&RawValue>, result: &Value) {
    open_answer(out, id, b",\"result\":");
    // Writing a Value into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, result);
    out.push(b'}');
}

/// `write_result` for a result that is already JSON text (`Reply::Static`).
pub fn write_raw_result(out: &mut Vec<u8>, id: Option<&RawValue>, result: &str) {
    open_answer(out, id, b",\"result\":");
    out.extend_from_slice(result.as_bytes());
    out.push(b'}');
}

/// Appends `{"jsonrpc":"2.0","id":…,"error":{…}}`.
pub fn write_error(out: &mut Vec<u8>, id: Option<&RawValue>, err: &RpcError) {
    open_answer(out, id, b",\"error\":{\"code\":");
    // Written in place: no String per error answer.
    let _ = serde_json::to_writer(&mut *out, &err.code.code());
    out.extend_from_slice(b",\"message\":");
    let _ = serde_json::to_writer(&mut *out, &err.message);
    if let Some(data) = &err.data {
        out.extend_from_slice(b",\"data\":");
        let _ = serde_json::to_writer(&mut *out, data);
    }
    out.extend_from_slice(b"}}");
}

/// A server notification: `{"jsonrpc":"2.0","method":…,"params":…}`.
pub fn notification(method: &str, params: &Value) -> String {
    serde_json::json!({"jsonrpc": "2.0", "method": method, "params": params}).to_string()
}

/// A handler's answer.
pub enum Reply {
    Value(serde_json::Value),
    /// A result known when the gateway was built (session.ping's `{}`),
    /// written as it is: no value built, serialized and dropped per request.
    Static(&'static str),
    Error(RpcError),
    /// Answered later through the session's outbound queue (routed requests).
    Later,
}

impl From<Result<serde_json::Value, RpcError>> for Reply {
    fn from(r: Result<serde_json::Value, RpcError>) -> Reply {
        match r {
            Ok(v) => Reply::Value(v),
            Err(e) => Reply::Error(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: Bounds = Bounds {
        max_batch: 32,
        max_depth: 32,
    };

    fn single(text: &str) -> Result<Request<'_>, Invalid<'_>> {
        match parse(text, B) {
            Incoming::Single(Ok(Item::Call(r))) => Ok(r),
            Incoming::Single(Err(e)) => Err(e),
            other => panic!("not a single call: {other:?}"),
        }
    }

    #[test]
    fn provider_answers_are_recognised() {
        match parse(r#"{"jsonrpc":"2.0","id":9,"result":{"ok":true}}"#, B) {
            Incoming::Single(Ok(Item::Answer(a))) => {
                assert_eq!(a.id.get(), "9");
                assert_eq!(a.outcome.unwrap().get(), r#"{"ok":true}"#);
            }
            other => panic!("{other:?}"),
        }
        match parse(
            r#"{"jsonrpc":"2.0","id":9,"error":{"code":1,"message":"x"}}"#,
            B,
        ) {
            Incoming::Single(Ok(Item::Answer(a))) => assert!(a.outcome.is_err()),
            other => panic!("{other:?}"),
        }
        // Neither result nor error, or both: an invalid request.
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":9}"#, B),
            Incoming::Single(Err(_))
        ));
        assert!(matches!(
            parse(r#"{"jsonrpc":"2.0","id":9,"result":1,"error":{}}"#, B),
            Incoming::Single(Err(_))
        ));
    }

    #[test]
    fn explicit_null_id_is_not_a_notification() {
        let r = single(r#"{"jsonrpc":"2.0","id":null,"method":"session.ping"}"#).unwrap();
        assert_eq!(r.id.map(RawValue::get), Some("null"));
        let n = single(r#"{"jsonrpc":"2.0","method":"session.ping"}"#).unwrap();
        assert!(n.id.is_none());
    }

    #[test]
    fn ids_are_echoed_verbatim() {
        let r = single(r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"x"}"#)
            .unwrap();
        let mut out = Vec::new();
        write_result(&mut out, r.id, &serde_json::json!({}));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"result":{}}"#
        );
    }

    #[test]
    fn bad_envelopes_are_classified() {
        assert!(matches!(parse("{", B), Incoming::Unusable(e) if e.code == Code::ParseError));
        assert!(matches!(parse("[]", B), Incoming::Unusable(e) if e.code == Code::InvalidRequest));
        assert!(matches!(parse("42", B), Incoming::Single(Err(_))));
        let e = single(r#"{"jsonrpc":"1.0","id":7,"method":"x"}"#).unwrap_err();
        assert_eq!(e.id.map(RawValue::get), Some("7"));
        let e = single(r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#).unwrap_err();
        assert!(e.id.is_none());
        let e = single(r#"{"jsonrpc":"2.0","id":1,"method":5}"#).unwrap_err();
        assert_eq!(e.error.code, Code::InvalidRequest);
        let e = single(r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#).unwrap_err();
        assert_eq!(e.error.code, Code::InvalidRequest);
    }

    #[test]
    fn the_strict_fast_path_agrees_with_the_loose_one() {
        let inputs = [
            r#"{"jsonrpc":"2.0","id":1,"method":"session.ping"}"#,
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"x","params":{"k":[1,2]}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"x","params":[]}"#,
            r#"{"jsonrpc":"2.0","method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
            r#"{"jsonrpc":"2.0","id":true,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"a\u0062"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1.5e3,"method":"x","extra":{"a":1}}"#,
            r#"  {"jsonrpc":"2.0","id":1,"method":"x"}  "#,
        ];
        for text in inputs {
            let loose = match serde_json::from_str::<Envelope>(text) {
                Ok(env) => Incoming::Single(from_envelope(env)),
                Err(_) => super::single::<false>(text),
            };
            assert_eq!(
                format!("{:?}", parse(text, B)),
                format!("{loose:?}"),
                "{text}"
            );
        }
    }

    /// Frames the scanner must take, each with what it must find.
    const CANONICAL: &[&str] = &[
        r#"{"jsonrpc":"2.0","id":1,"method":"session.ping"}"#,
        r#"{"method":"x","params":{"a":[1,{"b":"}"}]},"id":"7","jsonrpc":"2.0"}"#,
        r#"{"jsonrpc":"2.0","method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"x","params":[]}"#,
        r#"{"jsonrpc":"2.0","id":"a\"b\u00e9","method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":-0.5e+3,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":123456789012345678901234567890,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"","params":{}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"caf\u{e9}\u{1f600}\u{7f}\"}",
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"s":"\ud800\"\\]}"}}"#,
        " \t\r\n{ \"jsonrpc\" : \"2.0\" ,\n\"id\"\t:\r1 , \"method\":\"x\" ,\"params\" : [ ] } \n",
        // Providers' answers.
        r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
        r#"{"result":{"a":[1,{"b":"}"}]},"id":"7","jsonrpc":"2.0"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":"\u00e9\"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":-1.5e3}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":[true,false]}"#,
        r#"{"jsonrpc":"2.0","id":null,"result":0}"#,
        r#"{"jsonrpc":"2.0","id":2,"error":{"code":-32000,"message":"busy"}}"#,
        " { \"error\" : { } , \"id\" : \"x\" , \"jsonrpc\" : \"2.0\" } ",
    ];

    /// Frames the scanner must leave to the typed and loose paths.
    const NOT_CANONICAL: &[&str] = &[
        // Escapes in a key or the method, duplicates, extra members.
        r#"{"jsonrpc":"2.0","id":1,"m\u0065thod":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a\u0062"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a\/b"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","method":"y"}"#,
        r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{},"params":[]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":1.5e3,"method":"x","extra":{"a":1}}"#,
        // Wrong values: each is refused by the loose path, naming why.
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":3}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":null}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":[1],"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2\u002e0","id":1,"method":"x"}"#,
        r#"{"jsonrpc":2.0,"id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":null}"#,
        r#"{"id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{}"#,
        // Answers the loose path must judge: mixed, duplicated, no id, an
        // error that is not an object.
        r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":{},"params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":1,"result":2}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":{},"error":{}}"#,
        r#"{"jsonrpc":"2.0","result":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":null}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":"busy"}"#,
        r#"{"jsonrpc":"2.0","id":1,"error":[]}"#,
        r#"{"jsonrpc":"2.0","id":true,"result":{}}"#,
        r#"{"jsonrpc":"1.0","id":1,"result":{}}"#,
        r#"{"id":1,"result":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":tru}"#,
        r#"{"jsonrpc":"2.0","id":1,"result":}"#,
        r#"{"jsonrpc":"2.0","id":1,"r\u0065sult":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"results":{}}"#,
        // Not JSON, or not one value.
        r#"{"jsonrpc":"2.0","id":01,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1.,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":-,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1-2,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":nul,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":nullx,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":"\x","method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":"\u12","method":"x"}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\tb\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":\"a\u{1}\",\"method\":\"x\"}",
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":1,}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1 2]}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x","params":{"a":"]"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x",}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x""#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x"} x"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x"}{}"#,
        r#"{"jsonrpc":"2.0" "id":1,"method":"x"}"#,
        r#"{"jsonrpc"="2.0","id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"x"}}"#,
        "\u{a0}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}",
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}\u{a0}",
        "\u{c}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\"}",
        r#"[{"jsonrpc":"2.0","id":1,"method":"x"}]"#,
        r#""{\"jsonrpc\":\"2.0\"}""#,
        "",
        "{",
    ];

    /// Whatever the scanner finds, the reference finds the same call; and
    /// every frame gets the same answer with or without the scanner.
    fn agrees(text: &str, bounds: Bounds) -> bool {
        let reference = format!("{:?}", parse_reference(text, bounds));
        assert_eq!(format!("{:?}", parse(text, bounds)), reference, "{text}");
        let scanned = canonical(text);
        // Past the depth check (which comes first), the same call.
        let deep = matches!(parse_reference(text, bounds), Incoming::Unusable(_));
        if let Some(item) = scanned.filter(|_| !deep) {
            let call = format!("{:?}", Incoming::Single(Ok(item)));
            assert_eq!(call, reference, "{text}");
            return true;
        }
        false
    }

    #[test]
    fn the_scanner_agrees_with_the_loose_path() {
        for text in CANONICAL {
            assert!(agrees(text, B), "not scanned: {text}");
            // Batch elements take the scanner too (the whole array does not).
            assert!(!agrees(&format!("[{text},{text}]"), B));
        }
        for text in NOT_CANONICAL {
            assert!(!agrees(text, B), "scanned: {text}");
            assert!(!agrees(&format!("[{text}]"), B));
        }
        // Ids and params come back as the exact bytes sent.
        let Some(Item::Call(r)) =
            canonical(r#"{"params" : {"a":1} ,"jsonrpc":"2.0","id":"x\u0041","method":"m.n"}"#)
        else {
            panic!("not scanned as a call");
        };
        assert_eq!(r.id.map(RawValue::get), Some(r#""x\u0041""#));
        assert_eq!(r.params.map(RawValue::get), Some(r#"{"a":1}"#));
        assert_eq!(r.method, "m.n");
        let Some(Item::Answer(a)) = canonical(r#"{"jsonrpc":"2.0","error" : {"code":1} ,"id":7}"#)
        else {
            panic!("not scanned as an answer");
        };
        assert_eq!(a.id.get(), "7");
        assert_eq!(
            a.outcome.map_err(RawValue::get).err(),
            Some(r#"{"code":1}"#)
        );
        // Params nested deeper than serde's own limit for whole documents
        // (128): the raw value reader counts no depth, on either path.
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{}{}}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        let wide = Bounds {
            max_batch: 32,
            max_depth: 1000,
        };
        assert!(agrees(&deep, wide));
        // Depth bounds around the envelope's own level: the scanner counts
        // only the params, the reference the whole frame.
        for max_depth in 0..5 {
            let bounds = Bounds {
                max_batch: 32,
                max_depth,
            };
            for text in CANONICAL.iter().chain(NOT_CANONICAL) {
                agrees(text, bounds);
            }
        }
    }

    /// Mutations of the frames above (a byte dropped, doubled, or replaced
    /// by one that matters to JSON), each checked against the reference: the
    /// fuzz target's check, run on every `cargo test`.
    #[test]
    fn the_scanner_agrees_on_mutated_frames() {
        const BYTES: &[u8] = b"{}[]\",:\\ \t\n0123456789-+.eEnulltrfasx\x01\x7f";
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut scanned, mut tried) = (0, 0);
        for text in CANONICAL.iter().chain(NOT_CANONICAL) {
            for _ in 0..2_000 {
                let mut bytes = text.as_bytes().to_vec();
                for _ in 0..1 + next(3) {
                    if bytes.is_empty() {
                        break;
                    }
                    let at = next(bytes.len());
                    match next(3) {
                        0 => {
                            bytes.remove(at);
                        }
                        1 => bytes.insert(at, bytes[at]),
                        _ => bytes[at] = BYTES[next(BYTES.len())],
                    }
                }
                if let Ok(text) = std::str::from_utf8(&bytes) {
                    tried += 1;
                    scanned += usize::from(agrees(text, B));
                }
            }
        }
        // Both kinds were reached: the check could have failed.
        assert!(
            scanned > 1_000 && tried - scanned > 1_000,
            "{scanned} of {tried}"
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = "[".repeat(10_000);
        assert!(
            matches!(parse(&deep, B), Incoming::Unusable(e) if e.code == Code::InvalidRequest && e.message.contains("deeper than 32"))
        );
        // Brackets inside strings do not count; escaped quotes do not end strings.
        let text = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{{"a":"\"{}"}}}}"#,
            "[".repeat(100)
        );
        assert!(matches!(parse(&text, B), Incoming::Single(Ok(_))));
        let at_limit = format!("{}{}", "[".repeat(32), "]".repeat(32));
        assert!(
            !matches!(parse(&at_limit, B), Incoming::Unusable(e) if e.message.contains("deeper"))
        );
        let deep_obj = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"x","params":{}}}"#,
            "[".repeat(10_000)
        );
        assert!(matches!(parse(&deep_obj, B), Incoming::Unusable(_)));
    }

    #[test]
    fn batch_limits() {
        let one = r#"{"jsonrpc":"2.0","id":1,"method":"session.ping"}"#;
        let batch = format!("[{}]", vec![one; 33].join(","));
        assert!(
            matches!(parse(&batch, B), Incoming::Unusable(e) if e.code == Code::InvalidRequest)
        );
        let batch = format!("[{}]", vec![one; 32].join(","));
        assert!(matches!(parse(&batch, B), Incoming::Batch(v) if v.len() == 32));
    }

    #[test]
    fn error_shape() {
        let mut out = Vec::new();
        write_error(
            &mut out,
            None,
            &RpcError::forbidden(crate::rights::Right::TurnServerConnection),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32003,"message":"forbidden","data":{"right":"TURN Server Connection"}}}"#
        );
    }
}
