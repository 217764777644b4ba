//! The per-request path without sockets: envelope parse, the rights gate,
//! parse + gate + dispatch + serialize of session.ping through the real
//! dispatcher, a routed-shaped request (parse, and dispatch refused with
//! no provider), a routed round trip through the router and both outbound
//! queues, a provider's answer parsed, the metrics count per request, response serialization, TURN
//! credential derivation and the resume-token check.
//! `cargo bench --bench hot_path`.

use std::hint::black_box;

use adjunct_gateway::catalog::{gate, Catalog, Endpoint};
use adjunct_gateway::config::Config;
use adjunct_gateway::dispatch::{self, Ctx};
use adjunct_gateway::gateway::Gateway;
use adjunct_gateway::hub::SessionHandle;
use adjunct_gateway::rights::{Right, RightSet};
use adjunct_gateway::rpc;
use adjunct_gateway::session::rate::RateLimit;
use criterion::{criterion_group, criterion_main, Criterion};
use futures_util::FutureExt;

const PING: &str = r#"{"jsonrpc":"2.0","id":17,"method":"session.ping"}"#;
/// A routed request as a CTI client sends it: a params object of five members.
const MAKE_CALL: &str = r#"{"jsonrpc":"2.0","id":4711,"method":"cti.call.make","params":{"from":"201","to":"+4930123456","callerId":"Sales","autoAnswer":false,"tag":{"crm":"A-17"}}}"#;
/// A provider's answer to a routed request, as the example provider sends it.
const ANSWER: &str =
    r#"{"jsonrpc":"2.0","id":123456,"result":{"callId":"c-17","state":"dialing"}}"#;
const BOUNDS: rpc::Bounds = rpc::Bounds {
    max_batch: 32,
    max_depth: 32,
};

