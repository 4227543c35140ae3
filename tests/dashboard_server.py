"""A real uvicorn server on 127.0.0.1 (port 0) serving `docutrain serve`'s
app, in a thread of the test process (so each test can pick its settings);
`docutrain run` runs in its own processes."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

import uvicorn

from docutrain_cli.config import load_settings


@contextlib.contextmanager
def serve(app) -> Iterator[str]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > end or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def settings_for(docutrain, **overrides):
    """Settings naming the same queue and store as the `docutrain` fixture."""
    return load_settings({"queue": str(docutrain.queue), "store": str(docutrain.store), **overrides})


@contextlib.contextmanager
def dashboard(docutrain, token: str | None = "test-token-123", **overrides) -> Iterator[str]:
    """The whole `docutrain serve` app (API and dashboard) on the fixture's queue."""
    from docutrain_cli.serve import create_app

    with serve(create_app(settings_for(docutrain, serve_token=token, **overrides))) as url:
        yield url
