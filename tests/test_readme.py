"""The README's promises: `scripts/serve` serves, and its quick starts (curl, the CLI and
the Python client) work as written."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
from conftest import FIXTURES, free_port, make_settings, new_tenant, run_server
from media import encode

ROOT = Path(__file__).resolve().parent.parent


def _blocks(heading: str, lang: str) -> list[str]:
    """The ``lang`` code blocks of the section under ``heading``."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    section = section[: section.find("\n## ", len(heading))]
    return re.findall(rf"```{lang}\n(.*?)```", section, re.S)


def _block_after(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None, f"no sh block after {heading!r}"
    return block.group(1)


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


async def test_cli_and_python_quick_start(sqlite_url: str, tmp_path: Path) -> None:
    """Both blocks of the CLI/Python quick start, as written, with the server's address,
    the interpreter of this run for `.venv/bin/mcustt`, and a real `meeting.mp3`."""
    demo, cli = _blocks("## Quick start with the CLI and the Python client", "sh")
    (python,) = _blocks("## Quick start with the CLI and the Python client", "python")
    assert demo.strip() == ".venv/bin/mcustt demo"  # run by tests/test_cli_client.py
    # A short meeting: the CLI streams it in real time, as a user would.
    encode(FIXTURES / "hello_en.wav", tmp_path / "meeting.mp3", "libmp3lame", 44100)
    settings = make_settings(sqlite_url, recognizer="scripted:ScriptedRecognizer")
    async with run_server(settings) as srv:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MCUSTT_")} | {
            "MCUSTT_DATABASE_URL": sqlite_url,
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }
        script = cli.replace("http://127.0.0.1:8000", srv.url).replace(
            ".venv/bin/mcustt", f"{sys.executable} -m mcustt"
        )
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            script,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 180)
        out = out_b.decode()
        assert proc.returncode == 0, err_b.decode() + out
        assert "1 final lines" in out  # stream: one final per utterance
        assert re.search(r"^1\n00:00:00,\d{3} --> ", out, re.M)  # transcript --format srt
        # The scripted recognizer numbers utterances per process: "utterance N".
        assert len(re.findall(r"utterance \d+", out)) >= 3  # stream, srt, tail
        assert "Summary" in out and "ownerSecret: " in out and "session " in out

        key = (await new_tenant(srv))["apiKey"]
        (tmp_path / "example.py").write_text(python)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "example.py",
            cwd=tmp_path,
            env=env | {"MCUSTT_URL": srv.url, "MCUSTT_TENANT_KEY": key},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out_b, err_b = await asyncio.wait_for(proc.communicate(), 120)
        out = out_b.decode()
        assert proc.returncode == 0, err_b.decode() + out
        assert re.search(r"^1 utterance \d+$", out, re.M)  # producer.finals
        assert re.search(r"^viewer: 1 utterance \d+$", out, re.M)
        assert re.search(r"^1\n00:00:00,\d{3} --> ", out, re.M)  # the srt
        assert out.strip().splitlines()[-1].startswith("utterance")  # the tldr
