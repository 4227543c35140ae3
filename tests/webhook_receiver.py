"""A stand-in for the app that receives status webhooks: a real HTTP server
on 127.0.0.1 that records every request it answers, and can be told to
answer errors or to stop listening (connections refused), on the same port."""

from __future__ import annotations

import dataclasses
import json
import threading

from standin_server import Listener, QuietHandler, Served


@dataclasses.dataclass(frozen=True)
class Call:
    headers: dict  # names lower-cased
    body: bytes  # raw, as signed
    answered: int

    def json(self) -> dict:
        return json.loads(self.body)


class Receiver(Served):
    def __init__(self):
        self.calls: list[Call] = []
        self._answers: list[int] = []  # statuses to answer next, then 204
        self._lock = threading.Lock()
        self.listener = Listener(self._handler())
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/docutrain?source=test"

    def answer(self, status: int, times: int = 1) -> None:
        with self._lock:
            self._answers += [status] * times

    def delivered(self) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if 200 <= c.answered < 300]

    def _handler(self) -> type[QuietHandler]:
        receiver = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.read_body()
                with receiver._lock:
                    status = receiver._answers.pop(0) if receiver._answers else 204
                    receiver.calls.append(Call({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                # One request per connection, so down() really cuts the app off.
                self.send_header("Connection", "close")
                self.close_connection = True
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
