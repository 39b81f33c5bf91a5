"""Built-in store backends, registered by URL scheme like any plugin's.

``sqlite`` is the embedded default; ``postgresql`` (alias ``postgres``) needs the
``sailseg[postgres]`` extra, imported only when such a store is opened.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..hookspecs import hookimpl
from ..store.postgres import PostgresStore
from ..store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from ..components import Register
    from ..store.base import Store


# -- start register_stores --
@hookimpl
def register_stores(register: Register[tuple[str, type[Store]]]) -> None:
    register(("sqlite", SQLiteStore))
    register(("postgresql", PostgresStore))
    register(("postgres", PostgresStore))
# -- end register_stores --
