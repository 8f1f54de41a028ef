"""The Docker image as far as a machine without a Docker engine allows: its build context holds what the
Dockerfile copies and leaves out the environment and run outputs; its command line, run outside Docker as
the image's user (uid 1000), serves a model folder exported by root from a read-only copy and answers its
health check's URL; without DATABASE_URL it stops at once, saying why."""
from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import httpx
import pytest

from sigverify.serving.client import wait_ready

from service_helpers import SocketForwarder, free_port, fresh_database
from test_service import postgres  # noqa: F401  (the session's database server)

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
IMAGE_USER = 1000  # the Dockerfile's `useradd --uid 1000`


def container_command() -> list[str]:
    """The image's CMD, as the exec-form JSON array it is written in."""
    return json.loads(re.search(r"^CMD (\[.*\])$", DOCKERFILE, re.M).group(1))


def dockerignore_excludes(path: str, rules: str | None = None) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out of the build context, by .dockerignore's
    rules: Go's filepath.Match (``*`` and ``?`` stop at ``/``) plus ``**``; a pattern that matches a folder
    leaves out what is under it; ``!`` takes a path back in; the last matching line decides."""
    excluded = False
    for line in (rules if rules is not None else (ROOT / ".dockerignore").read_text()).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        regex = "".join(".*" if part == "**" else "[^/]*" if part == "*" else "[^/]" if part == "?" else re.escape(part)
                        for part in re.split(r"(\*\*|\*|\?)", pattern))
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not keep
    return excluded


def test_the_build_context_holds_what_the_dockerfile_copies():
    copied = [source for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M) for source in line.split()[:-1]]
    assert copied and all((ROOT / source).exists() for source in copied), copied
    # every tracked file under a copied path reaches the build (the service's page and templates included)
    tracked = subprocess.run(["git", "ls-files", *copied], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    assert "sigverify/serving/static/index.html" in tracked and "sigverify/serving/templates/model_card.md" in tracked
    assert [path for path in tracked if dockerignore_excludes(path)] == []
    # gigabytes the build must not send: the environment, runs, models, the history
    for heavy in (".venv/bin/python", "runs/demo/checkpoints/last.ckpt", "sweeps/x/y.ckpt", "models/demo/model.onnx",
                  ".git/HEAD", "sigverify/__pycache__/cli.cpython-311.pyc", "sigverify.egg-info/PKG-INFO"):
        assert dockerignore_excludes(heavy), heavy
    assert f"--uid {IMAGE_USER}" in DOCKERFILE and "/readyz" in re.search(r"HEALTHCHECK(.|\n)*?\n(?!\s)", DOCKERFILE).group(0)


@pytest.mark.parametrize("lines, path, excluded", [
    ("runs", "runs/a/b.ckpt", True), ("runs", "docs/runs/x", False), ("*.egg-info", "a/b.egg-info/x", False),
    ("**/__pycache__", "a/b/__pycache__/c.pyc", True), ("sigverify\n!sigverify/cli.py", "sigverify/cli.py", False),
    ("sigverify/serving/static", "sigverify/serving/static/index.html", True)])
def test_the_dockerignore_reading_follows_dockers_rules(lines, path, excluded):
    assert dockerignore_excludes(path, lines) is excluded


def test_the_container_refuses_to_start_without_a_database_url(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(container_command(), env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "set DATABASE_URL" in done.stderr


def open_to_traverse(path: Path) -> None:
    """Let other users reach ``path`` (x on every folder above it), as a container reaches its mounts."""
    for folder in (path, *path.parents):
        if folder == Path("/"):
            break
        folder.chmod(folder.stat().st_mode | stat.S_IXOTH)


def test_the_containers_command_serves_a_model_exported_by_another_user(served_model, serving_install, postgres,  # noqa: F811
                                                                        tmp_path):
    """The image's CMD with the serving install (the image's own: `pip install ".[serve]"`), run as uid 1000 on
    a read-only copy of a model folder exported by root (modes kept: export's own)."""
    if os.geteuid() != 0:
        pytest.skip("running a process as the image's uid 1000 needs root (CI runs as root)")
    model = tmp_path / "mount" / "model"
    shutil.copytree(served_model[3], model)  # copy2 keeps the modes export wrote
    for path in (*model.iterdir(), model):
        path.chmod(path.stat().st_mode & ~0o222)  # mounted read-only
    open_to_traverse(model.parent)
    open_to_traverse(serving_install)
    port = free_port()
    command = [part.replace("--model /model", f"--model {model}").replace("--port 8000", f"--port {port}")
               for part in container_command()]
    home = tmp_path / "home"
    home.mkdir()
    os.chown(home, IMAGE_USER, IMAGE_USER)
    fresh_database(postgres, "docker")
    database = SocketForwarder(str(postgres.get_postmaster_info().socket_dir / ".s.PGSQL.5432"))
    env = {"PATH": f"{serving_install / 'bin'}:/usr/bin:/bin", "HOME": str(home), "SIGVERIFY_API_KEY": "k",
           "DATABASE_URL": f"postgresql://postgres@127.0.0.1:{database.port}/docker"}  # over TCP, as from a container
    process = subprocess.Popen(command, env=env, cwd=home, user=IMAGE_USER, group=IMAGE_USER,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        ready, model_info = httpx.get(f"{url}/readyz"), httpx.get(f"{url}/model")
    except RuntimeError as err:  # it stopped before it was ready: its output says why
        ready = model_info = err
    finally:
        process.terminate()
        output = process.communicate(timeout=60)[0]
        database.close()
    assert not isinstance(ready, Exception) and ready.json()["status"] == "ready", output[-3000:]
    assert model_info.json()["threshold"]["value"] == json.loads((model / "config.json").read_text())["threshold"]["value"]
