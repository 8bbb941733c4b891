"""Tests are marked by their folder (tests/conftest.py), so the fast subset holds no integration
test, whether or not its file carries the marker itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_not_integration_collects_no_test_of_tests_integration() -> None:
    # every integration test, and this file's test as one that stays in (the suite's other
    # folders would only add seconds of imports)
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"),
            *("-m", "not integration", "tests/integration", "tests/unit/test_markers.py"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    ids = [line for line in result.stdout.splitlines() if "::" in line]
    assert ids == [
        f"tests/unit/test_markers.py::{test_not_integration_collects_no_test_of_tests_integration.__name__}"
    ]
    deselected = int(result.stdout.split(" deselected")[0].rsplit("(", 1)[1])
    assert deselected > 100  # every test of tests/integration was collected, then left out
