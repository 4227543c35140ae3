"""The dashboard: `GET /`, a job's page, Retry buttons, log in and out.

Server-rendered with Jinja2, autoescaping every value: file names, ids and
errors come from users' uploads and must show as text, never as markup.
Jinja2 rather than building HTML in Python: escaping is on by default for
every `{{ }}`, so a forgotten escape cannot happen, and the templates read
as the page they make. The page refreshes its live part every few seconds by
fetching the same URL with `?partial=1` (a few lines of our own JS in
static/); charts are SVG drawn on the server, so nothing is loaded from the
internet and there is no chart library to vendor.

Every request reads the queue and the files next to the store afresh, so the
page is right whichever process did the work. Reads and writes go through
the queue library (`stats`, `jobs`, `job`, `revive`), as the CLI's do, on
the server's shared queue handles (serve/handles.py), in worker threads.

The API's TokenAuth middleware lets the browser pages through
(`handles_own_auth`): they take the bearer header *or* the login cookie,
and send a browser to the log-in form instead of answering JSON 401.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from docutrain_cli.run.activity import WorkerBoard
from docutrain_cli.config import Settings
from docutrain_cli.jobs import STATES
from docutrain_cli.errors import DocutrainError
from docutrain_cli.ratelimit.budget import current_budget
from docutrain_cli.serve import metrics
from docutrain_cli.serve import session as sess
from docutrain_cli.serve.auth import failed_auth_window
from docutrain_cli.serve.body import BodyTooLarge, read_body
from docutrain_cli.serve.handles import QueueHandles
from docutrain_cli.serve.jobs import MAX_JOB_ID, without_local_hash
from docutrain_cli.serve.overview import gather
from docutrain_cli.paths import sessions_path
from docutrain_cli.serve.revocations import Revocations
from docutrain_cli.serve.throttle import SlidingWindow, client_key

HERE = Path(__file__).parent
REFRESH_SECONDS = 3
MAX_FORM_BYTES = 16 * 1024
UNKNOWN = object()  # request.state.auth before the first check

# No inline scripts or styles, nothing from elsewhere: even markup that slipped
# through escaping could not run.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(max(seconds, 0))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d {seconds % 86400 // 3600}h"


def _when(epoch: float | None) -> str:
    """The one time format of the dashboard, header and tables alike: the
    server's local time with its zone (`2026-12-03 04:59:16 UTC`)."""
    if not epoch:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(epoch))


def _folder_and_name(path: str) -> tuple[str, str]:
    """('/srv/uploads/', 'report-40.pdf'): the page shortens the folder from
    the left and keeps the name whole, as the CLI's tables do."""
    folder, slash, name = path.rpartition("/")
    return (folder + slash, name) if name else ("", path)


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,  # a typo in a template fails a test, not silently
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["age"] = _age
    env.filters["when"] = _when
    env.filters["folder_and_name"] = _folder_and_name
    env.filters["num"] = lambda n: f"{n:,}" if isinstance(n, (int, float)) else "–"
    # Errors start with the file's path, which the table shows beside them.
    env.filters["without_source"] = lambda error, source: (error or "").removeprefix(f"{source}: ")
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    return env


