"""`docutrain serve`: the HTTP edge over the same queue and library as the CLI.

Starlette + uvicorn: Starlette is a small, well-kept ASGI toolkit (routing,
requests, responses) and our few bodies are validated by hand into our own
JSON errors, so FastAPI's pydantic layer and OpenAPI generation would cost
per-request time and a dependency for little. uvicorn with httptools/uvloop
is the standard fast ASGI server.

Modules: app (factory), guard (Host and cross-site checks), auth (token,
webhook secret, loopback, the throttle on wrong tokens), throttle (sliding
windows per client; intake_rate), errors (JSON errors), body (64 KB JSON
bodies, field checks), handles (queue handles for request threads), sources
(where a document is read from), server and protocol (uvicorn with our
limits), and one module of routes per area.

The dashboard (issue 15): dashboard (`GET /`, job pages, Retry, log in/out,
`/metrics`), overview (what it shows, read from the queue and the store's
files), metrics (the Prometheus collector), session (browser cookies and
CSRF tokens), revocations (logged-out sessions), templates/ and static/
(our own HTML, CSS and JS: no CDN).
"""

from docutrain_cli.serve.app import ServeOptions, create_app
from docutrain_cli.serve.server import serve

__all__ = ["ServeOptions", "create_app", "serve"]
