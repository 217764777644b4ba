// Shared by the headless Chromium checks in this directory (portal.mjs, admin.mjs): launching
// Chromium through playwright-core with nothing leaving this machine, and the CSP probe.
// Setup: (cd tests/browser && npm ci)
import fs from "node:fs";
import path from "node:path";

export const CHROMIUM = process.env.CHROMIUM_PATH || "/usr/bin/chromium";

// Chromium honours only the LAST --disable-features switch, and ours comes after Playwright's
// own, so this list repeats Playwright 1.65's defaults and adds ours.
const DISABLED_FEATURES = [
  // playwright-core 1.65.1 defaults
  "AvoidUnnecessaryBeforeUnloadCheckSync", "DestroyProfileOnBrowserClose", "HttpsUpgrades",
  "HttpsFirstBalancedModeAutoEnable", "LensOverlay", "MediaRouter", "PaintHolding",
  "ThirdPartyStoragePartitioning", "AvoidCorsURLLoaderRestartOnRedirect", "OptimizationHints",
  "NetworkTimeServiceQuerying", "AimEnabled", "PreconnectToSearch",
  // WebRTC: report real host IPs instead of random *.local names. mDNS obfuscation would send
  // multicast on the LAN, and with only a loopback interface it stalls gathering until timeout.
  "WebRtcHideLocalIpsWithMdns",
  // the login form would otherwise make Chromium query content-autofill.googleapis.com
  "AutofillServerCommunication",
];

// Everything stays on this machine: no background services, no DNS (see hostResolverRules),
// and WebRTC may use the loopback interface (TURN server on 127.0.0.1).
const CHROMIUM_ARGS = [
  "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  "--ignore-certificate-errors",
  // lets WebRTC enumerate the loopback interface; required when lo is the only interface
  "--allow-loopback-in-peer-connection",
  `--disable-features=${DISABLED_FEATURES.join(",")}`,
];

/** A missing or broken environment (exit code 2), not a failed check. */
export class EnvError extends Error {}

export function die(script, code, msg) {
  process.stderr.write(`${script}: ${msg}\n`);
  process.exit(code);
}

export async function loadPlaywright(script) {
  try {
    return await import("playwright-core");
  } catch (e) {
    die(script, 2, `playwright-core is not installed (run: cd ${path.dirname(new URL(import.meta.url).pathname)} && npm ci): ${e.message}`);
  }
}

// No DNS lookups by Chromium (they would leave the machine); the rule also matches IP literals,
// so the gateway host and the loopback names are exempted.
function hostResolverRules(host) {
  const keep = new Set(["localhost", "127.0.0.1", "[::1]", host]);
  return `--host-resolver-rules=MAP * ~NOTFOUND${[...keep].map((h) => `, EXCLUDE ${h}`).join("")}`;
}

export async function launch(chromium, userDataDir, host, options = {}) {
  try {
    fs.accessSync(CHROMIUM, fs.constants.X_OK);
  } catch {
    throw new EnvError(`Chromium not found at ${CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)`);
  }
  try {
    return await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: [...CHROMIUM_ARGS, hostResolverRules(host)],
      ignoreHTTPSErrors: true,
      timeout: 30000,
      ...options,
    });
  } catch (e) {
    throw new EnvError(`cannot launch Chromium at ${CHROMIUM}: ${e.message.split("\n")[0]}`);
  }
}

// Records CSP violations as the page sees them (console errors report them too; this names the
// directive). Init scripts run through DevTools, outside the page's CSP.
export const CSP_PROBE = () => {
  window.__cspViolations = [];
  document.addEventListener("securitypolicyviolation", (e) => {
    window.__cspViolations.push(`${e.violatedDirective} blocked ${e.blockedURI || "inline"}`);
  });
};
