#!/usr/bin/env node
// Headless Chromium checks of the administrative page (assets/admin.html), driven by
// tests/admin_pages.rs against a real gateway.
//
//   node tests/browser/admin.mjs --url https://127.0.0.1:PORT/admin --plan JSON [--shots DIR]
//
// The plan says what to do; "scenario" is one of:
//   role    sign in by keyboard as plan.user; check which views say they need a right
//           (plan.views); do every allowed change in plan.do, each of which must end "Done";
//           check every control in plan.forbidden is disabled with its reason; re-enable
//           plan.tamper's control in the DOM and submit it: the page must say the server refused;
//           check labels and the 375 px layout; take plan.shots.
//   stale   two pages as plan.user edit the same group: the second save is refused as stale,
//           the page offers to reload, and after the reload the save is done.
//   inject  plan.hostile is a user name made of markup: it is shown as text in every view, and
//           the CSP blocks the inline script it carries when planted as markup on purpose.
// Every page must log no console error (CSP violations included) and request nothing outside
// the gateway's origin.
//
// Prints one JSON line on stdout: {problems, notes, consoleErrors, foreign}. Exit codes:
// 0 pass, 1 fail, 2 usage/environment error. Environment: CHROMIUM_PATH.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { CSP_PROBE, EnvError, die, launch, loadPlaywright } from "./chromium.mjs";

const USAGE = "usage: node tests/browser/admin.mjs --url https://127.0.0.1:PORT/admin --plan JSON [--shots DIR]";
const STALE = "changed by someone else since you loaded it — reload";
const WAIT_MS = 15000;

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => (i + 1 < argv.length ? argv[++i] : die("admin.mjs", 2, `${a} needs a value\n${USAGE}`));
    if (a === "--url") o.url = val();
    else if (a === "--plan") o.plan = val();
    else if (a === "--shots") o.shots = val();
    else die("admin.mjs", 2, `unknown argument ${a}\n${USAGE}`);
  }
  if (!o.url || !o.plan) die("admin.mjs", 2, USAGE);
  try { o.parsed = new URL(o.url); } catch { die("admin.mjs", 2, `bad --url ${o.url}`); }
  try { o.plan = JSON.parse(o.plan); } catch (e) { die("admin.mjs", 2, `bad --plan: ${e.message}`); }
  return o;
}

// A CSS attribute selector value (names may hold quotes, brackets, markup).
const q = (s) => JSON.stringify(String(s));

class Run {
  constructor(o) {
    this.o = o;
    this.problems = [];
    this.notes = {};
    this.consoleErrors = [];
    this.foreign = [];
    this.allowConsoleErrors = false;
  }

  problem(text) { this.problems.push(text); }

  async open(ctx, label) {
    const page = await ctx.newPage();
    await page.setViewportSize({ width: 1280, height: 860 });
    await page.addInitScript(CSP_PROBE);
    const origin = this.o.parsed.origin, host = this.o.parsed.host;
    page.on("console", (m) => { if (m.type() === "error" && !this.allowConsoleErrors) this.consoleErrors.push(`${label}: ${m.text()}`); });
    page.on("pageerror", (e) => this.consoleErrors.push(`${label}: pageerror: ${e.message}`));
    page.on("request", (r) => {
      const u = r.url();
      if (!u.startsWith("data:") && new URL(u).origin !== origin) this.foreign.push(u);
    });
    page.on("websocket", (ws) => { if (ws.url() !== `wss://${host}/portal`) this.foreign.push(ws.url()); });
    page.on("dialog", (d) => { this.problem(`${label}: a dialog opened: ${d.message()}`); d.dismiss().catch(() => {}); });
    return page;
  }