class Dashboard:
    """The dashboard's routes, bound to settings and the session keys."""

    def __init__(
        self,
        settings: Settings,
        handles: QueueHandles,
        *,
        failures: SlidingWindow | None = None,
        budget_snapshot: Callable[[], dict[str, Any] | None] | None = None,
    ):
        self.settings = settings
        self.sessions = sess.Sessions(settings.serve_token, Revocations(sessions_path(settings.store)))
        self.handles = handles
        # Wrong tokens and forged cookies, counted with the API's (auth.py
        # answers 429 once there are too many).
        self.failures = failures or failed_auth_window()
        # Read afresh on each page, like everything else: the runs write it.
        self._budget = budget_snapshot or partial(current_budget, settings)
        self.templates = make_templates()
        self.registry = metrics.registry_for(settings)

    def close(self) -> None:
        if self.sessions.revocations is not None:
            self.sessions.revocations.close()

    def routes(self) -> list:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/jobs/{job_id:job_id}", self.job_page, methods=["GET"]),
            Route("/jobs/{job_id:job_id}/retry", self.retry_one, methods=["POST"]),
            Route("/jobs/retry-dead", self.retry_dead, methods=["POST"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/metrics", self.metrics, methods=["GET"]),
            Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
        ]

    # -- plumbing -----------------------------------------------------------
    def authenticated(self, request: Request) -> str | None:
        """'bearer', 'cookie', 'open' (no token configured) or None; a wrong
        bearer token or a cookie we did not issue counts as a failure (once
        per request)."""
        known = getattr(request.state, "auth", UNKNOWN)
        if known is UNKNOWN:
            known = request.state.auth = self._authenticate(request)
        return known

    def _authenticate(self, request: Request) -> str | None:
        if not self.sessions.login_required:
            return "open"  # loopback only, and EdgeGuard took only loopback Host names
        authorization = request.headers.get("authorization")
        if self.sessions.bearer_ok(authorization):
            return "bearer"
        cookie = request.cookies.get(sess.COOKIE)
        if self.sessions.session_ok(cookie):
            return "cookie"
        if authorization or cookie:
            self.failures.add(client_key(request.scope))
        return None

    def _render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = request.cookies.get(sess.COOKIE)
        html = self.templates.get_template(name).render(
            csrf_field=sess.CSRF_FIELD,
            csrf_token=self.sessions.csrf_for(session if self.sessions.login_required else None),
            login_required=self.sessions.login_required,
            logged_in=self.authenticated(request) == "cookie",
            refresh_seconds=REFRESH_SECONDS,
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def _unavailable(self, request: Request, exc: DocutrainError) -> Response:
        """The queue cannot be read (database down, bad setting): say so on
        a page (the library's messages never hold a password), and keep
        refreshing, so the page recovers by itself."""
        message = " ".join(str(exc).split())
        template = "_unavailable.html" if request.query_params.get("partial") else "unavailable.html"
        return self._render(request, template, status=503, message=message, queue_label=request.app.state.queue.label)

    def _refuse(self, request: Request) -> Response:
        if request.query_params.get("partial") or request.method != "GET":
            response: Response = PlainTextResponse("log in first", status_code=401, headers=SECURITY_HEADERS)
        else:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)
        if sess.COOKIE in request.cookies:  # expired, logged out or forged: the browser stops sending it
            response.delete_cookie(sess.COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def _form(self, request: Request) -> dict[str, str] | None:
        """The posted url-encoded form, or None if it is not one (or too big)."""
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return None
        try:
            body = await read_body(request, MAX_FORM_BYTES)
        except BodyTooLarge:
            return None
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in fields.items()}

    async def _refuse_post(self, request: Request) -> Response | None:
        """Why this POST may not act (None when it may): auth, then, for
        browsers, the CSRF token (EdgeGuard refused other sites' pages)."""
        how = self.authenticated(request)
        if how is None:
            return PlainTextResponse("log in first", status_code=401, headers=SECURITY_HEADERS)
        if how == "bearer":
            return None  # no browser sends that header by itself: no CSRF
        form = await self._form(request) or {}
        session = request.cookies.get(sess.COOKIE) if self.sessions.login_required else None
        if not self.sessions.csrf_ok(session, form.get(sess.CSRF_FIELD)):
            return PlainTextResponse(
                "refused: this form did not come from the dashboard (reload the page and try again)",
                status_code=403,
                headers=SECURITY_HEADERS,
            )
        return None

    # -- pages --------------------------------------------------------------
    async def index(self, request: Request) -> Response:
        if not self.authenticated(request):
            return self._refuse(request)
        state = request.query_params.get("state") or None
        if state not in (None, *STATES):
            state = None
        search = request.query_params.get("q", "")[:200]
        from docutrain_cli.status.reports import outbox_status, webhook_outbox_status

        def work(queue):
            with WorkerBoard.for_store(self.settings.store) as board:
                return gather(
                    queue,
                    board,
                    outbox=outbox_status(self.settings),
                    webhook_outbox=webhook_outbox_status(self.settings),
                    budget=self._budget(),
                    state=state,
                    search=search,
                )

        try:
            overview = await self.handles.call(work)
        except DocutrainError as exc:
            return self._unavailable(request, exc)
        notice = _notice(request.query_params)
        template = "_live.html" if request.query_params.get("partial") else "dashboard.html"
        return self._render(
            request, template, o=overview, states=STATES, notice=notice,
            queue_label=request.app.state.queue.label,
        )

    async def job_page(self, request: Request) -> Response:
        if not self.authenticated(request):
            return self._refuse(request)
        job_id = request.path_params["job_id"]
        if job_id > MAX_JOB_ID:
            return self._render(request, "not_found.html", status=404, job_id=job_id)
        try:
            job = await self.handles.call(lambda queue: queue.job(job_id))
        except DocutrainError as exc:
            return self._unavailable(request, exc)
        if job is None:
            return self._render(request, "not_found.html", status=404, job_id=job_id)
        template = "_job.html" if request.query_params.get("partial") else "job.html"
        return self._render(
            request, template, job=without_local_hash(job), now=time.time(), notice=_notice(request.query_params),
            queue_label=request.app.state.queue.label,
        )

    async def retry_one(self, request: Request) -> Response:
        refused = await self._refuse_post(request)
        if refused:
            return refused
        job_id = request.path_params["job_id"]
        if job_id > MAX_JOB_ID:
            return self._render(request, "not_found.html", status=404, job_id=job_id)
        revived = await self.handles.call(lambda queue: queue.revive([job_id]))
        outcome = {"retried": len(revived)} if revived else {"not_dead": job_id}
        return RedirectResponse(f"/jobs/{job_id}?{urlencode(outcome)}", status_code=303)

    async def retry_dead(self, request: Request) -> Response:
        refused = await self._refuse_post(request)
        if refused:
            return refused
        revived = await self.handles.call(lambda queue: queue.revive(None))
        return RedirectResponse(f"/?{urlencode({'retried': len(revived)})}", status_code=303)

    async def metrics(self, request: Request) -> Response:
        if not self.authenticated(request):
            return PlainTextResponse("missing or wrong bearer token", status_code=401)
        try:
            # Not on a shared handle: the collector opens its own (a scrape
            # every 15 s costs little) and runs inside prometheus-client.
            body, content_type = await run_in_threadpool(metrics.render, self.registry)
        except DocutrainError as exc:  # e.g. the queue database is down: say so, no traceback
            return PlainTextResponse(f"cannot read the queue: {exc}", status_code=503)
        return Response(body, media_type=content_type)

    # -- log in and out -----------------------------------------------------
    def login_form(self, request: Request) -> Response:
        if not self.sessions.login_required:
            return RedirectResponse("/", status_code=303)
        return self._render(
            request, "login.html", next=sess.safe_next(request.query_params.get("next")), failed=False
        )

    async def login(self, request: Request) -> Response:
        if not self.sessions.login_required:
            return RedirectResponse("/", status_code=303)
        form = await self._form(request) or {}
        target = sess.safe_next(form.get("next"))
        if not self.sessions.token_ok(form.get("token")):
            self.failures.add(client_key(request.scope))
            return self._render(request, "login.html", status=401, next=target, failed=True)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            sess.COOKIE,
            self.sessions.new_session(),
            max_age=sess.MAX_AGE,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        refused = await self._refuse_post(request)
        if refused:
            return refused
        self.sessions.end_session(request.cookies.get(sess.COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(sess.COOKIE, path="/", httponly=True, samesite="strict")
        return response


def _notice(params) -> str | None:
    """A fixed sentence for the outcome codes our own redirects add (never
    text taken from the URL, which anyone could craft)."""
    if "retried" in params:
        try:
            n = int(params["retried"])
        except ValueError:
            return None
        return f"{n} job(s) back in the queue" if n else "no dead jobs to retry"
    if "not_dead" in params:
        return "that job is not dead (any more): nothing to retry"
    return None



def handles_own_auth(path: str) -> bool:
    """Paths the dashboard authenticates itself (bearer or cookie; a browser
    without either is sent to the log-in form, and /metrics answers 401)."""
    return path in ("/", "/login", "/logout", "/metrics") or path.startswith(("/jobs/", "/static/"))
