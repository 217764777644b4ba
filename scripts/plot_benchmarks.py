#!/usr/bin/env python3
"""Draws how cost grows with load from `adjunct-loadgen run --json FILE`:
RSS per idle session and ping p99 at each held-session count, gateway
against baseline.

    pip install matplotlib
    python3 scripts/plot_benchmarks.py bench.json docs/benchmarks-hold.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def series(steps, key):
    return [s["sessions"] for s in steps], [s[key] for s in steps]


def main():
    if len(sys.argv) != 3:
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
