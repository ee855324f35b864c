"""An aiosmtpd server that accepts every message and keeps none: the benchmark's sink.

    python -m bench.sink PORT

Runs until stdin closes or SIGTERM. It counts nothing and stores nothing, so its
cost is aiosmtpd's own SMTP conversation; the benchmark reads that cost from
this process's CPU time.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from aiosmtpd.controller import Controller


class _Accept:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return "250 OK"


def main() -> None:
    port = int(sys.argv[1])
    controller = Controller(_Accept(), hostname="127.0.0.1", port=port)
    controller.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    done.wait()
    controller.stop()


if __name__ == "__main__":
    main()
