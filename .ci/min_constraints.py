"""Print pip constraints that pin every dependency of pyproject.toml to its declared floor (``>=X`` -> ``==X``).

Used by .ci/run to install the lowest supported set once. torch is left out: CI installs the pinned local CPU wheel.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

SKIP = {"torch"}

project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
for requirement in project["dependencies"]:
    match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*>=\s*([0-9][^,;\s]*)", requirement)
    if match and match.group(1).lower() not in SKIP:
        print(f"{match.group(1)}=={match.group(3)}")
