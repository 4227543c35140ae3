"""A local stand-in for a Supabase project: PostgREST + Storage over real HTTP.

The real `supabase` client talks to it on 127.0.0.1, so tests exercise the
actual requests the project makes (URLs, query strings, Prefer headers,
JSON bodies), and assert on the rows the server ends with.

What it speaks (checked against postgrest-py 2.x and storage3 2.x sources):
- `GET /rest/v1/<table>?select=a,b&col=op.value&or=(...)&order=c.asc&limit=&offset=`
  with ops eq, neq, gt, gte, lt, lte, in.(...), is.null|true|false,
  values quoted with "..." where PostgREST needs it.
- `POST /rest/v1/<table>` insert (object or array), with
  `Prefer: resolution=merge-duplicates` + `on_conflict=a,b` for upserts and
  `columns=` as postgrest-py sends it; 409/23505 on duplicates otherwise.
- `PATCH` / `DELETE /rest/v1/<table>` with filters.
- `Prefer: return=representation|minimal`.
- `POST /rest/v1/rpc/<fn>` for registered Python functions.
- `GET /storage/v1/object/<bucket>/<path>` (and `/object/authenticated/...`),
  `GET /storage/v1/bucket` and `/storage/v1/bucket/<id>`.
- `apikey` and `Authorization: Bearer <key>` must both carry the key (401 otherwise).
Errors use PostgREST's JSON shape and codes (PGRST205 table, 42703/PGRST204
column, PGRST202 function, 23505 duplicate, 23514 check, 22P02 bad uuid,
22P05 for a NUL character (\u0000) in any JSON string: Postgres text cannot
hold it, and PostgREST answers 400 for the whole request).

Failure on demand: `fail(method, path_prefix, status, times)`, `slow(seconds)`,
`down()` (the port refuses connections) / `up()` (same port again).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import json
import math
import re
import threading
import time
import uuid
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from standin_server import Listener, QuietHandler, Served

KEY = "standin-service-role-key-0123456789"
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclasses.dataclass(frozen=True)
class Request:
    method: str
    path: str  # unquoted, without the query
    query: str  # raw query string
    headers: dict  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclasses.dataclass
class Table:
    columns: dict[str, str]  # name -> type: uuid, int, text, timestamptz, vector, identity
    primary_key: str = "id"
    unique: list[tuple[str, ...]] = dataclasses.field(default_factory=list)
    checks: dict[str, tuple] = dataclasses.field(default_factory=dict)  # column -> allowed values
    rows: list[dict] = dataclasses.field(default_factory=list)
    next_id: Any = dataclasses.field(default_factory=lambda: itertools.count(1))


def supabase_tables(documents: str = "user_documents", chunks: str = "document_chunks") -> dict[str, Table]:
    """The tables docutrain's schema.sql creates, as the stand-in knows them."""
    return {
        documents: Table(
            columns={
                "id": "uuid",
                "user_id": "uuid",
                "status": "text",
                "storage_path": "text",
                "error_message": "text",
                "page_count": "int",
                "chunk_count": "int",
                "processed_at": "timestamptz",
                "updated_at": "timestamptz",
                "created_at": "timestamptz",
            },
            checks={"status": ("pending", "processing", "ready", "error")},
        ),
        chunks: Table(
            columns={
                "id": "identity",
                "user_document_id": "uuid",
                "user_id": "uuid",
                "chunk_index": "int",
                "content": "text",
                "page_start": "int",
                "page_end": "int",
                "token_count": "int",
                "embedding": "vector",
            },
            unique=[("user_document_id", "chunk_index")],
        ),
    }


