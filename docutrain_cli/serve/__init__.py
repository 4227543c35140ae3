"""`docutrain serve`: the HTTP edge over the same queue and library as the CLI.

Starlette + uvicorn: Starlette is a small, well-kept ASGI toolkit (routing,
requests, responses) and our few bodies are validated by hand into our own
JSON errors, so FastAPI's pydantic layer and OpenAPI generation would cost
per-request time and a dependency for little. uvicorn with httptools/uvloop
is the standard fast ASGI server.

Modules: app (factory), auth (token, loopback), errors (JSON errors), body
(64 KB JSON bodies), handles (queue handles for request threads), sources
(where a document is read from), and one module of routes per area.

The dashboard (issue 15): dashboard (`GET /`, job pages, Retry, log in/out,
`/metrics`), overview (what it shows, read from the queue and the store's
files), metrics (the Prometheus collector), session (browser cookies and
CSRF tokens), templates/ and static/ (our own HTML, CSS and JS: no CDN).
"""

from docutrain_cli.serve.app import ServeOptions, create_app
from docutrain_cli.serve.server import serve

__all__ = ["ServeOptions", "create_app", "serve"]
