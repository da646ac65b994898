"""The alerting rules in the chart: valid (``promtool check rules``), unit-tested with
firing and quiet cases for every alert (``promtool test rules``), and following the
documented conventions."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.observability.conftest import ALERT_RULES, OPERATOR_JOB, ROOT

RULES_TEST = Path(__file__).with_name("rules-test.yaml")
ALERTS = {
    "DaskflowOperatorDown",
    "DaskflowFlowRunFailureRateHigh",
    "DaskflowFlowRunOverdue",
    "DaskflowReconcileErrors",
}


def _rules() -> list[dict[str, object]]:
    doc = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_rules(promtool_bin: str) -> None:
    result = subprocess.run(
        [promtool_bin, "check", "rules", str(ALERT_RULES)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout


def test_promtool_test_rules(promtool_bin: str) -> None:
    result = subprocess.run(
        [promtool_bin, "test", "rules", str(RULES_TEST)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_firing_and_quiet_cases() -> None:
    doc = yaml.safe_load(RULES_TEST.read_text())
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in doc["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    assert firing == ALERTS
    assert quiet == ALERTS
    # the unit tests load the chart's file, not a copy
    loaded = {(RULES_TEST.parent / p).resolve() for p in doc["rule_files"]}
    assert loaded == {ALERT_RULES.resolve()}


def test_rules_follow_the_conventions() -> None:
    rules = _rules()
    assert {r["alert"] for r in rules} == ALERTS
    for rule in rules:
        expr = str(rule["expr"])
        # every selector is tied to the documented job label
        assert f'job="{OPERATOR_JOB}"' in expr, rule["alert"]
        labels = rule.get("labels") or {}
        assert isinstance(labels, dict)
        assert labels.get("severity") in {"critical", "warning"}, rule["alert"]
        annotations = rule.get("annotations") or {}
        assert isinstance(annotations, dict)
        assert {"summary", "description"} <= set(annotations), rule["alert"]
        assert "for" in rule, rule["alert"]
