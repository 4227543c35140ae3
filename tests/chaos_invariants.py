"""The promises a chaos run checks at the end (see tests/chaos.py): every
document an enqueue printed ends ready exactly once with a complete chunk
set, nothing dead or left over, no traceback, with Supabase no status
lost or regressed, and the final drain leased in the lease order. A mixin
of `Chaos`: it reads the run's state."""

from __future__ import annotations

import collections
import json
import re
import sqlite3
import time


class Invariants:
    def _check(self) -> None:
        v = self.report.violations
        status_proc = self._start("status", ["status", "--json"])
        if status_proc.wait(120) != 0:
            v.append("status --json failed")
            return
        status = json.loads(status_proc.output())
        for state in ("queued", "running", "retrying", "dead"):
            if status[state]:
                v.append(f"{status[state]} job(s) {state} after the final drain")
        outbox = status.get("supabase_outbox")
        if self.standin is not None and outbox and outbox["backlog"]:
            v.append(f"{outbox['backlog']} status change(s) still in the outbox after the drain, Supabase up")
        self.report.documents = len(self.expected)
        self._check_drain_order()
        if self.standin is not None:
            self._check_supabase()
        else:
            self._check_store()
        for proc in self.procs:
            for path in (proc.out_path, proc.err_path):
                text = path.read_text(errors="replace")
                if "Traceback" in text:
                    v.append(f"a traceback in {path.name}")
                if "resource_tracker: process died" in text:  # the relaunch warning: ours is a log line
                    v.append(f"multiprocessing's tracker warning in {path.name}")
                self.report.pools_replaced += text.count("worker pool broken")
                self.report.jobs_returned += text.count("to the queue\n")
                self.report.worker_crashes += text.count("worker crashed (")

    def _check_chunks(self, key: str, doc: Doc, chunks: list[tuple[int, int, int, str]], *, stated: int | None) -> None:
        """chunks: (chunk_index, page_start, page_end, content)."""
        v = self.report.violations
        indexes = sorted(c[0] for c in chunks)
        if indexes != list(range(len(chunks))) or not chunks:
            v.append(f"{doc.name}: chunk indexes {indexes[:10]}... are not 0..{len(chunks) - 1}")
        if stated != len(chunks):
            v.append(f"{doc.name}: chunk_count says {stated}, {len(chunks)} stored")
        text = " ".join(" ".join(c[3].split()) for c in sorted(chunks))
        missing = [m for m in doc.markers if m not in text]
        if missing:
            v.append(f"{doc.name}: text of {len(missing)} page(s) missing, e.g. {missing[0]!r}")
        if "\x00" in text:
            v.append(f"{doc.name}: a NUL character was stored")
        self.report.pages += doc.pages
        self.report.chunks += len(chunks)

    def _check_store(self) -> None:
        v = self.report.violations
        with sqlite3.connect(self.workdir / "docutrain.db") as conn:
            for key in sorted(self.expected):
                doc = self.docs[key]
                rows = conn.execute(
                    "SELECT id, status, chunk_count, page_count FROM documents WHERE document_key = ?", (key,)
                ).fetchall()
                if len(rows) != 1 or rows[0][1] != "ready":
                    v.append(f"{doc.name}: not ready exactly once: {rows}")
                    continue
                doc_id, _, stated, page_count = rows[0]
                if page_count != doc.pages:
                    v.append(f"{doc.name}: page_count {page_count}, made with {doc.pages}")
                chunks = conn.execute(
                    "SELECT chunk_index, page_start, page_end, content FROM chunks WHERE document_id = ?", (doc_id,)
                ).fetchall()
                self._check_chunks(key, doc, chunks, stated=stated)

    def _check_supabase(self) -> None:
        v = self.report.violations
        project = self.standin.project
        chunks_by_doc = collections.defaultdict(list)
        for row in project.rows("document_chunks"):
            chunks_by_doc[row["user_document_id"]].append(
                (row["chunk_index"], row["page_start"], row["page_end"], row["content"])
            )
        for key in sorted(self.expected):
            doc = self.docs[key]
            row = project.document(key)
            if row["status"] != "ready":
                v.append(f"{doc.name}: Supabase row is {row['status']!r}, not ready ({row.get('error_message')})")
                continue
            if row["page_count"] != doc.pages:
                v.append(f"{doc.name}: page_count {row['page_count']}, made with {doc.pages}")
            self._check_chunks(key, doc, chunks_by_doc.get(key, []), stated=row["chunk_count"])
        regressed = [t for t in self.transitions if t[1] in ("ready", "error") and t[2] == "processing"]
        for doc_id, old, new in regressed[:5]:
            v.append(f"{self.docs[doc_id].name if doc_id in self.docs else doc_id}: status went {old} -> {new}")

    def _check_drain_order(self) -> None:
        """The final drain, alone on a queue where nothing new arrives, must
        lease in the lease order (queues/order.py): of the jobs due when it
        started, none after one of a lower priority, nor after one of the
        same priority with a later virtual start (fair share). The order of
        leases is the order of its "start job" lines (logged as each leased
        job is handed to the pool; the records' started_at is when a worker
        took it). A job that failed in the drain (due later) is left out; so
        is the whole check when a job could have aged past priority_max_wait
        (then the levels' turns change)."""
        from docutrain_cli.config import load_settings
        from docutrain_cli.jobs import JobState
        from docutrain_cli.queues import open_queue
        from docutrain_cli.queues.order import level_of

        settings = load_settings(environ=self.env)
        queue = open_queue(settings)
        try:
            done = {job.id: job for job in queue.jobs(JobState.DONE, limit=1_000_000)}
        finally:
            queue.close()
        start = self.drain_started
        order = [int(n) for n in re.findall(r"^\S+ \S+ start job (\d+) ", self.drain_log, re.M)]
        leased = [done[n] for n in dict.fromkeys(order) if n in done and done[n].not_before <= start]
        if not leased or time.time() - min(j.queued_at or j.enqueued_at for j in leased) > settings.priority_max_wait:
            return
        place = lambda job: (level_of(job), job.vstart or 0.0, job.id)  # noqa: E731 - the lease's ORDER BY
        self.report.drain_leases_checked = len(leased)
        late = [(before, after) for before, after in zip(leased, leased[1:]) if place(after) < place(before)]
        for before, after in late[:5]:
            self.report.violations.append(
                f"the drain leased job {after.id} ({after.priority}, user {after.user_id}, vstart {after.vstart})"
                f" after job {before.id} ({before.priority}, user {before.user_id}, vstart {before.vstart}),"
                " both due when it started"
            )
