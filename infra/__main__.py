"""The Pulumi program (Pulumi.yaml: ``main: infra/``): one stack per stage. See QUICKSTART.md."""

import sys
from pathlib import Path

# Pulumi runs this directory as a script; the repository root makes `infra` importable as a package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pulumi  # noqa: E402

from infra.config import StackConfig  # noqa: E402
from infra.program import deploy  # noqa: E402

for name, value in deploy(StackConfig.load()).outputs.items():
    pulumi.export(name, value)
