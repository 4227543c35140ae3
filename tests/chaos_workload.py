"""What the users do during a chaos run (tests/chaos.py), beside the runners
being killed: new documents (PDFs of 1-150 pages, some .txt uploads, some
text with NULs) queued by a few users (and none) at mixed priorities, some
enqueues killed with kill -9 halfway and repeated, as a user would; with
Supabase, uploads to the stand-in and its outages. A mixin of `Chaos`: it
writes the run's documents, expectations and report."""

from __future__ import annotations

import dataclasses
import json
import random
import time
import uuid
from pathlib import Path

import pdfs
from proctree import sigkill

USERS = ("alice", "bob", "carol", None)  # None: enqueued without --user-id
PRIORITIES = ("high", "normal", "low", None)  # None: the command's default


@dataclasses.dataclass
class Doc:
    name: str
    pages: int  # pages with text; page p holds the marker "Page p heading."
    path: Path
    document_id: str | None = None  # Supabase row

    @property
    def markers(self) -> list[str]:
        return [f"Page {p} heading." for p in range(1, self.pages + 1)]


class Workload:
    def _start_supabase(self) -> None:
        from supabase_standin import StandIn

        self.standin = StandIn()
        project = self.standin.project
        update = project.update

        def recording_update(table, params, body):
            before = {r["id"]: r["status"] for r in project.tables[table].rows} if table == "user_documents" else {}
            rows = update(table, params, body)
            for row in rows:
                if row.get("id") in before and "status" in body:
                    self.transitions.append((row["id"], before[row["id"]], row["status"]))
            return rows

        project.update = recording_update
        self.env.update(SUPABASE_URL=self.standin.url, SUPABASE_SERVICE_ROLE_KEY=self.standin.key)


    def _new_docs(self, rng: random.Random) -> list[Doc]:
        folder = self.workdir / "uploads" / f"batch{self.report.enqueues:04}"
        folder.mkdir(parents=True)
        made = []
        for _ in range(rng.randint(1, 4)):
            n = len(self.docs) + len(made)
            kind = rng.random()
            if kind < 0.15:  # a .txt upload: pages split by form feeds, NULs inside
                path = folder / f"notes{n}.txt"
                pages = rng.randint(1, 4)
                path.write_text("\f".join(
                    f"Page {p} heading.\n\n{pdfs.sentence(n * 1000 + p)}\x00 {pdfs.sentence(n * 1000 + p + 500)}"
                    for p in range(1, pages + 1)
                ))
            else:
                path = folder / f"doc{n}.pdf"
                pages = rng.choice([1, 2, 3, 5, 8, 12, 40, 150])  # long ones: kills land mid-job
                texts = [
                    f"Page {p} heading.\n\n" + ("\x00 " if kind < 0.25 else "")
                    + " ".join(pdfs.sentence(n * 100_000 + p * 100 + s) for s in range(12))
                    for p in range(1, pages + 1)
                ]
                pdfs.write_pdf(path, texts)
            made.append(Doc(path.name, pages, path))
        return made

    def _enqueue_loop(self, rng: random.Random) -> None:
        killed_one = False
        while not self._stop.wait(rng.uniform(0.3, 2.5)):
            killed_one |= self._enqueue(rng, kill=not killed_one or rng.random() < 0.15)

    def _enqueue(self, rng: random.Random, kill: bool) -> bool:
        """One `enqueue` of new documents, by a random user at a random
        priority; with `kill`, kill -9 it halfway and repeat it. True if killed."""
        killed = False
        batch = self._new_docs(rng)
        if self.standin is not None:
            args = ["enqueue", "--from-supabase", "--json"]
            for doc in batch:
                # Storage keeps each user's files under their id: the row's owner
                storage_path = f"{rng.choice(self.owners)}/{uuid.uuid4()}/{doc.name}"
                self.standin.project.put_object("documents", storage_path, doc.path.read_bytes())
                doc.document_id = self.standin.project.add_document("pending", storage_path=storage_path)
                self.docs[doc.document_id] = doc
                self.by_storage_path[storage_path] = doc.document_id
        else:
            args = ["enqueue", str(batch[0].path.parent), "--json"]
            user = rng.choice(USERS)
            args += ["--user-id", user] if user else []
            for doc in batch:
                self.docs[str(doc.path)] = doc
        priority = rng.choice(PRIORITIES)
        args += ["--priority", priority] if priority else []
        self.report.by_priority[priority or "default"] += 1
        self.report.enqueues += 1
        proc = self._start("enqueue", args)
        if kill:
            time.sleep(rng.uniform(0.05, 0.8))
            if proc.popen.poll() is None:
                sigkill(proc.pid)
                self.report.enqueues_killed += 1
                killed = True
            proc.wait(30)
            if proc.popen.returncode != 0:  # as a user would: run it again
                proc = self._start("enqueue", args)
        code = proc.wait(120)
        if code == 0:
            self._note_enqueued(proc.output())
        elif code != 5 or self.standin is None:  # 5: Supabase is down; the next pull takes them
            self.report.violations.append(f"enqueue {proc.err_path.name} exited {code}")
        return killed

    def _note_enqueued(self, output: str) -> None:
        report = json.loads(output)
        for job in report["queued"] + report["duplicates"]:
            source = job["source"]
            if source.startswith("supabase://"):  # supabase://<bucket>/<storage path>
                key = self.by_storage_path.get(source.split("://", 1)[1].split("/", 1)[1])
            else:
                key = source
            if key is None or key not in self.docs:
                self.report.violations.append(f"enqueue printed a source the harness never made: {source}")
                continue
            self.expected.add(key)

    def _outage_loop(self, rng: random.Random) -> None:
        while not self._stop.wait(rng.uniform(1, 8)):
            self.standin.down()
            self.report.outages += 1
            length = rng.uniform(0.5, 6)
            self._stop.wait(length)
            self.report.outage_seconds += length
            self.standin.up()
        self.standin.up()
