"""Bundled queue stores.

Each module is one store, found through the ``mailqueue.stores`` entry points.
"""
