#!/usr/bin/env python3
"""Draws the soak over time from `adjunct-loadgen soak --json FILE`: the
gateway's RSS, the bystander's ping p99, and refusals per second by kind.

    pip install matplotlib
    python3 scripts/plot_soak.py soak.json docs/soak.png
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Counter families plotted as per-second rates (cumulative in the JSON).
REFUSALS = {
    "adjunct_gateway_connections_refused_total": "connections refused",
    "adjunct_gateway_tls_handshake_failures_total": "handshakes cut off",
    "adjunct_gateway_events_dropped_total": "events dropped",
    "adjunct_gateway_forbidden_total": "forbidden",
}


def rates(samples, family):
    out, prev = [], None
    for s in samples:
        v = s["counters"].get(family, 0.0)
        out.append(0.0 if prev is None else max(v - prev, 0.0))
        prev = v
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    soak = json.load(open(sys.argv[1]))
    samples = soak["samples"]
    t = [s["t"] / 60 for s in samples]
    fig, (rss, p99, refused) = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    rss.plot(t, [s["rss_kib"] / 1024 for s in samples])
    rss.axvline(soak["warmup_secs"] / 60, color="grey", linestyle=":", label="end of warm-up")
    rss.set_ylabel("gateway RSS (MiB)")
    rss.set_ylim(bottom=0)
    rss.legend(loc="lower right")
    p99.plot(t, [s["bystander_p99_ms"] for s in samples])
    p99.set_ylabel("bystander ping p99 (ms)")
    p99.set_ylim(bottom=0)
    for family, label in REFUSALS.items():
        refused.plot(t, rates(samples, family), label=label)
    refused.plot(t, rates(samples, "adjunct_gateway_logins_total"), label="login attempts (all outcomes)")
    refused.set_ylabel("per second")
    refused.set_xlabel("minutes")
    refused.set_yscale("symlog")
    refused.legend(loc="upper right", fontsize="small")
    fig.suptitle(
        f"soak: RSS after warm-up {soak['rss_after_warmup_min_kib'] / 1024:.0f}–"
        f"{soak['rss_after_warmup_max_kib'] / 1024:.0f} MiB "
        f"({soak['rss_slope_kib_per_min']:+.0f} KiB/min); bystander p99 median "
        f"{soak['bystander_p99_median_ms']:.1f} ms"
    )
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)


if __name__ == "__main__":
    main()
