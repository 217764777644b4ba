//! The Management API (issue 7) through real TLS WebSocket sessions: each
//! admin.* method allowed and refused, the delegation rules, the built-in
//! administrator, the five starter roles, live revocation, revisions and
//! concurrent writers, persistence across a restart, secrets never shown,
//! and the audit trail. The crash-safety test runs the real binary and lives
//! in tests/cli.rs.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use serde_json::{json, Value};

const ADMIN_PW: &str = "admin-Pass-0x";
const SYS_PW: &str = "sys-Pass-6x";
const PHONE_PW: &str = "phone-Pass-7x";
const NET_PW: &str = "net-Pass-8x";
const SUPPORT_PW: &str = "support-Pass-9x";
const TURN_SECRET: &str = "TURN-secret-never-shown-42";
const FORBIDDEN: i64 = -32003;
const STALE: i64 = -32040;
const BAD_PARAMS: i64 = -32602;
/// A revision no config ever has (revisions are 16 hex digits).
const OLD: &str = "not-a-revision";

/// The starter's five roles, one account per role, and the administrator
/// (in no group at all: it holds every right by name). Its operators log in
/// from one address eight at a time: `max_verifying_per_ip` makes room.
fn fixture() -> String {
    format!(
        "{roles}\n# operator note: keep this comment\n[security]\nmax_verifying_per_ip = 16\n\n[[service_user]]\nname = \"admin\"\npassword = \"{}\"\ngroups = []\n\n[[service_user]]\nname = \"sysadmin\"\npassword = \"{}\"\ngroups = [\"System Administrator\"]\n\n[[service_user]]\nname = \"phoneadmin\"\npassword = \"{}\"\ngroups = [\"Phone Administrator\"]\n\n[[service_user]]\nname = \"netadmin\"\npassword = \"{}\"\ngroups = [\"Network Administrator\"]\n\n[[service_user]]\nname = \"support\"\npassword = \"{}\"\ngroups = [\"Support Technician\"]\n\n[turn]\nsecrets = [\"{TURN_SECRET}\"]\n",
        cheap_hash(ADMIN_PW),
        cheap_hash(SYS_PW),
        cheap_hash(PHONE_PW),
        cheap_hash(NET_PW),
        cheap_hash(SUPPORT_PW),
        roles = adjunct_gateway::starter::ROLES,
    )
}

async fn start() -> TestGateway {
    audit_log();
    TestGateway::start_with("", &fixture()).await
}

async fn portal(gw: &TestGateway, user: &str, pw: &str) -> Client {
    gw.login("/portal", user, pw).await
}

/// The live revision, read with whichever list the session may call.
async fn revision(c: &mut Client) -> String {
    let r = c.call("admin.users.list", json!(null)).await;
    let r = if r.get("result").is_some() {
        r
    } else {
        c.call("admin.config.get", json!(null)).await
    };
    r["result"]["revision"]
        .as_str()
        .unwrap_or_else(|| panic!("no revision: {r}"))
        .to_owned()
}

fn file(gw: &TestGateway) -> String {
    std::fs::read_to_string(&gw.config_path).unwrap()
}

/// The error's `data.right`.
fn right(e: &Value) -> &str {
    e["data"]["right"].as_str().unwrap_or("")
}

// ------------------------------------------------------------ audit capture

/// Everything the gateways of this test binary log, as text.
fn audit_log() -> Arc<Mutex<Vec<u8>>> {
    capture_logs("audit=info")
}

fn logged() -> String {
    String::from_utf8_lossy(&audit_log().lock().unwrap()).into_owned()
}

// ------------------------------------------------------------------ tests