  // Signs in with the keyboard only: type, Tab, type, Enter.
  async signIn(page, user, password) {
    await page.goto(this.o.url, { waitUntil: "load", timeout: WAIT_MS });
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.id);
    if (focused !== "user") this.problem(`the user name field is not focused on load (${focused})`);
    await page.keyboard.type(user);
    await page.keyboard.press("Tab");
    const next = await page.evaluate(() => document.activeElement && document.activeElement.id);
    if (next !== "password") this.problem(`Tab from the user name goes to ${next}, not the password`);
    await page.keyboard.type(password);
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => ["ready", "none", "login-failed", "disconnected"].includes(document.body.dataset.state),
      null, { timeout: WAIT_MS, polling: 50 });
    await this.idle(page);
    return page.evaluate(() => document.body.dataset.state);
  }

  async idle(page) {
    await page.waitForFunction(() => document.querySelector("main").getAttribute("aria-busy") === "false",
      null, { timeout: WAIT_MS, polling: 50 });
  }

  // Shows a view through its navigation button, by keyboard.
  async view(page, name) {
    await page.focus(`#tab-${name}`);
    await page.keyboard.press("Enter");
    const shown = await page.evaluate(() => document.body.dataset.view);
    if (shown !== name) this.problem(`Enter on the ${name} button shows ${shown}`);
  }

  // Runs `fn` (which clicks) and waits for the outcome line; returns {kind, text}.
  async act(page, fn) {
    await page.evaluate(() => { document.getElementById("outcome").dataset.kind = ""; });
    await fn();
    try {
      await page.waitForFunction(() => ["ok", "refused", "stale", "error"].includes(document.getElementById("outcome").dataset.kind) &&
        document.querySelector("main").getAttribute("aria-busy") === "false", null, { timeout: WAIT_MS, polling: 50 });
    } catch {
      return { kind: "timeout", text: await page.textContent("#outcome-text") };
    }
    return page.evaluate(() => ({ kind: document.getElementById("outcome").dataset.kind, text: document.getElementById("outcome-text").textContent }));
  }

  async expectDone(page, what, fn) {
    const r = await this.act(page, fn);
    if (r.kind !== "ok" || !r.text.startsWith("Done")) this.problem(`${what}: expected done, the page says ${r.kind}: ${r.text}`);
    return r;
  }

  // Every visible control has an accessible name, and no missing value is shown as "null".
  async labelled(page, where) {
    const nulls = await page.evaluate(() => /\b(null|undefined)\b/.test(document.querySelector("main").innerText));
    if (nulls) this.problem(`${where}: the page shows "null" or "undefined"`);
    const bare = await page.evaluate(() => [...document.querySelectorAll("input,select,textarea,button,meter")]
      .filter((e) => e.getClientRects().length > 0)
      .filter((e) => !((e.labels && e.labels.length) || e.getAttribute("aria-label") || e.getAttribute("aria-labelledby") ||
        (e.tagName === "BUTTON" && e.textContent.trim())))
      .map((e) => e.id || e.outerHTML.slice(0, 80)));
    if (bare.length) this.problem(`${where}: controls without a label: ${bare.join(" | ")}`);
  }

  // A screenshot at `width`, scrolled to `scroll` (a selector) if given.
  async shot(page, file, width, scroll) {
    if (!this.o.shots) return;
    await page.setViewportSize({ width, height: width < 600 ? 1100 : 860 });
    await this.idle(page);
    if (scroll) await page.evaluate((s) => document.querySelector(s).scrollIntoView({ block: "start" }), scroll);
    await page.screenshot({ path: path.join(this.o.shots, file), fullPage: false });
    await page.setViewportSize({ width: 1280, height: 860 });
  }

  // At 375 px nothing makes the page itself scroll sideways (wide tables scroll in their box).
  async narrow(page, views) {
    await page.setViewportSize({ width: 375, height: 800 });
    for (const v of views) {
      await this.view(page, v);
      const w = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
      if (w[0] > w[1] + 1) this.problem(`at 375 px the ${v} view is ${w[0]} px wide`);
    }
    await page.setViewportSize({ width: 1280, height: 860 });
  }
}

// ---- where each control is ------------------------------------------------

