"""What the service tests share: signature-like images made on the fly, a fresh database on the test
suite's embedded PostgreSQL, and the API running for real under uvicorn on a free local port."""
from __future__ import annotations

import io
import socket
import threading
import time

import numpy as np
import psycopg
from PIL import Image, ImageDraw


def signature_png(seed: int, size=(240, 120)) -> bytes:
    """A PNG of random dark strokes on white: a distinct image (and SHA-256) per seed."""
    rng = np.random.default_rng(seed)
    image = Image.new("L", size, 255)
    draw = ImageDraw.Draw(image)
    points = [(int(x), int(y)) for x, y in zip(rng.integers(10, size[0] - 10, 12), rng.integers(10, size[1] - 10, 12))]
    draw.line(points, fill=int(rng.integers(0, 80)), width=int(rng.integers(2, 5)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def fresh_database(server, name: str) -> str:
    """A new, empty database on the embedded server; its DSN."""
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.get_uri(database=name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """An ASGI app served by uvicorn in a thread, as `sigverify serve` serves it."""

    def __init__(self, app):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 30 s")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


class SocketForwarder:
    """127.0.0.1:port -> a Unix socket, one thread pair per connection: a process that cannot reach the socket's
    folder (another user; a container) talks to the test suite's PostgreSQL over TCP, as a container would."""

    def __init__(self, unix_path: str):
        self.unix_path = unix_path
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:  # closed
                return
            server = socket.socket(socket.AF_UNIX)
            server.connect(self.unix_path)
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, target), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
