"""The client commands of ``mcustt`` as a user runs them: subprocesses with
MCUSTT_URL / MCUSTT_TENANT_KEY against a real server, and ``mcustt demo`` end to end."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import srt
import webvtt
from conftest import FIXTURES, free_port, make_settings, new_tenant, run_server


@dataclass
class Result:
    code: int
    out: str
    err: str


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCUSTT_")}
    return env | {"COLUMNS": "200", "NO_COLOR": "1"} | extra


async def mcustt(env: dict[str, str], *args: str, cwd: Path | None = None) -> Result:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcustt",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=180)
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


async def test_stream_tail_transcript_summary_and_sessions(sqlite_url: str) -> None:
    settings = make_settings(sqlite_url, recognizer="scripted:ScriptedRecognizer")
    async with run_server(settings) as srv:
        key = (await new_tenant(srv))["apiKey"]
        env = _env(MCUSTT_URL=srv.url, MCUSTT_TENANT_KEY=key)

        # stream (real time, so tail joins while it is live) and tail it.
        streaming = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mcustt",
            "stream",
            str(FIXTURES / "hello_en.wav"),
            "--title",
            "Weekly",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert streaming.stdout is not None
        first = b"".join(
            [await asyncio.wait_for(streaming.stdout.readline(), 30) for _ in range(2)]
        ).decode()
        started = re.search(r"session (\w+)", first)
        assert started is not None, first
        sid = started.group(1)
        assert f"/embed/{sid}#t=" in first
        tailed = await mcustt(env, "tail", sid, "--json")
        rest, err = await asyncio.wait_for(streaming.communicate(), 60)
        assert streaming.returncode == 0, err.decode()
        printed = first + rest.decode()
        assert "utterance" in printed and f"session {sid} ended" in printed

        assert tailed.code == 0, tailed.err
        events = [json.loads(line) for line in tailed.out.splitlines()]
        finals = [e for e in events if e["type"] == "transcript" and e["isFinal"]]
        assert [e["seq"] for e in finals] == [1] and events[-1]["type"] == "session-end"
        again = await mcustt(env, "tail", sid)  # ended: replays, then stops
        assert again.code == 0 and finals[0]["text"] in again.out
        assert "ended (1 final lines)" in again.out

        # transcript in every format, parsed by subtitle libraries.
        as_srt = await mcustt(env, "transcript", sid, "--format", "srt")
        subs = list(srt.parse(as_srt.out))
        # (issue 17: cues wrap and cut the words of a final; the words are all there)
        assert " ".join(s.content for s in subs).split() == finals[0]["text"].split()
        assert subs[0].start < subs[0].end
        as_vtt = await mcustt(env, "transcript", sid, "--format", "vtt")
        vtt_text = " ".join(c.text for c in webvtt.from_string(as_vtt.out).captions)
        assert vtt_text.split() == finals[0]["text"].split()
        as_json = json.loads((await mcustt(env, "transcript", sid, "--format", "json")).out)
        assert as_json["lines"][0]["seq"] == 1
        as_txt = await mcustt(env, "transcript", sid)
        assert as_txt.out == finals[0]["text"] + "\n"

        summary = await mcustt(env, "summary", sid, "--wait", "--json")
        assert summary.code == 0 and json.loads(summary.out)["status"] == "ready"
        plain = await mcustt(env, "summary", sid, "--wait")
        assert plain.out.startswith("Summary")

        # sessions create / show / list / end
        created = await mcustt(env, "sessions", "create", "--title", "Board", "--json")
        doc = json.loads(created.out)
        assert set(doc) >= {"sessionId", "ingestUrl", "embedUrl", "ownerSecret"}
        shown = await mcustt(env, "sessions", "show", doc["sessionId"])
        assert re.search(r"^status\s+\"live\"$", shown.out, re.M), shown.out
        listed = json.loads((await mcustt(env, "sessions", "list", "--json")).out)
        assert {r["sessionId"] for r in listed} == {sid, doc["sessionId"]}
        ended = await mcustt(
            env, "sessions", "end", doc["sessionId"], "--owner-secret", doc["ownerSecret"]
        )
        assert ended.code == 0 and "ended" in ended.out

        # Errors are one line with the envelope's code; a missing key is a usage error.
        missing = await mcustt(env, "sessions", "show", "nosuchsess")
        assert missing.code == 1 and "SESSION_NOT_FOUND" in missing.err
        assert "Traceback" not in missing.err
        no_key = await mcustt(_env(MCUSTT_URL=srv.url), "sessions", "list")
        assert no_key.code == 2 and "MCUSTT_TENANT_KEY" in no_key.err
    down = await mcustt(env, "sessions", "list")  # the server is gone
    assert down.code == 1 and "cannot reach the server" in down.err


@pytest.mark.slow
async def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`mcustt demo --exit` in an empty folder: migrates ./var, serves, provisions, streams
    the bundled standup through sphinx, prints captions, transcript and summary."""
    port = free_port()
    env = _env()
    result = await mcustt(env, "demo", "--exit", "--fast", "--port", str(port), cwd=tmp_path)
    assert result.code == 0, result.err + result.out
    out = result.out
    for heading in ("live captions", "transcript", "summary", "try it yourself"):
        assert heading in out
    words = re.findall(r"[\w']+", out.lower())
    assert "friday" in words and "migration" in words
    assert f"http://127.0.0.1:{port}/embed/" in out and "#t=" in out
    assert "Summary" in out
    assert (tmp_path / "var" / "mcustt.db").exists()
    key_file = tmp_path / "var" / "demo-tenant-key"
    assert key_file.read_text().strip() in out  # the export line shows the key
    assert key_file.stat().st_mode & 0o077 == 0
