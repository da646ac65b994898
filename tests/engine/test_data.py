"""Values between tasks: references, fan-out (map) and results, on a real cluster."""

from __future__ import annotations

from typing import Any

import pytest

from .helpers import Runner, call, flowrun, states


def result(status: dict[str, Any], task: str) -> Any:
    return status["tasks"][task]["result"]


def test_results_pass_between_tasks_in_memory_not_through_the_status(run: Runner) -> None:
    # 5,000 characters: too big for the status, so it can only have travelled through Dask.
    status, _ = run(
        flowrun(
            call("make", "big", 5000),
            call("measure", "length", "$(tasks.make.result)"),
        )
    )
    assert status["phase"] == "Succeeded"
    assert "result" not in status["tasks"]["make"]
    assert result(status, "measure") == 5000


def test_exact_reference_keeps_the_type_embedded_is_formatted(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("numbers", "make_list", 3),
            call("exact", "typename", "$(tasks.numbers.result)"),
            call("embedded", "identity", "n=$(tasks.numbers.result)"),
            call("nested", "identity", {"k": ["$(tasks.numbers.result)"]}),
            call("params", "identity", "$(params.cfg)", kwargs={}),
            parameters={"cfg": {"a": 1}},
        )
    )
    assert result(status, "exact") == "list"
    assert result(status, "embedded") == "n=[0,1,2]"
    assert result(status, "nested") == {"k": [[0, 1, 2]]}
    assert result(status, "params") == {"a": 1}


def test_kwargs_and_flowrun_references(run: Runner) -> None:
    raw = flowrun(
        call("a", "add", kwargs={"a": "$(flowrun.name)/", "b": "$(flowrun.namespace)"}),
        name="nightly",
    )
    status, _ = run(raw)
    assert result(status, "a") == "nightly/default"
    raw["metadata"]["namespace"] = "data-team"
    status, _ = run(raw)
    assert result(status, "a") == "nightly/data-team"


def test_a_parameter_that_looks_like_a_reference_is_data(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("m", "identity", "$(params.p) and $(item)", map=["I"]),
            call("out", "identity", "$(tasks.m.result)"),
            parameters={"p": "$(item) $(tasks.m.result)"},
        )
    )
    assert result(status, "out") == ["$(item) $(tasks.m.result) and I"]


def test_map_over_a_literal_list(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("double", "double", "$(item)", map=[1, 2, 3]),
            call("collect", "identity", "$(tasks.double.result)"),
        )
    )
    assert states(status) == {"double": "Succeeded", "collect": "Succeeded"}
    assert result(status, "collect") == [2, 4, 6]
    assert status["tasks"]["double"]["items"] == {
        "total": 3,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
        "skipped": 0,
        "running": 0,
        "pending": 0,
    }
    assert "failedItems" not in status["tasks"]["double"]
    assert result(status, "double") == [2, 4, 6]  # a small mapped result is in the status


def test_a_big_mapped_result_stays_out_of_the_status(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("many", "identity", "$(item)", map=list(range(600))),  # > 1 KiB as JSON
            call("wide", "big", "$(item)", map=[20_000, 20_000]),  # big values, few items
            call("lengths", "length", "$(item)", map="$(tasks.wide.result)"),
        )
    )
    assert status["phase"] == "Succeeded"
    assert "result" not in status["tasks"]["many"]
    assert "result" not in status["tasks"]["wide"]
    assert result(status, "lengths") == [20_000, 20_000]


def test_map_over_a_parameter(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("greet", "add", "hello ", "$(item)", map="$(params.names)"),
            call("collect", "identity", "$(tasks.greet.result)"),
            parameters={"names": ["ann", "bob"]},
        )
    )
    assert result(status, "collect") == ["hello ann", "hello bob"]


