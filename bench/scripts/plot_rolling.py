"""Plots the rolling-restart series: requests/s, failed requests/s and instances the
caller lists, over time, one panel per variant; restarts shaded."""
import csv
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

raw, out = pathlib.Path(sys.argv[1]), sys.argv[2]
variants = [
    ("gateway", "axum-gateway, SIGTERM, defaults"),
    ("java", "Java nacos-client 2.3.2 (push, no retry), SIGTERM, defaults"),
    ("spring", "Spring Cloud app (LoadBalancer, 35 s cache, no retry), SIGTERM, defaults"),
    ("spring-fixed-2s", "Spring Cloud app, SIGTERM, providers at a fixed 2 s (NACOS_DEREGISTER_GRACE_MAX=2s)"),
    ("spring-no-cache", "Spring Cloud app, spring.cloud.loadbalancer.cache.enabled=false"),
    ("gateway-2rps", "axum-gateway, 2 requests/s"),
    ("java-2rps", "Java nacos-client 2.3.2, 2 requests/s"),
    ("spring-2rps", "Spring Cloud app, 2 requests/s"),
    ("gateway-kill-9", "axum-gateway, kill -9"),
    ("java-kill-9", "Java nacos-client 2.3.2, kill -9"),
    ("spring-kill-9", "Spring Cloud app, kill -9"),
]
variants = [(n, t) for n, t in variants if (raw / f"rolling-{n}.csv").exists()]
fig, axes = plt.subplots(len(variants), 1, figsize=(10, 2.6 * len(variants)), sharex=True)
for ax, (name, title) in zip(axes, variants):
    rows = list(csv.DictReader(open(raw / f"rolling-{name}.csv")))
    t = [int(r["second"]) for r in rows]
    requests = [int(r["requests"]) for r in rows]
    failed = [int(r["failed"]) for r in rows]
    listed = [int(r["listed"]) for r in rows]
    for i, r in enumerate(rows):
        if r["restarting"] == "1":
            ax.axvspan(t[i], t[i] + 1, color="0.92", lw=0)
    ax.plot(t, requests, label="requests/s", color="tab:blue")
    ax.bar(t, failed, label="failed/s", color="tab:red", width=1.0, align="edge")
    ax.set_ylabel("per second")
    ax.set_title(f"{title}: {sum(requests)} requests, {sum(failed)} failed")
    twin = ax.twinx()
    twin.step(t, listed, where="post", color="tab:green", label="instances listed")
    twin.set_ylim(0, max(listed + [1]) + 1)
    twin.set_ylabel("instances listed")
    lines = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="lower left", fontsize=8)
axes[-1].set_xlabel("seconds (grey: a restart in progress)")
fig.tight_layout()
fig.savefig(out, dpi=90)
print(f"wrote {out}")
