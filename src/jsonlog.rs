//! The one JSON line format of the log and the audit trail:
//! `{"time":…,"level":…,"target":…,"message":…,<event fields>,<span fields>}`,
//! flat, one object per line. [`crate::audit`] writes audit events in it to
//! `[audit] file`; [`layer`] writes every log event in it to stderr
//! (`--log-format json`). Both build their lines here, so the two always name
//! the same thing the same way (docs/AUDIT.md is the schema).
//!
//! Values keep their JSON type: a `&str` field is a string, a number a number,
//! a bool a bool; `%value` and `?value` are their Display and Debug text.
//! Call sites therefore pass strings as `&str` (never `?name`, whose Debug
//! text would arrive quoted). Fields named like a secret are written as
//! `<redacted>` whatever an emitter passes.
//!
//! Must not decide what is logged (the filters do) nor block on a slow disk
//! (the audit writer thread does the file I/O).

use std::fmt;
use std::io::Write;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// The span every session's lines happen in; its `id` is written `session`.
pub const SESSION_SPAN: &str = "session";
/// Field names never written as given.
const SECRET_FIELDS: &[&str] = &["password", "secret", "token", "key"];
/// Keys the line builder writes itself, first and in this order.
const HEAD: &[&str] = &["time", "level", "target", "message"];

/// A span's fields, kept for the lines inside it. Kept per live span, so
/// kept small: a boxed slice, not a map. Shared by the stderr and the audit
/// layers (span extensions are per span, not per layer).
pub(crate) struct SpanFields(Box<[(String, Value)]>);

/// Keeps a new span's fields, unless another layer already did.
pub(crate) fn keep_span_fields<S>(attrs: &Attributes<'_>, id: &Id, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut ext = span.extensions_mut();
    if ext.get_mut::<SpanFields>().is_none() {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        ext.insert(SpanFields(fields.0.into_iter().collect()));
    }
}

/// Adds fields recorded later (`span.record`) to a kept span.
pub(crate) fn update_span_fields<S>(id: &Id, values: &Record<'_>, ctx: &Context<'_, S>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.span(id) else { return };
    let mut ext = span.extensions_mut();
    if let Some(kept) = ext.get_mut::<SpanFields>() {
        let mut fields = Fields(std::mem::take(&mut kept.0).into_vec().into_iter().collect());
        values.record(&mut fields);
        kept.0 = fields.0.into_iter().collect();
    }
}

/// The event's fields, then those of the spans around it (innermost first;
/// a field the event or an inner span already has is not overwritten).
pub(crate) fn event_fields<S>(event: &Event<'_>, ctx: &Context<'_, S>) -> Map<String, Value>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut fields = Fields::default();
    event.record(&mut fields);
    let mut map = fields.0;
    if let Some(scope) = ctx.event_scope(event) {
        for span in scope {
            let is_session = span.name() == SESSION_SPAN;
            if let Some(SpanFields(kept)) = span.extensions().get::<SpanFields>() {
                for (k, v) in kept.iter() {
                    let key = if is_session && k == "id" {
                        "session"
                    } else {
                        k.as_str()
                    };
                    if !map.contains_key(key) && !v.is_null() {
                        map.insert(key.to_owned(), v.clone());
                    }
                }
            }
        }
    }
    map
}

/// Now, as RFC 3339 in UTC (`2025-01-31T12:00:00.123456789Z`).
pub(crate) fn time_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// `{"time":…,"level":…[,"target":…][,"message":…],<fields>}` and a newline.
pub(crate) fn line(
    level: &Level,
    target: Option<&str>,
    fields: &Map<String, Value>,
    time: String,
) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"time\":");
    out.push_str(&Value::String(time).to_string());
    out.push_str(",\"level\":\"");
    out.push_str(level.as_str());
    out.push('"');
    if let Some(target) = target {
        out.push_str(",\"target\":");
        out.push_str(&Value::String(target.to_owned()).to_string());
    }
    let message = fields.get("message").map(|m| ("message", m));
    let rest = fields
        .iter()
        .filter(|(k, _)| !HEAD.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v));
    for (k, v) in message.into_iter().chain(rest) {
        out.push(',');
        out.push_str(&Value::String(k.to_owned()).to_string());
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push_str("}\n");
    out
}

/// Collects fields as JSON values of their own type.
#[derive(Default)]
pub(crate) struct Fields(Map<String, Value>);

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        let name = field.name();
        let value = if SECRET_FIELDS.contains(&name) {
            Value::String("<redacted>".into())
        } else {
            value
        };
        self.0.insert(name.to_owned(), value);
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // NaN and infinities have no JSON number: their text then.
        let value = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, value);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
}

// ------------------------------------------------------------ stderr layer

/// `--log-format json`: every event the caller's filter lets through, as one
/// line on stderr. Events from the `log` crate (rustls, tungstenite) carry
/// their real target, without the `log.*` bookkeeping fields.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    JsonLog
}

struct JsonLog;

impl<S> Layer<S> for JsonLog
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        keep_span_fields(attrs, id, &ctx);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        update_span_fields(id, values, &ctx);
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut fields = event_fields(event, &ctx);
        let meta = event.metadata();
        let target = match fields.remove("log.target") {
            Some(Value::String(t)) => t,
            _ => meta.target().to_owned(),
        };
        fields.retain(|k, _| !k.starts_with("log."));
        let line = line(meta.level(), Some(&target), &fields, time_now());
        // Like the text log: a log line that cannot be written is dropped.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_starts_with_its_head_and_keeps_every_value_type() {
        let mut fields = Map::new();
        fields.insert("user".into(), Value::String("app\"1".into()));
        fields.insert("message".into(), Value::String("login succeeded".into()));
        fields.insert("revoked".into(), 2.into());
        fields.insert("password_changed".into(), true.into());
        let l = line(
            &Level::INFO,
            Some("audit"),
            &fields,
            "2025-01-01T00:00:00Z".into(),
        );
        assert!(
            l.starts_with(
                r#"{"time":"2025-01-01T00:00:00Z","level":"INFO","target":"audit","message":"login succeeded","#
            ),
            "{l}"
        );
        assert!(l.ends_with("}\n"));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["user"], "app\"1");
        assert_eq!(v["revoked"], 2);
        assert_eq!(v["password_changed"], true);
    }
}
