"""Bundled queue stores, each found through the ``mailqueue.stores`` entry points.

``memory`` (one module: a queue inside one process, for tests), and a package per
store big enough to split: ``sqlite/``, ``redis/``, ``memcached/``, each an
adapter holding the store contract over a client, with its declared options.
They reach the engine only through its interfaces, exactly as a third party's
store does.
"""
