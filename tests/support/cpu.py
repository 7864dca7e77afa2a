"""CPU load for the energy tests: hashing a large buffer releases the GIL, like torch kernels do,
so CodeCarbon's 1 s sampling thread is not starved."""

import hashlib
import time

_BUF = b"\x5a" * (4 << 20)


def busy(seconds: float) -> None:
    """Keep this thread's CPU busy for ``seconds`` (hashlib releases the GIL, like torch kernels)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        hashlib.sha256(_BUF).digest()
