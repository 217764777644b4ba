//! Every service right means what the system's table says (issue 17): for
//! each of the sixteen rights held alone, and for unions of several groups,
//! every built-in operation and an event topic of each namespace, through
//! real sessions on one real gateway, answered by a real provider session.
//! The expectations below are written from the issue's table, not read from
//! `src/catalog.rs`; a test checks that they name every built-in rule.
//! Also: docs/RIGHTS.md is the `catalog` command's output, and `check-config`
//! refuses a rule that leaves a built-in operation reachable by no right.

mod common;
#[path = "browser/support.rs"]
mod support;

use std::collections::BTreeSet;
use std::process::Command;

use adjunct_gateway::catalog::{Pattern, RULES};
use common::*;
use serde_json::{json, Value};

const VB: &str = "Voicemail Pro Basic";
const VS: &str = "Voicemail Pro Standard";
const VA: &str = "Voicemail Pro Administrator";
const OXA: &str = "one-X Portal Administrator";
const OXS: &str = "one-X Portal Super User";
const WCA: &str = "Web Control Administrator";
const WCS: &str = "Web Control Security";
const WRA: &str = "WebRTC Gateway Administrator";
const MAR: &str = "Management API Read";
const MAW: &str = "Management API Write";
const MMA: &str = "Media Manager Administrator";
const MMS: &str = "Media Manager Standard";
const RA: &str = "Reporter Administrator";
const CTI: &str = "one-X CTI API";
const ASC: &str = "Adjunct Server Connection";
const TURN: &str = "TURN Server Connection";
const ALL: [&str; 16] = [
    VB, VS, VA, OXA, OXS, WCA, WCS, WRA, MAR, MAW, MMA, MMS, RA, CTI, ASC, TURN,
];

const PW: &str = "matrix-Pass-7x";

/// Every operation and the rights that open it, from the issue's table.
/// A prefix rule is probed with a method below it; a namespace rule with a
/// method the grammar does not name.
const OPERATIONS: &[(&str, &str, &[&str])] = &[
    // (rule, probe method, rights)
    ("cti.*", "cti.make_call", &[CTI]),
    ("voicemail.*", "voicemail.mailbox.purge", &[VS, VA]),
    (
        "voicemail.config.get",
        "voicemail.config.get",
        &[VB, VS, VA],
    ),
    ("voicemail.config.set", "voicemail.config.set", &[VS, VA]),
    ("voicemail.security.*", "voicemail.security.get", &[VA]),
    ("voicemail.security.*", "voicemail.security.set", &[VA]),
    // A class's own name is judged by the class's rule.
    ("voicemail.security.*", "voicemail.security", &[VA]),
    ("voicemail.backup.*", "voicemail.backup", &[VB, VS]),
    ("voicemail.backup.*", "voicemail.backup.create", &[VB, VS]),
    ("voicemail.backup.*", "voicemail.backup.restore", &[VB, VS]),
    ("voicemail.upgrade.*", "voicemail.upgrade.start", &[VB, VS]),
    ("onex-portal.*", "onex-portal.users.list", &[OXA]),
    ("onex-portal.config.get", "onex-portal.config.get", &[OXA]),
    ("onex-portal.config.set", "onex-portal.config.set", &[OXA]),
    ("onex-portal.security.*", "onex-portal.security.set", &[OXA]),
    ("onex-portal.backup.*", "onex-portal.backup.create", &[OXS]),
    ("onex-portal.backup.*", "onex-portal.backup.restore", &[OXS]),
    ("webcontrol.*", "webcontrol.reboot", &[WCA]),
    ("webcontrol.config.get", "webcontrol.config.get", &[WCA]),
    ("webcontrol.config.set", "webcontrol.config.set", &[WCA]),
    ("webcontrol.security.*", "webcontrol.security.get", &[WCS]),
    ("webcontrol.security.*", "webcontrol.security.set", &[WCS]),
    ("webrtc.*", "webrtc.status", &[WRA]),
    ("webrtc.config.get", "webrtc.config.get", &[WRA]),
    ("webrtc.config.set", "webrtc.config.set", &[WRA]),
    ("mediamanager.*", "mediamanager.settings.set", &[MMA]),
    (
        "mediamanager.config.get",
        "mediamanager.config.get",
        &[MMS, MMA],
    ),
    ("mediamanager.config.set", "mediamanager.config.set", &[MMA]),
    (
        "mediamanager.recordings.*",
        "mediamanager.recordings.list",
        &[MMS, MMA],
    ),
    (
        "mediamanager.archive.*",
        "mediamanager.archive.list",
        &[MMA],
    ),
    ("reporter.*", "reporter.reports.run", &[RA]),
    ("reporter.config.get", "reporter.config.get", &[RA]),
    ("reporter.config.set", "reporter.config.set", &[RA]),
];

