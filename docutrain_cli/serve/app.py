"""The app factory: routes from each module, token auth, JSON errors, and
the queue handles the routes share. Add a feature by writing a module with
a `routes` list and adding it to ROUTE_MODULES."""

from __future__ import annotations

import contextlib
import dataclasses
from functools import partial

import anyio.to_thread
from starlette.applications import Starlette
from starlette.middleware import Middleware

from docutrain_cli.config import Settings
from docutrain_cli.queues import describe_queue
from docutrain_cli.serve import documents, health, jobs, webhooks
from docutrain_cli.serve.dashboard import Dashboard, handles_own_auth
from docutrain_cli.serve.auth import TokenAuth
from docutrain_cli.serve.errors import EXCEPTION_HANDLERS
from docutrain_cli.serve.handles import DEFAULT_SIZE, QueueHandles
from docutrain_cli.serve.sources import local_root, resolve_source

ROUTE_MODULES = (health, documents, webhooks, jobs)


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    allow_local_paths: str | None = None  # a folder whose files requests may name
    queue_handles: int = DEFAULT_SIZE  # at most this many queue calls at once


def create_app(settings: Settings, options: ServeOptions = ServeOptions()) -> Starlette:
    handles = QueueHandles(settings, options.queue_handles)
    root = local_root(options.allow_local_paths) if options.allow_local_paths else None

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            handles.close()

    async def resolve(document_id: str, user_id: str, storage_path: str | None) -> tuple[str, str | None]:
        # May read a file or ask Supabase: blocking, so in a thread.
        work = partial(resolve_source, settings, document_id, user_id, storage_path, root)
        return await anyio.to_thread.run_sync(work)

    app = Starlette(
        routes=[
            *(route for module in ROUTE_MODULES for route in module.routes),
            *Dashboard(settings, handles).routes(),  # GET /, job pages, Retry, /metrics
        ],
        middleware=[Middleware(TokenAuth, token=settings.serve_token, own_auth=handles_own_auth)],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.options = options
    app.state.handles = handles
    app.state.resolve_source = resolve
    app.state.queue = describe_queue(settings)  # what it is: /readyz, the listening line, the dashboard header
    return app
