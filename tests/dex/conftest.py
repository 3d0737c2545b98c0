"""Fixtures of the platform-level tests."""

import socket
import threading

import pytest


@pytest.fixture
def stalled_port():
    """A local port whose server takes connections and never says a word, as a stalled
    or cut-off PostgreSQL or Redis does: the kernel completes each handshake, nothing
    reads. Closed at the end, which resets whatever still waits on it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.fixture
def within():
    """``within(seconds, call)``: what ``call()`` returns, or None when it has not
    returned in ``seconds`` (it goes on in a thread of its own, so a test of a bounded
    wait fails rather than hangs when the wait is not bounded)."""

    def call_within(seconds: float, call):
        result: list = []
        worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
        worker.start()
        worker.join(seconds)
        return result[0] if result else None

    return call_within
