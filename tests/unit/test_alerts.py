"""The alerts (chorus/deploy/k8s/base/alerts.yaml) under `promtool test rules`: each fires in
its test and stays quiet in a healthy one, and each has a runbook line in the README.

promtool comes with Debian's prometheus package (.ci/run installs it where apt works); without
it the promtool tests skip and say so. Evaluating the alerts on a live mesh's metrics is
tests/integration/test_prometheus.py's part.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import REPO, k8s_refs

TESTS = Path(__file__).parent / "alerts" / "chorus-alerts.test.yaml"
RULES_FILE = "chorus-rules.yaml"
"""The rule file the tests name; written from the PrometheusRule's spec.groups."""
PAGED_FOR = {
    "ChorusTaskErrorRatioHigh",
    "ChorusTaskLatencyBudgetBurn",
    "ChorusModelNoLiveReplica",
    "ChorusNatsDisconnected",
    "ChorusAsyncBacklogGrowing",
    "ChorusReviewBacklogGrowing",
    "ChorusBreakerOpen",
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool is not on PATH (Debian package prometheus; .ci/run installs it)")
    return found


def _rule_dir(tmp_path: Path) -> Path:
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump({"groups": k8s_refs.rule_groups()}))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    return tmp_path


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def _unit_tests() -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = yaml.safe_load(TESTS.read_text())["tests"]
    return tests


def test_the_rules_are_what_an_operator_is_paged_for() -> None:
    rule = k8s_refs.prometheus_rule()
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    alerts = k8s_refs.alert_rules()
    assert {a["alert"] for a in alerts} == PAGED_FOR
    for a in alerts:
        assert a["labels"]["severity"] in ("page", "ticket"), a["alert"]
        assert a["annotations"]["summary"] and a["annotations"]["description"], a["alert"]
    # Every recording rule is read by an alert (none computed for nothing).
    exprs = " ".join(a["expr"] for a in alerts)
    assert all(r["record"] in exprs for r in k8s_refs.recording_rules())


def test_every_alert_fires_in_a_test_and_stays_quiet_in_another() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for test in _unit_tests():
        for check in test.get("alert_rule_test", []):
            (fires if check["exp_alerts"] else quiet).add(check["alertname"])
    assert fires == PAGED_FOR, f"no firing test for {PAGED_FOR - fires}"
    assert quiet == PAGED_FOR, f"no quiet test for {PAGED_FOR - quiet}"


def test_every_alert_has_a_runbook_line_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [a for a in sorted(PAGED_FOR) if f"`{a}`" not in readme]
    assert not missing, f"no runbook line in the README for {missing}"


def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    run = _run("check", "rules", RULES_FILE, cwd=_rule_dir(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    rules = len(k8s_refs.alert_rules()) + len(k8s_refs.recording_rules())
    assert f"SUCCESS: {rules} rules found" in run.stdout


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    run = _run("test", "rules", TESTS.name, cwd=_rule_dir(tmp_path))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


def test_promtool_tests_can_fail(tmp_path: Path) -> None:
    """A rule that no longer fires where its test expects it must fail the run: the error
    ratio threshold raised past the test's 16.7% errors."""
    groups = k8s_refs.rule_groups()
    for group in groups:
        for r in group["rules"]:
            if r.get("alert") == "ChorusTaskErrorRatioHigh":
                r["expr"] = r["expr"].replace("> 0.05", "> 0.5")
    (tmp_path / RULES_FILE).write_text(yaml.safe_dump({"groups": groups}))
    shutil.copy(TESTS, tmp_path / TESTS.name)
    run = _run("test", "rules", TESTS.name, cwd=tmp_path)
    assert run.returncode != 0
    assert "ChorusTaskErrorRatioHigh" in run.stdout + run.stderr
