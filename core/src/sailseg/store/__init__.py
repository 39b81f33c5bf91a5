"""Durable storage: the :class:`~sailseg.store.base.Store` contract and its SQL backends.

- :mod:`sailseg.store.base`: the contract (what the runtime and plugins may rely on).
- :mod:`sailseg.store.sqlite`: :class:`SQLiteStore`, the embedded default.
- :mod:`sailseg.store.postgres`: :class:`PostgresStore`, for several nodes on one database.

Backends are found by URL scheme through the ``register_stores`` hook
(``sailseg.default_plugins.stores`` registers these two).
"""
