#!/usr/bin/env node
// Headless Chromium check of the adjunct-gateway User Portal page.
//
//   node tests/browser/portal.mjs --url https://127.0.0.1:PORT/ --user U --password P
//        [--expect-relay | --expect-turn-unreachable HOST:PORT] [--cti | --expect-cti-off]
//   node tests/browser/portal.mjs --url https://127.0.0.1:PORT/ --bad-origin-check
//
// Signs in on the demo page and waits for the TURN check's verdict:
//   --expect-relay                  the TURN server allocated a relay candidate;
//   --expect-turn-unreachable ADDR  the page said within 2 s that no TURN server answered at ADDR;
//   --cti                           drives the CTI panel: make a call, answer, hold, clear, and
//                                   collects the cti.call.* events the page shows;
//   --expect-cti-off                the CTI panel is disabled with a sentence naming the right.
// A sign-in that is not refused passes only with zero console errors (CSP violations included).
//
// Prints one JSON line on stdout. Exit codes: 0 pass, 1 fail, 2 usage/environment error.
// Environment: CHROMIUM_PATH (default /usr/bin/chromium), PORTAL_SCREENSHOT=FILE (optional PNG).
// Setup: (cd tests/browser && npm ci). Chromium is launched by ./chromium.mjs.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import http from "node:http";
import { CSP_PROBE, EnvError, launch, loadPlaywright } from "./chromium.mjs";

const USAGE = "usage: node tests/browser/portal.mjs --url https://127.0.0.1:PORT/ " +
  "(--user U --password P [--expect-relay | --expect-turn-unreachable HOST:PORT] [--cti | --expect-cti-off]" +
  " | --bad-origin-check) [--timeout SECONDS]";
// The page's promise: a TURN server that does not answer is reported within this time.
const TURN_VERDICT_MS = 2000;
function die(code, msg) {
  process.stderr.write(`portal.mjs: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const o = { expectRelay: false, turnUnreachable: null, cti: false, ctiOff: false, badOrigin: false, timeout: 30 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) die(2, `${a} needs a value\n${USAGE}`);
      return argv[++i];
    };
    if (a === "--url") o.url = val();
    else if (a === "--user") o.user = val();
    else if (a === "--password") o.password = val();
    else if (a === "--timeout") o.timeout = Number(val());
    else if (a === "--expect-relay") o.expectRelay = true;
    else if (a === "--expect-turn-unreachable") o.turnUnreachable = val();
    else if (a === "--cti") o.cti = true;
    else if (a === "--expect-cti-off") o.ctiOff = true;
    else if (a === "--bad-origin-check") o.badOrigin = true;
    else if (a === "-h" || a === "--help") { process.stdout.write(USAGE + "\n"); process.exit(0); }
    else die(2, `unknown argument ${a}\n${USAGE}`);
  }
  if (!o.url) die(2, `--url is required\n${USAGE}`);
  try { o.parsed = new URL(o.url); } catch { die(2, `bad --url ${o.url}`); }
  if (o.parsed.protocol !== "https:") die(2, "--url must be https://");
  if (!o.badOrigin && (o.user === undefined || o.password === undefined)) die(2, `--user and --password are required\n${USAGE}`);
  if (!(o.timeout > 0)) die(2, "--timeout must be a positive number of seconds");
  if (o.expectRelay && o.turnUnreachable) die(2, "--expect-relay and --expect-turn-unreachable exclude each other");
  if (o.cti && o.ctiOff) die(2, "--cti and --expect-cti-off exclude each other");
  return o;
}

const pageState = () => ({
  state: document.body.dataset.state || "",
  status: document.getElementById("status").textContent,
  candidateTypes: (document.body.dataset.candidateTypes || "").split(",").filter(Boolean),
  iceErrors: (document.body.dataset.iceErrors || "").split(",").filter(Boolean).map(Number),
  turnMs: document.body.dataset.turnMs === "" ? null : Number(document.body.dataset.turnMs),
  cti: document.body.dataset.cti || "",
  ctiStatus: document.getElementById("cti-status").textContent,
  ctiControlsDisabled: document.getElementById("cti-controls").disabled,
  ctiEvents: [...document.querySelectorAll("#cti-events li")].map((li) => ({
    topic: li.dataset.topic, state: li.dataset.state,
  })),
  cspViolations: window.__cspViolations || [],
});

// Make a call 201 -> 202, then answer, hold and clear it, each time waiting for both
// extensions' events to appear on the page. Returns a description of what failed, or "".
async function driveCti(page, timeoutMs) {
  const wait = async (what, fn, arg) => {
    try {
      await page.waitForFunction(fn, arg, { timeout: timeoutMs, polling: 50 });
      return "";
    } catch {
      return `timeout waiting for ${what}`;
    }
  };
  let failed = await wait("the CTI panel to be ready", () => document.body.dataset.cti === "ready");
  if (failed) return failed;
  await page.selectOption("#cti-from", "201");
  await page.selectOption("#cti-to", "202");
  await page.click("#cti-make");
  failed = await wait("dialing and ringing events",
    () => document.querySelectorAll('#cti-events li[data-state="dialing"]').length >= 1 &&
      document.querySelectorAll('#cti-events li[data-state="ringing"]').length >= 1 &&
      document.getElementById("cti-call").value !== "");
  if (failed) return failed;
  for (const [button, state] of [["#cti-answer", "connected"], ["#cti-hold", "held"], ["#cti-clear", "cleared"]]) {
    await page.click(button);
    failed = await wait(`two ${state} events`,
      (s) => document.querySelectorAll(`#cti-events li[data-state="${s}"]`).length >= 2, state);
    if (failed) return failed;
  }
  return await wait("the cleared call to leave the call list",
    () => document.getElementById("cti-call").options.length === 0);
}

