"""`POST /v1/webhooks/supabase`: what a Supabase Database Webhook sends.

The payload is `{"type", "table", "schema", "record", "old_record"}`. An
INSERT or UPDATE of a documents-table row whose status is `pending` queues
it (once: see enqueue_document). Everything else (other tables, DELETE,
other statuses, a pending row without a storage_path yet) is answered 200
with the reason: pg_net does not retry, and an error would only fill its
log with noise. A body that is not a webhook payload at all is a 422.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from docutrain_cli.errors import PermanentError
from docutrain_cli.jobs import Job
from docutrain_cli.serve.body import document_id_field, read_json, text_field
from docutrain_cli.serve.documents import check_intake, queue_job
from docutrain_cli.serve.errors import ApiError
from docutrain_cli.serve.sources import check_storage_configured

EVENTS = ("INSERT", "UPDATE", "DELETE")


def ignored(reason: str) -> JSONResponse:
    return JSONResponse({"success": True, "queued": False, "reason": reason})


async def supabase_webhook(request: Request) -> JSONResponse:
    from docutrain_cli.supabase.pull import job_fields

    payload = await read_json(request)
    event, table, record = payload.get("type"), payload.get("table"), payload.get("record")
    if event not in EVENTS or not isinstance(table, str):
        raise ApiError(422, "not a Supabase Database Webhook payload: expected type INSERT, UPDATE or DELETE and a table")
    settings = request.app.state.settings
    if table != settings.documents_table:
        return ignored(f"table {table} is not {settings.documents_table}")
    if event == "DELETE":
        return ignored("a deleted row has nothing to process")
    if not isinstance(record, dict) or record.get("id") in (None, ""):
        raise ApiError(422, f"{event} payload without a record id")
    record = {
        **record,
        "id": document_id_field(record, "id", label="record id"),
        "user_id": text_field(record, "user_id", required=False, max_length=200, label="record user_id"),
    }
    if record.get("status") != "pending":
        return ignored(f"status is {str(record.get('status'))[:40]!r}, not 'pending'")
    try:
        fields = job_fields(record, settings)
    except PermanentError as exc:
        raise ApiError(422, f"storage_path: {exc}") from None
    if fields is None:
        return ignored("the row has no storage_path yet")
    check_storage_configured(settings, record["storage_path"])
    check_intake(request, fields["user_id"])
    return await queue_job(request, Job(id=0, **fields, priority="high"))  # an upload someone waits for


routes = [Route("/v1/webhooks/supabase", supabase_webhook, methods=["POST"])]