const card = (user) => `article.user[data-user=${q(user)}]`;
const CONTROLS = {
  password: (f) => `${card(f.user)} button.set-password`,
  delete: (f) => `${card(f.user)} button.delete`,
  toggle: (f) => `${card(f.user)} button.toggle-enabled`,
  unlock: (f) => `${card(f.user)} button.unlock`,
  group: (f) => `${card(f.user)} input[data-group=${q(f.group)}]`,
  cell: (f) => `#matrix tr[data-group=${q(f.group)}] input[data-right=${q(f.right)}]`,
  groupDelete: (f) => `#matrix tr[data-group=${q(f.group)}] button.delete-group`,
  close: (f) => `#sessions-table tr[data-user=${q(f.user)}] button`,
  network: () => "#save-network",
  reload: () => "#config-reload",
  assign: (f) => `#new-groups input[data-group=${q(f.group)}]`,
  grant: (f) => `#new-group-rights input[data-right=${q(f.right)}]`,
};
const VIEW_OF = {
  password: "users", delete: "users", toggle: "users", unlock: "users", group: "users", assign: "users",
  cell: "groups", groupDelete: "groups", grant: "groups", close: "sessions", network: "network", reload: "overview",
};

async function filterSessions(page, user) {
  await page.fill("#sessions-user", "");
  await page.click("#sessions-refresh");
  await page.fill("#sessions-user", user);
}

