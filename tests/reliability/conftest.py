"""Reliability tests (issue 18): vendor faults through real HTTP. Their helpers live in
``sailthru_live.py`` next to this file."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