/// The gateway's own gated methods a portal session may call, with harmless
/// params, and the rights that open them.
fn local_operations() -> Vec<(&'static str, Value, &'static [&'static str])> {
    vec![
        ("turn.credentials", json!({}), &[TURN]),
        (
            "admin.sessions.list",
            json!({"user": "nobody"}),
            &[MAR, MAW],
        ),
        ("admin.config.get", json!(null), &[MAR, MAW]),
        ("admin.users.list", json!(null), &[WCS]),
        ("admin.groups.list", json!(null), &[WCS]),
    ]
}

/// A topic of each namespace (two for some) and who receives it.
const TOPICS: &[(&str, &[&str])] = &[
    ("cti.call.201", &[CTI]),
    ("voicemail.config.changed", &[VB, VS, VA]),
    ("voicemail.security.changed", &[VA]),
    // Two segments: it concerns voicemail.security, not the namespace.
    ("voicemail.security", &[VA]),
    ("onex-portal.backup.done", &[OXS]),
    ("onex-portal.config.changed", &[OXA]),
    ("webcontrol.security.changed", &[WCS]),
    ("webrtc.config.changed", &[WRA]),
    ("mediamanager.recordings.new", &[MMS, MMA]),
    ("mediamanager.archive.added", &[MMA]),
    ("reporter.config.changed", &[RA]),
];

/// Users holding several groups, each group one right: rights add up.
const COMBINATIONS: &[(&str, &[&str])] = &[
    ("combo-vm", &[VB, VA]),
    ("combo-mixed", &[MMS, OXS, WCS, CTI]),
    ("combo-admin", &[WCA, MAW, RA, WRA, TURN]),
];

fn group_name(right: &str) -> String {
    format!("only {right}")
}

fn user_name(i: usize) -> String {
    format!("r{i}")
}

/// One group per right, one user per right, the combinations, and a provider
/// holding every right.
fn directory() -> String {
    let hash = cheap_hash(PW);
    let mut s = String::from("[limits]\nmax_batch = 64\n");
    for (i, right) in ALL.iter().enumerate() {
        s += &format!(
            "\n[[rights_group]]\nname = \"{}\"\nrights = [\"{right}\"]\n\n[[service_user]]\nname = \"{}\"\npassword = \"{hash}\"\ngroups = [\"{}\"]\n",
            group_name(right),
            user_name(i),
            group_name(right)
        );
    }
    // A user in the one-right groups of `rights`.
    let user = |name: &str, rights: &[&str]| {
        let groups: Vec<String> = rights
            .iter()
            .map(|r| format!("\"{}\"", group_name(r)))
            .collect();
        format!(
            "\n[[service_user]]\nname = \"{name}\"\npassword = \"{hash}\"\ngroups = [{}]\n",
            groups.join(", ")
        )
    };
    for (name, rights) in COMBINATIONS {
        s += &user(name, rights);
    }
    s += &user("prov", &ALL);
    s
}

/// Answers every routed request with the method it was asked, until the test ends.
fn serve(mut provider: Client) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(text) = provider.ws_next_text().await {
            let Ok(req) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            if let (Some(id), Some(method)) = (req.get("id"), req.get("method")) {
                let answer = json!({"jsonrpc": "2.0", "id": id, "result": {"served": method}});
                provider.send_text(answer.to_string()).await;
            }
        }
    })
}

/// Sends `calls` as one batch and returns the answers by id (0-based).
async fn batch(c: &mut Client, calls: &[(String, Value)]) -> Vec<Value> {
    let elements: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(id, (method, params))| {
            if params.is_null() {
                json!({"jsonrpc": "2.0", "id": id, "method": method})
            } else {
                json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
            }
        })
        .collect();
    c.send_text(Value::Array(elements).to_string()).await;
    let answer = loop {
        let v = c.recv().await;
        if v.is_array() {
            break v;
        }
        c.events.push(v);
    };
    let mut by_id = vec![Value::Null; calls.len()];
    for a in answer.as_array().unwrap() {
        let id = a["id"].as_u64().unwrap() as usize;
        by_id[id] = a.clone();
    }
    by_id
}

