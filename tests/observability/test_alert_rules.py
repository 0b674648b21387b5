"""deploy/prometheus/: the committed rules and promtool tests are what the code generates, promtool
accepts them and their unit tests pass, every alert is tested firing and silent and has a runbook."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from reelforge.observability import metrics
from reelforge.observability.generate import rendered
from reelforge.observability.rule_tests import CASES
from reelforge.observability.rules import alert_names, queue_groups, slo_groups
from reelforge.observability.slo import E2E_LATENCY_S, FIRST_PROGRESS_S

ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", sorted(rendered()))
def test_committed_file_is_what_the_generator_writes(path: str) -> None:
    committed = ROOT / path
    assert committed.exists(), f"{path} missing: run python -m reelforge.observability.generate"
    assert committed.read_text() == rendered()[path], f"{path} is stale: run python -m reelforge.observability.generate"


def test_promtool_accepts_every_rule_file() -> None:
    files = sorted(str(p) for p in (ROOT / "deploy/prometheus/rules").glob("*.yml"))
    assert len(files) >= 2
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    tests = sorted(str(p) for p in (ROOT / "deploy/prometheus/tests").glob("*.yml"))
    assert tests
    result = promtool("test", "rules", *tests, cwd=ROOT / "deploy/prometheus/tests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    for name in alert_names():
        cases = [case for case in CASES if case.alert == name]
        assert any(case.fires for case in cases), f"{name} has no case where it fires"
        assert any(not case.fires for case in cases), f"{name} has no case where it stays silent"


def test_every_alert_has_a_summary_and_a_runbook_that_says_what_to_check_and_do() -> None:
    rules = [rule for group in [*slo_groups(), *queue_groups()] for rule in group["rules"] if "alert" in rule]
    assert {rule["alert"] for rule in rules} == set(alert_names())
    for rule in rules:
        annotations = rule["annotations"]
        assert annotations["summary"] and rule["labels"]["severity"] in {"page", "ticket"}
        runbook = ROOT / annotations["runbook_url"]
        assert runbook == ROOT / "docs/runbooks" / f"{rule['alert']}.md" and runbook.exists(), runbook
        text = runbook.read_text()
        assert "## Check" in text and "## Act" in text, f"{runbook} must say what to check and what to do"


def test_the_thresholds_the_rules_use_are_histogram_buckets() -> None:
    """An SLI is an exact bucket ratio only if its threshold is a bucket boundary."""
    slo_rules = yaml.safe_load((ROOT / "deploy/prometheus/rules/slo.yml").read_text())
    text = yaml.safe_dump(slo_rules)
    for threshold in [*E2E_LATENCY_S.values(), *FIRST_PROGRESS_S.values()]:
        assert threshold in metrics.JOB_BUCKETS
        assert f'le=\\"{threshold}\\"' in text or f'le="{threshold}"' in text, threshold
