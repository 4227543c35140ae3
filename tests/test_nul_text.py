"""Text with NUL characters (found in text PyMuPDF extracts from real PDFs,
and in .txt uploads) reaches Supabase cleaned: Postgres `text` cannot hold
U+0000 and PostgREST refuses the whole request (400, 22P05), which the
stand-in does too."""

from __future__ import annotations

import json
import uuid

import httpx
import pymupdf

from test_supabase_e2e import chunk_counts, env_for


def test_standin_refuses_nul_like_postgrest(supabase_standin):
    doc = supabase_standin.project.add_document("pending")
    response = httpx.patch(
        f"{supabase_standin.url}/rest/v1/user_documents?id=eq.{doc}",
        headers={"apikey": supabase_standin.key, "Authorization": f"Bearer {supabase_standin.key}"},
        content=json.dumps({"error_message": "bad\x00byte"}),
    )
    assert response.status_code == 400
    assert response.json() == {
        "code": "22P05",
        "details": "\\u0000 cannot be converted to text.",
        "hint": None,
        "message": "unsupported Unicode escape sequence",
    }
    assert supabase_standin.project.document(doc)["error_message"] is None


def test_pdf_and_txt_with_nul_reach_supabase_ready_and_cleaned(docutrain, supabase_standin, tmp_path):
    project = supabase_standin.project
    pdf = tmp_path / "nul.pdf"
    document = pymupdf.open()
    document.new_page().insert_text((72, 72), "Invoice\x00 total: 42 EUR, paid\x00 in full.", fontsize=11)
    document.save(pdf)
    document.close()
    assert "\x00" in pymupdf.open(pdf)[0].get_text()  # PyMuPDF hands the NUL on
    txt = tmp_path / "nul.txt"
    txt.write_bytes("Tenant\x00 notice: the deposit is refunded.\x00\nSecond line stays.".encode())

    docs = {}
    for path in (pdf, txt):
        storage_path = f"{uuid.uuid4()}/{path.name}"
        project.put_object("documents", storage_path, path.read_bytes())
        docs[path.suffix] = project.add_document("pending", storage_path=storage_path)
    env = env_for(supabase_standin)
    assert docutrain("enqueue", "--from-supabase", **env).returncode == 0
    result = docutrain("run", "--drain", **env)
    assert result.returncode == 0, result.stderr

    for doc in docs.values():
        assert project.document(doc)["status"] == "ready", project.document(doc)
    assert set(chunk_counts(supabase_standin)) == set(docs.values())
    text = {
        row["user_document_id"]: row["content"] for row in project.rows("document_chunks")
    }
    assert "Invoice total: 42 EUR, paid in full." in text[docs[".pdf"]]
    assert text[docs[".txt"]] == "Tenant notice: the deposit is refunded.\nSecond line stays."
    # Nothing was refused on the way: no 400 from the stand-in.
    assert not [r for r in supabase_standin.requests("POST") if b"\\u0000" in r.body]
