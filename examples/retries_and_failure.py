"""retries-and-failure.yaml, written in Python: retries, a failure and a timeout. This flow
is EXPECTED to end Failed (see the YAML file for what each task does).

    python examples/retries_and_failure.py
"""

import sys

from daskflow import Cluster, flow, shell, task
from daskflow.examples import resilience as lib

prepare = task(name="prepare")(lib.fresh_dir)
fetch_prices = task(
    name="fetch-prices", retries=3, retry_delay=0.2, retry_backoff=2, retry_jitter=0.5
)(lib.flaky)
validate_orders = task(name="validate-orders", retries=1, retry_delay=0.1)(lib.validate_quantity)
publish_orders = task(name="publish-orders")(lib.identity)


@flow(
    name="retries-and-failure",
    cluster=Cluster(workers=2, threads_per_worker=1),
    fail_fast=False,
    deadline=300,
)
def retries_and_failure(
    workdir: str = "/tmp/daskflow-example/retries",
    quantities: list[int] = [3, 5, -1, 7],  # noqa: B006 (a parameter's default)
) -> None:
    prices = fetch_prices(marker_dir=prepare(workdir), name="prices", failures=2)
    shell(["sh", "-c", 'echo "report: $PRICES"'], name="price-report", env={"PRICES": prices})
    publish_orders(validate_orders.map(quantities))
    shell(["sleep", "30"], name="slow-export", timeout=1.5)


if __name__ == "__main__":
    result = retries_and_failure.run()
    print(result.phase, result.status["message"])
    sys.exit(0 if result.phase == "Succeeded" else 1)
