#!/usr/bin/env python3
"""Draw the dashboard's main panels from Prometheus' own answers, as a PNG.

No Grafana server runs on our machines, so README's picture is this: the
monitoring test evaluates every dashboard query through Prometheus' HTTP API and
dumps the answers; this script plots a selection of them in the dashboard's
layout and units.

    EDGE_PROXY_DASHBOARD_DUMP=/tmp/dash.json EDGE_PROXY_MONITORING_LOAD=60 \\
        cargo test -p edge-proxy --test monitoring
    python3 k8s/monitoring/plot.py /tmp/dash.json docs/dashboard.png

Needs matplotlib (a development tool here, not a CI dependency).
"""

import json
import sys
from datetime import datetime

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, PercentFormatter  # noqa: E402

PANELS = [
    ("Requests per route", "req/s"),
    ("5xx ratio per route", "percent"),
    ("Request latency", "seconds"),
    ("Affinity outcomes", "req/s"),
    ("Upstream connect errors and retries", "req/s"),
    ("Endpoints per service", "count"),
    ("Client connections against max_connections", "count"),
    ("Configuration reloads", "count"),
    ("Memory against the limit", "bytes"),
]


def legend(template: str, metric: dict) -> str:
    out = template
    for key, value in metric.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def main() -> int:
    dump_path, out_path = sys.argv[1], sys.argv[2]
    with open(dump_path) as f:
        dump = json.load(f)
    with open(__file__.replace("plot.py", "dashboard.json")) as f:
        legends = {
            p["title"]: [t.get("legendFormat", "") for t in p.get("targets", [])]
            for p in json.load(f)["panels"]
        }
    fig, axes = plt.subplots(3, 3, figsize=(18, 11))
    for ax, (title, unit) in zip(axes.flat, PANELS):
        for target, template in zip(dump[title], legends[title]):
            for series in target["result"]:
                xs = [datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                ax.plot(xs, ys, label=legend(template, series["metric"]), linewidth=1.4)
        ax.set_title(title, fontsize=11, loc="left")
        if unit == "percent":
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        elif unit == "bytes":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v / 2**20:.0f} MiB"))
        elif unit == "seconds":
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v * 1000:.1f} ms"))
        else:
            ax.set_ylabel(unit, fontsize=9)
        ax.tick_params(labelsize=8)
        ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%H:%M:%S"))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("edge-proxy dashboard: its queries as Prometheus answered them "
                 "(proxy/tests/monitoring.rs, 1 s scrapes)", fontsize=13)
    fig.tight_layout()
    fig.savefig(out_path, dpi=80)
    print(f"wrote {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
