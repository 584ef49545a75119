#!/usr/bin/env python3
"""The edge-proxy Grafana dashboard, built with Grafana's own builder.

    python3 k8s/monitoring/dashboard.py            # writes dashboard.json beside this file
    python3 k8s/monitoring/dashboard.py --check    # fails if dashboard.json is not what this builds

Needs `pip install grafana-foundation-sdk` (Grafana's generated builder for its
dashboard model: what it builds imports as is). Every query here is evaluated
against a real Prometheus in proxy/tests/monitoring.rs, which reads the panels'
`expr`s from dashboard.json: a query that returns nothing fails that test.
"""

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common, dashboard, prometheus, stat, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    StackingMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

OUT = Path(__file__).with_name("dashboard.json")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")

# Filters every query carries. `instance` is the node: the DaemonSet runs on the
# host network, so each target's address is its node's IP and the admin port.
NODE = 'instance=~"$instance"'
ROUTE = f'{NODE}, route=~"$route"'
SERVICE = f'{NODE}, service=~"$service"'
# process_* series come from every exporter: keep those of edge-proxy targets.
OF_PROXY = "* on (instance, job) group_left () edge_proxy_build_info"
RATE = "$__rate_interval"


def query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)


def series(title: str, unit: str, targets, description: str, width: int = 12, stack: bool = False):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(8)
        .span(width)
        .draw_style(GraphDrawStyle.LINE)
        .fill_opacity(10)
        .legend(
            # Legend as a table with the last value: what an operator reads first.
            common.VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .show_legend(True)
            .placement(LegendPlacement.BOTTOM)
            .calcs(["lastNotNull", "max"])
        )
    )
    if stack:
        panel = panel.stacking(common.StackingConfig().mode(StackingMode.NORMAL))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(title: str, unit: str, target, description: str, width: int = 6):
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .height(4)
        .span(width)
        .with_target(target)
    )


def variable(name: str, label: str, values_of: str):
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(f"label_values({values_of})")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(VariableOption(selected=True, text="All", value="$__all"))
    )


