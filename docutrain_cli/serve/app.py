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

from docutrain_cli.config import Settings, parse_rate
from docutrain_cli.queues import describe_queue
from docutrain_cli.serve import documents, health, jobs, webhooks
from docutrain_cli.serve.dashboard import Dashboard, handles_own_auth
from docutrain_cli.serve.auth import TokenAuth, failed_auth_window
from docutrain_cli.serve.errors import EXCEPTION_HANDLERS
from docutrain_cli.serve.guard import EdgeGuard
from docutrain_cli.serve.handles import DEFAULT_SIZE, QueueHandles
from docutrain_cli.serve.sources import local_root, resolve_source
from docutrain_cli.serve.throttle import IntakeLimit

ROUTE_MODULES = (health, documents, webhooks, jobs)


@dataclasses.dataclass(frozen=True)
class ServeOptions:
    allow_local_paths: str | None = None  # a folder whose files requests may name
    queue_handles: int = DEFAULT_SIZE  # at most this many queue calls at once


def create_app(settings: Settings, options: ServeOptions = ServeOptions()) -> Starlette:
    handles = QueueHandles(settings, options.queue_handles)
    root = local_root(options.allow_local_paths) if options.allow_local_paths else None
    failures = failed_auth_window()  # wrong tokens and log-ins per client address
    dashboard = Dashboard(settings, handles, failures=failures)
    rate = parse_rate(settings.intake_rate, "intake_rate")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            handles.close()
            dashboard.close()

    async def resolve(document_id: str, user_id: str, storage_path: str | None) -> tuple[str, str | None]:
        # May read a file or ask Supabase: blocking, so in a thread.
        work = partial(resolve_source, settings, document_id, user_id, storage_path, root)
        return await anyio.to_thread.run_sync(work)

    app = Starlette(
        routes=[
            *(route for module in ROUTE_MODULES for route in module.routes),
            *dashboard.routes(),  # GET /, job pages, Retry, log in/out, /metrics
        ],
        middleware=[
            Middleware(EdgeGuard, token_required=bool(settings.serve_token)),  # Host, Origin, JSON
            Middleware(TokenAuth, token=settings.serve_token, failures=failures, own_auth=handles_own_auth,
                       webhook_secret=settings.webhook_secret),
        ],
        exception_handlers=EXCEPTION_HANDLERS,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.options = options
    app.state.handles = handles
    app.state.resolve_source = resolve
    app.state.queue = describe_queue(settings)  # what it is: /readyz, the listening line, the dashboard header
    app.state.intake_limit = IntakeLimit(settings.intake_rate, *rate) if rate else None
    return app
