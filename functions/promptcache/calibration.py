"""The calibration file: thresholds that ``promptcache calibrate`` measured, per embedder.

Read once per cold start by the composition root (``runtime``) when no threshold is configured;
written by the calibrate tool. Tiny on purpose: a deployed function imports it, not the tools.
"""

from __future__ import annotations

import json
from pathlib import Path

from ._errors import ConfigError

CALIBRATION_FILE = "calibration.json"


def calibration_path(data_dir: Path) -> Path:
    return Path(data_dir) / CALIBRATION_FILE


def read_calibration(data_dir: Path, embedder_id: str) -> float | None:
    """The calibrated threshold of this embedder, or None when there is none.

    A file that cannot be read or holds a bad value is a ConfigError naming it."""
    path = calibration_path(data_dir)
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read the calibration file: {exc}") from None
    item = body.get(embedder_id) if isinstance(body, dict) else None
    if item is None:
        return None
    value = item.get("threshold") if isinstance(item, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{path}: threshold of {embedder_id!r} must be a number in [0, 1]")
    return float(value)
