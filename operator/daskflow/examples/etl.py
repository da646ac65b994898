"""A small map-reduce ETL: make CSV files, summarise each one, combine the summaries."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

REGIONS = ("north", "south", "east", "west")


def make_dataset(directory: str, files: int, rows: int, seed: int = 7) -> list[str]:
    """Write ``files`` CSV files of sales rows and return their paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for i in range(int(files)):
        path = out / f"sales-{i:03d}.csv"
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["order_id", "region", "amount"])
            for j in range(int(rows)):
                writer.writerow([f"{i}-{j}", rng.choice(REGIONS), f"{rng.uniform(1, 500):.2f}"])
        paths.append(str(path))
    return paths


def summarize_file(path: str) -> dict[str, Any]:
    """Rows and revenue per region for one file."""
    by_region: dict[str, float] = {}
    rows = 0
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rows += 1
            by_region[row["region"]] = by_region.get(row["region"], 0.0) + float(row["amount"])
    return {"file": Path(path).name, "rows": rows, "revenue": by_region}


def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Add the per-file summaries up."""
    revenue: dict[str, float] = {}
    for summary in summaries:
        for region, amount in summary["revenue"].items():
            revenue[region] = revenue.get(region, 0.0) + amount
    return {
        "files": len(summaries),
        "rows": sum(s["rows"] for s in summaries),
        "revenue": {r: round(v, 2) for r, v in sorted(revenue.items())},
    }