async function portalCheck(ctx, o) {
  const page = ctx.pages()[0] || (await ctx.newPage());
  const logs = [], consoleErrors = [];
  page.on("console", (m) => {
    logs.push(`${m.type()}: ${m.text()}`);
    if (m.type() === "error") consoleErrors.push(m.text());
  });
  page.on("pageerror", (e) => { logs.push(`pageerror: ${e.message}`); consoleErrors.push(`pageerror: ${e.message}`); });
  await page.addInitScript(CSP_PROBE);
  let res = { state: "error", candidateTypes: [], status: "", iceErrors: [] };
  const problems = [];
  try {
    await page.goto(o.url, { waitUntil: "load", timeout: 15000 });
    await page.fill("#user", o.user);
    await page.fill("#password", o.password);
    await page.click("#submit");
    try {
      await page.waitForFunction(
        () => ["done", "error", "login-failed", "turn-unreachable", "disconnected"].includes(document.body.dataset.state),
        null, { timeout: o.timeout * 1000, polling: 50 });
    } catch {
      problems.push(`no final state after ${o.timeout} s`);
    }
    if (o.cti) {
      const failed = await driveCti(page, o.timeout * 1000);
      if (failed) problems.push(`CTI: ${failed}`);
    }
    res = await page.evaluate(pageState);
    if (process.env.PORTAL_SCREENSHOT) await page.screenshot({ path: process.env.PORTAL_SCREENSHOT, fullPage: true });
  } catch (e) {
    problems.push(`harness: ${e.message.split("\n")[0]}`);
  }
  const refused = res.state === "login-failed";
  if (o.turnUnreachable) {
    if (res.state !== "turn-unreachable") problems.push(`state ${res.state}, expected turn-unreachable`);
    if (!(res.status || "").includes(o.turnUnreachable)) problems.push(`the status does not name ${o.turnUnreachable}`);
    if (!(res.turnMs <= TURN_VERDICT_MS)) problems.push(`TURN verdict after ${res.turnMs} ms, more than ${TURN_VERDICT_MS} ms`);
  } else if (res.state !== "done") {
    problems.push(`state ${res.state}, expected done`);
  }
  if (o.expectRelay && !res.candidateTypes.includes("relay")) problems.push("no relay candidate");
  if (o.ctiOff && !(res.cti === "off" && res.ctiControlsDisabled && (res.ctiStatus || "").includes("one-X CTI API"))) {
    problems.push("the CTI panel is not disabled with a sentence naming one-X CTI API");
  }
  if (!refused && (consoleErrors.length || (res.cspViolations || []).length)) problems.push("console errors");
  res.consoleErrors = consoleErrors;
  res.problems = problems;
  const ok = problems.length === 0;
  if (!ok && logs.length) process.stderr.write(logs.join("\n") + "\n");
  return { ok, out: res };
}

