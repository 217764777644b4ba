//! A small simulated Voicemail Pro server: it connects to the gateway on
//! /adjunct, registers for the "voicemail" namespace and serves
//!
//! - `voicemail.config.get`, `voicemail.config.set {"settings": {...}}`
//! - `voicemail.security.get`, `voicemail.security.set {"settings": {...}}`
//! - `voicemail.backup.create`, `voicemail.backup.list`,
//!   `voicemail.backup.restore {"backup": n}`
//!
//! publishing `voicemail.config.changed`, `voicemail.security.changed` and
//! `voicemail.backup.done`. The gateway decides who may call what
//! (docs/RIGHTS.md): Voicemail Pro Basic reads the configuration and backs
//! up, Standard also changes the configuration, Administrator changes the
//! configuration and the security settings but does not back up. The README
//! ("Rights in practice: a voicemail server") runs it beside the `call`
//! command for each of the three.
//!
//! It reconnects and resumes like examples/cti_provider.rs (the shared code
//! is examples/shared/link.rs). Its user needs Adjunct Server Connection
//! and the rights of every operation it serves, Voicemail Pro Standard and
//! Administrator: the gateway sends a provider only what its rights open.
//!
//! ```text
//! ADJUNCT_GATEWAY_PASSWORD=<vmserver's password> \
//!   cargo run --example voicemail_provider -- --url wss://127.0.0.1:8443/adjunct --user vmserver --ca certs/ca.pem
//! ```
//!
//! Provider error codes: 4000 bad params, 4004 no such backup.

#[path = "shared/link.rs"]
mod link;

use std::process::ExitCode;

use serde_json::{json, Map, Value};

#[tokio::main]
async fn main() -> ExitCode {
    link::main("voicemail_provider", "vmserver", Voicemail::new()).await
}

/// The simulated server's state. It outlives connections.
struct Voicemail {
    config: Map<String, Value>,
    security: Map<String, Value>,
    /// Each backup is a copy of the configuration.
    backups: Vec<Map<String, Value>>,
    published: u64,
}

impl Voicemail {
    fn new() -> Voicemail {
        let object = |v: Value| v.as_object().cloned().unwrap_or_default();
        Voicemail {
            config: object(json!({"greeting": "default", "max_message_secs": 120})),
            security: object(json!({"pin_min_length": 4, "lockout_attempts": 5})),
            backups: Vec::new(),
            published: 0,
        }
    }

    /// The answer to one method, and the topic of the event it causes.
    fn handle(
        &mut self,
        method: &str,
        p: &Value,
    ) -> (Result<Value, (i64, String)>, Option<&'static str>) {
        let settings = || {
            p["settings"]
                .as_object()
                .cloned()
                .ok_or((4000, "params.settings must be an object".to_owned()))
        };
        match method {
            "voicemail.config.get" => (Ok(Value::Object(self.config.clone())), None),
            "voicemail.security.get" => (Ok(Value::Object(self.security.clone())), None),
            "voicemail.config.set" => match settings() {
                Ok(s) => {
                    self.config.extend(s);
                    (
                        Ok(Value::Object(self.config.clone())),
                        Some("voicemail.config.changed"),
                    )
                }
                Err(e) => (Err(e), None),
            },
            "voicemail.security.set" => match settings() {
                Ok(s) => {
                    self.security.extend(s);
                    let answer = Value::Object(self.security.clone());
                    (Ok(answer), Some("voicemail.security.changed"))
                }
                Err(e) => (Err(e), None),
            },
            "voicemail.backup.create" => {
                self.backups.push(self.config.clone());
                let backup = self.backups.len();
                (Ok(json!({"backup": backup})), Some("voicemail.backup.done"))
            }
            "voicemail.backup.list" => {
                let list: Vec<usize> = (1..=self.backups.len()).collect();
                (Ok(json!({"backups": list})), None)
            }
            "voicemail.backup.restore" => {
                let found = p["backup"]
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok()?.checked_sub(1))
                    .and_then(|i| self.backups.get(i));
                match found {
                    Some(b) => {
                        self.config = b.clone();
                        (
                            Ok(Value::Object(self.config.clone())),
                            Some("voicemail.config.changed"),
                        )
                    }
                    None => (Err((4004, "no such backup".to_owned())), None),
                }
            }
            _ => (Err((-32601, "method not found".to_owned())), None),
        }
    }
}

impl link::Service for Voicemail {
    fn namespaces(&self) -> &'static [&'static str] {
        &["voicemail"]
    }

    fn registered(&self) -> String {
        "registered for voicemail.*".to_owned()
    }

    fn request(&mut self, v: &Value) -> Vec<Value> {
        let method = v["method"].as_str().unwrap_or_default();
        let caller = v["caller"]["user"].as_str().unwrap_or("?");
        let (outcome, event) = self.handle(method, &v["params"]);
        let shown = outcome
            .as_ref()
            .map_or_else(|e| e.1.clone(), Value::to_string);
        println!("{caller} -> {method}: {shown}");
        let mut out = Vec::new();
        if let Some(id) = v.get("id") {
            out.push(match &outcome {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err((code, message)) => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                }
            });
        }
        if let (Some(topic), Ok(data)) = (event, outcome) {
            self.published += 1;
            out.push(
                json!({"jsonrpc": "2.0", "id": format!("pub-{}", self.published),
                "method": "adjunct.publish", "params": {"topic": topic, "data": data}}),
            );
        }
        out
    }
}