/// Every admin method, the right the issue says it needs, and params that
/// change nothing when the gate lets them through (a stale revision, an
/// unknown session): the answer then proves which side of the gate it was.
fn methods() -> Vec<(&'static str, &'static str, Value)> {
    let read = "Management API Read";
    let write = "Management API Write";
    let sec = "Web Control Security";
    vec![
        ("admin.sessions.list", read, json!({})),
        (
            "admin.sessions.close",
            write,
            json!({"sessionId": "0000000000000000"}),
        ),
        ("admin.config.get", read, json!(null)),
        (
            "admin.network.set",
            write,
            json!({"revision": OLD, "stun_urls": []}),
        ),
        ("admin.config.reload", write, json!(null)),
        ("admin.users.list", sec, json!(null)),
        ("admin.groups.list", sec, json!(null)),
        (
            "admin.users.create",
            sec,
            json!({"revision": OLD, "name": "x", "password": "Good-pass-123"}),
        ),
        (
            "admin.users.update",
            sec,
            json!({"revision": OLD, "name": "cti1", "enabled": true}),
        ),
        (
            "admin.users.delete",
            sec,
            json!({"revision": OLD, "name": "cti1"}),
        ),
        (
            "admin.users.set_password",
            sec,
            json!({"revision": OLD, "name": "cti1", "password": "Good-pass-123"}),
        ),
        (
            "admin.groups.create",
            sec,
            json!({"revision": OLD, "name": "G", "rights": []}),
        ),
        (
            "admin.groups.update",
            sec,
            json!({"revision": OLD, "name": "CTI Only", "rights": []}),
        ),
        (
            "admin.groups.delete",
            sec,
            json!({"revision": OLD, "name": "CTI Only"}),
        ),
    ]
}

#[tokio::test]
async fn each_method_is_allowed_with_its_right_and_refused_without_for_every_role() {
    let gw = start().await;
    let before = file(&gw);
    // Each role's rights, as the starter defines them (plus a CTI user).
    let all = [
        "Management API Read",
        "Management API Write",
        "Web Control Security",
    ];
    let roles: [(&str, &str, &[&str]); 6] = [
        ("admin", ADMIN_PW, &all),
        ("sysadmin", SYS_PW, &all),
        ("phoneadmin", PHONE_PW, &["Web Control Security"]),
        (
            "netadmin",
            NET_PW,
            &["Management API Read", "Management API Write"],
        ),
        ("support", SUPPORT_PW, &["Management API Read"]),
        ("cti1", CTI_PW, &[]),
    ];
    for (user, pw, holds) in roles {
        let mut c = portal(&gw, user, pw).await;
        for (method, need, params) in methods() {
            let r = c.call(method, params).await;
            if holds.contains(&need) {
                assert_ne!(code(&r), FORBIDDEN, "{user} {method}: {r}");
                assert!(
                    r.get("result").is_some() || [STALE, BAD_PARAMS].contains(&code(&r)),
                    "{user} {method}: {r}"
                );
            } else {
                assert_eq!(code(&r), FORBIDDEN, "{user} {method}: {r}");
                assert_eq!(r["error"]["data"]["right"], need, "{user} {method}");
            }
        }
    }
    assert_eq!(file(&gw), before, "nothing may have changed");
    gw.shutdown().await;
}