def build() -> dashboard.Dashboard:
    d = (
        dashboard.Dashboard("edge-proxy")
        .uid("edge-proxy")
        .description("Traffic, latency, upstreams, affinity, discovery, reloads, connections, "
                     "certificates and resources of every edge-proxy node.")
        .tags(["edge-proxy", "ingress"])
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .with_variable(
            dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus")
        )
        .with_variable(variable("instance", "Node", "edge_proxy_build_info, instance"))
        .with_variable(variable("route", "Route", 'edge_proxy_requests_total{instance=~"$instance"}, route'))
        .with_variable(variable("service", "Service", 'edge_proxy_endpoints{instance=~"$instance"}, service'))
    )

    d = d.with_row(dashboard.Row("Traffic and errors"))
    requests = f"edge_proxy_requests_total{{{ROUTE}, service=~\"$service\"}}"
    errors = f"edge_proxy_requests_total{{{ROUTE}, service=~\"$service\", code=~\"5..\"}}"
    d = d.with_panel(series("Requests per route", "reqps", [
        query(f"sum by (route) (rate({requests}[{RATE}]))", "{{route}}"),
    ], "Requests handled, by route (`routes[i]` of the ConfigMap; `-`: no route matched)."))
    d = d.with_panel(series("Requests per node", "reqps", [
        query(f"sum by (instance) (rate({requests}[{RATE}]))", "{{instance}}"),
    ], "Requests handled by each node's proxy: how evenly public DNS spreads clients."))
    d = d.with_panel(series("5xx ratio per route", "percentunit", [
        query(f"sum by (route) (rate({errors}[{RATE}])) / sum by (route) (rate({requests}[{RATE}]))",
              "{{route}}"),
    ], "Share of responses that were 5xx: the app's own and the proxy's 502/503/504. "
       "Alert EdgeProxyHighErrorRatio fires above 5% for 5 minutes."))
    d = d.with_panel(series("5xx ratio per node", "percentunit", [
        query(f"sum by (instance) (rate({errors}[{RATE}])) / sum by (instance) (rate({requests}[{RATE}]))",
              "{{instance}}"),
    ], "One node alone with errors points at that node (its discovery, its network)."))
    d = d.with_panel(series("Responses by status code", "reqps", [
        query(f"sum by (code) (rate({requests}[{RATE}]))", "{{code}}"),
    ], "All responses by HTTP status code.", stack=True))
    d = d.with_panel(series("Proxy's own answers", "reqps", [
        query(f"sum by (code) (rate(edge_proxy_proxy_responses_total{{{NODE}}}[{RATE}]))", "{{code}}"),
    ], "Responses the proxy made itself: 404 no route, 400/413/431 refused requests, "
       "502 connect failed, 503 no endpoint, 504 upstream timeout."))

    d = d.with_row(dashboard.Row("Latency"))
    buckets = f"edge_proxy_request_duration_seconds_bucket{{{ROUTE}}}"
    d = d.with_panel(series("Request latency", "s", [
        query(f"histogram_quantile({q}, sum by (le) (rate({buckets}[{RATE}])))", label)
        for q, label in (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
    ], "From the request head to the end of the response, through the proxy."))
    d = d.with_panel(series("Upstream response time p99 per service", "s", [
        query("histogram_quantile(0.99, sum by (le, service) (rate("
              f"edge_proxy_upstream_response_seconds_bucket{{{SERVICE}}}[{RATE}])))", "{{service}}"),
    ], "From choosing an endpoint to its response head: the app's own latency."))

    d = d.with_row(dashboard.Row("Upstreams, affinity and discovery"))
    d = d.with_panel(series("Upstream connect errors and retries", "reqps", [
        query(f"sum by (service) (rate(edge_proxy_upstream_connect_errors_total{{{SERVICE}}}[{RATE}]))",
              "connect errors {{service}}"),
        query(f"sum by (service) (rate(edge_proxy_upstream_retries_total{{{SERVICE}}}[{RATE}]))",
              "retries {{service}}"),
    ], "Failed connections to endpoints and the requests retried on another one."))
    d = d.with_panel(series("Affinity outcomes", "reqps", [
        query(f"sum by (outcome) (rate(edge_proxy_affinity_total{{{ROUTE}}}[{RATE}]))", "{{outcome}}"),
    ], "new: first visit, cookie set; pinned: cookie honoured; repinned: its endpoint was gone, "
       "a new one chosen; rejected: tampered or unknown cookie.", stack=True))
    d = d.with_panel(series("Endpoints per service", "short", [
        query(f"max by (service, state) (edge_proxy_endpoints{{{SERVICE}}})", "{{service}} {{state}}"),
    ], "ready: take new sessions; serving_terminating: draining pods that keep their pinned "
       "sessions. Alert EdgeProxyServiceNoReadyEndpoints at 0 ready."))
    d = d.with_panel(series("Discovery synced and errors", "short", [
        query(f"min by (service) (edge_proxy_discovery_synced{{{SERVICE}}})", "synced {{service}}"),
        query(f"sum by (service) (rate(edge_proxy_discovery_errors_total{{{SERVICE}}}[{RATE}]))",
              "errors/s {{service}}"),
    ], "1 when every node has the service's endpoint list. Alert EdgeProxyDiscoveryNotSynced."))

    d = d.with_row(dashboard.Row("Configuration and connections"))
    d = d.with_panel(single("Nodes with a rejected configuration", "short",
        query(f"count(edge_proxy_config_last_reload_successful{{{NODE}}} == 0) or vector(0)", "rejected"),
        "Nodes whose last configuration load failed (they serve the previous one). "
        "Alert EdgeProxyConfigReloadFailing.", width=6))
    d = d.with_panel(single("Configuration generation", "short",
        query(f"max(edge_proxy_config_generation{{{NODE}}})", "generation"),
        "1 at start-up, +1 per applied reload.", width=6))
    d = d.with_panel(single("Nodes", "short",
        query(f"count(edge_proxy_build_info{{{NODE}}})", "nodes"),
        "edge-proxy instances scraped.", width=6))
    d = d.with_panel(single("Client connections", "short",
        query(f"sum(edge_proxy_client_connections{{{NODE}}})", "connections"),
        "Client connections open now on the selected nodes.", width=6))
    d = d.with_panel(series("Configuration reloads", "short", [
        query(f"sum by (result) (increase(edge_proxy_config_reloads_total{{{NODE}}}[{RATE}]))", "{{result}}"),
    ], "Configuration loads after start-up, by result.", width=8))
    d = d.with_panel(series("Client connections against max_connections", "short", [
        query(f"edge_proxy_client_connections{{{NODE}}}", "open {{instance}}"),
        query(f"edge_proxy_client_connections_max{{{NODE}}}", "limit {{instance}}"),
    ], "Past the limit new clients wait header_timeout, then are closed. "
       "Alert EdgeProxyConnectionsNearLimit at 80%.", width=8))
    d = d.with_panel(series("Connections closed by the proxy", "short", [
        query(f"sum by (reason) (rate(edge_proxy_client_connections_closed_total{{{NODE}}}[{RATE}]))",
              "{{reason}}"),
    ], "header_timeout: request head too slow; connection_limit: no free slot; "
       "idle_timeout: keep-alive idle too long.", width=8))
    d = d.with_panel(series("Turned away by per-client limits", "reqps", [
        query(f"sum by (reason) (rate(edge_proxy_client_limited_total{{{NODE}}}[{RATE}]))",
              "{{reason}}"),
    ], "client_rate, client_connections: limits.per_client; route_rate, route_connections: "
       "the limit-* annotations. One client over its limit is logged once a minute.", width=24))

    d = d.with_row(dashboard.Row("Certificates and resources"))
    d = d.with_panel(series("Certificate time left", "s", [
        query(f"min by (host) (edge_proxy_tls_certificate_expiry_timestamp_seconds{{{NODE}}}) - time()",
              "{{host}}"),
    ], "Until the notAfter of the certificate served for each host. "
       "Alert EdgeProxyCertificateExpiringSoon under 14 days.", width=8))
    d = d.with_panel(series("CPU", "percentunit", [
        query(f"rate(process_cpu_seconds_total{{{NODE}}}[{RATE}]) {OF_PROXY}", "{{instance}}"),
    ], "CPU seconds per second of each node's proxy (1 = one core).", width=8))
    d = d.with_panel(series("Memory against the limit", "bytes", [
        query(f"process_resident_memory_bytes{{{NODE}}} {OF_PROXY}", "resident {{instance}}"),
        query(f"edge_proxy_memory_limit_bytes{{{NODE}}}", "limit {{instance}}"),
    ], "Resident memory and the container's limit (cgroup, or the downward API's "
       "limits.memory). Alert EdgeProxyMemoryNearLimit at 85%.", width=8))
    return d


def render() -> str:
    model = build().build()
    # Unique panel ids, in layout order (Grafana links and edits panels by id).
    for i, panel in enumerate(model.panels, start=1):
        panel.id_val = i
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def main() -> int:
    text = render()
    # A structural check beyond the builder's types: the model reads it back.
    json.loads(text)
    if "--check" in sys.argv[1:]:
        if OUT.read_text() != text:
            print(f"{OUT} is not what {Path(__file__).name} builds: run it and commit the result",
                  file=sys.stderr)
            return 1
        print(f"{OUT.name}: up to date, {len(json.loads(text)['panels'])} panels")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
