"""A hearthlm.serve app run by uvicorn on 127.0.0.1 on a free port: in a background
thread (serve), or as `hearthlm serve` in a child process (serve_process)."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import httpx
import uvicorn


class RunningServer:
    def __init__(self, app, port: int):
        self.app, self.port = app, port
        self.url = f"http://127.0.0.1:{port}"
        self.state = app.state.hearthlm

    @property
    def scheduler(self):
        return self.state.scheduler

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """True once no slot is busy and nothing is queued."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            s = self.scheduler
            if s.busy_slots == 0 and s.queue_depth == 0:
                return True
            time.sleep(0.01)
        return False


@contextlib.contextmanager
def serve(app, ready: bool = True, timeout: float = 60.0):
    """Run `app`; with ready, wait until /health answers 200."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    running = RunningServer(app, sock.getsockname()[1])
    try:
        end = time.monotonic() + timeout
        while not server.started:
            assert thread.is_alive() and time.monotonic() < end, "uvicorn did not start"
            time.sleep(0.01)
        while ready and httpx.get(running.url + "/health").status_code != 200:
            assert time.monotonic() < end, "the model did not load"
            time.sleep(0.02)
        yield running
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def slow_steps(scheduler, seconds: float, batches: list | None = None):
    """Make every scheduler step take at least `seconds` (so a test can act mid-stream),
    recording each step's batch size in `batches`."""
    forward = scheduler._forward_step

    def slowed(batch, *rest):
        if batches is not None:
            batches.append(len(batch))
        time.sleep(seconds)
        return forward(batch, *rest)

    scheduler._forward_step = slowed
    return lambda: vars(scheduler).pop("_forward_step", None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def serve_process(*args: str, env=None, timeout: float = 120.0):
    """`hearthlm serve ARGS --port P` in a child process; -> (url, process) once /health is 200."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hearthlm", "serve", *args, "--port", str(port),
                             "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, "hearthlm serve exited"
            assert time.monotonic() < end, "hearthlm serve did not become ready"
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)