#[tokio::test]
async fn support_technician_reads_sessions_and_configuration_with_every_secret_redacted() {
    let gw = start().await;
    let _app = gw.login("/adjunct", "app1", APP_PW).await;
    let mut s = portal(&gw, "support", SUPPORT_PW).await;

    let list = s.ok("admin.sessions.list", json!({})).await;
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    let app = sessions.iter().find(|x| x["user"] == "app1").unwrap();
    assert_eq!(app["endpoint"], "adjunct");
    assert_eq!(
        app["rights"],
        json!(["one-X CTI API", "Adjunct Server Connection"])
    );
    assert!(app["sessionId"].as_str().unwrap().len() == 16);
    assert!(app["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(app["connectedAt"].as_u64().unwrap() > 1_600_000_000);
    let only = s
        .ok("admin.sessions.list", json!({"endpoint": "portal"}))
        .await;
    assert_eq!(only["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(only["sessions"][0]["user"], "support");
    let by_user = s.ok("admin.sessions.list", json!({"user": "app1"})).await;
    assert_eq!(by_user["sessions"].as_array().unwrap().len(), 1);
    assert_eq!(
        s.err("admin.sessions.list", json!({"endpoint": "x"}))
            .await
            .0,
        BAD_PARAMS
    );

    let got = s.ok("admin.config.get", json!(null)).await;
    assert_eq!(got["revision"].as_str().unwrap().len(), 16);
    let text = got.to_string();
    let config = &got["config"];
    assert_eq!(config["service_user"][0]["name"], "app1");
    assert_eq!(config["service_user"][0]["password"], "<redacted>");
    assert_eq!(config["turn"]["secrets"], json!(["<redacted>"]));
    assert!(!text.contains("$argon2"), "a hash leaked: {text}");
    assert!(!text.contains(TURN_SECRET), "the TURN secret leaked");
    for pw in [APP_PW, ADMIN_PW, SUPPORT_PW] {
        assert!(!text.contains(pw));
    }
    // Nothing past reading.
    let (c, e) = s
        .err(
            "admin.sessions.close",
            json!({"sessionId": app["sessionId"]}),
        )
        .await;
    assert_eq!((c, right(&e)), (FORBIDDEN, "Management API Write"));
    gw.shutdown().await;
}

#[tokio::test]
async fn network_administrator_sets_the_topology_reloads_and_closes_only_sessions_it_covers() {
    let gw = start().await;
    let mut net = portal(&gw, "netadmin", NET_PW).await;
    let mut turn = portal(&gw, "turn1", TURN_PW).await;
    let rev = revision(&mut net).await;
    let r = net
        .ok(
            "admin.network.set",
            json!({"revision": rev, "stun_urls": ["stun:stun.example.com:3478"]}),
        )
        .await;
    assert_ne!(r["revision"], rev);
    // Live at once, and in the file.
    let creds = turn.ok("turn.credentials", json!({})).await;
    assert_eq!(
        creds["iceServers"][0]["urls"],
        json!(["stun:stun.example.com:3478"]),
        "{creds}"
    );
    assert!(file(&gw).contains("stun_urls = [\"stun:stun.example.com:3478\"]"));
    // Validated like a file: a bad URL changes nothing.
    let (c, e) = net
        .err(
            "admin.network.set",
            json!({"revision": r["revision"], "turn_urls": ["http://x"]}),
        )
        .await;
    assert_eq!(c, BAD_PARAMS);
    assert!(e["message"].as_str().unwrap().contains("turn:"), "{e}");

    let reloaded = net.ok("admin.config.reload", json!(null)).await;
    assert_eq!(reloaded["revision"], r["revision"]);
    assert_eq!(reloaded["revoked"], 0);

    // Closing a session reaches into its rights: not an app server's.
    let mut app = gw.login("/adjunct", "app1", APP_PW).await;
    let mut sup = portal(&gw, "support", SUPPORT_PW).await;
    let list = net.ok("admin.sessions.list", json!({})).await;
    let id = |user: &str| {
        list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["user"] == user)
            .unwrap()["sessionId"]
            .clone()
    };
    let (c, e) = net
        .err("admin.sessions.close", json!({"sessionId": id("app1")}))
        .await;
    // The first right it lacks, in table order.
    assert_eq!((c, right(&e)), (FORBIDDEN, "one-X CTI API"));
    assert_eq!(e["data"]["rule"], "delegation");
    assert_eq!(e["data"]["session"], id("app1"));
    assert_eq!(app.ok("session.ping", json!(null)).await, json!({}));
    net.ok(
        "admin.sessions.close",
        json!({"sessionId": id("support"), "reason": "maintenance"}),
    )
    .await;
    assert_eq!(sup.closed().await, Some(1008));
    // Nothing past it: no accounts.
    let (c, e) = net.err("admin.users.list", json!(null)).await;
    assert_eq!((c, right(&e)), (FORBIDDEN, "Web Control Security"));
    gw.shutdown().await;
}

#[tokio::test]
async fn phone_administrator_manages_cti_accounts_and_nothing_past_its_rights() {
    let gw = start().await;
    let mut pa = portal(&gw, "phoneadmin", PHONE_PW).await;
    let rev = revision(&mut pa).await;
    let r = pa
        .ok(
            "admin.users.create",
            json!({"revision": rev, "name": "agent7", "password": "Agent-seven-7", "groups": ["CTI Only"]}),
        )
        .await;
    let mut agent = portal(&gw, "agent7", "Agent-seven-7").await;
    assert_eq!(
        agent.ok("session.info", json!(null)).await["rights"],
        json!(["one-X CTI API"])
    );
    let r = pa
        .ok(
            "admin.users.set_password",
            json!({"revision": r["revision"], "name": "agent7", "password": "Agent-eight-8"}),
        )
        .await;
    portal(&gw, "agent7", "Agent-eight-8").await;
    let r = pa
        .ok(
            "admin.groups.create",
            json!({"revision": r["revision"], "name": "Agents", "rights": ["one-X CTI API"]}),
        )
        .await;
    let r = pa
        .ok(
            "admin.users.update",
            json!({"revision": r["revision"], "name": "agent7", "groups": ["Agents"]}),
        )
        .await;
    let groups = pa.ok("admin.groups.list", json!(null)).await;
    let agents = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "Agents")
        .unwrap();
    assert_eq!(agents["members"], json!(["agent7"]));
    // In use: refused; once free: deleted.
    let (c, e) = pa
        .err(
            "admin.groups.delete",
            json!({"revision": r["revision"], "name": "Agents"}),
        )
        .await;
    assert_eq!(c, BAD_PARAMS, "{e}");
    let r = pa
        .ok(
            "admin.users.delete",
            json!({"revision": r["revision"], "name": "agent7"}),
        )
        .await;
    assert_eq!(r["revoked"], 1, "agent7's session closes");
    assert_eq!(agent.closed().await, Some(1008));
    let r = pa
        .ok(
            "admin.groups.delete",
            json!({"revision": r["revision"], "name": "Agents"}),
        )
        .await;
    let rev = r["revision"].as_str().unwrap().to_owned();

    // Portal users hold TURN Server Connection, which it lacks.
    let (c, e) = pa
        .err(
            "admin.users.set_password",
            json!({"revision": rev, "name": "portal1", "password": "Portal-new-1"}),
        )
        .await;
    assert_eq!((c, right(&e)), (FORBIDDEN, "TURN Server Connection"));
    assert_eq!(e["data"]["account"], "portal1");
    // Nor can it promote itself.
    let (c, e) = pa
        .err(
            "admin.users.update",
            json!({"revision": rev, "name": "phoneadmin", "groups": ["Phone Administrator", "Network Administrator"]}),
        )
        .await;
    assert_eq!((c, right(&e)), (FORBIDDEN, "Management API Read"));
    let (c, e) = pa.err("admin.config.get", json!(null)).await;
    assert_eq!((c, right(&e)), (FORBIDDEN, "Management API Read"));
    assert_eq!(revision(&mut pa).await, rev, "refusals change nothing");
    gw.shutdown().await;
}

#[tokio::test]
async fn web_control_security_without_adjunct_server_connection_cannot_grant_it_or_reach_an_account_holding_it(
) {
    let gw = start().await;
    let mut pa = portal(&gw, "phoneadmin", PHONE_PW).await;
    let rev = revision(&mut pa).await;
    let before = file(&gw);
    let asc = "Adjunct Server Connection";
    let attempts = [
        // Grant it: to an account, to an existing group, in a new group.
        (
            "admin.users.update",
            json!({"revision": rev, "name": "cti1", "groups": ["CTI Only", "Application Servers"]}),
        ),
        (
            "admin.users.create",
            json!({"revision": rev, "name": "app9", "password": "App-nine-9x", "groups": ["Application Servers"]}),
        ),
        (
            "admin.groups.update",
            json!({"revision": rev, "name": "CTI Only", "rights": ["one-X CTI API", asc]}),
        ),
        (
            "admin.groups.create",
            json!({"revision": rev, "name": "Mine", "rights": [asc]}),
        ),
        // Reach an account that holds it.
        (
            "admin.users.set_password",
            json!({"revision": rev, "name": "app1", "password": "Stolen-app-1"}),
        ),
        (
            "admin.users.delete",
            json!({"revision": rev, "name": "app1"}),
        ),
        (
            "admin.users.update",
            json!({"revision": rev, "name": "app1", "enabled": false}),
        ),
        // Or a group that holds it, even to take it away.
        (
            "admin.groups.update",
            json!({"revision": rev, "name": "Application Servers", "rights": ["one-X CTI API"]}),
        ),
    ];
    for (method, params) in attempts {
        let (c, e) = pa.err(method, params.clone()).await;
        assert_eq!((c, right(&e)), (FORBIDDEN, asc), "{method} {params}: {e}");
        assert_eq!(e["data"]["rule"], "delegation");
        let text = e.to_string();
        assert!(
            !text.contains("$argon2") && !text.contains("Stolen"),
            "{text}"
        );
    }
    assert_eq!(file(&gw), before, "nothing written");
    assert_eq!(revision(&mut pa).await, rev);
    portal(&gw, "app1", APP_PW).await;
    // The refusals are audited.
    let log = logged();
    assert!(log.contains("admin_refused"), "{log}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_administrator_holds_every_right_cannot_be_deleted_or_disabled_and_only_it_sets_its_password(
) {
    let gw = start().await;
    let mut admin = portal(&gw, "admin", ADMIN_PW).await;
    let info = admin.ok("session.info", json!(null)).await;
    assert_eq!(info["rights"].as_array().unwrap().len(), 16, "{info}");
    assert_eq!(info["groups"], json!([]));
    let users = admin.ok("admin.users.list", json!(null)).await;
    let me = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == "admin")
        .unwrap()
        .clone();
    assert_eq!(me["administrator"], true);
    assert!(me.get("password").is_none());

    let mut sys = portal(&gw, "sysadmin", SYS_PW).await;
    let rev = revision(&mut sys).await;
    for who in [&mut sys, &mut admin] {
        for (method, params) in [
            (
                "admin.users.delete",
                json!({"revision": rev, "name": "admin"}),
            ),
            (
                "admin.users.update",
                json!({"revision": rev, "name": "admin", "enabled": false}),
            ),
        ] {
            let (c, e) = who.err(method, params).await;
            assert_eq!(c, FORBIDDEN, "{method}: {e}");
            assert_eq!(e["data"]["rule"], "administrator");
        }
    }
    // The System Administrator holds every right, yet not this.
    let (c, e) = sys
        .err(
            "admin.users.set_password",
            json!({"revision": rev, "name": "admin", "password": "Taken-over-1"}),
        )
        .await;
    assert_eq!(c, FORBIDDEN);
    assert_eq!(e["data"]["rule"], "administrator");
    assert!(e["message"]
        .as_str()
        .unwrap()
        .contains("only the administrator"));
    // The Server Administrator can change the System Administrator's...
    let r = admin
        .ok(
            "admin.users.set_password",
            json!({"revision": rev, "name": "sysadmin", "password": "Sys-new-pass-1"}),
        )
        .await;
    portal(&gw, "sysadmin", "Sys-new-pass-1").await;
    // ...and its own.
    admin
        .ok(
            "admin.users.set_password",
            json!({"revision": r["revision"], "name": "admin", "password": "Admin-new-pass-2"}),
        )
        .await;
    portal(&gw, "admin", "Admin-new-pass-2").await;
    let mut old = gw.ws("/portal", &[]).await.unwrap();
    assert_eq!(
        old.err(
            "session.login",
            json!({"user": "admin", "password": ADMIN_PW})
        )
        .await
        .0,
        -32002
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn passwords_obey_complexity_are_hashed_and_never_returned_or_logged() {
    let gw = start().await;
    let mut sys = portal(&gw, "sysadmin", SYS_PW).await;
    let rev = revision(&mut sys).await;
    for (pw, rule) in [
        ("short1A", "9 characters"),
        ("onlylowercase", "2 of"),
        ("newuser1", "user name"),
        ("Aaaa-bbbb-1111", "3 times"),
    ] {
        let name = if rule == "user name" { pw } else { "newuser1" };
        let (c, e) = sys
            .err(
                "admin.users.create",
                json!({"revision": rev, "name": name, "password": pw}),
            )
            .await;
        assert_eq!(c, BAD_PARAMS, "{pw}");
        let msg = e["message"].as_str().unwrap();
        assert!(msg.contains(rule), "{pw}: {msg}");
        assert!(!msg.contains(pw) || rule == "user name", "{msg}");
    }
    let pw = "Fresh-Pass-2024";
    sys.ok(
        "admin.users.create",
        json!({"revision": rev, "name": "newuser1", "password": pw, "groups": ["Portal Users"]}),
    )
    .await;
    let text = file(&gw);
    assert!(!text.contains(pw), "plaintext stored");
    assert!(
        text.contains("name = \"newuser1\"\npassword = \"$argon2id$v=19$m=19456,t=2,p=1$"),
        "{text}"
    );
    let mut u = portal(&gw, "newuser1", pw).await;
    u.ok("turn.credentials", json!({})).await;
    for m in ["admin.users.list", "admin.groups.list", "admin.config.get"] {
        let out = sys.ok(m, json!(null)).await.to_string();
        assert!(!out.contains("$argon2") && !out.contains(pw), "{m}: {out}");
    }
    let log = logged();
    assert!(!log.contains(pw) && !log.contains("$argon2") && !log.contains(TURN_SECRET));
    gw.shutdown().await;
}

#[tokio::test]
async fn taking_rights_away_acts_on_live_sessions_at_once_like_a_reload() {
    let gw = start().await;
    let mut admin = portal(&gw, "admin", ADMIN_PW).await;
    let mut app = gw.login("/adjunct", "app1", APP_PW).await;
    let mut portal1 = portal(&gw, "portal1", PORTAL_PW).await;
    let mut cti = portal(&gw, "cti1", CTI_PW).await;
    portal1.ok("turn.credentials", json!({})).await;

    // A group loses TURN: its members keep running without it.
    let rev = revision(&mut admin).await;
    let r = admin
        .ok(
            "admin.groups.update",
            json!({"revision": rev, "name": "Portal Users", "rights": ["one-X CTI API"]}),
        )
        .await;
    assert_eq!(r["revoked"], 0);
    let (c, e) = portal1.err("turn.credentials", json!({})).await;
    assert_eq!((c, right(&e)), (FORBIDDEN, "TURN Server Connection"));
    // The connection right goes: /adjunct sessions close with 1008.
    let r = admin
        .ok(
            "admin.groups.update",
            json!({"revision": r["revision"], "name": "Application Servers", "rights": ["one-X CTI API"]}),
        )
        .await;
    assert_eq!(r["revoked"], 1);
    assert_eq!(app.closed().await, Some(1008));
    // A disabled account's sessions close too.
    admin
        .ok(
            "admin.users.update",
            json!({"revision": r["revision"], "name": "cti1", "enabled": false}),
        )
        .await;
    assert_eq!(cti.closed().await, Some(1008));
    let log = logged();
    assert!(log.contains("event=\"revoked\""), "{log}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_stale_revision_or_an_unreloaded_edit_on_disk_is_refused_not_lost() {
    let gw = start().await;
    let mut a = portal(&gw, "admin", ADMIN_PW).await;
    let mut b = portal(&gw, "sysadmin", SYS_PW).await;
    let rev = revision(&mut a).await;
    let r = a
        .ok(
            "admin.groups.create",
            json!({"revision": rev, "name": "From A", "rights": []}),
        )
        .await;
    // B read before A wrote.
    let (c, e) = b
        .err(
            "admin.groups.create",
            json!({"revision": rev, "name": "From B", "rights": []}),
        )
        .await;
    assert_eq!(c, STALE);
    assert_eq!(e["data"]["revision"], r["revision"]);
    assert!(!file(&gw).contains("From B"));
    // A write needs a revision at all.
    assert_eq!(
        b.err(
            "admin.groups.create",
            json!({"name": "From B", "rights": []})
        )
        .await
        .0,
        BAD_PARAMS
    );

    // Someone edits the file by hand and does not reload yet.
    let current = r["revision"].as_str().unwrap().to_owned();
    let mut text = file(&gw);
    text.push_str("\n[[rights_group]]\nname = \"By hand\"\nrights = []\n");
    std::fs::write(&gw.config_path, &text).unwrap();
    let (c, e) = b
        .err(
            "admin.groups.create",
            json!({"revision": current, "name": "From B", "rights": []}),
        )
        .await;
    assert_eq!(c, STALE);
    assert!(e["message"].as_str().unwrap().contains("reload"), "{e}");
    assert!(file(&gw).contains("By hand"), "the hand edit is kept");
    // A reload (SIGHUP or the API) makes it the live config: a new revision.
    gw.gateway().reload().unwrap();
    let after = revision(&mut b).await;
    assert_ne!(after, current);
    b.ok(
        "admin.groups.create",
        json!({"revision": after, "name": "From B", "rights": []}),
    )
    .await;
    let text = file(&gw);
    assert!(text.contains("By hand") && text.contains("From A") && text.contains("From B"));
    gw.shutdown().await;
}

#[tokio::test]
async fn concurrent_writers_are_serialized_and_no_change_is_lost() {
    let gw = Arc::new(start().await);
    // Two writers from the same view: exactly one wins.
    let mut a = portal(&gw, "admin", ADMIN_PW).await;
    let mut b = portal(&gw, "sysadmin", SYS_PW).await;
    let rev = revision(&mut a).await;
    let pa = json!({"revision": rev, "name": "Race A", "rights": []});
    let pb = json!({"revision": rev, "name": "Race B", "rights": []});
    let (ra, rb) = tokio::join!(
        a.call("admin.groups.create", pa),
        b.call("admin.groups.create", pb)
    );
    let wins = [&ra, &rb]
        .iter()
        .filter(|r| r.get("result").is_some())
        .count();
    assert_eq!(wins, 1, "{ra} {rb}");
    assert!(code(&ra) == STALE || code(&rb) == STALE);

    // Eight writers that re-read and retry on a stale revision all land.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = portal(&gw, "admin", ADMIN_PW).await;
            let mut rev = revision(&mut c).await;
            loop {
                let r = c
                    .call(
                        "admin.groups.create",
                        json!({"revision": rev, "name": format!("Writer {i}"), "rights": ["one-X CTI API"]}),
                    )
                    .await;
                if r.get("result").is_some() {
                    return;
                }
                assert_eq!(code(&r), STALE, "{r}");
                rev = r["error"]["data"]["revision"].as_str().unwrap().to_owned();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let groups = a.ok("admin.groups.list", json!(null)).await;
    let text = file(&gw);
    for i in 0..8 {
        let name = format!("Writer {i}");
        assert!(text.contains(&format!("name = \"{name}\"")), "{name} lost");
        assert!(groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == name.as_str()));
    }
    adjunct_gateway::config::Config::load(&gw.config_path).unwrap();
    drop((a, b));
    Arc::try_unwrap(gw).ok().unwrap().shutdown().await;
}

#[tokio::test]
async fn changes_are_written_back_keeping_comments_and_survive_a_restart() {
    let mut gw = start().await;
    let mut admin = portal(&gw, "admin", ADMIN_PW).await;
    let rev = revision(&mut admin).await;
    let r = admin
        .ok(
            "admin.users.create",
            json!({"revision": rev, "name": "kept1", "password": "Kept-pass-1x", "groups": ["CTI Only"]}),
        )
        .await;
    admin
        .ok(
            "admin.network.set",
            json!({"revision": r["revision"], "turn_urls": ["turn:turn.example.com:3478"]}),
        )
        .await;
    let text = file(&gw);
    assert!(
        text.contains("# operator note: keep this comment"),
        "{text}"
    );
    assert!(text.contains("# Administrative roles"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&gw.config_path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let revision_before = revision(&mut admin).await;
    drop(admin);

    // Restart on the same file.
    gw.running.take().unwrap().shutdown().await;
    let config = adjunct_gateway::config::Config::load(&gw.config_path).unwrap();
    let running = adjunct_gateway::start(config).await.unwrap();
    gw.addr = running.addr;
    gw.running = Some(running);

    let mut kept = portal(&gw, "kept1", "Kept-pass-1x").await;
    assert_eq!(
        kept.ok("session.info", json!(null)).await["rights"],
        json!(["one-X CTI API"])
    );
    let mut admin = portal(&gw, "admin", ADMIN_PW).await;
    assert_eq!(revision(&mut admin).await, revision_before);
    let got = admin.ok("admin.config.get", json!(null)).await;
    assert_eq!(
        got["config"]["network_topology"]["turn_urls"],
        json!(["turn:turn.example.com:3478"])
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn every_change_is_audited_with_who_where_and_rights_before_and_after() {
    let gw = start().await;
    let mut sys = portal(&gw, "sysadmin", SYS_PW).await;
    let rev = revision(&mut sys).await;
    sys.ok(
        "admin.groups.update",
        json!({"revision": rev, "name": "CTI Only", "rights": ["one-X CTI API", "TURN Server Connection"]}),
    )
    .await;
    let log = logged();
    let line = log
        .lines()
        .find(|l| l.contains("admin_change_item") && l.contains("name=\"CTI Only\""))
        .unwrap_or_else(|| panic!("no audit line for the group:\n{log}"));
    assert!(line.contains("sysadmin"), "{line}");
    assert!(line.contains("rights_before=\"one-X CTI API\""), "{line}");
    assert!(
        line.contains("rights_after=\"one-X CTI API, TURN Server Connection\""),
        "{line}"
    );
    // The member account's change is recorded too, and the request line says from where.
    assert!(log
        .lines()
        .any(|l| l.contains("admin_change_item") && l.contains("name=\"cti1\"")));
    assert!(log
        .lines()
        .any(|l| l.contains("event=\"admin_change\"") && l.contains("peer=127.0.0.1:")));
    gw.shutdown().await;
}
