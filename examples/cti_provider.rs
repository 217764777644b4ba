//! A small simulated CTI application server: it connects to the gateway on
//! /adjunct, registers for the "cti" namespace, serves make_call, answer,
//! hold, clear and list over a few extensions, and publishes call-state
//! events on `cti.call.<extension>`.
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

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

const EXTENSIONS: &[&str] = &["201", "202", "203", "204"];

#[derive(Clone)]
struct Call {
    from: String,
    to: String,
    state: &'static str,
}

struct Args {
    url: String,
    user: String,
    ca: String,
}

fn args() -> Result<Args, String> {
    let mut url = "wss://127.0.0.1:8443/adjunct".to_owned();
    let mut user = "appserver1".to_owned();
    let mut ca = "certs/ca.pem".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--url" => url = v,
            "--user" => user = v,
            "--ca" => ca = v,
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Args { url, user, ca })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = args()?;
    let password =
        std::env::var("ADJUNCT_GATEWAY_PASSWORD").map_err(|_| "set ADJUNCT_GATEWAY_PASSWORD")?;
    adjunct_gateway::tls::install_provider();

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&args.ca)? {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut request = args.url.as_str().into_client_request()?;
    let host = request.uri().host().ok_or("url has no host")?.to_owned();
    let port = request.uri().port_u16().unwrap_or(443);
    let basic =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", args.user));
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Basic {basic}"))?,
    );
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(ServerName::try_from(host)?, tcp)
        .await?;
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream).await?;

    ws.send(Message::text(json!({"jsonrpc":"2.0","id":"reg","method":"adjunct.register","params":{"namespaces":["cti"]}}).to_string())).await?;
    println!(
        "connected to {}; serving cti.* for extensions {EXTENSIONS:?}",
        args.url
    );

    let mut calls: BTreeMap<u64, Call> = BTreeMap::new();
    let mut next_call = 1u64;
    let mut next_pub = 0u64;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let v: Value = serde_json::from_str(text.as_str())?;
        let Some(method) = v["method"].as_str() else {
            if v.get("error").is_some() {
                eprintln!("gateway said: {}", v["error"]);
            }
            continue; // answers to our own register/publish
        };
        let caller = v["caller"]["user"].as_str().unwrap_or("?").to_owned();
        let p = &v["params"];
        let mut events: Vec<(String, Value)> = Vec::new();
        let outcome: Result<Value, (i64, String)> = match method {
            "cti.make_call" => {
                let from = p["from"].as_str().unwrap_or_default().to_owned();
                let to = p["to"].as_str().unwrap_or_default().to_owned();
                if !EXTENSIONS.contains(&from.as_str()) || !EXTENSIONS.contains(&to.as_str()) {
                    Err((4000, format!("extensions are {EXTENSIONS:?}")))
                } else {
                    let id = next_call;
                    next_call += 1;
                    calls.insert(
                        id,
                        Call {
                            from: from.clone(),
                            to: to.clone(),
                            state: "ringing",
                        },
                    );
                    events.push((
                        from.clone(),
                        json!({"callId": id, "state": "dialing", "peer": to}),
                    ));
                    events.push((to, json!({"callId": id, "state": "ringing", "peer": from})));
                    Ok(json!({"callId": id}))
                }
            }
            "cti.answer" | "cti.hold" | "cti.clear" => {
                let id = p["callId"].as_u64().unwrap_or(0);
                match calls.get_mut(&id) {
                    None => Err((4004, "no such call".to_owned())),
                    Some(call) => {
                        call.state = match method {
                            "cti.answer" => "connected",
                            "cti.hold" => "held",
                            _ => "cleared",
                        };
                        let c = call.clone();
                        if c.state == "cleared" {
                            calls.remove(&id);
                        }
                        for ext in [&c.from, &c.to] {
                            events.push((ext.clone(), json!({"callId": id, "state": c.state})));
                        }
                        Ok(json!({"callId": id, "state": c.state}))
                    }
                }
            }
            "cti.list" => Ok(json!(calls
                .iter()
                .map(|(id, c)| json!({"callId": id, "from": c.from, "to": c.to, "state": c.state}))
                .collect::<Vec<_>>())),
            _ => Err((-32601, "method not found".to_owned())),
        };
        println!(
            "{caller} -> {method}: {}",
            outcome
                .as_ref()
                .map_or_else(|e| e.1.clone(), |r| r.to_string())
        );
        if let Some(id) = v.get("id") {
            let answer = match outcome {
                Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
                Err((code, message)) => {
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
                }
            };
            ws.send(Message::text(answer.to_string())).await?;
        }
        for (ext, data) in events {
            next_pub += 1;
            let publish = json!({"jsonrpc": "2.0", "id": format!("pub-{next_pub}"), "method": "adjunct.publish",
                "params": {"topic": format!("cti.call.{ext}"), "data": data}});
            ws.send(Message::text(publish.to_string())).await?;
        }
    }
    println!("gateway closed the connection");
    Ok(())
}
