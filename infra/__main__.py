"""The Pulumi program (Pulumi.yaml: ``main: infra/``): one stack per stage.

See docs/deployment.md."""

import sys
from pathlib import Path

# Pulumi runs this directory as a script, with the directory first on sys.path: put the repository
# root there instead, so `infra` is a package and its modules (config, build...) shadow nothing.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import pulumi  # noqa: E402

from infra.config import StackConfig  # noqa: E402
from infra.program import deploy  # noqa: E402

for name, value in deploy(StackConfig.load()).outputs.items():
    pulumi.export(name, value)