fn gateway() -> (tempfile::TempDir, std::sync::Arc<Gateway>) {
    adjunct_gateway::tls::install_provider();
    let dir = tempfile::tempdir().unwrap();
    let certs = adjunct_gateway::tls::generate_dev_certs(&["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("s.pem"), certs.server_pem).unwrap();
    std::fs::write(dir.path().join("s.key"), certs.server_key_pem).unwrap();
    let hash = "$argon2id$v=19$m=256,t=1,p=1$dGVzdC1zYWx0LTE2Ynl0ZQ$0dDZ7WvMD6qHFhW9+2CxCi3Cx4C0Wj+RWJ+sCB0aSuE";
    let text = format!(
        "[tls]\ncert = \"s.pem\"\nkey = \"s.key\"\n[[rights_group]]\nname = \"P\"\nrights = [\"TURN Server Connection\", \"one-X CTI API\"]\n[[service_user]]\nname = \"portal1\"\npassword = \"{hash}\"\ngroups = [\"P\"]\n[network_topology]\nturn_urls = [\"turn:127.0.0.1:3478\"]\n[turn]\nsecrets = [\"bench\"]\n[limits]\nrequests_per_sec = 4000000000\nrequest_burst = 4000000000\n"
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let gw = Gateway::new(Config::load(&path).unwrap()).unwrap();
    (dir, gw)
}

/// One frame through the real dispatcher for `session`. None of the frames
/// here waits: the future completes on its first poll.
fn dispatch_now(
    gw: &std::sync::Arc<Gateway>,
    session: &std::sync::Arc<SessionHandle>,
    rate: &mut RateLimit,
    frame: &str,
    out: &mut Vec<u8>,
) {
    let mut ctx = Ctx::new(gw, session, rate);
    dispatch::frame(&mut ctx, frame, out)
        .now_or_never()
        .unwrap();
}

fn bench(c: &mut Criterion) {
    c.bench_function("rpc_parse_ping", |b| {
        b.iter(|| black_box(rpc::parse(black_box(PING), BOUNDS)))
    });
    c.bench_function("rpc_parse_make_call", |b| {
        b.iter(|| black_box(rpc::parse(black_box(MAKE_CALL), BOUNDS)))
    });
    c.bench_function("rpc_parse_answer", |b| {
        b.iter(|| black_box(rpc::parse(black_box(ANSWER), BOUNDS)))
    });

    let catalog = Catalog::default();
    let entry = catalog.lookup("turn.credentials").unwrap();
    let rights = RightSet::of(Right::TurnServerConnection).with(Right::OneXCtiApi);
    c.bench_function("gate_lookup_and_check", |b| {
        b.iter(|| {
            let e = catalog.lookup(black_box("turn.credentials")).unwrap();
            black_box(gate(&e, Some(black_box(rights)), Endpoint::Portal))
        })
    });
    c.bench_function("gate_check_only", |b| {
        b.iter(|| black_box(gate(&entry, Some(black_box(rights)), Endpoint::Portal)))
    });

    let (_dir, gw) = gateway();
    let session = gw
        .hub
        .open(Endpoint::Portal, "127.0.0.1:1".parse().unwrap());
    let granted = adjunct_gateway::auth::Granted {
        user: "portal1".into(),
        rights,
        stamp: 0,
    };
    gw.hub.bind(&session, &granted, 1).unwrap();
    let mut out = Vec::with_capacity(256);
    let mut rate = RateLimit::new(u32::MAX, std::time::Instant::now());
    // session.ping; and a routed request with no provider registered:
    // lookup, gate, the router's refusal (-32004) and the error answer.
    for (name, frame) in [
        ("dispatch_session_ping", PING),
        ("dispatch_routed_no_provider", MAKE_CALL),
    ] {
        c.bench_function(name, |b| {
            b.iter(|| {
                out.clear();
                dispatch_now(&gw, &session, &mut rate, black_box(frame), &mut out);
                black_box(out.len())
            })
        });
    }

    // A routed round trip without sockets: the caller's frame dispatched
    // and queued for a provider, the provider's answer dispatched and
    // queued for the caller, both queues drained (what each session task
    // does between its socket reads and writes).
    let provider = gw
        .hub
        .open(Endpoint::Adjunct, "127.0.0.1:2".parse().unwrap());
    let all = adjunct_gateway::auth::Granted {
        user: "app1".into(),
        rights: Right::all().collect(),
        stamp: 0,
    };
    gw.hub.bind(&provider, &all, 1).unwrap();
    gw.router.register(&provider, "cti");
    let mut queued = Vec::new();
    let mut answer = String::new();
    let mut provider_rate = RateLimit::new(u32::MAX, std::time::Instant::now());
    c.bench_function("dispatch_routed_round_trip", |b| {
        b.iter(|| {
            out.clear();
            dispatch_now(&gw, &session, &mut rate, black_box(MAKE_CALL), &mut out);
            provider.outbound.drain(&mut queued);
            provider.outbound.written();
            let (_, request) = queued.pop().unwrap();
            // The gateway's id for the request, as the provider echoes it.
            let gid = request
                .as_str()
                .split_once("\"id\":")
                .and_then(|(_, rest)| rest.split_once(','))
                .unwrap()
                .0;
            answer.clear();
            answer.push_str("{\"jsonrpc\":\"2.0\",\"id\":");
            answer.push_str(gid);
            answer.push_str(",\"result\":{\"callId\":\"c-17\",\"state\":\"dialing\"}}");
            dispatch_now(&gw, &provider, &mut provider_rate, &answer, &mut out);
            session.outbound.drain(&mut queued);
            session.outbound.written();
            black_box(queued.pop().unwrap().1.len())
        })
    });

    // What dispatch adds per request for the metrics (one atomic add).
    let ping = gw.snapshot().config.catalog.lookup("session.ping");
    let answered = adjunct_gateway::methods::Reply::Value(serde_json::json!({}));
    c.bench_function("metrics_count_request", |b| {
        b.iter(|| {
            gw.metrics
                .request(black_box(ping.as_ref()), None, black_box(&answered))
        })
    });

    let snap = gw.snapshot();
    c.bench_function("turn_credentials", |b| {
        b.iter(|| {
            black_box(adjunct_gateway::turn::credentials(
                &snap.config.turn,
                &snap.config.topology,
                black_box("portal1"),
                None,
                1_764_000_000,
            ))
        })
    });

    let result = serde_json::json!({"sessionId": "3f9a0c2b71d4e856", "user": "portal1", "rights": ["one-X CTI API", "TURN Server Connection"]});
    let id = serde_json::value::RawValue::from_string("17".into()).unwrap();
    c.bench_function("response_serialization", |b| {
        b.iter(|| {
            out.clear();
            rpc::write_result(&mut out, Some(&id), black_box(&result));
            black_box(out.len())
        })
    });

    let account = snap.directory.get("portal1").unwrap();
    let token = gw.resume.issue(account, 4_000_000_000);
    c.bench_function("resume_token_check", |b| {
        b.iter(|| {
            black_box(
                gw.resume
                    .check(
                        black_box(&token),
                        &snap.directory,
                        3_999_000_000,
                        86_400_000,
                    )
                    .is_some(),
            )
        })
    });
}

/// The broker with many subscribers of one pattern: a subscribe and an
/// unsubscribe of one more session (a lookup each, not a scan of the
/// 10,000), and one event delivered to 1,000 subscribers (the queues are
/// drained after each, as their sessions would).
fn broker(c: &mut Criterion) {
    use adjunct_gateway::broker::Delivery;
    use adjunct_gateway::catalog::Need;
    let (_dir, gw) = gateway();
    let granted = adjunct_gateway::auth::Granted {
        user: "portal1".into(),
        rights: RightSet::of(Right::OneXCtiApi),
        stamp: 0,
    };
    let open = |n: usize| {
        let s = gw
            .hub
            .open(Endpoint::Portal, "127.0.0.1:1".parse().unwrap());
        gw.hub.bind(&s, &granted, usize::MAX).unwrap();
        assert!(n == 0 || gw.broker.subscribe(&s, "cti.*"));
        s
    };
    let many: Vec<_> = (0..10_000).map(|_| open(1)).collect();
    let one = open(0);
    c.bench_function("broker_subscribe_unsubscribe_among_10k", |b| {
        b.iter(|| {
            assert!(gw.broker.subscribe(&one, black_box("cti.*")));
            gw.broker.unsubscribe(one.id, black_box("cti.*"));
        })
    });
    for s in &many[1000..] {
        gw.broker.unsubscribe(s.id, "cti.*");
    }
    let delivery = Delivery {
        need: Need::Right(Right::OneXCtiApi),
        queue_cap: 1024,
        queue_bytes: 1 << 20,
        stall: std::time::Duration::from_secs(10),
    };
    let data = serde_json::value::RawValue::from_string(r#"{"state":"ringing"}"#.into()).unwrap();
    let mut queued = Vec::new();
    c.bench_function("broker_deliver_to_1000", |b| {
        b.iter(|| {
            let f = gw
                .broker
                .deliver(black_box("cti.call.201"), &data, &delivery);
            for s in &many[..1000] {
                s.outbound.drain(&mut queued);
                s.outbound.written();
                queued.clear();
            }
            black_box(f.delivered)
        })
    });
}

criterion_group!(benches, bench, broker);
criterion_main!(benches);
