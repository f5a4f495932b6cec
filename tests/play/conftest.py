"""A real tiny export (tests/evaluation/conftest.py: trained on CarRacing), a Player on its held-out episodes, and the
real server on a free port in a thread."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

import pytest
from evaluation.conftest import evalsetup, one_thread  # noqa: F401  (the fixture, shared)


@pytest.fixture(scope="session")
def player(evalsetup):  # noqa: F811
    from unified_action.play.session import Player

    s = evalsetup
    with one_thread():
        return Player(s["export"], s["registry"], [s["carracing"].root], guidance=1.5, min_change=0.0)


@contextmanager
def running(player):
    """The real app under uvicorn on 127.0.0.1 and a free port -> its base URL; stopped after."""
    import uvicorn

    from unified_action.play.server import bind, create_app

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(player), log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


@pytest.fixture()
def server(player):
    with one_thread(), running(player) as url:
        yield url
