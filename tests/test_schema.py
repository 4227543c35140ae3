"""The schema SQL docutrain ships: rendered per configuration, and applied to
a real PostgreSQL (127.0.0.1:5432, trust auth) so it is at least valid SQL.

Portability, when pgvector is not installed in that PostgreSQL: the lines
marked `-- pgvector` (the extension and the HNSW index) are left out,
`vector(N)` becomes `float8[]`, and a small SQL `<=>` (cosine distance)
operator on float8[] stands in for pgvector's, so match_document_chunks is
created and actually run. Supabase's `auth.uid()` and `authenticated` role
are stubbed the same way. Tests skip when PostgreSQL is unreachable, and fail
instead when the CI environment variable is set.
"""

from __future__ import annotations

import os
import re
import uuid

import pytest

from docutrain_cli.config import Settings
from docutrain_cli.errors import ConfigError
from docutrain_cli.pipeline.models import vector_dimensions
from docutrain_cli.supabase.schema import render_schema

DSN = os.environ.get("DOCUTRAIN_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

PORTABLE_PRELUDE = """
create schema if not exists auth;
create or replace function auth.uid() returns uuid language sql stable
    as $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
do $$ begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin;
    end if;
end $$;
create or replace function public.float8_cosine_distance(a float8[], b float8[]) returns float8
language sql immutable strict as $$
    select 1 - sum(x * y) / (sqrt(sum(x * x)) * sqrt(sum(y * y)))
    from unnest(a, b) as t(x, y)
$$;
do $$ begin
    if not exists (select 1 from pg_operator where oprname = '<=>'
                   and oprleft = 'float8[]'::regtype and oprright = 'float8[]'::regtype) then
        create operator <=> (leftarg = float8[], rightarg = float8[], function = public.float8_cosine_distance);
    end if;
end $$;
"""


def openai_settings(**changes) -> Settings:
    return Settings(embedder="openai", openai_api_key="sk-test", **changes)


def test_vector_size_follows_the_model():
    assert vector_dimensions(openai_settings()) == 1536
    assert vector_dimensions(openai_settings(embedding_model="text-embedding-3-large")) == 3072
    assert vector_dimensions(openai_settings(embedding_dimensions=256)) == 256
    assert vector_dimensions(Settings(embedder="offline")) == 384
    with pytest.raises(ConfigError, match="embedding_dimensions"):
        vector_dimensions(openai_settings(embedding_model="nomic-embed-text"))
    assert vector_dimensions(openai_settings(embedding_model="nomic-embed-text", embedding_dimensions=768)) == 768


def test_render_fills_names_and_sizes():
    sql = render_schema(openai_settings(documents_table="uploads", chunks_table="upload_chunks"))
    assert "create table if not exists public.uploads (" in sql
    assert "references public.uploads (id) on delete cascade" in sql
    assert "embedding        vector(1536) not null" in sql
    assert "query_embedding    vector(1536)" in sql
    assert "using hnsw (embedding vector_cosine_ops)" in sql
    assert "unique (user_document_id, chunk_index)" in sql
    assert "enable row level security" in sql and "auth.uid()" in sql
    assert "user_documents" not in sql and "{{" not in sql


def test_large_vectors_are_indexed_as_halfvec():
    sql = render_schema(openai_settings(embedding_model="text-embedding-3-large"))
    assert "vector(3072)" in sql
    assert "hnsw ((embedding::halfvec(3072)) halfvec_cosine_ops)" in sql
    assert "order by c.embedding::halfvec(3072) <=> query_embedding::halfvec(3072)" in sql
    with pytest.raises(ConfigError):
        render_schema(openai_settings(embedding_dimensions=5000))


def test_table_names_must_be_plain_identifiers():
    with pytest.raises(ConfigError, match="documents_table"):
        render_schema(openai_settings(documents_table="docs; drop table x"))


# -- against PostgreSQL ---------------------------------------------------------


def portable(sql: str, have_pgvector: bool) -> str:
    if have_pgvector:
        return sql
    sql = "\n".join(line for line in sql.splitlines() if not line.rstrip().endswith("-- pgvector"))
    return re.sub(r"\bvector\(\d+\)", "float8[]", sql)


@pytest.fixture
def pg():
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(DSN, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {DSN} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {DSN}: {exc}")
    name = f"docutrain_schema_{uuid.uuid4().hex[:10]}"
    admin.execute(f"create database {name}")
    conn = psycopg.connect(re.sub(r"/[^/]*$", f"/{name}", DSN), autocommit=True)
    try:
        have_pgvector = bool(
            conn.execute("select 1 from pg_available_extensions where name = 'vector'").fetchone()
        )
        if not have_pgvector:
            conn.execute(PORTABLE_PRELUDE)
        else:
            conn.execute(PORTABLE_PRELUDE.split("create or replace function public.float8")[0])
        yield conn, have_pgvector
    finally:
        conn.close()
        admin.execute(f"drop database if exists {name} with (force)")
        admin.close()


def test_schema_applies_twice_and_works(pg):
    conn, have_pgvector = pg
    settings = openai_settings(embedding_dimensions=3)
    sql = portable(render_schema(settings), have_pgvector)
    conn.execute(sql)
    conn.execute(sql)  # safe to re-run

    user = uuid.uuid4()
    doc = conn.execute(
        "insert into user_documents (user_id, storage_path) values (%s, 'u/a.pdf') returning id, status, updated_at",
        (user,),
    ).fetchone()
    assert doc[1] == "pending"
    with pytest.raises(Exception, match="user_documents_status_check"):
        conn.execute("update user_documents set status = 'bogus' where id = %s", (doc[0],))
    conn.execute("update user_documents set status = 'ready' where id = %s", (doc[0],))
    assert conn.execute("select updated_at > %s from user_documents where id = %s", (doc[2], doc[0])).fetchone()[0]

    vectors = {0: "[1,0,0]", 1: "[0,1,0]", 2: "[0.9,0.1,0]"}
    for index, vec in vectors.items():
        value = vec if have_pgvector else "{" + vec[1:-1] + "}"
        conn.execute(
            """insert into document_chunks (user_document_id, user_id, chunk_index, content, page_start, page_end,
                                            token_count, embedding) values (%s, %s, %s, %s, 1, 1, 5, %s)""",
            (doc[0], user, index, f"chunk {index}", value),
        )
    with pytest.raises(Exception, match="duplicate key"):
        conn.execute(
            "insert into document_chunks (user_document_id, chunk_index, content, embedding) values (%s, 0, 'x', %s)",
            (doc[0], "[1,0,0]" if have_pgvector else "{1,0,0}"),
        )
    query = "[1,0,0]" if have_pgvector else "{1,0,0}"
    cast = "vector" if have_pgvector else "float8[]"
    hits = conn.execute(
        f"select chunk_index, similarity from match_document_chunks(%s::{cast}, 2, %s)", (query, user)
    ).fetchall()
    assert [h[0] for h in hits] == [0, 2] and hits[0][1] == pytest.approx(1.0)
    assert conn.execute(
        f"select count(*) from match_document_chunks(%s::{cast}, 5, %s)", (query, uuid.uuid4())
    ).fetchone()[0] == 0
    policies = {r[0] for r in conn.execute("select policyname from pg_policies").fetchall()}
    assert {"users read their own chunks", "users read their own documents"} <= policies

    conn.execute("delete from user_documents where id = %s", (doc[0],))
    assert conn.execute("select count(*) from document_chunks").fetchone()[0] == 0  # cascade


def test_schema_adds_missing_columns_to_an_existing_documents_table(pg):
    conn, have_pgvector = pg
    conn.execute("create table user_documents (id uuid primary key default gen_random_uuid(), user_id uuid not null, file_name text)")
    conn.execute(portable(render_schema(openai_settings(embedding_dimensions=3)), have_pgvector))
    columns = {r[0] for r in conn.execute(
        "select column_name from information_schema.columns where table_name = 'user_documents'"
    ).fetchall()}
    assert {"status", "error_message", "page_count", "chunk_count", "processed_at", "updated_at", "file_name"} <= columns
