//! The administrative page (`GET /admin`, assets/admin.html) in real headless
//! Chromium (tests/browser/admin.mjs) against a real gateway: one test per
//! starter role and one for a user without management rights, each signing
//! in by keyboard, doing every change its role allows, finding each forbidden
//! control disabled with its reason, and seeing the server refuse one that is
//! re-enabled in the DOM; two pages on one configuration (the second save is
//! stale); a name made of markup shown as text, with the CSP blocking it when
//! planted. What the page did is then checked on the wire and through the
//! Management API. The run writes the screenshots docs/ADMIN.md shows.

mod common;
#[path = "browser/support.rs"]
mod support;

use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};

const ADMIN_PW: &str = "admin-Pass-0x";
const SYS_PW: &str = "sys-Pass-6x";
const PHONE_PW: &str = "phone-Pass-7x";
const NET_PW: &str = "net-Pass-8x";
const SUPPORT_PW: &str = "support-Pass-9x";
const FORBIDDEN: i64 = -32003;

/// The starter's roles, one account per role (the built-in administrator in
/// "Server Administrator", as the starter writes it), a topology and a TURN
/// secret, beside the base directory of every test gateway.
fn fixture() -> String {
    let user = |name: &str, pw: &str, group: &str| {
        format!(
            "[[service_user]]\nname = \"{name}\"\npassword = \"{}\"\ngroups = [\"{group}\"]\n\n",
            cheap_hash(pw)
        )
    };
    format!(
        "{}\n{}{}{}{}{}[network_topology]\nstun_urls = [\"stun:127.0.0.1:3478\"]\nturn_urls = [\"turn:127.0.0.1:3478?transport=udp\"]\n\n[turn]\nsecrets = [\"pages-secret\"]\n",
        adjunct_gateway::starter::ROLES,
        user("admin", ADMIN_PW, "Server Administrator"),
        user("sysadmin", SYS_PW, "System Administrator"),
        user("phoneadmin", PHONE_PW, "Phone Administrator"),
        user("netadmin", NET_PW, "Network Administrator"),
        user("support", SUPPORT_PW, "Support Technician"),
    )
}

