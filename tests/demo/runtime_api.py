"""A small Lambda Runtime API, enough to drive a real `bootstrap` binary the way Lambda does.

The binary is started with AWS_LAMBDA_RUNTIME_API pointing here; it polls
/2018-06-01/runtime/invocation/next, gets one event at a time, and posts a response or an error.
Init time is measured as Lambda does: from process start to its first poll for work.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"


class Invocation:
    def __init__(self, payload: Any) -> None:
        self.id = str(uuid.uuid4())
        self.payload = payload
        self.done = threading.Event()
        self.response: Any = None
        self.error: Any = None


class RuntimeApi:
    def __init__(self) -> None:
        self.pending: "queue.Queue[Invocation]" = queue.Queue()
        self.inflight: dict[str, Invocation] = {}
        self.first_poll: float | None = None
        self.init_error: Any = None
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, code: int, body: bytes = b"{}", headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    return self.reply(404)
                if api.first_poll is None:
                    api.first_poll = time.monotonic()
                inv = api.pending.get()
                api.inflight[inv.id] = inv
                self.reply(
                    200,
                    json.dumps(inv.payload).encode(),
                    {
                        "Content-Type": "application/json",
                        "Lambda-Runtime-Aws-Request-Id": inv.id,
                        "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 60_000),
                        "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:local",
                        "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000",
                    },
                )

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                data = json.loads(body) if body else None
                if self.path == f"{PREFIX}/init/error":
                    api.init_error = data
                    return self.reply(202)
                parts = self.path[len(PREFIX) :].strip("/").split("/")
                if len(parts) == 3 and parts[0] == "invocation":
                    inv = api.inflight.pop(parts[1], None)
                    if inv:
                        if parts[2] == "response":
                            inv.response = data
                        else:
                            inv.error = data
                        inv.done.set()
                    return self.reply(202)
                self.reply(404)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"


class Function:
    """A bootstrap binary running against its own Runtime API."""

    def __init__(self, name: str, binary: str, env: dict[str, str], log_path: str | None = None) -> None:
        self.name = name
        self.api = RuntimeApi()
        self.log = open(log_path, "w") if log_path else subprocess.DEVNULL
        full_env = {
            "PATH": os.environ.get("PATH", ""),
            "AWS_LAMBDA_RUNTIME_API": self.api.address,
            "AWS_LAMBDA_FUNCTION_NAME": name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_LOG_FORMAT": "JSON",
            **env,
        }
        self.started = time.monotonic()
        self.process = subprocess.Popen([binary], env=full_env, stdout=self.log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 10.0) -> float:
        """Seconds from process start to the first poll for work (the init duration)."""
        deadline = time.monotonic() + timeout
        while self.api.first_poll is None:
            if self.api.init_error is not None:
                raise RuntimeError(f"{self.name} failed to init: {self.api.init_error}")
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited during init with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} did not poll for work within {timeout}s")
            time.sleep(0.0005)
        return self.api.first_poll - self.started

    def invoke(self, payload: Any, timeout: float = 900.0) -> tuple[Any, Any]:
        """(response, error) of one invocation."""
        inv = Invocation(payload)
        self.api.pending.put(inv)
        if not inv.done.wait(timeout):
            raise TimeoutError(f"{self.name} did not answer within {timeout}s")
        return inv.response, inv.error

    def peak_rss_mb(self) -> float:
        with open(f"/proc/{self.process.pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
        return float("nan")

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()
        self.api.server.shutdown()
