"""Fixtures of sailseg's harness are loaded automatically (pytest11); nothing to import.

The plugin under test is named by `sailseg_plugin = "sailseg_plugins_hello"` in
pyproject.toml. Overriding the fixture does the same, and also works for objects that are not
importable modules:
"""

from __future__ import annotations

from typing import Any

import pytest


# -- start override --
@pytest.fixture
def sailseg_plugin() -> Any:
    import sailseg_plugins_hello

    return sailseg_plugins_hello
# -- end override --
