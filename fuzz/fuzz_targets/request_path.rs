//! Bytes in, through parse, lookup, gate and handler (`dispatch::frame`),
//! against an in-process session of a real `Gateway`: the whole per-request
//! path without sockets.
//!
//! Input: the first byte picks the session (endpoint and who is logged in:
//! nobody, an application server, a portal user, a user without rights, or
//! the built-in administrator); the rest is split at 0xFF (never valid UTF-8, so never inside
//! a text frame) into frames, each decoded lossily and handled in order on
//! that one session. Each input gets a fresh session and a fresh request
//! budget (small, so -32029 and the rate-limit close are reachable), so a
//! crash replays from its input alone.
//!
//! Checked beyond "no panic": every answer is JSON-RPC 2.0 with exactly one
//! of `result` or `error`, a documented error code and an id that is a
//! string, a number or null; a session that stays anonymous gets only
//! errors; everything queued on the session's outbound queue is valid JSON.

#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use adjunct_gateway::catalog::Endpoint;
use adjunct_gateway::config::Config;
use adjunct_gateway::dispatch::{self, Ctx};
use adjunct_gateway::gateway::Gateway;
use adjunct_gateway::session::rate::RateLimit;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::value::RawValue;

/// Every password in the fuzz directory (seeds log in with it).
const PASSWORD: &str = "fuzz-Pass-1x";

struct World {
    rt: tokio::runtime::Runtime,
    gw: Arc<Gateway>,
    _dir: tempfile::TempDir,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let certs = adjunct_gateway::tls::generate_dev_certs(&["localhost".into()]).unwrap();
        std::fs::write(dir.path().join("s.pem"), certs.server_pem).unwrap();
        std::fs::write(dir.path().join("s.key"), certs.server_key_pem).unwrap();
        let hash = cheap_hash(PASSWORD);
        let text = format!(
            r#"
[tls]
cert = "s.pem"
key = "s.key"

[[rights_group]]
name = "Application Servers"
rights = ["Adjunct Server Connection", "one-X CTI API", "Voicemail Pro Basic"]

[[rights_group]]
name = "Portal Users"
rights = ["TURN Server Connection", "one-X CTI API"]

[[rights_group]]
name = "Nothing"

[[service_user]]
name = "app1"
password = "{hash}"
groups = ["Application Servers"]

[[service_user]]
name = "portal1"
password = "{hash}"
groups = ["Portal Users"]

[[service_user]]
name = "none1"
password = "{hash}"
groups = ["Nothing"]

[[service_user]]
name = "admin"
password = "{hash}"

[[service_user]]
name = "off1"
password = "{hash}"
groups = ["Application Servers"]
enabled = false

[network_topology]
stun_urls = ["stun:127.0.0.1:3478"]
turn_urls = ["turn:127.0.0.1:3478"]

[turn]
secrets = ["fuzz"]

[[catalog]]
namespace = "voicemail"
any_of = ["Voicemail Pro Basic", "Voicemail Pro Standard"]

[limits]
max_batch = 8
max_subscriptions = 16
max_pending_per_session = 4
outbound_queue = 8
requests_per_sec = 1
request_burst = 24
rate_limited_close_after = 8

[admin]
listen = ""
"#
        );
        // On disk, so the Management API can read (and refuse to write) it.
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).unwrap();
        let config = Config::load(&path).unwrap();
        let gw = Gateway::new(config).unwrap();
        World { rt, gw, _dir: dir }
    })
}

/// Argon2id at the lowest cost, so logins don't dominate the run.
fn cheap_hash(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"fuzz-salt-16byte").unwrap();
    a.hash_password(password.as_bytes(), &salt)
        .unwrap()
        .to_string()
}

/// An answer as the wire contract shapes it (docs/PROTOCOL.md §4.2).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Answer<'a> {
    jsonrpc: String,
    #[serde(borrow)]
    id: &'a RawValue,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(borrow, default)]
    error: Option<ErrorObject<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorObject<'a> {
    code: i64,
    #[allow(dead_code)]
    message: String,
    #[serde(borrow, default)]
    #[allow(dead_code)]
    data: Option<&'a RawValue>,
}

