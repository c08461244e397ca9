"""The README's two promises: `scripts/serve` serves, and its curl quick start works."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import httpx
from conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def _block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


async def test_serve_script_and_curl_quick_start(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "MCUSTT_PORT": str(port),
        "MCUSTT_DATABASE_URL": f"sqlite:///{tmp_path}/readme.db",
        "MCUSTT_RECOGNIZER_WORKERS": "1",
    }
    env.pop("MCUSTT_ADMIN_TOKEN", None)
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [str(ROOT / "scripts" / "serve")], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as c:
            for _ in range(600):
                assert proc.poll() is None, (tmp_path / "serve.log").read_text()
                try:
                    if (await c.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        printed = (tmp_path / "serve.log").read_text()
        assert "var/admin-token" in printed and "tenants create" in printed
        # the quick start, as written, with only the port changed
        (tmp_path / "var").mkdir()
        (tmp_path / "var" / "admin-token").write_text((ROOT / "var" / "admin-token").read_text())
        script = _block_after("## Quick start with curl").replace(
            "127.0.0.1:8000", f"127.0.0.1:{port}"
        )
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        docs = [
            json.loads(line)
            for line in out.stdout.replace("}{", "}\n{").splitlines()
            if line.strip()
        ]
        state, ended, summary = docs
        assert state["status"] == "live" and state["title"] == "Board call"
        assert ended["status"] == "ended"
        assert summary["status"] in {"pending", "ready"}
        session = json.loads((tmp_path / "session.json").read_text())
        assert session["ingestUrl"].startswith(f"ws://127.0.0.1:{port}/ws/stt?token=")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()
