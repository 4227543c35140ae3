"""`docutrain doctor`'s checks, through the real `supabase` and `openai`
clients against the local stand-ins."""

from __future__ import annotations

from docutrain_cli.cli.doctor import run_checks
from docutrain_cli.store.local import ChunkRow
from docutrain_cli.supabase.chunks import SupabaseChunks
from docutrain_cli.supabase.client import make_client


def test_doctor_passes_on_a_complete_project(supabase_standin, supabase_settings):
    checks = run_checks(supabase_settings)
    assert all(c.ok for c in checks), [c for c in checks if not c.ok]
    assert supabase_standin.key not in repr(checks)


def test_doctor_reports_a_missing_table_column_function_and_bucket_with_fixes(supabase_standin, supabase_settings):
    project = supabase_standin.project
    del project.tables["document_chunks"]
    project.tables["user_documents"].columns.pop("chunk_count")
    project.functions.clear()
    checks = {c.name: c for c in run_checks(supabase_settings.replace(storage_bucket="uploads"))}
    assert checks["Supabase reachable"].ok
    table = checks["table document_chunks"]
    assert not table.ok and "does not exist" in table.detail and "docutrain schema" in table.fix
    assert not checks["table user_documents"].ok and "chunk_count" in checks["table user_documents"].detail
    assert not checks["function match_document_chunks"].ok
    assert not checks["storage bucket uploads"].ok and "create it" in checks["storage bucket uploads"].fix


def test_doctor_says_when_supabase_is_unreachable_or_the_key_is_the_anon_one(supabase_standin, supabase_settings):
    supabase_standin.down()
    checks = {c.name: c for c in run_checks(supabase_settings, timeout=2)}
    assert not checks["Supabase reachable"].ok and "cannot connect" in checks["Supabase reachable"].detail
    anon = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.c2lnbmF0dXJl"  # {"role":"anon"}
    checks = {c.name: c for c in run_checks(supabase_settings.replace(supabase_service_role_key=anon), timeout=2)}
    assert not checks["Supabase settings"].ok and "anon" in checks["Supabase settings"].detail
    assert anon not in repr(checks)


def test_doctor_finds_a_vector_size_mismatch(supabase_standin, supabase_settings):
    doc = supabase_standin.project.add_document("ready")
    row = ChunkRow(0, 1, 1, 10, "a chunk", [1.0, 0.5, 0.25, 0.125])
    SupabaseChunks(supabase_settings, make_client(supabase_settings)).replace_chunks(doc, None, [row])  # 4-d vectors
    check = {c.name: c for c in run_checks(supabase_settings)}["vector size"]
    assert not check.ok and "4-dimension" in check.detail and "384" in check.detail


def test_doctor_checks_openai_through_the_embedder(openai_standin, tmp_path):
    from docutrain_cli.config import Settings

    key = "sk-test-doctor-0123456789abcdef"
    openai_standin.required_key = key
    settings = Settings(
        store=str(tmp_path / "d.db"), openai_api_key=key, openai_base_url=openai_standin.base_url,
        embedding_dimensions=8,
    )

    def check(s):
        return {c.name: c for c in run_checks(s, timeout=2)}["OpenAI embeddings"]

    assert check(settings).ok and "8 dimensions" in check(settings).detail
    refused = check(settings.replace(openai_api_key="sk-test-wrong-key-000000000000"))
    assert not refused.ok and "rejected the API key" in refused.detail and "OPENAI_API_KEY" in refused.fix
    missing = check(settings.replace(embedding_model="no-such-model"))
    assert not missing.ok and "not found" in missing.detail and missing.fix == "set embedding_model"
    down = check(settings.replace(openai_base_url="http://127.0.0.1:9/v1"))
    assert not down.ok and "cannot reach" in down.detail
    assert "wrong-key" not in repr([refused, missing, down]) and key not in repr([refused, missing, down])
