"""Makes the conformance tests' shared module ``_conformance_cases`` importable under any ``--import-mode``
(the default ``prepend`` puts this folder on ``sys.path`` already; ``importlib`` does not)."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
