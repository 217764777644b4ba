//! Decoding a local method's params, and the one place that words -32602
//! for a params mismatch: from the catalog's description of the method's
//! members (`Method::params`), never from the decoder's own text, which names
//! Rust types (`expected u64`).
//!
//! The decoder (serde, into each handler's struct) stays the judge of what
//! is accepted, so a well-formed request costs one typed pass, as before;
//! only a refused one is read a second time, here, to say what is wrong.

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::catalog::{self, Method, Param, ParamKind};
use crate::rpc::RpcError;

/// A request's params with the method they are for.
#[derive(Clone, Copy)]
pub struct Params<'a> {
    method: Method,
    raw: Option<&'a RawValue>,
}

impl<'a> Params<'a> {
    pub fn new(method: Method, raw: Option<&'a RawValue>) -> Self {
        Params { method, raw }
    }

    /// Decodes the params (absent means `{}`); a mismatch is -32602 naming
    /// the member and what it must be.
    pub fn decode<T: Deserialize<'a>>(self) -> Result<T, RpcError> {
        let text = self.raw.map_or("{}", RawValue::get);
        serde_json::from_str(text).map_err(|_| RpcError::invalid_params(explain(self.method, text)))
    }
}

/// What is wrong with `text`, the params `method` refused.
fn explain(method: Method, text: &str) -> String {
    let members = method.params();
    let found = match serde_json::from_str::<Shape>(text) {
        Ok(Shape::Named(given)) => named(method, members, &given),
        Ok(Shape::Positional(given)) => positional(method, members, &given),
        // Valid JSON (the envelope checked it) that is not a value tree: a
        // string escape that is no Unicode text.
        Err(_) => {
            Some("params hold a string with an invalid escape (a lone UTF-16 surrogate)".to_owned())
        }
    };
    // The decoder refused what the description accepts: still say what the
    // params must be rather than nothing (a test keeps the two in step).
    found.unwrap_or_else(|| format!("params must be {}", shape(members)))
}

fn named(method: Method, members: &[Param], given: &[(String, Value)]) -> Option<String> {
    for (n, (key, _)) in given.iter().enumerate() {
        if !members.iter().any(|p| p.name == key) {
            return Some(format!(
                "{} is not a parameter of {} (it takes {})",
                path(key),
                catalog::method_entry(method).0,
                names(members)
            ));
        }
        if given.iter().skip(n + 1).any(|(k, _)| k == key) {
            return Some(format!("{} is given twice", path(key)));
        }
    }
    for p in members {
        match given.iter().find(|(k, _)| k == p.name) {
            Some((_, v)) => {
                if let Some(why) = misfit(p, v, &path(p.name)) {
                    return Some(why);
                }
            }
            None if !p.optional => {
                return Some(format!(
                    "{} is required and must be {}",
                    path(p.name),
                    p.kind.describe()
                ))
            }
            None => {}
        }
    }
    None
}

fn positional(method: Method, members: &[Param], given: &[Value]) -> Option<String> {
    if given.len() > members.len() {
        return Some(format!(
            "params has {} members; {} takes {}: {}, in that order",
            given.len(),
            catalog::method_entry(method).0,
            members.len(),
            names(members)
        ));
    }
    for (n, p) in members.iter().enumerate() {
        let at = format!("params[{n}] ({})", p.name);
        match given.get(n) {
            Some(v) => {
                if let Some(why) = misfit(p, v, &at) {
                    return Some(why);
                }
            }
            None => {
                return Some(format!(
                    "{at} is missing: positional params give every member, optional ones too, in this order: {}",
                    names(members)
                ))
            }
        }
    }
    None
}

/// Why `v` does not fit `p`, naming it `at`.
fn misfit(p: &Param, v: &Value, at: &str) -> Option<String> {
    if v.is_null() && p.optional {
        return None;
    }
    let fits = match p.kind {
        ParamKind::Str => v.is_string(),
        ParamKind::UInt => v.is_u64(),
        ParamKind::Bool => v.is_boolean(),
        ParamKind::Any => true,
        ParamKind::StrList => match v.as_array() {
            Some(items) => {
                return items
                    .iter()
                    .position(|item| !item.is_string())
                    .map(|i| format!("{at}[{i}] must be a string"));
            }
            None => false,
        },
    };
    let or_absent = if p.optional { " (or be left out)" } else { "" };
    (!fits).then(|| format!("{at} must be {}{or_absent}", p.kind.describe()))
}

/// `params.name`, or `params["…"]` for a member name that is not a plain
/// word (it is the peer's text: shortened and quoted).
fn path(key: &str) -> String {
    let plain = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        format!("params.{key}")
    } else {
        let short: String = key.chars().take(64).collect();
        format!("params[{short:?}]")
    }
}

fn names(members: &[Param]) -> String {
    let names: Vec<&str> = members.iter().map(|p| p.name).collect();
    names.join(", ")
}