// Tries a WebSocket to wssUrl from a page whose origin is pageUrl's; returns "open" or "failed".
const PROBE_JS = (wssUrl) => `new Promise((resolve) => {
  let ws;
  try { ws = new WebSocket(${JSON.stringify(wssUrl)}); } catch (e) { return resolve("failed"); }
  const t = setTimeout(() => resolve("timeout"), 10000);
  ws.onopen = () => { clearTimeout(t); ws.close(1000); resolve("open"); };
  ws.onerror = () => { clearTimeout(t); resolve("failed"); };
  ws.onclose = () => { clearTimeout(t); resolve("failed"); };
})`;

async function probe(ctx, pageUrl, wssUrl) {
  const page = await ctx.newPage();
  const msgs = [];
  page.on("console", (m) => msgs.push(m.text()));
  try {
    try {
      await page.goto(pageUrl, { waitUntil: "load", timeout: 15000 });
    } catch (e) {
      return { origin: new URL(pageUrl).origin, result: `page not loaded: ${e.message.split("\n")[0]}`, httpStatus: null, console: msgs };
    }
    const result = await page.evaluate(PROBE_JS(wssUrl));
    await page.waitForTimeout(200); // let the console error about the handshake arrive
    const origin = await page.evaluate(() => location.origin);
    const m = msgs.map((t) => /Unexpected response code: (\d+)/.exec(t)).find(Boolean);
    return { origin, result, httpStatus: m ? Number(m[1]) : null, console: msgs };
  } finally {
    await page.close();
  }
}

async function badOriginCheck(ctx, o) {
  const wssUrl = `wss://${o.parsed.host}/portal`;
  const server = http.createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end("<!doctype html><title>foreign origin</title><p>foreign origin probe</p>");
  });
  await new Promise((resolve, reject) => { server.once("error", reject); server.listen(0, "127.0.0.1", resolve); });
  try {
    const foreignUrl = `http://127.0.0.1:${server.address().port}/`;
    // Control: from the gateway's own origin the same WebSocket must open, so that a failure
    // below is caused by the Origin check, not by TLS or an unreachable gateway.
    const control = await probe(ctx, o.url, wssUrl);
    const foreign = await probe(ctx, foreignUrl, wssUrl);
    const out = {
      mode: "bad-origin-check",
      endpoint: wssUrl,
      control: { origin: control.origin, result: control.result },
      foreign: { origin: foreign.origin, result: foreign.result, httpStatus: foreign.httpStatus },
    };
    let ok = control.result === "open" && foreign.result === "failed";
    if (!ok) {
      out.status = control.result !== "open"
        ? "control failed: the WebSocket did not open from the gateway's own origin either"
        : "WebSocket from a foreign origin was not refused";
      process.stderr.write([...control.console, ...foreign.console].join("\n") + "\n");
    } else {
      out.status = "foreign origin refused" + (foreign.httpStatus ? ` (HTTP ${foreign.httpStatus})` : "");
    }
    return { ok, out };
  } finally {
    server.close();
  }
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { chromium } = await loadPlaywright("portal.mjs");
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "portal-chromium-"));
  let ctx;
  let code = 1;
  try {
    ctx = await launch(chromium, userDataDir, o.parsed.hostname);
    const { ok, out } = o.badOrigin ? await badOriginCheck(ctx, o) : await portalCheck(ctx, o);
    process.stdout.write(JSON.stringify(out) + "\n");
    code = ok ? 0 : 1;
  } catch (e) {
    if (e instanceof EnvError) {
      process.stderr.write(`portal.mjs: ${e.message}\n`);
      code = 2;
    } else {
      process.stderr.write(`portal.mjs: ${e.stack || e}\n`);
      code = 1;
    }
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  process.exit(code);
}

main();
