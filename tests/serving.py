"""Running `docutrain serve` for tests: in a thread of this process (fast;
routes, auth, errors) or as a real `docutrain serve` subprocess (kill -9,
a runner next to it). Both listen on 127.0.0.1, port 0."""

from __future__ import annotations

import subprocess
import threading
import time

import httpx

TOKEN = "test-serve-token-0123456789"


def with_supabase(standin) -> dict:
    """Settings that configure Supabase (the stand-in): serve refuses a
    Storage path at the door when the job could not download it."""
    return {"supabase_url": standin.url, "supabase_service_role_key": standin.key}


class ServeThread:
    """uvicorn serving create_app(settings) in a thread."""

    def __init__(self, settings, options=None):
        import uvicorn

        from docutrain_cli.serve import ServeOptions, create_app
        from docutrain_cli.serve.server import bind, uvicorn_config

        self.app = create_app(settings, options or ServeOptions())
        sock = bind("127.0.0.1", 0)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn_config(self.app, settings))  # the limits `serve` runs with
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > end or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)

    def client(self, token: str | None = TOKEN, **kwargs) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(20)


def start_serve_process(docutrain, *args: str, **env: str) -> tuple[subprocess.Popen, str]:
    """`docutrain serve --port 0` as a subprocess; returns it and its base URL."""
    proc = docutrain.start("serve", "--port", "0", *args, **env)
    line = proc.stderr.readline()
    if "listening on http://" not in line:
        proc.kill()
        raise AssertionError(f"serve did not start: {line}{proc.stderr.read()}")
    return proc, "http://" + line.split("listening on http://", 1)[1].split()[0]