class PgError(Exception):
    def __init__(self, status: int, code: str, message: str, details: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.status, self.body = status, {"code": code, "message": message, "details": details, "hint": hint}


def _reject_nul(value: Any) -> None:
    """Postgres text cannot hold U+0000; PostgREST refuses the request."""
    if isinstance(value, str):
        if "\x00" in value:
            raise PgError(400, "22P05", "unsupported Unicode escape sequence", "\\u0000 cannot be converted to text.")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key)
            _reject_nul(item)
    elif isinstance(value, list):
        for item in value:
            _reject_nul(item)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside quotes and parentheses."""
    parts, depth, quoted, cur, escape = [], 0, False, [], False
    for ch in text:
        if escape:
            cur.append(ch)
            escape = False
            continue
        if ch == "\\" and quoted:
            escape = True
            continue
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == sep:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


class Project:
    """The in-memory state: tables, functions, storage objects."""

    def __init__(self, key: str = KEY):
        self.key = key
        self.tables: dict[str, Table] = supabase_tables()
        self.functions: dict[str, Callable[[dict], Any]] = {"match_document_chunks": self._match_document_chunks}
        self.buckets: dict[str, dict[str, bytes]] = {"documents": {}}
        self.lock = threading.RLock()
        self.requests: list[Request] = []  # every request, in arrival order

    # -- helpers for tests ---------------------------------------------------

    def rows(self, table: str) -> list[dict]:
        with self.lock:
            return [dict(r) for r in self.tables[table].rows]

    def add_document(self, status: str = "pending", *, user_id: str | None = None, storage_path: str | None = None, **fields) -> str:
        with self.lock:
            doc_id = str(uuid.uuid4())
            row = {c: None for c in self.tables["user_documents"].columns}
            row.update(
                id=doc_id,
                # Supabase's storage policies keep each user's files under
                # `{user_id}/`: a row made from a path gets that owner.
                user_id=user_id or _owner_of(storage_path) or str(uuid.uuid4()),
                status=status,
                storage_path=storage_path,
                created_at=_now(),
                updated_at=_now(),
                **fields,
            )
            self.tables["user_documents"].rows.append(row)
            return doc_id

    def document(self, doc_id: str) -> dict | None:
        with self.lock:
            return next((dict(r) for r in self.tables["user_documents"].rows if r["id"] == doc_id), None)

    def put_object(self, bucket: str, path: str, data: bytes) -> None:
        with self.lock:
            self.buckets.setdefault(bucket, {})[path] = data

    # -- typing --------------------------------------------------------------

    def _coerce(self, table: str, column: str, value: Any) -> Any:
        kind = self._column(table, column)
        if value is None:
            return None
        if kind == "uuid":
            if not isinstance(value, str) or not UUID_RE.match(value):
                raise PgError(400, "22P02", f'invalid input syntax for type uuid: "{value}"')
            return value.lower()
        if kind in ("int", "identity"):
            try:
                return int(value)
            except (TypeError, ValueError):
                raise PgError(400, "22P02", f'invalid input syntax for type integer: "{value}"') from None
        if kind == "timestamptz":
            try:
                return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                raise PgError(400, "22007", f'invalid input syntax for type timestamp with time zone: "{value}"') from None
        if kind == "vector":
            if isinstance(value, str):
                value = json.loads(value)
            if not isinstance(value, list) or not all(isinstance(v, (int, float)) for v in value):
                raise PgError(400, "22P02", "invalid input syntax for type vector")
            return [float(v) for v in value]
        return str(value) if not isinstance(value, str) else value

    def _column(self, table: str, column: str) -> str:
        columns = self.tables[table].columns
        if column not in columns:
            raise PgError(400, "42703", f"column {table}.{column} does not exist")
        return columns[column]

    def _store_value(self, table: str, column: str, value: Any) -> Any:
        coerced = self._coerce(table, column, value)
        if isinstance(coerced, dt.datetime):
            return coerced.isoformat()
        return coerced

    def _table(self, name: str) -> Table:
        if name not in self.tables:
            raise PgError(404, "PGRST205", f"Could not find the table 'public.{name}' in the schema cache")
        return self.tables[name]

    # -- filters -------------------------------------------------------------

    def _condition(self, table: str, column: str, expr: str) -> Callable[[dict], bool]:
        negate = expr.startswith("not.")
        if negate:
            expr = expr[4:]
        op, _, raw = expr.partition(".")
        self._column(table, column)
        if op == "in":
            if not (raw.startswith("(") and raw.endswith(")")):
                raise PgError(400, "PGRST100", f"failed to parse filter ({expr})")
            values = {self._coerce(table, column, _unquote(v)) for v in _split_top(raw[1:-1]) if v != ""}
            test = lambda row: self._coerce(table, column, row.get(column)) in values  # noqa: E731
        elif op == "is":
            want = {"null": None, "true": True, "false": False}.get(raw.lower(), "bad")
            if want == "bad":
                raise PgError(400, "PGRST100", f"failed to parse filter (is.{raw})")
            test = lambda row: row.get(column) is want or row.get(column) == want  # noqa: E731
        elif op in ("eq", "neq", "gt", "gte", "lt", "lte"):
            value = self._coerce(table, column, _unquote(raw))
            compare = {
                "eq": lambda a: a == value,
                "neq": lambda a: a != value,
                "gt": lambda a: a > value,
                "gte": lambda a: a >= value,
                "lt": lambda a: a < value,
                "lte": lambda a: a <= value,
            }[op]

            def test(row: dict) -> bool:
                current = self._coerce(table, column, row.get(column))
                return current is not None and compare(current)  # SQL: NULL compares unknown

        else:
            raise PgError(400, "PGRST100", f"failed to parse filter ({op}.{raw}): operator not supported by the stand-in")
        return (lambda row: not test(row)) if negate else test

    def _or(self, table: str, expr: str) -> Callable[[dict], bool]:
        if not (expr.startswith("(") and expr.endswith(")")):
            raise PgError(400, "PGRST100", f"failed to parse logic tree ({expr})")
        tests = []
        for part in _split_top(expr[1:-1]):
            column, _, rest = part.partition(".")
            tests.append(self._condition(table, column, rest))
        return lambda row: any(t(row) for t in tests)

    def _filters(self, table: str, params: list[tuple[str, str]]) -> Callable[[dict], bool]:
        reserved = {"select", "order", "limit", "offset", "on_conflict", "columns"}
        tests = []
        for key, value in params:
            if key in reserved:
                continue
            if key == "or":
                tests.append(self._or(table, value))
            else:
                tests.append(self._condition(table, key, value))
        return lambda row: all(t(row) for t in tests)

    def _select(self, table: str, rows: list[dict], select: str | None) -> list[dict]:
        """Project columns; vectors go out as text ("[1,2,3]"), as PostgREST sends them."""
        columns = list(self.tables[table].columns)
        if select and select != "*":
            columns = [c.strip() for c in select.split(",") if c.strip()]
            for c in columns:
                self._column(table, c)
        vectors = {c for c, kind in self.tables[table].columns.items() if kind == "vector"}
        return [
            {c: (json.dumps(r.get(c), separators=(",", ":")) if c in vectors and r.get(c) is not None else r.get(c)) for c in columns}
            for r in rows
        ]

    # -- PostgREST verbs -----------------------------------------------------

    def get(self, table: str, params: list[tuple[str, str]]) -> list[dict]:
        t = self._table(table)
        q = dict(params)
        match = self._filters(table, params)
        rows = [r for r in t.rows if match(r)]
        for term in reversed([o for o in q.get("order", "").split(",") if o]):
            column, _, direction = term.partition(".")
            self._column(table, column)
            def sort_key(row: dict, column: str = column) -> tuple:
                value = row.get(column)  # NULLs sort last, as in Postgres ascending
                return (value is None, self._coerce(table, column, value) if value is not None else 0)

            rows.sort(key=sort_key, reverse=direction.startswith("desc"))
        offset = int(q.get("offset", 0))
        rows = rows[offset:]
        if "limit" in q:
            rows = rows[: int(q["limit"])]
        return self._select(table, rows, q.get("select"))

    def insert(self, table: str, params: list[tuple[str, str]], body: Any, prefer: set[str]) -> list[dict]:
        t = self._table(table)
        q = dict(params)
        items = body if isinstance(body, list) else [body]
        if q.get("columns"):
            allowed = [c.strip().strip('"') for c in q["columns"].split(",")]
        else:
            allowed = sorted({k for item in items for k in item})
        for c in allowed:
            if c not in t.columns:
                raise PgError(400, "PGRST204", f"Could not find the '{c}' column of '{table}' in the schema cache")
        upsert = "resolution=merge-duplicates" in prefer
        ignore = "resolution=ignore-duplicates" in prefer
        conflict = tuple(c.strip() for c in q.get("on_conflict", t.primary_key).split(","))
        if (upsert or ignore) and conflict != (t.primary_key,) and conflict not in t.unique:
            raise PgError(400, "42P10", "there is no unique or exclusion constraint matching the ON CONFLICT specification")
        out, staged, touched = [], [dict(r) for r in t.rows], []
        for item in items:
            values = {c: self._store_value(table, c, item.get(c)) for c in allowed}
            existing = None
            for key in [(t.primary_key,), *t.unique]:
                if all(values.get(c) is not None for c in key):
                    existing = next((r for r in staged if all(r.get(c) == values[c] for c in key)), None)
                    if existing is not None:
                        if not (upsert or ignore) or key != conflict:
                            raise PgError(409, "23505", f'duplicate key value violates unique constraint "{table}_{"_".join(key)}_key"')
                        break
            if existing is not None:
                if any(existing is seen for seen in touched):
                    raise PgError(400, "21000", "ON CONFLICT DO UPDATE command cannot affect row a second time")
                touched.append(existing)
                if upsert:
                    existing.update(values)
                    self._check(table, existing)
                    out.append(dict(existing))
                continue
            row = {c: None for c in t.columns}
            row.update(values)
            for c, kind in t.columns.items():
                if row.get(c) is None and kind == "identity":
                    row[c] = next(t.next_id)
                elif row.get(c) is None and c == t.primary_key and kind == "uuid":
                    row[c] = str(uuid.uuid4())
                elif row.get(c) is None and c in ("created_at", "updated_at"):
                    row[c] = _now()
            self._check(table, row)
            staged.append(row)
            touched.append(row)
            out.append(dict(row))
        t.rows = staged  # all or nothing, like one statement
        return out

    def _check(self, table: str, row: dict) -> None:
        for column, allowed in self.tables[table].checks.items():
            if row.get(column) not in allowed:
                raise PgError(400, "23514", f'new row for relation "{table}" violates check constraint "{table}_{column}_check"')

    def update(self, table: str, params: list[tuple[str, str]], body: dict) -> list[dict]:
        t = self._table(table)
        for c in body:
            if c not in t.columns:
                raise PgError(400, "PGRST204", f"Could not find the '{c}' column of '{table}' in the schema cache")
        values = {c: self._store_value(table, c, v) for c, v in body.items()}
        match = self._filters(table, params)
        hits = [r for r in t.rows if match(r)]
        for r in hits:
            self._check(table, {**r, **values})
        for r in hits:
            r.update(values)
        return self._select(table, hits, dict(params).get("select"))

    def delete(self, table: str, params: list[tuple[str, str]]) -> list[dict]:
        t = self._table(table)
        match = self._filters(table, params)
        gone = [r for r in t.rows if match(r)]
        t.rows = [r for r in t.rows if not match(r)]
        if table in ("user_documents",) and gone:  # on delete cascade
            ids = {r["id"] for r in gone}
            for other in self.tables.values():
                if "user_document_id" in other.columns:
                    other.rows = [r for r in other.rows if r.get("user_document_id") not in ids]
        return self._select(table, gone, dict(params).get("select"))

    def rpc(self, name: str, args: dict) -> Any:
        if name not in self.functions:
            raise PgError(404, "PGRST202", f"Could not find the function public.{name} in the schema cache")
        return self.functions[name](args)

    def _match_document_chunks(self, args: dict) -> list[dict]:
        query = args.get("query_embedding")
        if isinstance(query, str):
            query = json.loads(query)
        count = int(args.get("match_count", 10))
        user = args.get("filter_user_id")
        document = args.get("filter_document_id")
        qn = math.sqrt(sum(x * x for x in query)) or 1.0
        hits = []
        for r in self.tables.get("document_chunks", Table({})).rows:
            if user and r["user_id"] != user or document and r["user_document_id"] != document:
                continue
            v = r["embedding"] or []
            if len(v) != len(query):
                raise PgError(400, "22000", f"different vector dimensions {len(v)} and {len(query)}")
            vn = math.sqrt(sum(x * x for x in v)) or 1.0
            similarity = sum(a * b for a, b in zip(query, v)) / (qn * vn)
            hits.append({**{k: r[k] for k in r if k != "embedding"}, "similarity": similarity})
        hits.sort(key=lambda h: -h["similarity"])
        return hits[:count]


class StandIn(Served):
    """The HTTP server around a Project, on 127.0.0.1 and a free port."""

    def __init__(self, project: Project | None = None):
        self.project = project or Project()
        self._failures: list[list] = []  # [method, path_prefix, status, times_left]
        self._redirects: dict[str, str] = {}  # path prefix -> Location
        self._delay = 0.0
        self.listener = Listener(type("Handler", (_Handler,), {"standin": self}))
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def key(self) -> str:
        return self.project.key

    def fail(self, method: str = "*", path_prefix: str = "/", status: int = 500, times: int = 1_000_000) -> None:
        """Answer `status` to matching requests, `times` times."""
        self._failures.append([method.upper(), path_prefix, status, times])

    def redirect(self, path_prefix: str, location: str) -> None:
        """Answer requests under `path_prefix` with 302 to `location` (as a
        storage behind a CDN or a hostile proxy could)."""
        self._redirects[path_prefix] = location

    def heal(self) -> None:
        self._failures.clear()
        self._delay = 0.0

    def slow(self, seconds: float) -> None:
        self._delay = seconds

    def _injected(self, method: str, path: str) -> int | None:
        for rule in self._failures:
            if rule[3] > 0 and rule[0] in ("*", method) and path.startswith(rule[1]):
                rule[3] -= 1
                return rule[2]
        return None

    def requests(self, method: str = "*", path_prefix: str = "/") -> list[Request]:
        with self.project.lock:
            return [r for r in self.project.requests if method in ("*", r.method) and r.path.startswith(path_prefix)]

    def count(self, method: str = "*", path_prefix: str = "/") -> int:
        return len(self.requests(method, path_prefix))


class _Handler(QuietHandler):
    standin: StandIn

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _send(self, status: int, body: Any = None, *, raw: bytes | None = None, content_type: str = "application/json", headers: dict | None = None) -> None:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body, default=str).encode())
        self.send_body(status, data, content_type, headers)

    def _handle(self, method: str) -> None:
        standin, project = self.standin, self.standin.project
        length = int(self.headers.get("Content-Length") or 0)
        raw_body = self.rfile.read(length) if length else b""
        if len(raw_body) < length:  # the client went away mid-body (killed)
            self.close_connection = True
            return
        split = urlsplit(self.path)
        path = unquote(split.path)
        params = parse_qsl(split.query, keep_blank_values=True)
        with project.lock:
            project.requests.append(Request(method, path, split.query, {k.lower(): v for k, v in self.headers.items()}, raw_body))
        if standin._delay:
            time.sleep(standin._delay)
        injected = standin._injected(method, path)
        if injected is not None:
            if path.startswith("/storage/"):
                return self._send(injected, {"statusCode": str(injected), "error": "injected", "message": "injected failure"})
            return self._send(injected, raw=b"<html>upstream error</html>", content_type="text/html")
        location = next((to for prefix, to in standin._redirects.items() if path.startswith(prefix)), None)
        if location is not None:
            return self._send(302, raw=b"", headers={"Location": location})
        if self.headers.get("apikey") != project.key or self.headers.get("Authorization") != f"Bearer {project.key}":
            return self._send(401, {"message": "Invalid API key", "hint": "Double check your Supabase `anon` or `service_role` API key."})
        try:
            with project.lock:
                if path.startswith("/rest/v1/"):
                    self._rest(method, path[len("/rest/v1/") :], params, raw_body)
                elif path.startswith("/storage/v1/"):
                    self._storage(method, path[len("/storage/v1/") :])
                else:
                    self._send(404, {"message": "no route"})
        except PgError as exc:
            self._send(exc.status, exc.body)

    def _rest(self, method: str, route: str, params: list, raw_body: bytes) -> None:
        project = self.standin.project
        prefer = {p.strip() for p in (self.headers.get("Prefer") or "").split(",") if p.strip()}
        body = json.loads(raw_body) if raw_body else None
        _reject_nul(body)
        if route.startswith("rpc/"):
            if method not in ("POST", "GET"):
                raise PgError(405, "PGRST117", "Unsupported HTTP method")
            args = body if method == "POST" else dict(params)
            return self._send(200, project.rpc(route[4:], args or {}))
        table = route
        representation = "return=representation" in prefer
        if method in ("GET", "HEAD"):
            rows = project.get(table, params)
            return self._send(200, rows, headers={"Content-Range": f"0-{max(len(rows) - 1, 0)}/*"})
        if method == "POST":
            if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
                raise PgError(415, "PGRST107", "Content-Type not acceptable")
            rows = project.insert(table, params, body, prefer)
            return self._send(201, rows if representation else None)
        if method == "PATCH":
            rows = project.update(table, params, body or {})
            return self._send(200 if representation else 204, rows if representation else None)
        if method == "DELETE":
            rows = project.delete(table, params)
            return self._send(200 if representation else 204, rows if representation else None)
        raise PgError(405, "PGRST117", "Unsupported HTTP method")

    def _storage(self, method: str, route: str) -> None:
        project = self.standin.project
        parts = route.split("/")
        if parts[0] == "bucket" and method == "GET":
            if len(parts) == 1 or parts[1] == "":
                return self._send(200, [_bucket(b) for b in project.buckets])
            if parts[1] in project.buckets:
                return self._send(200, _bucket(parts[1]))
            return self._send(404, {"statusCode": "404", "error": "Bucket not found", "message": "Bucket not found"})
        if parts[0] == "object" and method in ("GET", "HEAD"):
            rest = parts[2:] if len(parts) > 2 and parts[1] in ("authenticated", "public") else parts[1:]
            bucket, obj = rest[0], "/".join(rest[1:])
            if bucket not in project.buckets:
                return self._send(400, {"statusCode": "404", "error": "Bucket not found", "message": "Bucket not found"})
            data = project.buckets[bucket].get(obj)
            if data is None:
                return self._send(400, {"statusCode": "404", "error": "not_found", "message": "Object not found"})
            return self._send(200, raw=data, content_type="application/octet-stream")
        self._send(404, {"statusCode": "404", "error": "not_found", "message": "no route"})


def _bucket(name: str) -> dict:
    now = _now()
    return {
        "id": name, "name": name, "owner": "", "public": False, "created_at": now, "updated_at": now,
        "file_size_limit": None, "allowed_mime_types": None,
    }


def _owner_of(storage_path: str | None) -> str | None:
    """`u1/report.pdf` -> `u1`: the user folder a storage path lies in."""
    if storage_path and "/" in storage_path:
        return storage_path.split("/", 1)[0]
    return None