/// Checks one answer: allowed (the provider's or the handler's result) or
/// -32003 naming a right that would have opened it.
fn judge(who: &str, method: &str, answer: &Value, holds: &[&str], opens: &[&str]) {
    let allowed = holds.iter().any(|h| opens.contains(h));
    if allowed {
        assert!(
            answer.get("result").is_some(),
            "{who} must reach {method}: {answer}"
        );
    } else {
        assert_eq!(
            code(answer),
            -32003,
            "{who} must be refused {method}: {answer}"
        );
        let named = answer["error"]["data"]["right"]
            .as_str()
            .unwrap_or_default();
        assert!(
            opens.contains(&named),
            "{who} {method}: names {named:?}, not one of {opens:?}"
        );
        if opens.len() > 1 {
            let any_of: BTreeSet<&str> = answer["error"]["data"]["anyOf"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(any_of, opens.iter().copied().collect(), "{who} {method}");
        }
    }
}

#[test]
fn the_expectations_name_every_builtin_rule_and_nothing_else() {
    let ours: BTreeSet<&str> = OPERATIONS.iter().map(|(rule, _, _)| *rule).collect();
    let table: BTreeSet<&str> = RULES.iter().map(|r| r.pattern).collect();
    assert_eq!(ours, table);
    for (rule, probe, _) in OPERATIONS {
        assert!(Pattern::parse(rule).unwrap().matches(probe), "{probe}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_right_alone_and_in_unions_opens_exactly_what_the_table_says() {
    let gw = TestGateway::start_with("", &directory()).await;
    // The list itself is pinned by the catalog's unit test.
    let namespaces: Vec<&str> = adjunct_gateway::catalog::builtin_namespaces().collect();
    let mut provider = gw.login("/adjunct", "prov", PW).await;
    provider
        .ok("adjunct.register", json!({"namespaces": namespaces}))
        .await;
    let _served = serve(provider);
    let mut publisher = gw.login("/adjunct", "prov", PW).await;

    let mut holders: Vec<(String, Vec<&str>)> = ALL
        .iter()
        .enumerate()
        .map(|(i, r)| (user_name(i), vec![*r]))
        .collect();
    holders.extend(
        COMBINATIONS
            .iter()
            .map(|(u, rights)| (u.to_string(), rights.to_vec())),
    );

    // Every operation and a subscription to each topic, one batch per session.
    let mut calls: Vec<(String, Value)> = OPERATIONS
        .iter()
        .map(|(_, probe, _)| (probe.to_string(), json!({"probe": true})))
        .collect();
    calls.extend(
        local_operations()
            .into_iter()
            .map(|(m, p, _)| (m.to_owned(), p)),
    );
    calls.extend(
        TOPICS
            .iter()
            .map(|(t, _)| ("events.subscribe".to_owned(), json!({"topics": [t]}))),
    );
    let mut sessions = Vec::new();
    for (user, holds) in &holders {
        let mut c = gw.login("/portal", user, PW).await;
        let answers = batch(&mut c, &calls).await;
        let mut at = answers.iter();
        for (_, probe, opens) in OPERATIONS {
            let a = at.next().unwrap();
            judge(user, probe, a, holds, opens);
            if a.get("result").is_some() {
                assert_eq!(a["result"], json!({"served": probe}), "{user}");
            }
        }
        for (method, _, opens) in local_operations() {
            judge(user, method, at.next().unwrap(), holds, opens);
        }
        for (topic, opens) in TOPICS {
            let a = at.next().unwrap();
            judge(user, topic, a, holds, opens);
            if code(a) == -32003 {
                assert_eq!(a["error"]["data"]["topic"], *topic, "{user}");
            }
        }
        sessions.push((user, holds, c));
    }

    // Events reach exactly the sessions that read what they concern.
    let publishes: Vec<(String, Value)> = TOPICS
        .iter()
        .map(|(t, _)| ("adjunct.publish".to_owned(), json!({"topic": t, "data": 1})))
        .collect();
    for a in batch(&mut publisher, &publishes).await {
        assert!(a.get("result").is_some(), "{a}");
    }
    for (user, holds, c) in &mut sessions {
        c.ok("session.ping", json!(null)).await;
        let got: BTreeSet<String> = c
            .events
            .drain(..)
            .filter(|e| e["method"] == "event")
            .map(|e| e["params"]["topic"].as_str().unwrap().to_owned())
            .collect();
        let want: BTreeSet<String> = TOPICS
            .iter()
            .filter(|(_, opens)| holds.iter().any(|h| opens.contains(h)))
            .map(|(t, _)| t.to_string())
            .collect();
        assert_eq!(got, want, "{user}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn a_provider_must_hold_a_right_that_opens_some_operation_of_each_namespace() {
    let extra = format!(
        "{}\n[[rights_group]]\nname = \"vm server\"\nrights = [\"{ASC}\", \"{VB}\"]\n\n[[service_user]]\nname = \"vmserver\"\npassword = \"{}\"\ngroups = [\"vm server\"]\n",
        directory(),
        cheap_hash(PW)
    );
    let gw = TestGateway::start_with("", &extra).await;
    // Adjunct Server Connection alone opens no namespace.
    let asc = ALL.iter().position(|r| *r == ASC).unwrap();
    let mut bare = gw.login("/adjunct", &user_name(asc), PW).await;
    let (c, e) = bare
        .err("adjunct.register", json!({"namespaces": ["voicemail"]}))
        .await;
    assert_eq!(c, -32003, "{e}");
    assert_eq!(e["data"]["right"], VB);

    // Basic opens some voicemail operation, so it may register; it is then
    // sent only what Basic opens itself, whoever calls.
    let mut vm = gw.login("/adjunct", "vmserver", PW).await;
    let (c, e) = vm
        .err(
            "adjunct.register",
            json!({"namespaces": ["voicemail", "cti"]}),
        )
        .await;
    assert_eq!((c, e["data"]["right"].as_str()), (-32003, Some(CTI)));
    vm.ok("adjunct.register", json!({"namespaces": ["voicemail"]}))
        .await;
    let _served = serve(vm);
    let standard = ALL.iter().position(|r| *r == VS).unwrap();
    let mut caller = gw.login("/portal", &user_name(standard), PW).await;
    let r = caller.ok("voicemail.config.get", json!({})).await;
    assert_eq!(r, json!({"served": "voicemail.config.get"}));
    let (c, e) = caller.err("voicemail.config.set", json!({})).await;
    assert_eq!((c, e["message"].as_str()), (-32004, Some("no provider")));
    let (c, _) = caller.err("voicemail.security.set", json!({})).await;
    assert_eq!(c, -32003);

    // A provider holding every right serves the rest.
    let mut all = gw.login("/adjunct", "prov", PW).await;
    all.ok("adjunct.register", json!({"namespaces": ["voicemail"]}))
        .await;
    let _all = serve(all);
    let r = caller.ok("voicemail.config.set", json!({})).await;
    assert_eq!(r, json!({"served": "voicemail.config.set"}));
    gw.shutdown().await;
}

/// Publishing needs the right that updates what the topic concerns, not
/// just some right of its namespace.
#[tokio::test]
async fn a_publisher_must_hold_the_right_that_updates_what_the_topic_concerns() {
    let gw = TestGateway::start_with("", &directory()).await;
    let asc = ALL.iter().position(|r| *r == ASC).unwrap();
    let mut bare = gw.login("/adjunct", &user_name(asc), PW).await;
    // (topic, rights that may publish it)
    for (topic, opens) in [
        ("cti.call.201", &[CTI][..]),
        ("voicemail.config.changed", &[VS, VA]),
        ("voicemail.security.changed", &[VA]),
        ("voicemail.security", &[VA]),
        ("voicemail.backup.done", &[VB, VS]),
        ("onex-portal.backup.done", &[OXS]),
        ("mediamanager.recordings.new", &[MMS, MMA]),
    ] {
        let a = bare.call("adjunct.publish", json!({"topic": topic})).await;
        judge("Adjunct Server Connection", topic, &a, &[ASC], opens);
        assert_eq!(a["error"]["data"]["topic"], topic);
    }
    let (c, _) = bare
        .err(
            "adjunct.publish",
            json!({"topic": "voicemail.Config.changed"}),
        )
        .await;
    assert_eq!(c, -32602);
    gw.shutdown().await;
}

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_adjunct-gateway"))
}

#[test]
fn docs_rights_md_is_the_catalog_commands_output() {
    let out = binary().arg("catalog").output().unwrap();
    assert!(out.status.success());
    let printed = String::from_utf8(out.stdout).unwrap();
    let file = include_str!("../docs/RIGHTS.md");
    assert!(
        printed == file,
        "docs/RIGHTS.md differs from `adjunct-gateway catalog`: regenerate it with\n  \
         cargo run -- catalog > docs/RIGHTS.md"
    );
    // Every right has its section, and each rule its row.
    for right in ALL {
        assert!(file.contains(&format!("\n## {right}\n")), "{right}");
    }
    for rule in RULES {
        assert!(
            file.contains(&format!("| `{}` |", rule.pattern)),
            "{}",
            rule.pattern
        );
    }
}

#[test]
fn the_catalog_json_lists_for_each_right_what_it_opens() {
    let out = binary().args(["catalog", "--json"]).output().unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rights = v["rights"].as_array().unwrap();
    assert_eq!(rights.len(), 16);
    let basic = &rights[0];
    assert_eq!(basic["right"], VB);
    let methods: Vec<&str> = basic["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["method"].as_str().unwrap())
        .collect();
    assert_eq!(
        methods,
        [
            "voicemail.config.get",
            "voicemail.backup.*",
            "voicemail.upgrade.*"
        ]
    );
    assert_eq!(basic["operations"][0]["routedTo"], "voicemail");
    assert_eq!(basic["serves"], json!(["voicemail"]));
    let asc = rights.iter().find(|r| r["right"] == ASC).unwrap();
    assert!(asc["operations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["endpoints"] == json!(["adjunct"])));
    assert_eq!(v["rules"].as_array().unwrap().len(), RULES.len());
}

#[test]
fn configured_rules_show_in_the_catalog_and_check_config_refuses_a_closed_operation() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[tls]\ncert = \"c.pem\"\nkey = \"k.pem\"\n";
    let path = dir.path().join("gateway.toml");
    std::fs::write(
        &path,
        format!("{base}\n[[catalog]]\nmethod = \"voicemail.config.get\"\nany_of = [\"{VA}\"]\n\n[[catalog]]\nnamespace = \"crm\"\nany_of = [\"{CTI}\"]\n"),
    )
    .unwrap();
    let out = binary()
        .args(["catalog", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("| `voicemail.config.get` | {VA} | read the voicemail configuration | set by the configuration |")), "{text}");
    assert!(text.contains(&format!("| `crm.*` | {CTI} | added by the configuration |")));
    let basic = text.split("\n## ").find(|s| s.starts_with(VB)).unwrap();
    assert!(!basic.contains("voicemail.config.get"), "{basic}");

    std::fs::write(
        &path,
        format!("{base}\n[[catalog]]\nmethod = \"voicemail.backup.*\"\nany_of = []\n"),
    )
    .unwrap();
    let out = binary().arg("check-config").arg(&path).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("gateway.toml:")
            && err.contains("built-in operation voicemail.backup.* reachable by no right"),
        "{err}"
    );
}

/// examples/voicemail_provider.rs as a real process, and `call` as each of
/// Basic, Standard and Administrator: the README's walk-through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_voicemail_example_shows_basic_standard_and_administrator_apart() {
    let hash = cheap_hash(PW);
    // A provider is sent only what its own rights open: the server holds
    // Standard (configuration, backup) and Administrator (security).
    let mut extra = format!(
        "[[rights_group]]\nname = \"VM Server\"\nrights = [\"{ASC}\", \"{VS}\", \"{VA}\"]\n\n[[service_user]]\nname = \"vmserver\"\npassword = \"{hash}\"\ngroups = [\"VM Server\"]\n"
    );
    for (user, right) in [("vm-basic", VB), ("vm-standard", VS), ("vm-admin", VA)] {
        extra += &format!(
            "\n[[rights_group]]\nname = \"{right}\"\nrights = [\"{right}\"]\n\n[[service_user]]\nname = \"{user}\"\npassword = \"{hash}\"\ngroups = [\"{right}\"]\n"
        );
    }
    let gw = TestGateway::start_with("", &extra).await;
    let port = gw.addr.port();
    let ca = gw.dir.path().join("ca.pem");
    let example = support::example_provider_binary().with_file_name("voicemail_provider");
    let mut child = tokio::process::Command::new(&example)
        .args([
            "--url",
            &format!("wss://localhost:{port}/adjunct"),
            "--user",
            "vmserver",
            "--ca",
        ])
        .arg(&ca)
        .env("ADJUNCT_GATEWAY_PASSWORD", PW)
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("registered for voicemail.*") {
        line.clear();
        let read = tokio::time::timeout(
            WAIT,
            tokio::io::AsyncBufReadExt::read_line(&mut stdout, &mut line),
        );
        assert!(read.await.unwrap().unwrap() > 0, "the example ended");
    }

    let call = |user: &'static str, method: &'static str, params: &'static str| {
        let url = format!("wss://localhost:{port}/portal");
        let ca = ca.clone();
        async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_adjunct-gateway"))
                .args(["call", "--url", &url, "--user", user, "--ca"])
                .arg(&ca)
                .args([method, params])
                .env("ADJUNCT_GATEWAY_PASSWORD", PW)
                .output()
                .await
                .unwrap();
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            (out.status.success(), err)
        }
    };
    let set = r#"{"settings": {"greeting": "holiday"}}"#;
    // (user, method, params, allowed)
    let walk = [
        ("vm-basic", "voicemail.config.get", "{}", true),
        ("vm-basic", "voicemail.config.set", set, false),
        ("vm-basic", "voicemail.backup.create", "{}", true),
        ("vm-basic", "voicemail.security.get", "{}", false),
        ("vm-standard", "voicemail.config.set", set, true),
        ("vm-standard", "voicemail.backup.create", "{}", true),
        ("vm-standard", "voicemail.security.get", "{}", false),
        ("vm-admin", "voicemail.config.set", set, true),
        (
            "vm-admin",
            "voicemail.security.set",
            r#"{"settings": {"pin_min_length": 6}}"#,
            true,
        ),
        ("vm-admin", "voicemail.backup.create", "{}", false),
    ];
    for (user, method, params, allowed) in walk {
        let (ok, err) = call(user, method, params).await;
        assert_eq!(ok, allowed, "{user} {method}: {err}");
        if !allowed {
            assert!(err.contains("error -32003"), "{user} {method}: {err}");
        }
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    gw.shutdown().await;
}

/// Does a pattern of ADMIN.md's table (`x.*` or an exact method) cover `op`
/// (a method or a catalog pattern)?
fn covers(listed: &str, op: &str) -> bool {
    match listed.strip_suffix(".*") {
        Some(prefix) => op == listed || op.starts_with(&format!("{prefix}.")),
        None => op == listed,
    }
}

#[test]
fn admin_md_lists_what_each_starter_role_unlocks_in_the_catalog() {
    use adjunct_gateway::catalog::{doc, Catalog};
    #[derive(serde::Deserialize)]
    struct Roles {
        rights_group: Vec<Group>,
    }
    #[derive(serde::Deserialize)]
    struct Group {
        name: String,
        rights: Vec<String>,
    }
    let roles: Roles = toml::from_str(adjunct_gateway::starter::ROLES).unwrap();
    let catalog = doc::json(&Catalog::default());
    let admin_md = include_str!("../docs/ADMIN.md");
    let every: BTreeSet<String> = catalog["rights"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["operations"].as_array().unwrap().iter())
        .map(|o| o["method"].as_str().unwrap().to_owned())
        .collect();
    for role in roles.rights_group {
        let row = admin_md
            .lines()
            .find(|l| l.starts_with(&format!("| **{}** |", role.name)))
            .unwrap_or_else(|| panic!("ADMIN.md has no row for {}", role.name));
        let unlocks = row.split(" | ").nth(2).unwrap();
        let opened: BTreeSet<String> = catalog["rights"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| role.rights.iter().any(|n| r["right"] == n.as_str()))
            .flat_map(|r| r["operations"].as_array().unwrap().iter())
            .map(|o| o["method"].as_str().unwrap().to_owned())
            .collect();
        if unlocks == "every method" {
            assert_eq!(opened, every, "{}", role.name);
            continue;
        }
        let listed: Vec<&str> = unlocks.split('`').skip(1).step_by(2).collect();
        for op in &opened {
            assert!(
                listed.iter().any(|l| covers(l, op)),
                "{}: ADMIN.md does not list {op}",
                role.name
            );
        }
        for l in &listed {
            assert!(
                opened.iter().any(|op| covers(l, op)),
                "{}: ADMIN.md lists {l}, which its rights do not open",
                role.name
            );
            // A listed prefix must not reach past what the role holds.
            for op in every.difference(&opened) {
                assert!(!covers(l, op), "{}: {l} would include {op}", role.name);
            }
        }
    }
}
