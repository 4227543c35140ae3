"""Running the app: one uvicorn process on a socket we bind ourselves, so
`--port 0` works and the real address is printed before the first request."""

from __future__ import annotations

import os
import socket
import sys

from docutrain_cli.config import Settings
from docutrain_cli.serve.app import ServeOptions, create_app
from docutrain_cli.serve.auth import check_bind


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        from docutrain_cli.errors import ConfigError

        raise ConfigError(f"serve: cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    return sock


def start_line(sock: socket.socket, queue: str, settings: Settings) -> str:
    """Where the API and the dashboard are, and how to log in (never the token itself)."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    # A wildcard address is not one a browser can open: this machine's loopback is.
    browse = "localhost" if host in ("0.0.0.0", "::") else shown
    if not settings.serve_token:
        login = "no login: without serve_token only this machine reaches it"
    elif os.environ.get("DOCUTRAIN_SERVE_TOKEN") == settings.serve_token:
        login = "log in with the token in DOCUTRAIN_SERVE_TOKEN"
    else:
        login = "log in with serve_token from your settings"
    return (f"docutrain serve: listening on http://{shown}:{port} (queue {queue}); "
            f"dashboard: http://{browse}:{port}/ ({login})")


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8080,
          options: ServeOptions = ServeOptions(), access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn finishes the requests in progress)."""
    import uvicorn

    check_bind(host, settings.serve_token, settings.webhook_secret)
    app = create_app(settings, options)
    sock = bind(host, port)
    print(start_line(sock, app.state.queue.target, settings), file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn_config(app, settings, access_log=access_log)).run(sockets=[sock])


def uvicorn_config(app, settings: Settings, *, access_log: bool = False):
    """uvicorn's Config with our limits (settings serve_*): see protocol.py."""
    import uvicorn

    from docutrain_cli.serve.protocol import limited_protocol

    return uvicorn.Config(
        app, log_level="warning", access_log=access_log, server_header=False, lifespan="on",
        timeout_graceful_shutdown=10,
        http=limited_protocol(settings.serve_max_header_kb * 1024, settings.serve_request_timeout),
        limit_concurrency=settings.serve_limit_concurrency,
        timeout_keep_alive=settings.serve_keep_alive_timeout,
    )
