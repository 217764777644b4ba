#!/usr/bin/env python3
"""Draws how cost grows with load from `adjunct-loadgen run --json FILE`:
RSS per idle session and ping p99 at each held-session count, gateway
against baseline; with --curve, the latency-against-load curve of rpc and
routed (p50 and p99 against the percentage of the closed-loop peak, and the
time the gateway itself adds to a routed request where it was measured).

    pip install matplotlib
    python3 scripts/plot_benchmarks.py bench.json docs/benchmarks-hold.png
    python3 scripts/plot_benchmarks.py --curve bench.json docs/benchmarks-curve.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(steps, key):
    return [s["sessions"] for s in steps], [s[key] for s in steps]


def curve(report, out):
    rows = [(name, report.get(f"{name}_curve") or []) for name in ("rpc", "routed")]
    if not any(points for _, points in rows):
        sys.exit("the JSON has no rpc_curve or routed_curve (run rpc or routed without --no-curve)")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (name, points) in zip(axes, rows):
        x = [p["percent"] for p in points]
        for key, label, style in (("p50_ms", "p50", "o-"), ("p99_ms", "p99", "s-")):
            ax.plot(x, [p[key] for p in points], style, label=label)
        # The gateway's own share (routed), where /metrics had it.
        for leg, style in (("request", "^--"), ("answer", "v--")):
            added = [(p["percent"], (p.get("gateway_added") or {}).get(leg)) for p in points]
            added = [(px, a["p99_ms"]) for px, a in added if a]
            if added:
                ax.plot(*zip(*added), style, label=f"gateway adds p99 ({leg})")
        if points:
            peak = points[0]["target_per_sec"] * 100 / points[0]["percent"]
            ax.set_title(f"{name}: open loop (peak {peak:,.0f} req/s)")
        else:
            ax.set_title(f"{name}: not measured")
        ax.set_xlabel("% of the closed-loop peak")
        ax.set_xlim(0, 100)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_ylabel("latency, ms (open loop)")
    fig.suptitle(report.get("machine", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "--curve":
        return curve(json.load(open(args[1])), args[2])
    if len(args) != 2:
        sys.exit(__doc__)
    report = json.load(open(sys.argv[1]))
    hold = report.get("hold")
    if not hold:
        sys.exit("the JSON has no hold scenario")
    fig, (rss, p99) = plt.subplots(1, 2, figsize=(10, 4))
    for name, steps in (("gateway", hold["gateway"]), ("baseline", hold.get("baseline") or [])):
        if not steps:
            continue
        x, y = series(steps, "kib_per_session")
        rss.plot(x, y, marker="o", label=name)
        x, y = series(steps, "probe_p99_ms")
        p99.plot(x, y, marker="o", label=name)
    rss.set_title("RSS per idle session")
    rss.set_xlabel("sessions held")
    rss.set_ylabel("KiB")
    rss.set_ylim(bottom=0)
    p99.set_title("session.ping p99 while holding (2,000 req/s)")
    p99.set_xlabel("sessions held")
    p99.set_ylabel("ms")
    p99.set_ylim(bottom=0)
    for ax in (rss, p99):
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(report.get("machine", ""), fontsize=9)
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
