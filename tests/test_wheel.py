"""The built wheel works without the checkout: installed into a fresh virtualenv it
migrates a database, serves the embed page, its assets and the OpenAPI document, and
ends an open SSE stream at once on SIGTERM (a drain, issue 13).

To stay fast the new virtualenv borrows the dependencies of the one running the tests
(a ``.pth`` line; that one's own ``.pth`` files, the editable install among them, are
not read), gets the wheel with ``--no-deps``, and every command runs outside the
checkout; the test checks that ``mcustt`` and its files are the installed ones.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import ADMIN, free_port

ROOT = Path(__file__).resolve().parent.parent


def run(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel built from this checkout installed in it."""
    work = tmp_path_factory.mktemp("wheel")
    dist = work / "dist"
    # pip builds it in an isolated environment with the backend of [build-system].
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, ROOT, cwd=work)
    (wheel,) = dist.glob("mcustt-*.whl")
    venv = work / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=work)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(run(python, "-c", purelib, cwd=work).strip())
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "borrowed-dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    pip: list[str | Path] = [sys.executable, "-m", "pip", "--python", python]
    run(
        *pip,
        "install",
        "-q",
        "--no-deps",
        "--no-index",
        "--disable-pip-version-check",
        wheel,
        cwd=work,
    )
    return venv


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MCUSTT_", "OPENAI_"))}
    base.pop("PYTHONPATH", None)
    base.pop("VIRTUAL_ENV", None)
    return base | {
        "MCUSTT_DATABASE_URL": f"sqlite:///{tmp_path}/wheel.db",
        "MCUSTT_ADMIN_TOKEN": ADMIN,
        "MCUSTT_RECOGNIZER": "null",
        "MCUSTT_LOG_LEVEL": "warning",
    }


def test_mcustt_and_its_files_come_from_the_wheel(venv: Path, tmp_path: Path) -> None:
    where = run(
        venv / "bin" / "python",
        "-c",
        "import json, mcustt, mcustt.resources as r;"
        "print(json.dumps([mcustt.__file__, str(r.WEB_DIR), str(r.ALEMBIC_DIR)]))",
        cwd=tmp_path,
    )
    package, web, migrations = (Path(p) for p in json.loads(where))
    for path in (package, web, migrations):
        assert path.resolve().is_relative_to(venv.resolve()), path
    assert {p.name for p in web.iterdir()} >= {
        "index.html",
        "embed.js",
        "embed.css",
        "try.html",
        "try.js",
        "try.css",
    }
    assert (migrations / "env.py").is_file() and any((migrations / "versions").glob("*.py"))


@pytest.fixture
def served(
    venv: Path, env: dict[str, str], tmp_path: Path
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``mcustt migrate`` then ``mcustt serve`` of the installed wheel, on a free port."""
    mcustt = venv / "bin" / "mcustt"
    assert "database at revision" in run(mcustt, "migrate", cwd=tmp_path, env=env)
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(mcustt), "serve", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def test_installed_wheel_migrates_and_serves(served: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = served
    with httpx.Client(base_url=url, timeout=10) as c:
        r = c.post(
            "/api/admin/tenants",
            json={"name": "Wheel"},
            headers={"authorization": f"Bearer {ADMIN}"},
        )
        assert r.status_code == 201, r.text
        r = c.post("/api/sessions", json={}, headers={"x-tenant-key": r.json()["apiKey"]})
        assert r.status_code == 201, r.text
        session = r.json()

        page = c.get(f"/embed/{session['sessionId']}")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.text == (ROOT / "web" / "embed" / "index.html").read_text()
        # The assets the page loads, wherever the app mounts them.
        assets = re.findall(r'(?:src|href)="(/[^"]+\.(?:js|css))"', page.text)
        assert {Path(a).name for a in assets} == {"embed.js", "embed.css"}
        for asset in assets:
            r = c.get(asset)
            assert r.status_code == 200, asset
            assert r.text == (ROOT / "web" / "embed" / Path(asset).name).read_text()
        # The try-it page ships too (issue 16).
        page = c.get("/try")
        assert page.status_code == 200
        assert page.text == (ROOT / "web" / "embed" / "try.html").read_text()
        assert c.get(next(a for a in assets if a.endswith(".js"))).headers["content-type"].split(
            ";"
        )[0] in ("text/javascript", "application/javascript")

        spec = c.get("/openapi.json")
        assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.")

        # Stopping: an open event stream must not hold the server for its 15 s grace.
        stream = f"/api/sessions/{session['sessionId']}/stream?t={session['embedToken']}"
        with c.stream("GET", stream) as r:
            lines = r.iter_lines()
            assert next(lines) == "event: ready"
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
            rest = list(lines)
            assert time.monotonic() - started < 5
        assert "event: error" in rest
        # SIGTERM drains the node (issue 13): viewers are told to resume elsewhere.
        assert any(line.startswith("data: ") and "NODE_DRAINING" in line for line in rest)
    # A drained node exits 0 (uvicorn alone would end the process with the signal).
    assert proc.wait(10) == 0
