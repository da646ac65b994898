"""etl-mapreduce.yaml, written in Python: make CSV files, summarise each in parallel,
combine, report.

    python examples/etl_mapreduce.py               # runs it here, as daskflow run would
    cd examples && daskflow export etl_mapreduce:etl    # the FlowRun: etl-mapreduce.yaml

The task functions are daskflow's own examples (``daskflow.examples.etl``), so any machine
with daskflow installed can run them; ``task(...)`` makes a task of a function defined
elsewhere, and the manifest calls it where it is defined.
"""

import json
import sys

from daskflow import Cluster, flow, shell, task
from daskflow.examples import etl as lib

extract = task(name="extract")(lib.make_dataset)
transform = task(name="transform", retries=2, retry_delay=1)(lib.summarize_file)
load = task(name="load")(lib.combine)


@flow(name="etl-mapreduce", cluster=Cluster(workers=2, threads_per_worker=1), deadline=600)
def etl(files: int = 12, rows: int = 5000, workdir: str = "/tmp/daskflow-example") -> None:
    # $(flowrun.name) has no Python spelling: it is written as the manifest writes it.
    paths = extract(directory=f"{workdir}/$(flowrun.name)", files=files, rows=rows)
    summaries = transform.map(paths)  # one run per file
    total = load(summaries)
    shell(["sh", "-c", f"echo 'loaded {total}'"], name="report")


if __name__ == "__main__":
    result = etl.run()
    print(json.dumps(result.results.get("load"), indent=2))
    sys.exit(0 if result.phase == "Succeeded" else 1)
