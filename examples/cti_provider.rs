//! A small simulated CTI application server: it connects to the gateway on
//! /adjunct, registers for the "cti" namespace, serves `cti.extensions`,
//! `cti.make_call`, `cti.answer`, `cti.hold`, `cti.clear` and `cti.list`
//! over a few extensions, and publishes call-state events on
//! `cti.call.<extension>`.
//!
//! It behaves like a real application server (examples/shared/link.rs): when
//! the connection closes or is lost (the gateway restarting, close 1001, a
//! reset, a refused connect) it reconnects with capped exponential back-off
//! and jitter, authenticates with its resume token (`Authorization: Bearer`,
//! falling back to the password when the token is refused), and registers
//! again. Calls survive a reconnect. It exits 0 only on Ctrl-C or SIGTERM; it
//! exits 1 when the gateway refuses its password or its right, or the CA file
//! is unusable, because retrying would only lock the account.
//!
//! Progress goes to stdout; stderr gets only what needs an operator.
//!
//! Run it beside a gateway started with the embedded default:
//!
//! ```text
//! ADJUNCT_GATEWAY_PASSWORD=<appserver1's password> \
//!   cargo run --example cti_provider -- --url wss://127.0.0.1:8443/adjunct --user appserver1 --ca certs/ca.pem
//! ```
//!
//! then, from the demo page or any client holding one-X CTI API, call
//! `cti.make_call {"from":"201","to":"202"}` and subscribe to `cti.call.*`.
//!
//! Provider error codes: 4000 bad params, 4004 no such call, 4009 the call
//! is not in a state that allows the request.

#[path = "shared/link.rs"]
mod link;

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{json, Value};

const EXTENSIONS: &[&str] = &["201", "202", "203", "204"];

#[tokio::main]
async fn main() -> ExitCode {
    link::main("cti_provider", "appserver1", Pbx::default()).await
}

impl link::Service for Pbx {
    fn namespaces(&self) -> &'static [&'static str] {
        &["cti"]
    }

    fn registered(&self) -> String {
        format!("registered for cti.*; serving extensions {EXTENSIONS:?}")
    }

    fn request(&mut self, v: &Value) -> Vec<Value> {
        Pbx::request(self, v)
    }
}

#[derive(Clone)]
struct Call {
    from: String,
    to: String,
    state: &'static str,
}

/// The simulated telephone system: calls by id. It outlives connections.
#[derive(Default)]
struct Pbx {
    calls: BTreeMap<u64, Call>,
    last_call: u64,
    last_publish: u64,
}

type Outcome = Result<Value, (i64, String)>;

impl Pbx {
    /// One routed request: the answer (unless it is a notification), then
    /// the events it caused.
    fn request(&mut self, v: &Value) -> Vec<Value> {
        let method = v["method"].as_str().unwrap_or_default();
        let caller = v["caller"]["user"].as_str().unwrap_or("?");
        let (outcome, events) = self.handle(method, &v["params"]);
        println!(
            "{caller} -> {method}: {}",
            outcome
                .as_ref()
                .map_or_else(|e| e.1.clone(), Value::to_string)
        );
        let mut out = Vec::new();
        if let Some(id) = v.get("id") {
            out.push(match outcome {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err((code, message)) => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                }
            });
        }
        for (extension, data) in events {
            self.last_publish += 1;
            out.push(
                json!({"jsonrpc": "2.0", "id": format!("pub-{}", self.last_publish),
                "method": "adjunct.publish",
                "params": {"topic": format!("cti.call.{extension}"), "data": data}}),
            );
        }
        out
    }

    fn handle(&mut self, method: &str, p: &Value) -> (Outcome, Vec<(String, Value)>) {
        match method {
            "cti.extensions" => (Ok(json!({"extensions": EXTENSIONS})), vec![]),
            "cti.list" => (
                Ok(json!(self
                    .calls
                    .iter()
                    .map(|(id, c)| json!({"callId": id, "from": c.from, "to": c.to, "state": c.state}))
                    .collect::<Vec<_>>())),
                vec![],
            ),
            "cti.make_call" => self.make_call(p),
            "cti.answer" | "cti.hold" | "cti.clear" => self.change(method, p),
            _ => (Err((-32601, "method not found".to_owned())), vec![]),
        }
    }

    fn make_call(&mut self, p: &Value) -> (Outcome, Vec<(String, Value)>) {
        let from = p["from"].as_str().unwrap_or_default();
        let to = p["to"].as_str().unwrap_or_default();
        if !EXTENSIONS.contains(&from) || !EXTENSIONS.contains(&to) || from == to {
            let message = format!("from and to must be two different extensions of {EXTENSIONS:?}");
            return (Err((4000, message)), vec![]);
        }
        self.last_call += 1;
        let id = self.last_call;
        self.calls.insert(
            id,
            Call {
                from: from.to_owned(),
                to: to.to_owned(),
                state: "ringing",
            },
        );
        let data = |state| json!({"callId": id, "state": state, "from": from, "to": to});
        let events = vec![
            (from.to_owned(), data("dialing")),
            (to.to_owned(), data("ringing")),
        ];
        (Ok(json!({"callId": id})), events)
    }

    /// answer (ringing or held → connected), hold (connected → held),
    /// clear (any → cleared, and the call is gone).
    fn change(&mut self, method: &str, p: &Value) -> (Outcome, Vec<(String, Value)>) {
        let Some(id) = p["callId"].as_u64() else {
            return (
                Err((4000, "callId must be a call id (integer)".to_owned())),
                vec![],
            );
        };
        let Some(call) = self.calls.get_mut(&id) else {
            return (Err((4004, "no such call".to_owned())), vec![]);
        };
        let next = match (method, call.state) {
            ("cti.answer", "ringing" | "held") => "connected",
            ("cti.hold", "connected") => "held",
            ("cti.clear", _) => "cleared",
            (_, state) => {
                let message = format!("call {id} is {state}; {method} does not apply");
                return (Err((4009, message)), vec![]);
            }
        };
        call.state = next;
        let c = call.clone();
        if next == "cleared" {
            self.calls.remove(&id);
        }
        let data = json!({"callId": id, "state": next, "from": c.from, "to": c.to});
        let events = vec![(c.from, data.clone()), (c.to, data)];
        (Ok(json!({"callId": id, "state": next})), events)
    }
}
