"""The Redis store's wake-ups: how a waiting flusher learns that mail may be due.

Every script that may make mail due now (enqueue, requeue, release, revive,
the console's send now and resume) ends with :data:`WAKE_LUA`'s ``wake``: an
entry added to the stream ``wake`` of :mod:`mailqueue_stores.redis.keys`,
trimmed to that newest entry (``XADD ... MAXLEN 1``), the key kept an hour
after it. The claim script
answers the id of the newest entry beside its claims (:data:`NEWEST_WAKE_LUA`),
and :class:`WakeUps` remembers it; a wait is an ``XREAD`` of the entries after
that id, blocking on a connection of its own. Whatever happened between the
claim and the wait is therefore in the stream already and answers at once,
and an answered wait remembers the id it read, so a wake-up is answered once.

A stream rather than a list: every waiting flusher reads the same entry (one
enqueue wakes them all, and each claims its share), nothing is popped, so
one flusher's wait cannot take another's wake-up, and a burst of enqueues
leaves one entry behind, not one per message. Stream ids grow with the
server's clock; a new master whose clock is behind the old one's (a failover)
can miss wake-ups until each flusher's next claim, which takes the new
master's newest id: at most ``--interval`` of polling.

A wait is cut into ``XREAD``\\s of at most :data:`SLICE` seconds, and the
waiting connection reads with a socket timeout of ``SLICE`` + :data:`MARGIN`,
so a master that stops answering costs a wait at most that long
(``StoreUnavailable``), however long the timeout asked. A master demoted
while a client waits answers ``UNBLOCKED`` (``StoreUnavailable`` too), and
a killed one closes the connection: the flusher's next run meets the failure
and reports it.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailqueue_stores.redis.connection import RedisConnection

__all__ = ["KEEP", "MARGIN", "NEWEST_WAKE_LUA", "SLICE", "WAKE_LUA", "WakeUps"]

#: The longest one ``XREAD`` blocks, in seconds.
SLICE = 0.5
#: What the waiting connection's socket timeout allows beyond :data:`SLICE`:
#: the round trip and the server's own lateness in ending a block.
MARGIN = 0.5
#: How long the stream outlives its newest entry, in seconds: a flusher's
#: wait only needs the entries since its last claim.
KEEP = 3600

# A Lua function for the scripts that may make mail due: wake(the stream's key).
# A key of another type (an operator's SET) is the store's own: it is replaced.
WAKE_LUA = f"""
local function wake(key)
  if type(redis.pcall('XADD', key, 'MAXLEN', '1', '*', 'w', '1')) ~= 'string' then
    redis.call('DEL', key)
    redis.call('XADD', key, 'MAXLEN', '1', '*', 'w', '1')
  end
  redis.call('PEXPIRE', key, {KEEP * 1000})
end
"""

# A Lua function for the claim: newest_wake(the stream's key) -> the newest entry's
# id, "0-0" when there is none. A key of another type is deleted, as wake would.
NEWEST_WAKE_LUA = """
local function newest_wake(key)
  local top = redis.pcall('XREVRANGE', key, '+', '-', 'COUNT', 1)
  if top.err then
    redis.call('DEL', key)
    return '0-0'
  end
  return top[1] and top[1][1] or '0-0'
end
"""


class WakeUps:
    """One client's side of the wake-ups: the newest entry it saw, and the wait.

    ``connection`` is the waiting connection (its socket timeout exceeds
    :data:`SLICE`), apart from the one the scripts run on, so that a blocked
    read never holds up a claim.
    """

    def __init__(self, connection: RedisConnection, key: str) -> None:
        self.connection = connection
        self.key = key
        self._lock = threading.Lock()
        self._seen: bytes | None = None

    def saw(self, newest: bytes) -> None:
        """A claim saw ``newest`` as the stream's newest entry: only later ones wake."""
        with self._lock:
            self._seen = newest

    def wait(self, timeout: float) -> bool:
        """:meth:`~mailqueue_core.store.Store.wait_for_mail` (see the module docstring)."""
        deadline = time.monotonic() + max(0.0, timeout)
        with self._lock:
            seen = self._seen
        if seen is None:  # no claim yet: what comes from now on wakes
            seen = self.connection.newest_entry(self.key)
        while True:
            left = deadline - time.monotonic()
            block = min(left, SLICE) if left > 0 else None
            newest = self.connection.entry_after(self.key, seen, block)
            if newest is not None:
                seen = newest
                break
            if time.monotonic() >= deadline:
                break
        with self._lock:
            # A wait that timed out leaves what a claim in another thread saw meanwhile.
            if newest is not None or self._seen is None:
                self._seen = seen
        return newest is not None

    def close(self) -> None:
        self.connection.close()
