"""Bundled transports.

Each module is one transport, found through the ``mailqueue.transports`` entry points.
"""