/// The audit layer the binary installs, so `admin.audit.recent` has lines.
fn audit_layer() {
    static SET: OnceLock<()> = OnceLock::new();
    SET.get_or_init(|| {
        use tracing_subscriber::layer::SubscriberExt;
        let subscriber = tracing_subscriber::registry().with(adjunct_gateway::audit::layer());
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

async fn start() -> TestGateway {
    audit_layer();
    TestGateway::start_with("", &fixture()).await
}

fn docs() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/docs").to_owned()
}

/// Runs admin.mjs with `plan` against `gw`'s /admin; fails the test with
/// everything the script said when it finds a problem. Returns its report.
fn run_page(gw: &TestGateway, plan: Value) -> Value {
    let url = format!("https://127.0.0.1:{}/admin", gw.addr.port());
    let plan = plan.to_string();
    let shots = docs();
    let args = ["--url", &url, "--plan", &plan, "--shots", &shots];
    let (ok, out) = tokio::task::block_in_place(|| support::run_browser_script("admin.mjs", &args));
    let report = out
        .lines()
        .find_map(|l| serde_json::from_str::<Value>(l).ok())
        .unwrap_or_else(|| panic!("no JSON report in: {out}"));
    assert!(ok, "{out}");
    assert_eq!(report["problems"], json!([]), "{out}");
    assert_eq!(report["consoleErrors"], json!([]), "{out}");
    assert_eq!(report["foreign"], json!([]), "{out}");
    report
}

/// Which views a role reads (the others say which right they need).
fn views(read: bool, security: bool) -> Value {
    json!({
        "overview": read, "sessions": read, "users": security,
        "groups": security, "network": read, "audit": security,
    })
}

/// The changes of the users and groups views, made on accounts and groups
/// named after `tag`, within what a role holding `cti_only` can reach.
fn directory_changes(tag: &str, groups: &[&str], add: &str, rights: &[&str]) -> Vec<Value> {
    let agent = format!("agent-{tag}");
    let group = format!("Pages {tag}");
    vec![
        json!({"kind": "create", "name": agent, "password": "Agent-pass-11", "groups": groups}),
        json!({"kind": "create", "name": format!("temp-{tag}"), "password": "Temp-pass-22", "groups": []}),
        json!({"kind": "delete", "name": format!("temp-{tag}")}),
        json!({"kind": "password", "name": agent, "password": "Agent-new-33"}),
        json!({"kind": "toggle", "name": agent}),
        json!({"kind": "toggle", "name": agent}),
        json!({"kind": "groups", "name": agent, "add": add}),
        json!({"kind": "groupCreate", "name": group, "rights": rights}),
        json!({"kind": "cell", "group": group, "right": "Web Control Security"}),
        json!({"kind": "groupDelete", "group": group}),
    ]
}

/// The API's view of one service user.
async fn user_entry(c: &mut Client, name: &str) -> Option<Value> {
    let r = c.ok("admin.users.list", json!(null)).await;
    r["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["name"] == name)
        .cloned()
}

async fn group_rights(c: &mut Client, name: &str) -> Option<Value> {
    let r = c.ok("admin.groups.list", json!(null)).await;
    r["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .map(|g| g["rights"].clone())
}

/// A changed user: there, enabled, in `groups`, and signing in with its new password.
async fn assert_agent(gw: &TestGateway, api: &mut Client, name: &str, groups: Value) {
    let agent = user_entry(api, name).await.expect("the agent was created");
    assert_eq!(agent["enabled"], true, "{agent}");
    assert_eq!(agent["groups"], groups, "{agent}");
    gw.login("/portal", name, "Agent-new-33").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn server_administrator_manages_everything_and_the_page_acts_on_the_wire() {
    let gw = start().await;
    let mut victim = gw.login("/portal", "portal1", PORTAL_PW).await;
    let mut turn = gw.login("/portal", "turn1", TURN_PW).await;
    turn.ok("turn.credentials", json!({})).await;
    let mut provider = gw.login("/adjunct", "app1", APP_PW).await;
    provider
        .ok("adjunct.register", json!({"namespaces": ["cti"]}))
        .await;
    let mut changes = vec![
        json!({"kind": "overview", "expect": {"providers": "cti: 1", "sessions": "adjunct: 1"}}),
        json!({"kind": "close", "user": "portal1", "reason": "page test"}),
    ];
    changes.extend(directory_changes(
        "admin",
        &["CTI Only"],
        "Portal Users",
        &["one-X CTI API"],
    ));
    changes.extend([
        // The Server Administrator may change the System Administrator's password.
        json!({"kind": "password", "name": "sysadmin", "password": "Agent-new-33"}),
        json!({"kind": "cell", "group": "TURN Only", "right": "TURN Server Connection"}),
        json!({"kind": "network", "stun": "stun:127.0.0.1:3479"}),
        json!({"kind": "reload"}),
        json!({"kind": "audit", "event": "admin_change", "user": "admin"}),
    ]);
    let shot = |view: &str, width: u32| {
        let file = if width < 600 {
            format!("admin-{view}-375.png")
        } else {
            format!("admin-{view}.png")
        };
        json!({"view": view, "file": file, "width": width})
    };
    let plan = json!({
        "scenario": "role", "user": "admin", "password": ADMIN_PW,
        "views": views(true, true),
        "do": changes,
        "forbidden": [
            {"kind": "delete", "user": "admin", "reason": "the administrator account cannot be deleted"},
            {"kind": "toggle", "user": "admin", "reason": "the administrator account cannot be disabled"},
            {"kind": "groupDelete", "group": "Server Administrator", "reason": "still assigned to admin"},
        ],
        "tamper": {"kind": "delete", "user": "admin", "expect": "the administrator account cannot be deleted"},
        "shots": [
            shot("overview", 1280), shot("sessions", 1280),
            {"view": "users", "file": "admin-users.png", "scroll": "article.user[data-user=\"sysadmin\"]"},
            shot("groups", 1280), shot("network", 1280), shot("audit", 1280),
            shot("users", 375), shot("groups", 375),
        ],
    });
    let report = run_page(&gw, plan);
    assert!(
        report["notes"]["figures"]["version"]
            .as_str()
            .is_some_and(|v| v == env!("CARGO_PKG_VERSION")),
        "{report}"
    );

    // The closed session ended on the wire with 1008.
    assert_eq!(victim.closed().await, Some(1008));
    // TURN Server Connection left "TURN Only" in the matrix: turn1's next
    // request is refused at once, on the session it already had.
    let (code, e) = turn.err("turn.credentials", json!({})).await;
    assert_eq!(code, FORBIDDEN, "{e}");
    assert_eq!(e["data"]["right"], "TURN Server Connection");

    let mut api = gw.login("/portal", "admin", ADMIN_PW).await;
    assert_agent(
        &gw,
        &mut api,
        "agent-admin",
        json!(["Portal Users", "CTI Only"]),
    )
    .await;
    assert!(user_entry(&mut api, "temp-admin").await.is_none());
    assert!(group_rights(&mut api, "Pages admin").await.is_none());
    assert_eq!(group_rights(&mut api, "TURN Only").await, Some(json!([])));
    gw.login("/portal", "sysadmin", "Agent-new-33").await;
    let config = api.ok("admin.config.get", json!(null)).await;
    assert_eq!(
        config["config"]["network_topology"]["stun_urls"],
        json!(["stun:127.0.0.1:3478", "stun:127.0.0.1:3479"])
    );
    // The re-enabled Delete changed nothing.
    assert!(user_entry(&mut api, "admin").await.is_some());
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn system_administrator_sees_the_administrators_password_out_of_reach() {
    let gw = start().await;
    let mut support = gw.login("/portal", "support", SUPPORT_PW).await;
    let mut changes = vec![json!({"kind": "close", "user": "support"})];
    changes.extend(directory_changes(
        "sys",
        &["CTI Only"],
        "Portal Users",
        &["one-X CTI API"],
    ));
    changes.extend([
        json!({"kind": "network", "stun": "stun:127.0.0.1:3480"}),
        json!({"kind": "reload"}),
    ]);
    let rule = "only the administrator can change its own password";
    let plan = json!({
        "scenario": "role", "user": "sysadmin", "password": SYS_PW,
        "views": views(true, true),
        "do": changes,
        "forbidden": [
            {"kind": "password", "user": "admin", "reason": rule},
            {"kind": "delete", "user": "admin", "reason": "the administrator account cannot be deleted"},
            {"kind": "toggle", "user": "admin", "reason": "the administrator account cannot be disabled"},
        ],
        "tamper": {"kind": "password", "user": "admin", "expect": rule},
        "shots": [{"view": "users", "file": "admin-users-sysadmin.png", "scroll": "article.user[data-user=\"admin\"]"}],
    });
    run_page(&gw, plan);
    assert_eq!(support.closed().await, Some(1008));
    let mut api = gw.login("/portal", "admin", ADMIN_PW).await;
    assert_agent(
        &gw,
        &mut api,
        "agent-sys",
        json!(["Portal Users", "CTI Only"]),
    )
    .await;
    // The administrator's password is still its own.
    gw.login("/portal", "admin", ADMIN_PW).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn phone_administrator_manages_cti_users_and_groups_only() {
    let gw = start().await;
    let changes = directory_changes("phone", &[], "CTI Only", &["one-X CTI API"]);
    let lacks = |what: &str, right: &str| format!("{what} holds or would hold \"{right}\"");
    let plan = json!({
        "scenario": "role", "user": "phoneadmin", "password": PHONE_PW,
        "views": views(false, true),
        "do": changes,
        "forbidden": [
            {"kind": "password", "user": "portal1", "reason": lacks("account \"portal1\"", "TURN Server Connection")},
            {"kind": "delete", "user": "app1", "reason": lacks("account \"app1\"", "Adjunct Server Connection")},
            {"kind": "group", "user": "cti1", "group": "Application Servers", "reason": "Adjunct Server Connection"},
            // Portal Users is out of reach as a whole, because of TURN Server Connection.
            {"kind": "cell", "group": "Portal Users", "right": "Voicemail Pro Basic", "reason": lacks("group \"Portal Users\"", "TURN Server Connection")},
            {"kind": "cell", "group": "Portal Users", "right": "TURN Server Connection", "reason": "you do not hold \"TURN Server Connection\", so you cannot grant or revoke it"},
            {"kind": "cell", "group": "CTI Only", "right": "Management API Read", "reason": "Management API Read"},
            {"kind": "assign", "group": "Application Servers", "reason": "Adjunct Server Connection"},
            {"kind": "grant", "right": "TURN Server Connection", "reason": "you do not hold \"TURN Server Connection\""},
            {"kind": "reload", "reason": "admin.config.reload needs \"Management API Write\""},
        ],
        "tamper": {"kind": "password", "user": "portal1", "expect": "TURN Server Connection"},
        "shots": [{"view": "groups", "file": "admin-groups-phoneadmin.png"}],
    });
    run_page(&gw, plan);
    let mut api = gw.login("/portal", "admin", ADMIN_PW).await;
    assert_agent(&gw, &mut api, "agent-phone", json!(["CTI Only"])).await;
    // The re-enabled password change did not happen.
    gw.login("/portal", "portal1", PORTAL_PW).await;
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn network_administrator_closes_sessions_within_its_rights_and_sets_the_topology() {
    let gw = start().await;
    let mut support = gw.login("/portal", "support", SUPPORT_PW).await;
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    let plan = json!({
        "scenario": "role", "user": "netadmin", "password": NET_PW,
        "views": views(true, false),
        "do": [
            {"kind": "overview", "expect": {"sessions": "portal: 3"}},
            {"kind": "close", "user": "support"},
            {"kind": "network", "stun": "stun:127.0.0.1:3481"},
            {"kind": "reload"},
        ],
        "forbidden": [
            {"kind": "close", "user": "portal1", "reason": "holds or would hold \"one-X CTI API\", which you do not hold"},
        ],
        "tamper": {"kind": "close", "user": "portal1", "expect": "which you do not hold"},
        "shots": [{"view": "sessions", "file": "admin-sessions-netadmin.png"}],
    });
    run_page(&gw, plan);
    assert_eq!(support.closed().await, Some(1008));
    // The re-enabled Close did not close portal1.
    portal.ok("session.ping", json!({})).await;
    let mut api = gw.login("/portal", "netadmin", NET_PW).await;
    let config = api.ok("admin.config.get", json!(null)).await;
    assert_eq!(
        config["config"]["network_topology"]["stun_urls"][1],
        "stun:127.0.0.1:3481"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn support_technician_reads_and_changes_nothing() {
    let gw = start().await;
    let mut portal = gw.login("/portal", "portal1", PORTAL_PW).await;
    let before = std::fs::read_to_string(&gw.config_path).unwrap();
    let write = "needs \"Management API Write\", which you do not hold";
    let plan = json!({
        "scenario": "role", "user": "support", "password": SUPPORT_PW,
        "views": views(true, false),
        "do": [{"kind": "overview", "expect": {"revision": &adjunct_gateway::config::revision_of(&before)}}],
        "forbidden": [
            {"kind": "close", "user": "portal1", "reason": format!("admin.sessions.close {write}")},
            {"kind": "network", "reason": format!("admin.network.set {write}")},
            {"kind": "reload", "reason": format!("admin.config.reload {write}")},
        ],
        "tamper": {"kind": "network", "expect": "you do not hold Management API Write"},
        "shots": [{"view": "network", "file": "admin-network-support.png"}],
    });
    run_page(&gw, plan);
    portal.ok("session.ping", json!({})).await;
    assert_eq!(std::fs::read_to_string(&gw.config_path).unwrap(), before);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_management_rights_sees_that_and_nothing_else() {
    let gw = start().await;
    let report = run_page(
        &gw,
        json!({
            "scenario": "role", "user": "portal1", "password": PORTAL_PW, "none": true,
            "shots": [{"file": "admin-none.png"}],
        }),
    );
    assert!(
        report["notes"]["none"]
            .as_str()
            .unwrap()
            .starts_with("portal1 holds none of the management rights"),
        "{report}"
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_pages_on_one_configuration_the_second_save_is_stale_and_reloads() {
    let gw = start().await;
    let report = run_page(
        &gw,
        json!({
            "scenario": "stale", "user": "admin", "password": ADMIN_PW, "group": "CTI Only",
            "first": "Voicemail Pro Basic", "second": "Reporter Administrator",
            "shot": "admin-stale.png",
        }),
    );
    assert_eq!(report["notes"]["stale"]["kind"], "stale", "{report}");
    let mut api = gw.login("/portal", "admin", ADMIN_PW).await;
    assert_eq!(
        group_rights(&mut api, "CTI Only").await,
        Some(json!([
            "Voicemail Pro Basic",
            "Reporter Administrator",
            "one-X CTI API"
        ]))
    );
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_made_of_markup_is_text_everywhere_and_the_csp_blocks_its_script() {
    let gw = start().await;
    let hostile = "<img src=x onerror=__pwned=1><script>__pwned=2</script>";
    let mut api = gw.login("/portal", "admin", ADMIN_PW).await;
    let rev = api.ok("admin.users.list", json!(null)).await["revision"].clone();
    api.ok(
        "admin.users.create",
        json!({"revision": rev, "name": hostile, "password": "Hostile-pass-1", "groups": ["CTI Only"]}),
    )
    .await;
    // Signed in: in the live sessions and the audit trail too.
    let _hostile = gw.login("/portal", hostile, "Hostile-pass-1").await;
    let report = run_page(
        &gw,
        json!({"scenario": "inject", "user": "admin", "password": ADMIN_PW, "hostile": hostile}),
    );
    assert_eq!(report["notes"]["planted"]["pwned"], Value::Null, "{report}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_page_is_served_with_its_csp_and_admin_page_false_turns_it_off() {
    let gw = TestGateway::start().await;
    let (status, text) = gw
        .http("GET /admin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 200, "{text}");
    let csp = text
        .lines()
        .find_map(|l| l.strip_prefix("Content-Security-Policy: "))
        .unwrap_or_else(|| panic!("no CSP: {text}"));
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert!(text.contains("<title>Administration"), "{text}");
    let (status, text) = gw
        .http("POST /admin HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 405, "{text}");
    assert!(text.contains("Allow: GET"), "{text}");
    gw.shutdown().await;

    let off = TestGateway::start_with("", "[portal]\nadmin_page = false\n").await;
    let (status, _) = off
        .http("GET /admin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 404);
    off.shutdown().await;
}