/// `{"user": a string, "password": a string}`.
fn shape(members: &[Param]) -> String {
    let parts: Vec<String> = members
        .iter()
        .map(|p| {
            let opt = if p.optional { " (optional)" } else { "" };
            format!("\"{}\": {}{opt}", p.name, p.kind.describe())
        })
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// Params as given: the members of an object in order (duplicates kept), or
/// the elements of an array.
enum Shape {
    Named(Vec<(String, Value)>),
    Positional(Vec<Value>),
}

impl<'de> Deserialize<'de> for Shape {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Shape;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object or an array")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Shape, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry()? {
                    members.push(member);
                }
                Ok(Shape::Named(members))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shape, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(Shape::Positional(items))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn why(method: Method, text: &str) -> String {
        explain(method, text)
    }

    #[test]
    fn messages_name_the_member_and_what_it_must_be() {
        let cases = [
            (
                Method::TurnCredentials,
                r#"{"ttl":"x"}"#,
                "params.ttl must be a non-negative integer (or be left out)",
            ),
            (
                Method::TurnCredentials,
                r#"{"ttl":-1}"#,
                "params.ttl must be a non-negative integer (or be left out)",
            ),
            (
                Method::SessionLogin,
                r#"{"user":"a"}"#,
                "params.password is required and must be a string",
            ),
            (
                Method::SessionLogin,
                r#"{"user":"a","password":"b","extra":1}"#,
                "params.extra is not a parameter of session.login (it takes user, password)",
            ),
            (
                Method::SessionLogin,
                r#"{"user":"a","user":"b","password":"c"}"#,
                "params.user is given twice",
            ),
            (
                Method::EventsSubscribe,
                r#"{"topics":["a",5]}"#,
                "params.topics[1] must be a string",
            ),
            (
                Method::SessionLogin,
                r#"["a",5]"#,
                "params[1] (password) must be a string",
            ),
            (
                Method::SessionLogin,
                r#"["a","b","c"]"#,
                "params has 3 members; session.login takes 2: user, password, in that order",
            ),
            (
                Method::SessionLogin,
                r#"{"a b\n":1}"#,
                r#"params["a b\n"] is not a parameter of session.login (it takes user, password)"#,
            ),
        ];
        for (method, text, want) in cases {
            assert_eq!(why(method, text), want, "{text}");
        }
        assert!(why(Method::TurnCredentials, "[]").starts_with("params[0] (ttl) is missing"));
    }

    /// Each handler's decoder, by method (the structs are the handlers').
    fn decodes(method: Method, text: &str) -> bool {
        let raw: Box<RawValue> = serde_json::from_str(text).unwrap();
        super::super::decoder_accepts(method, Params::new(method, Some(&raw)))
    }

    /// A value of `kind`, and one of every other JSON type.
    fn samples(kind: ParamKind) -> (Value, Vec<Value>) {
        let all = [
            serde_json::json!("s"),
            serde_json::json!(5),
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!(true),
            serde_json::json!(["s"]),
            serde_json::json!([5]),
            serde_json::json!({}),
        ];
        let good = match kind {
            ParamKind::Str => serde_json::json!("s"),
            ParamKind::UInt => serde_json::json!(5),
            ParamKind::Bool => serde_json::json!(true),
            ParamKind::StrList => serde_json::json!(["s"]),
            ParamKind::Any => serde_json::json!({"k": 1}),
        };
        let bad = match kind {
            ParamKind::Any => Vec::new(),
            _ => all
                .into_iter()
                .filter(|v| {
                    let p = Param {
                        name: "x",
                        kind,
                        optional: false,
                    };
                    misfit(&p, v, "x").is_some()
                })
                .collect(),
        };
        (good, bad)
    }

    /// The catalog's description and the decoders agree: every member it
    /// lists is accepted with a fitting value and refused with any other, a
    /// required member may not be left out, an optional one may, and a
    /// member it does not list is refused. So the message `explain` words
    /// from the description is about what the decoder refused.
    #[test]
    fn the_descriptions_match_the_decoders() {
        for (name, method) in catalog::local_methods() {
            let members = method.params();
            if members.is_empty() {
                continue;
            }
            let base: serde_json::Map<String, Value> = members
                .iter()
                .map(|p| (p.name.to_owned(), samples(p.kind).0))
                .collect();
            let text = Value::Object(base.clone()).to_string();
            assert!(decodes(method, &text), "{name}: {text}");
            let positional: Vec<Value> = members.iter().map(|p| base[p.name].clone()).collect();
            let text = Value::Array(positional).to_string();
            assert!(decodes(method, &text), "{name}: {text}");
            for p in members {
                for bad in samples(p.kind).1 {
                    let mut params = base.clone();
                    params.insert(p.name.to_owned(), bad.clone());
                    let text = Value::Object(params).to_string();
                    assert!(!decodes(method, &text), "{name}: {text}");
                    assert!(
                        explain(method, &text).starts_with(&format!("params.{}", p.name)),
                        "{name}: {}",
                        explain(method, &text)
                    );
                }
                let mut without = base.clone();
                without.remove(p.name);
                let text = Value::Object(without).to_string();
                assert_eq!(decodes(method, &text), p.optional, "{name}: {text}");
                if p.optional {
                    let mut null = base.clone();
                    null.insert(p.name.to_owned(), Value::Null);
                    let text = Value::Object(null).to_string();
                    assert!(decodes(method, &text), "{name}: {text}");
                }
            }
            let mut extra = base.clone();
            extra.insert("zz".into(), Value::Null);
            assert!(
                !decodes(method, &Value::Object(extra).to_string()),
                "{name}"
            );
        }
    }
}