// A control is disabled, and the reason tied to it says `reason`.
async function checkForbidden(run, page, f) {
  await run.view(page, VIEW_OF[f.kind]);
  if (f.kind === "close") await filterSessions(page, f.user);
  const sel = CONTROLS[f.kind](f);
  const got = await page.evaluate((s) => {
    const c = document.querySelector(s);
    if (!c) return null;
    const ids = (c.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
    const said = ids.map((id) => (document.getElementById(id) || {}).textContent || "").join(" ");
    const visible = ids.some((id) => { const e = document.getElementById(id); return e && !e.hidden && e.getClientRects().length > 0; });
    return { disabled: c.disabled, said, visible };
  }, sel);
  const what = `${f.kind} ${JSON.stringify(f)}`;
  if (!got) return run.problem(`${what}: no such control (${sel})`);
  if (!got.disabled) run.problem(`${what}: not disabled`);
  if (!got.said.includes(f.reason)) run.problem(`${what}: the reason shown is ${JSON.stringify(got.said)}, expected it to say ${JSON.stringify(f.reason)}`);
  if (!got.visible) run.problem(`${what}: the reason is not visible on the page`);
}

// Re-enables a refused control in the DOM and submits it: the server must refuse.
async function tamper(run, page, t) {
  await run.view(page, VIEW_OF[t.kind]);
  if (t.kind === "close") await filterSessions(page, t.user);
  const sel = CONTROLS[t.kind](t);
  await page.evaluate((s) => {
    const c = document.querySelector(s);
    c.disabled = false;
    const box = c.closest("article,tr,form");
    for (const e of box ? box.querySelectorAll("input,textarea") : []) { e.disabled = false; e.readOnly = false; }
  }, sel);
  const r = await run.act(page, async () => {
    if (t.kind === "password") {
      await page.fill(`${card(t.user)} input.new-pw`, "Tampered-pass-99");
      await page.click(sel);
    } else if (t.kind === "delete") {
      await page.click(sel);
      await page.click(`${card(t.user)} button.confirm-delete`);
    } else if (t.kind === "cell") {
      await page.click(sel);
      await page.click(`#matrix tr[data-group=${q(t.group)}] button.save-rights`);
    } else if (t.kind === "group") {
      await page.click(sel);
      await page.click(`${card(t.user)} button.save-groups`);
    } else {
      await page.click(sel);
    }
  });
  run.notes.tamper = r;
  if (r.kind !== "refused" || !r.text.includes(t.expect)) {
    run.problem(`re-enabled ${t.kind}: expected the page to say the server refused (${t.expect}), it says ${r.kind}: ${r.text}`);
  }
}

// ---- allowed changes ------------------------------------------------------

const STEPS = {
  async overview(run, page, s) {
    await run.view(page, "overview");
    const figures = await page.evaluate(() => Object.fromEntries([...document.querySelectorAll("#figures dd")].map((d) => [d.dataset.key, d.textContent])));
    run.notes.figures = figures;
    for (const k of ["version", "node", "uptime", "sessions", "providers", "logins", "revision"]) {
      if (!figures[k]) run.problem(`the overview lacks ${k}`);
    }
    for (const [k, v] of Object.entries(s.expect || {})) {
      if (!String(figures[k] || "").includes(v)) run.problem(`overview ${k} is ${JSON.stringify(figures[k])}, expected it to say ${JSON.stringify(v)}`);
    }
  },
  async close(run, page, s) {
    await run.view(page, "sessions");
    await filterSessions(page, s.user);
    const rows = await page.$$eval("#sessions-table tbody tr", (trs, u) => trs.filter((t) => t.dataset.user === u).length, s.user);
    if (rows < 1) return run.problem(`no live session of ${s.user} is listed`);
    await page.fill("#close-reason", s.reason || "closed from the admin page test");
    await run.expectDone(page, `close ${s.user}'s session`, () => page.click(CONTROLS.close(s)));
  },
  async create(run, page, s) {
    await run.view(page, "users");
    await page.fill("#new-name", s.name);
    await page.fill("#new-password", "abc");
    const weak = await page.evaluate(() => [document.getElementById("new-strength-text").dataset.ok, document.getElementById("new-strength-text").textContent]);
    if (weak[0] !== "false" || !weak[1].includes("at least 9 characters")) run.problem(`a weak password is not shown as weak: ${weak[1]}`);
    await page.fill("#new-password", s.password);
    const strong = await page.evaluate(() => [document.getElementById("new-strength-text").dataset.ok, document.getElementById("new-strength-text").textContent]);
    if (strong[0] !== "true") run.problem(`a good password is not shown as good: ${strong[1]}`);
    for (const g of s.groups || []) await page.check(CONTROLS.assign({ group: g }));
    await run.expectDone(page, `create ${s.name}`, () => page.click("#create-user"));
    if (!(await page.$(card(s.name)))) run.problem(`${s.name} is not listed after it was created`);
  },
  async delete(run, page, s) {
    await run.view(page, "users");
    await run.expectDone(page, `delete ${s.name}`, async () => {
      await page.click(CONTROLS.delete({ user: s.name }));
      await page.click(`${card(s.name)} button.confirm-delete`);
    });
    if (await page.$(card(s.name))) run.problem(`${s.name} is still listed after it was deleted`);
  },
  async password(run, page, s) {
    await run.view(page, "users");
    await page.fill(`${card(s.name)} input.new-pw`, s.password);
    await run.expectDone(page, `set ${s.name}'s password`, () => page.click(CONTROLS.password({ user: s.name })));
  },
  async toggle(run, page, s) {
    await run.view(page, "users");
    const before = await page.textContent(CONTROLS.toggle({ user: s.name }));
    await run.expectDone(page, `${before} ${s.name}`, () => page.click(CONTROLS.toggle({ user: s.name })));
    const after = await page.textContent(CONTROLS.toggle({ user: s.name }));
    if (after === before) run.problem(`the ${before} button of ${s.name} did not change`);
  },
  async groups(run, page, s) {
    await run.view(page, "users");
    await page.check(CONTROLS.group({ user: s.name, group: s.add }));
    await run.expectDone(page, `add ${s.name} to ${s.add}`, () => page.click(`${card(s.name)} button.save-groups`));
    if (!(await page.isChecked(CONTROLS.group({ user: s.name, group: s.add })))) run.problem(`${s.name} is not shown in ${s.add}`);
  },
  async groupCreate(run, page, s) {
    await run.view(page, "groups");
    await page.fill("#new-group-name", s.name);
    for (const r of s.rights) await page.check(CONTROLS.grant({ right: r }));
    await run.expectDone(page, `create group ${s.name}`, () => page.click("#create-group"));
  },
  async cell(run, page, s) {
    await run.view(page, "groups");
    const sel = CONTROLS.cell(s);
    const was = await page.isChecked(sel);
    await page.click(sel);
    await run.expectDone(page, `toggle ${s.right} in ${s.group}`, () => page.click(`#matrix tr[data-group=${q(s.group)}] button.save-rights`));
    if ((await page.isChecked(sel)) === was) run.problem(`${s.right} in ${s.group} did not change`);
  },
  async groupDelete(run, page, s) {
    await run.view(page, "groups");
    await run.expectDone(page, `delete group ${s.group}`, () => page.click(CONTROLS.groupDelete(s)));
  },
  async network(run, page, s) {
    await run.view(page, "network");
    const now = await page.inputValue("#stun-urls");
    await page.fill("#stun-urls", `${now}\n${s.stun}`.trim());
    await run.expectDone(page, "save the network topology", () => page.click("#save-network"));
  },
  async reload(run, page) {
    await run.view(page, "overview");
    await run.expectDone(page, "reload the configuration", () => page.click("#config-reload"));
  },
  async audit(run, page, s) {
    await run.view(page, "audit");
    await page.click("#audit-refresh");
    await run.idle(page);
    await page.selectOption("#audit-event", s.event);
    const rows = () => page.$$eval("#audit-table tbody tr", (trs) => trs.map((t) => [t.dataset.event, t.dataset.user]));
    let shown = await rows();
    if (!shown.length || shown.some(([e]) => e !== s.event)) run.problem(`the audit filter by ${s.event} shows ${JSON.stringify(shown.slice(0, 5))}`);
    await page.fill("#audit-user", s.user);
    shown = await rows();
    if (!shown.length || shown.some(([e, u]) => e !== s.event || !u.includes(s.user))) run.problem(`the audit filter by ${s.event} and ${s.user} shows ${JSON.stringify(shown.slice(0, 5))}`);
    run.notes.auditRows = shown.length;
    await page.selectOption("#audit-event", "");
    await page.fill("#audit-user", "");
  },
};

// ---- scenarios ------------------------------------------------------------

const ALL_VIEWS = ["overview", "sessions", "users", "groups", "network", "audit"];

async function roleScenario(run, ctx, plan) {
  const page = await run.open(ctx, plan.user);
  const state = await run.signIn(page, plan.user, plan.password);
  run.notes.state = state;
  if (plan.none) {
    const seen = await page.evaluate(() => ({
      text: document.getElementById("none-text").textContent,
      nav: document.getElementById("views").getClientRects().length > 0,
      views: [...document.querySelectorAll(".view")].filter((v) => v.getClientRects().length > 0).map((v) => v.id),
    }));
    run.notes.none = seen.text;
    if (state !== "none") run.problem(`state ${state}, expected none`);
    if (!seen.text.includes("holds none of the management rights")) run.problem(`the page does not say there is no management right: ${seen.text}`);
    if (seen.nav || seen.views.length) run.problem(`a user without management rights sees ${seen.nav ? "the navigation" : ""} ${seen.views.join(", ")}`);
    await run.labelled(page, "no rights");
    for (const s of plan.shots || []) await run.shot(page, s.file, s.width || 1280);
    return;
  }
  if (state !== "ready") return run.problem(`state ${state} after signing in, expected ready`);
  for (const [view, allowed] of Object.entries(plan.views)) {
    await run.view(page, view);
    const need = await page.evaluate((v) => { const n = document.getElementById(`need-${v}`); return { hidden: n.hidden, text: n.textContent }; }, view);
    if (allowed && !need.hidden) run.problem(`${view}: shown as needing a right: ${need.text}`);
    if (!allowed && (need.hidden || !need.text.includes("which you do not hold"))) run.problem(`${view}: not shown as needing a right (${need.text})`);
    await run.labelled(page, view);
  }
  for (const step of plan.do || []) await STEPS[step.kind](run, page, step);
  for (const f of plan.forbidden || []) await checkForbidden(run, page, f);
  for (const s of plan.shots || []) {
    await run.view(page, s.view);
    await run.shot(page, s.file, s.width || 1280, s.scroll);
  }
  await run.narrow(page, ALL_VIEWS);
  if (plan.tamper) await tamper(run, page, plan.tamper);
  await page.click("#signout");
  const after = await page.evaluate(() => [document.body.dataset.state, document.getElementById("login-card").hidden]);
  if (after[0] !== "signed-out" || after[1]) run.problem(`sign out leaves state ${after[0]}`);
}

async function staleScenario(run, ctx, plan) {
  const a = await run.open(ctx, "page A"), b = await run.open(ctx, "page B");
  for (const p of [a, b]) {
    if ((await run.signIn(p, plan.user, plan.password)) !== "ready") return run.problem("a page did not sign in");
    await run.view(p, "groups");
  }
  const cell = (right) => CONTROLS.cell({ group: plan.group, right });
  const save = `#matrix tr[data-group=${q(plan.group)}] button.save-rights`;
  await a.click(cell(plan.first));
  await run.expectDone(a, "page A's save", () => a.click(save));
  await b.click(cell(plan.second));
  const r = await run.act(b, () => b.click(save));
  run.notes.stale = r;
  if (r.kind !== "stale" || !r.text.includes(STALE)) run.problem(`page B's save: expected it refused as stale, the page says ${r.kind}: ${r.text}`);
  const offer = await b.evaluate(() => { const x = document.getElementById("reload-data"); return !x.hidden && x.getClientRects().length > 0; });
  if (!offer) run.problem("page B does not offer to reload");
  await run.shot(b, plan.shot, 1280);
  const reloaded = await run.act(b, () => b.click("#reload-data"));
  if (reloaded.kind !== "ok") run.problem(`reload: ${reloaded.kind}: ${reloaded.text}`);
  if (!(await b.isChecked(cell(plan.first)))) run.problem("after the reload page B does not show page A's change");
  await b.click(cell(plan.second));
  await run.expectDone(b, "page B's save after the reload", () => b.click(save));
}

async function injectScenario(run, ctx, plan) {
  const page = await run.open(ctx, plan.user);
  if ((await run.signIn(page, plan.user, plan.password)) !== "ready") return run.problem("did not sign in");
  const name = plan.hostile;
  for (const v of ["users", "groups", "sessions", "audit"]) {
    await run.view(page, v);
    if (v === "audit") { await page.click("#audit-refresh"); await run.idle(page); }
    const seen = await page.evaluate(([view, n]) => ({
      text: document.getElementById(`view-${view}`).innerText.includes(n),
      imgs: document.querySelectorAll("img").length,
      scripts: document.scripts.length,
      pwned: window.__pwned,
    }), [v, name]);
    if (!seen.text) run.problem(`${v}: the name is not shown as text`);
    if (seen.imgs || seen.scripts !== 1 || seen.pwned !== undefined) run.problem(`${v}: the name became markup: ${JSON.stringify(seen)}`);
  }
  // Planted as markup on purpose (as a careless page would): the CSP stops its inline script.
  run.allowConsoleErrors = true;
  const planted = await page.evaluate(async (n) => {
    const d = document.createElement("div");
    d.innerHTML = n;
    document.body.append(d);
    await new Promise((r) => setTimeout(r, 500));
    return { pwned: window.__pwned, violations: window.__cspViolations };
  }, name);
  run.notes.planted = planted;
  if (planted.pwned !== undefined) run.problem(`the planted script ran: __pwned = ${planted.pwned}`);
  if (!planted.violations.some((v) => v.startsWith("script-src"))) run.problem(`the CSP reported no blocked script: ${JSON.stringify(planted.violations)}`);
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const { chromium } = await loadPlaywright("admin.mjs");
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "admin-chromium-"));
  const run = new Run(o);
  let ctx, code = 1;
  try {
    ctx = await launch(chromium, userDataDir, o.parsed.hostname);
    const scenario = { role: roleScenario, stale: staleScenario, inject: injectScenario }[o.plan.scenario];
    if (!scenario) die("admin.mjs", 2, `unknown scenario ${o.plan.scenario}`);
    try {
      await scenario(run, ctx, o.plan);
    } catch (e) {
      run.problem(`harness: ${e.message.split("\n")[0]}`);
    }
    if (run.consoleErrors.length) run.problem("console errors");
    if (run.foreign.length) run.problem("requests outside the gateway's origin");
    process.stdout.write(JSON.stringify({ problems: run.problems, notes: run.notes, consoleErrors: run.consoleErrors, foreign: run.foreign }) + "\n");
    code = run.problems.length ? 1 : 0;
  } catch (e) {
    process.stderr.write(`admin.mjs: ${e.stack || e}\n`);
    code = e instanceof EnvError ? 2 : 1;
  } finally {
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
  process.exit(code);
}

main();