/// The codes of docs/PROTOCOL.md §9.
const CODES: &[i64] = &[
    -32700, -32600, -32601, -32602, -32000, -32001, -32002, -32003, -32004, -32005, -32006, -32007,
    -32029, -32040,
];

/// Checks one answer; returns whether it is an error.
fn check_answer(raw: &RawValue) -> bool {
    let a: Answer = serde_json::from_str(raw.get())
        .unwrap_or_else(|e| panic!("answer not in the JSON-RPC shape ({e}): {}", raw.get()));
    assert_eq!(a.jsonrpc, "2.0");
    assert!(
        !matches!(
            a.id.get().as_bytes().first(),
            Some(b'{' | b'[' | b't' | b'f')
        ),
        "id of a forbidden type: {}",
        raw.get()
    );
    match (a.result, a.error) {
        (Some(_), None) => false,
        (None, Some(e)) => {
            assert!(CODES.contains(&e.code), "undocumented code: {}", raw.get());
            if e.code == -32700 {
                assert_eq!(a.id.get(), "null", "parse error with an id");
            }
            true
        }
        _ => panic!("not exactly one of result and error: {}", raw.get()),
    }
}

/// Checks what one frame wrote; returns whether every answer is an error.
fn check_out(out: &[u8]) -> bool {
    if out.is_empty() {
        return true;
    }
    let text = std::str::from_utf8(out).expect("answer is not UTF-8");
    let raw: &RawValue =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("answer is not JSON ({e}): {text}"));
    if text.starts_with('[') {
        let items: Vec<&RawValue> = serde_json::from_str(raw.get()).unwrap();
        assert!(!items.is_empty(), "empty answer array");
        items.into_iter().map(check_answer).fold(true, |a, b| a & b)
    } else {
        check_answer(raw)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let w = world();
    let endpoint = if mode & 1 == 0 {
        Endpoint::Portal
    } else {
        Endpoint::Adjunct
    };
    // On /adjunct the server only ever lets app1 in (or nobody yet).
    let who = match (endpoint, (mode >> 1) & 7) {
        (_, 0) | (_, 5..) => None,
        (Endpoint::Adjunct, _) | (_, 1) => Some("app1"),
        (_, 2) => Some("portal1"),
        (_, 3) => Some("none1"),
        _ => Some("admin"),
    };
    let session = w.gw.hub.open(endpoint, "127.0.0.1:1".parse().unwrap());
    if let Some(user) = who {
        let granted = adjunct_gateway::auth::Granted {
            user: Arc::from(user),
            rights: w.gw.snapshot().directory.live_rights(user).unwrap(),
            stamp: 0,
        };
        w.gw.hub.bind(&session, &granted, 1).unwrap();
    }
    let limits = w.gw.snapshot().config.limits.clone();
    let mut rate = RateLimit::new(limits.request_burst, Instant::now());
    w.rt.block_on(async {
        let mut out = Vec::new();
        for piece in rest.split(|b| *b == 0xFF) {
            let text = String::from_utf8_lossy(piece);
            let was_authenticated = session.rights().is_some();
            let mut ctx = Ctx::new(&w.gw, &session, &mut rate);
            out.clear();
            dispatch::frame(&mut ctx, &text, &mut out).await;
            let all_errors = check_out(&out);
            if !was_authenticated && session.rights().is_none() {
                assert!(all_errors, "an anonymous session got a result: {text}");
            }
            if ctx.close.is_some() {
                break;
            }
        }
    });
    let mut queued = Vec::new();
    session.outbound.drain(&mut queued);
    for (_, msg) in &queued {
        serde_json::from_str::<&RawValue>(msg.as_str())
            .unwrap_or_else(|e| panic!("queued message is not JSON ({e}): {}", msg.as_str()));
    }
    w.gw.end_session(&session);
    assert!(w.gw.hub.is_empty(), "a session outlived its input");
    for user in ["app1", "portal1", "none1", "admin", "off1"] {
        assert_eq!(w.gw.hub.sessions_of(user), 0, "{user} still counted");
    }
});
