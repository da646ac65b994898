import json
from tests.observability.test_dashboard import Observed, observed  # noqa: F401


def test_debug(observed: Observed) -> None:
    prom = observed.prometheus
    for q in ("up", "scrape_duration_seconds", "count(daskflow_cluster_startup_seconds_bucket)", "count({__name__=~\"daskflow_.*\"})"):
        r = prom.api("query_range", query=q, start=f"{observed.started-10:.0f}", end=f"{observed.at:.0f}", step="1")
        print("DEBUG", q, json.dumps([x["values"] for x in r["result"]]))
    print("DEBUG at", observed.at, observed.started)
