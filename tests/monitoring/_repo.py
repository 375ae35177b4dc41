"""Make the repo's `alerts` and `dashboards` packages and tests/integration/servers.py importable.

They live outside `src/` (they are not part of the installed package); import this module first.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

for _path in (ROOT, ROOT / "tests" / "integration"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))
