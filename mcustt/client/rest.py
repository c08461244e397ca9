"""The REST client: every endpoint of the server as a typed coroutine.

Answers are the TypedDicts of :mod:`mcustt.wire` (the server builds the same ones); an
error answer raises the :class:`~mcustt.client.errors.MCUSTTClientError` subclass of its
status, carrying the envelope's ``code``. :meth:`Client.producer` and
:meth:`Client.viewer` open the session's sockets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NotRequired, TypedDict, cast, overload
from urllib.parse import quote

import httpx

from mcustt import wire
from mcustt.client.errors import ClientCode, MCUSTTClientError, error_from
from mcustt.client.producer import Producer
from mcustt.client.sockets import EventCallback
from mcustt.client.viewer import Viewer

__all__ = ["DEFAULT_URL", "Client", "Format", "Subtitle"]

DEFAULT_URL = "http://127.0.0.1:8000"

Format = Literal["json", "srt", "vtt", "txt"]


class Subtitle(TypedDict):
    """One subtitle of a batch (``wire.Subtitle`` is the server's pydantic model of it)."""

    text: str
    ts: NotRequired[float]
    speaker: NotRequired[str]


class Client:
    """REST client. Use as ``async with Client(...) as client`` (or call :meth:`aclose`).

    ``tenant_key`` authorizes tenant operations; ``admin_token`` the admin ones.
    Operations on one session also accept a read token (``token=``) or the owner
    secret (``owner_secret=``) where the server does. ``http`` lets the caller bring
    its own ``httpx.AsyncClient`` (with ``base_url`` set; it is not closed here).
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        tenant_key: str | None = None,
        admin_token: str | None = None,
        *,
        timeout: float = 30.0,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.tenant_key = tenant_key
        self.admin_token = admin_token
        self._own_http = http is None
        self.http = http or httpx.AsyncClient(base_url=self.base_url, timeout=timeout)
        self._timeout = timeout
        #: clients of other nodes a producer fails over to, by base URL (closed with this)
        self._nodes: dict[str, Client] = {}

    @property
    def ws_url(self) -> str:
        """The base URL with ws/wss: sockets go where REST goes, whatever public URL the
        server believes it has (a proxy or port mapping may differ)."""
        if self.base_url.startswith("https://"):
            return "wss://" + self.base_url[len("https://") :]
        return "ws://" + self.base_url.removeprefix("http://")

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for node in self._nodes.values():
            await node.aclose()
        self._nodes.clear()
        if self._own_http:
            await self.http.aclose()

    def node(self, base_url: str) -> Client:
        """This client's credentials on another node of the same deployment."""
        url = base_url.rstrip("/")
        if url == self.base_url:
            return self
        if url not in self._nodes:
            self._nodes[url] = Client(url, self.tenant_key, self.admin_token, timeout=self._timeout)
        return self._nodes[url]

    # -- plumbing --

    def _auth(self, kind: Literal["tenant", "admin"]) -> dict[str, str]:
        if kind == "admin":
            if not self.admin_token:
                raise ValueError("this operation needs admin_token")
            return {"authorization": f"Bearer {self.admin_token}"}
        if not self.tenant_key:
            raise ValueError("this operation needs tenant_key")
        return {"x-tenant-key": self.tenant_key}

    def _session_auth(
        self, *, token: str | None = None, owner_secret: str | None = None
    ) -> tuple[dict[str, str], dict[str, Any] | None]:
        """Headers and body for an operation on one session: an explicit read token or
        owner secret wins, else the tenant key."""
        if owner_secret:
            return {}, {"ownerSecret": owner_secret}
        if token:
            return {"authorization": f"Bearer {token}"}, None
        return self._auth("tenant"), None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        json_body: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        response = await self.http.request(
            method, path, headers=headers, json=json_body, params=params
        )
        if response.status_code >= 400:
            raise error_from(response.status_code, response.content, response.headers)
        return response

    async def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return (await self._request(method, path, **kwargs)).json()

    def tenant_headers(self) -> dict[str, str]:
        """The headers that authorize as the tenant (the zero-ceremony ingest socket)."""
        return self._auth("tenant")

    # -- admin: tenants --

    async def create_tenant(
        self,
        name: str,
        *,
        max_sessions: int | None = None,
        daily_minutes_cap: int | None = None,
        brand: dict[str, str | None] | None = None,
        allowed_origins: list[str] | None = None,
    ) -> wire.TenantWithKey:
        """Create a tenant (admin). The returned ``apiKey`` is shown only this once."""
        body: dict[str, Any] = {"name": name}
        for key, value in (
            ("maxSessions", max_sessions),
            ("dailyMinutesCap", daily_minutes_cap),
            ("brand", brand),
            ("allowedOrigins", allowed_origins),
        ):
            if value is not None:
                body[key] = value
        doc = await self._json(
            "POST", "/api/admin/tenants", headers=self._auth("admin"), json_body=body
        )
        return cast(wire.TenantWithKey, doc)

    async def list_tenants(self) -> list[wire.Tenant]:
        doc = await self._json("GET", "/api/admin/tenants", headers=self._auth("admin"))
        return cast(list[wire.Tenant], doc["tenants"])

    async def get_tenant(self, tenant_id: str) -> wire.Tenant:
        path = f"/api/admin/tenants/{tenant_id}"
        return cast(wire.Tenant, await self._json("GET", path, headers=self._auth("admin")))

    async def update_tenant(
        self,
        tenant_id: str,
        *,
        name: str | None = None,
        max_sessions: int | None = None,
        daily_minutes_cap: int | None = None,
        brand: dict[str, str | None] | None = None,
        allowed_origins: list[str] | None = None,
        disabled: bool | None = None,
    ) -> wire.Tenant:
        """Change the given fields (admin); ``None`` leaves a field as it is."""
        body = {
            key: value
            for key, value in (
                ("name", name),
                ("maxSessions", max_sessions),
                ("dailyMinutesCap", daily_minutes_cap),
                ("brand", brand),
                ("allowedOrigins", allowed_origins),
                ("disabled", disabled),
            )
            if value is not None
        }
        path = f"/api/admin/tenants/{tenant_id}"
        doc = await self._json("PATCH", path, headers=self._auth("admin"), json_body=body)
        return cast(wire.Tenant, doc)

    async def rotate_key(self, tenant_id: str) -> wire.TenantWithKey:
        """A new API key for the tenant (admin); the old one stops working at once."""
        path = f"/api/admin/tenants/{tenant_id}/rotate-key"
        return cast(wire.TenantWithKey, await self._json("POST", path, headers=self._auth("admin")))

    async def disable_tenant(self, tenant_id: str) -> wire.Tenant:
        path = f"/api/admin/tenants/{tenant_id}/disable"
        return cast(wire.Tenant, await self._json("POST", path, headers=self._auth("admin")))

    # -- sessions --

    async def create_session(
        self,
        *,
        title: str | None = None,
        source_lang: str | None = None,
        auto_detect: bool = True,
    ) -> wire.SessionCreated:
        """A live session: ids, tokens, URLs and the owner secret (shown once)."""
        body: dict[str, Any] = {"autoDetect": auto_detect}
        if title is not None:
            body["title"] = title
        if source_lang is not None:
            body["sourceLang"] = source_lang
        doc = await self._json(
            "POST", "/api/sessions", headers=self._auth("tenant"), json_body=body
        )
        return cast(wire.SessionCreated, doc)

    async def list_sessions(
        self, status: wire.SessionStatus | None = None
    ) -> list[wire.SessionListItem]:
        params = {"status": status} if status else None
        doc = await self._json("GET", "/api/sessions", headers=self._auth("tenant"), params=params)
        return cast(list[wire.SessionListItem], doc["sessions"])

    async def get_session(self, session_id: str, *, token: str | None = None) -> wire.SessionState:
        headers, _ = self._session_auth(token=token)
        doc = await self._json("GET", f"/api/sessions/{session_id}", headers=headers)
        return cast(wire.SessionState, doc)

    async def end_session(
        self, session_id: str, *, owner_secret: str | None = None
    ) -> wire.SessionState:
        """End the session (idempotent); the summary is then generated."""
        headers, body = self._session_auth(owner_secret=owner_secret)
        doc = await self._json(
            "DELETE", f"/api/sessions/{session_id}", headers=headers, json_body=body
        )
        return cast(wire.SessionState, doc)

    async def embed_token(
        self, session_id: str, *, owner_secret: str | None = None
    ) -> wire.ReadTokens:
        """Fresh read-only embed and subscribe tokens (tenant key or owner secret)."""
        headers, body = self._session_auth(owner_secret=owner_secret)
        path = f"/api/sessions/{session_id}/embed-token"
        doc = await self._json("POST", path, headers=headers, json_body=body or {})
        return cast(wire.ReadTokens, doc)

    async def ingest_token(self, session_id: str, owner_secret: str) -> wire.IngestToken:
        """A fresh single-use ingest token (owner secret only), replacing an unused one."""
        path = f"/api/sessions/{session_id}/ingest-token"
        doc = await self._json("POST", path, json_body={"ownerSecret": owner_secret})
        return cast(wire.IngestToken, doc)

    # -- transcript and summary --

    @overload
    async def transcript(
        self, session_id: str, format: Literal["json"] = "json", *, token: str | None = None
    ) -> wire.Transcript: ...

    @overload
    async def transcript(
        self, session_id: str, format: Literal["srt", "vtt", "txt"], *, token: str | None = None
    ) -> str: ...

    async def transcript(
        self, session_id: str, format: Format = "json", *, token: str | None = None
    ) -> wire.Transcript | str:
        """The transcript: a :class:`wire.Transcript` for ``json``, else the file's text."""
        headers, _ = self._session_auth(token=token)
        response = await self._request(
            "GET",
            f"/api/sessions/{session_id}/transcript",
            headers=headers,
            params={"format": format},
        )
        if format == "json":
            return cast(wire.Transcript, response.json())
        return response.text

    async def summary(
        self,
        session_id: str,
        *,
        wait: bool = False,
        max_wait: float = 120.0,
        poll_interval: float = 0.5,
        token: str | None = None,
    ) -> wire.Summary | wire.SummaryPending:
        """The summary document. With ``wait``, poll until it is ``ready`` or ``failed``
        (``TimeoutError`` after ``max_wait`` s; a live session's summary stays pending)."""
        headers, _ = self._session_auth(token=token)
        path = f"/api/sessions/{session_id}/summary"
        deadline = time.monotonic() + max_wait
        while True:
            doc = cast(
                wire.Summary | wire.SummaryPending, await self._json("GET", path, headers=headers)
            )
            if not wait or doc["status"] in ("ready", "failed"):
                return doc
            if time.monotonic() + poll_interval > deadline:
                raise TimeoutError(f"summary of {session_id} still {doc['status']}")
            await asyncio.sleep(poll_interval)

    async def summarize(
        self,
        session_id: str,
        *,
        from_seq: int | None = None,
        to_seq: int | None = None,
        owner_secret: str | None = None,
    ) -> wire.SummarizeAccepted:
        """Force (re)generation of the summary, optionally of a seq window."""
        headers, body = self._session_auth(owner_secret=owner_secret)
        payload: dict[str, Any] = dict(body or {})
        if from_seq is not None:
            payload["fromSeq"] = from_seq
        if to_seq is not None:
            payload["toSeq"] = to_seq
        path = f"/api/sessions/{session_id}/summarize"
        doc = await self._json("POST", path, headers=headers, json_body=payload)
        return cast(wire.SummarizeAccepted, doc)

    # -- speaker names (issue 14) --

    async def speakers(self, session_id: str, *, token: str | None = None) -> wire.SpeakerList:
        """The session's named speakers (tenant key or a read token)."""
        headers, _ = self._session_auth(token=token)
        doc = await self._json("GET", f"/api/sessions/{session_id}/speakers", headers=headers)
        return cast(wire.SpeakerList, doc)

    async def name_speaker(
        self, session_id: str, speaker_id: str, name: str, *, owner_secret: str | None = None
    ) -> wire.Speaker:
        """Set or change a participant's display name (live or after the end): viewers
        get a ``speaker`` event, exports and summaries use the name."""
        headers, body = self._session_auth(owner_secret=owner_secret)
        path = f"/api/sessions/{session_id}/speakers/{quote(speaker_id, safe='')}"
        doc = await self._json(
            "PUT", path, headers=headers, json_body={**(body or {}), "name": name}
        )
        return cast(wire.Speaker, doc)

    # -- corrections (issue 16) --

    async def line(self, session_id: str, seq: int, *, token: str | None = None) -> wire.LineDetail:
        """One transcript line: its current text, the original and every correction."""
        headers, _ = self._session_auth(token=token)
        doc = await self._json("GET", f"/api/sessions/{session_id}/lines/{seq}", headers=headers)
        return cast(wire.LineDetail, doc)

    async def revise_line(
        self, session_id: str, seq: int, text: str, *, owner_secret: str | None = None
    ) -> wire.LineDetail:
        """Correct final ``seq``: viewers get it live, exports and summaries use it."""
        headers, body = self._session_auth(owner_secret=owner_secret)
        path = f"/api/sessions/{session_id}/lines/{seq}"
        payload: dict[str, Any] = {**(body or {}), "text": text}
        doc = await self._json("PATCH", path, headers=headers, json_body=payload)
        return cast(wire.LineDetail, doc)

    # -- batch --

    async def transcribe_summary(
        self,
        *,
        subtitles: Iterable[Subtitle] | None = None,
        text: str | None = None,
        source_lang: str | None = None,
        want: Iterable[wire.Want] = ("summary",),
        idempotency_key: str | None = None,
        wait: bool = False,
        max_wait: float = 300.0,
    ) -> wire.BatchResult | wire.JobAccepted:
        """Summarize subtitles or text. Small inputs answer inline (:class:`wire.BatchResult`);
        large ones (or keyed ones still running) answer a :class:`wire.JobAccepted`. With
        ``wait``, a job is polled and its result returned, so the answer is always a
        :class:`wire.BatchResult`."""
        body: dict[str, Any] = {"want": list(want)}
        if subtitles is not None:
            body["subtitles"] = list(subtitles)
        if text is not None:
            body["text"] = text
        if source_lang is not None:
            body["sourceLang"] = source_lang
        headers = self._auth("tenant")
        if idempotency_key is not None:
            headers["idempotency-key"] = idempotency_key
        response = await self._request(
            "POST", "/api/transcribe-summary", headers=headers, json_body=body
        )
        doc = response.json()
        if response.status_code != 202:
            return cast(wire.BatchResult, doc)
        accepted = cast(wire.JobAccepted, doc)
        if not wait:
            return accepted
        job = await self.wait_job(accepted["jobId"], max_wait=max_wait)
        if job["status"] != "ready" or job["result"] is None:
            raise MCUSTTClientError(0, ClientCode.JOB_FAILED, job["error"] or "the job failed")
        return cast(wire.BatchResult, job["result"])

    async def job(self, job_id: str) -> wire.Job:
        doc = await self._json("GET", f"/api/jobs/{job_id}", headers=self._auth("tenant"))
        return cast(wire.Job, doc)

    async def wait_job(
        self, job_id: str, *, max_wait: float = 300.0, poll_interval: float = 0.5
    ) -> wire.Job:
        """Poll a job until it is ``ready`` or ``failed``."""
        deadline = time.monotonic() + max_wait
        while True:
            job = await self.job(job_id)
            if job["status"] in ("ready", "failed"):
                return job
            if time.monotonic() + poll_interval > deadline:
                raise TimeoutError(f"job {job_id} still {job['status']}")
            await asyncio.sleep(poll_interval)

    # -- streaming --

    def producer(
        self,
        session: wire.SessionCreated | None = None,
        *,
        realtime: bool = True,
        on_event: EventCallback | None = None,
        source_lang: str | None = None,
        auto_detect: bool | None = None,
        title: str | None = None,
        failover: Sequence[str] = (),
    ) -> Producer:
        """A producer for ``session`` (from :meth:`create_session`), or without one a
        zero-ceremony producer whose socket creates its own session with the tenant key
        (``source_lang``, ``auto_detect`` and ``title`` apply to that session).
        ``failover``: base URLs of the deployment's other nodes; when this node goes
        away the producer continues the session on the next one."""
        return Producer(
            self,
            session,
            realtime=realtime,
            on_event=on_event,
            source_lang=source_lang,
            auto_detect=auto_detect,
            title=title,
            failover=[self.node(url) for url in failover if url.rstrip("/") != self.base_url],
        )

    def viewer(
        self, session_id: str, *, token: str | None = None, last_seq: int | None = 0
    ) -> Viewer:
        """A viewer of the session's events. Without ``token`` one is minted with the
        tenant key (and re-minted if it expires). ``last_seq=0`` replays every final
        from the start; ``None`` follows live events only."""
        return Viewer(self, session_id, token=token, last_seq=last_seq)