def test_map_over_a_task_result(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("source", "make_list", 4),
            call("double", "double", "$(item)", map="$(tasks.source.result)"),
            call("collect", "identity", "$(tasks.double.result)"),
        )
    )
    assert result(status, "collect") == [0, 2, 4, 6]
    assert status["tasks"]["double"]["items"]["total"] == 4


def test_map_over_a_mapped_result_keeps_item_order(run: Runner) -> None:
    # Lower items finish later in the first map, yet every list stays in item order.
    n = 8
    status, _ = run(
        flowrun(
            call("source", "make_list", n),
            call("slow", "later_first", "$(item)", n, map="$(tasks.source.result)"),
            call("double", "double", "$(item)", map="$(tasks.slow.result)"),
            call("collect", "identity", "$(tasks.double.result)"),
        )
    )
    assert status["phase"] == "Succeeded"
    assert result(status, "collect") == [2 * i for i in range(n)]
    assert status["tasks"]["double"]["items"]["succeeded"] == n


def test_mapped_items_take_upstream_values_and_parameters(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("base", "identity", 100),
            call("plus", "add", "$(item)", "$(tasks.base.result)", map="$(params.xs)"),
            call("collect", "identity", "$(tasks.plus.result)"),
            parameters={"xs": [1, 2, 3]},
        )
    )
    assert result(status, "collect") == [101, 102, 103]


def test_a_mapped_task_may_use_the_list_it_maps_over_as_an_input_too(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("source", "identity", ["a", "b", "c"]),
            call(
                "positions",
                "index_of",
                "$(tasks.source.result)",
                "$(item)",
                map="$(tasks.source.result)",
                when="$(tasks.source.result)",
                dependsOn=["source"],
            ),
            call("collect", "identity", "$(tasks.positions.result)"),
        )
    )
    assert status["phase"] == "Succeeded", status
    assert result(status, "collect") == [0, 1, 2]


def test_map_over_an_empty_list(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("none", "double", "$(item)", map=[]),
            call("collect", "identity", "$(tasks.none.result)"),
        )
    )
    assert states(status) == {"none": "Succeeded", "collect": "Succeeded"}
    assert result(status, "collect") == []
    assert status["tasks"]["none"]["items"]["total"] == 0


def test_map_over_something_that_is_not_a_list_fails(run: Runner) -> None:
    status, _ = run(
        flowrun(
            call("scalar", "identity", 7),
            call("m", "double", "$(item)", map="$(tasks.scalar.result)"),
            call("after", "identity", "$(tasks.m.result)"),
        )
    )
    assert states(status) == {"scalar": "Succeeded", "m": "Failed", "after": "UpstreamFailed"}
    assert "is a int, not a list" in status["tasks"]["m"]["message"]


def test_status_has_times_attempts_and_a_summary(run: Runner) -> None:
    status, engine = run(flowrun(call("a", "identity", 1), call("b", "identity", 2)))
    assert status == engine.status()
    assert status["phase"] == "Succeeded"
    assert status["startTime"] <= status["completionTime"]
    assert status["summary"]["succeeded"] == 2
    for rec in status["tasks"].values():
        assert rec["attempts"] == 1
        assert rec["startTime"] <= rec["completionTime"]


def test_results_gives_full_values_of_succeeded_tasks(run: Runner) -> None:
    status, engine = run(
        flowrun(
            call("make", "big", 5000),  # too big for the status: only results() has it
            call("items", "double", "$(item)", map=[3, 1, 2]),
            call("none", "identity", None),
            call("bad", "fail"),
            call("after", "identity", "$(tasks.bad.result)"),
        ),
        keep_results=True,
    )
    assert "result" not in status["tasks"]["make"]
    assert engine.results() == {"make": "x" * 5000, "items": [6, 2, 4], "none": None}


def test_results_needs_keep_results(run: Runner) -> None:
    _, engine = run(flowrun(call("a", "identity", 1)))
    with pytest.raises(RuntimeError, match="keep_results=True"):
        engine.results()
