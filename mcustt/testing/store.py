"""The store's contract, as a test suite any database mcustt supports can run.

Subclass :class:`StoreContract` in a test module (the subclass's name starts with
``Test``) and provide a ``database_url`` fixture: the URL of a database migrated to
head (``mcustt migrate``). The suite opens a :class:`~mcustt.store.repo.Repo` on it::

    from mcustt.testing.store import StoreContract

    class TestMyDatabase(StoreContract):
        @pytest.fixture
        def database_url(self) -> str:
            return migrated_url()

To test a store object built another way, override the ``store`` fixture instead.

The database may be shared with other tests: every test makes its own tenants, and the
rows it makes old (ended or created in 1970) are the only ones its time cut-offs reach.

What is asserted is what the services rely on: transcript lines read back gap-free in
seq order within their limits; a capped insert and the producer claim counted under the
tenant's lock (of concurrent callers, exactly as many as the cap admits); the claim
burning the ingest token for exactly one of two concurrent claimers; lease renewal and
release fenced on the producer; ``mark_ended`` true exactly once; usage added per tenant
per day, atomically; jobs claimed by one worker at a time, taken over after their lease
passes, completed only by the lease's owner; one job per idempotency key; retention
deleting only expired ended sessions, with their lines, summaries and jobs; webhook
events recorded in the transaction of the change they report; corrections stored as
numbered revisions (concurrent ones in turn) with the original kept, and every reader
of lines getting the current text; speaker names upserted atomically (an unnamed
track never overwriting a name), pruned with their session.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.exc import IntegrityError

from mcustt import wire
from mcustt.store.db import Database
from mcustt.store.models import Job, Session, Tenant
from mcustt.store.repo import Capped, Repo

__all__ = ["StoreContract"]

#: Long before any row a real caller writes: the cut-offs the suite uses reach only
#: the rows it made this old.
LONG_AGO = 1_000.0


def _id(prefix: str, n: int = 12) -> str:
    return prefix + uuid.uuid4().hex[:n]


async def new_tenant(store: Repo, **fields: object) -> Tenant:
    now = time.time()
    tenant = Tenant(
        id=_id("tn_", 16),
        name="contract",
        key_hash=uuid.uuid4().hex + uuid.uuid4().hex,
        key_prefix="mk_test…",
        created_at=now,
        updated_at=now,
    )
    for name, value in fields.items():
        setattr(tenant, name, value)
    return await store.insert_tenant(tenant)


def session_row(tenant: Tenant, **fields: object) -> Session:
    now = time.time()
    session = Session(
        id=_id("s", 9),
        tenant_id=tenant.id,
        owner_secret_hash="0" * 64,
        created_at=now,
        updated_at=now,
    )
    for name, value in fields.items():
        setattr(session, name, value)
    return session


async def new_session(store: Repo, tenant: Tenant, **fields: object) -> Session:
    session = session_row(tenant, **fields)
    assert await store.insert_session(session, max_live=1_000_000) is None
    return session


def job_row(tenant: Tenant, **fields: object) -> Job:
    now = time.time()
    job = Job(
        id=_id("job_", 20),
        tenant_id=tenant.id,
        kind="batch_summary",
        payload={"text": "contract"},
        created_at=now,
        updated_at=now,
    )
    for name, value in fields.items():
        setattr(job, name, value)
    return job


async def append(store: Repo, session_id: str, seq: int) -> None:
    await store.append_final(
        session_id,
        seq=seq,
        text=f"line {seq}",
        lang="en-US",
        ts=seq,
        start_ms=seq * 1000,
        end_ms=seq * 1000 + 500,
        audio_ms=seq * 1000 + 500,
    )


class StoreContract:
    """The behaviour every database behind :class:`~mcustt.store.repo.Repo` must have."""

    @pytest.fixture
    def database_url(self) -> str:
        """The URL of a database migrated to head (provided by the subclass)."""
        raise NotImplementedError("a StoreContract subclass provides database_url")

    @pytest.fixture
    async def store(self, database_url: str) -> AsyncIterator[Repo]:
        db = Database(database_url)
        try:
            yield Repo(db)
        finally:
            await db.aclose()

    # -- transcript lines ------------------------------------------------------------------

    async def test_lines_read_back_in_seq_order_within_limits(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        other = await new_session(store, tenant)
        for seq in range(1, 8):
            await append(store, session.id, seq)
        await append(store, other.id, 1)

        assert [line.seq for line in await store.lines(session.id)] == list(range(1, 8))
        window = await store.lines(session.id, from_seq=3, to_seq=5)
        assert [line.seq for line in window] == [3, 4, 5]
        assert [line.text for line in window] == ["line 3", "line 4", "line 5"]
        assert [line.seq for line in await store.lines_after(session.id, 2, limit=3)] == [3, 4, 5]
        assert [line.seq for line in await store.lines_after(session.id, 5, limit=10)] == [6, 7]
        assert await store.lines_after(session.id, 7, limit=10) == []
        assert [line.seq for line in await store.lines(other.id)] == [1]

        fresh = await store.get_session(session.id)
        assert fresh is not None
        assert (fresh.last_seq, fresh.audio_ms) == (7, 7500)

    async def test_corrections_are_revisions_and_readers_see_the_current_text(
        self, store: Repo
    ) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        for seq in range(1, 5):
            await append(store, session.id, seq)
        sid = session.id

        async def revise(seq: int, text: str, author: wire.RevisionAuthor = "tenant") -> str:
            done = await store.revise_line(
                tenant_id=tenant.id, session_id=sid, seq=seq, text=text, author=author
            )
            assert done is not None
            return done.previous_text

        assert await revise(2, "two, fixed") == "line 2"
        assert await revise(2, "two, fixed again", "owner") == "two, fixed"
        assert await revise(4, "four, fixed") == "line 4"
        assert (
            await store.revise_line(
                tenant_id=tenant.id, session_id=sid, seq=5, text="x", author="tenant"
            )
            is None
        )
        # Every reader gets the current text (and can tell a corrected line).
        current = ["line 1", "two, fixed again", "line 3", "four, fixed"]
        assert [line.text for line in await store.lines(sid)] == current
        assert [line.text for line in await store.lines_after(sid, 0, limit=10)] == current
        assert [line.revised_text is not None for line in await store.lines(sid)] == [
            False,
            True,
            False,
            True,
        ]
        # The original stays, every revision is kept, oldest first.
        two = await store.revised_line(sid, 2)
        assert two is not None and two.line.text == "line 2" and two.text == "two, fixed again"
        assert [(r.revision, r.text, r.author) for r in two.revisions] == [
            (1, "two, fixed", "tenant"),
            (2, "two, fixed again", "owner"),
        ]
        one = await store.revised_line(sid, 1)
        assert one is not None and one.revisions == [] and one.text == "line 1"
        assert await store.revised_line(sid, 9) is None
        # What a viewer resuming at a seq re-reads: the corrected lines up to it.
        assert [
            line.seq for line in await store.corrected_lines(sid, after=0, upto=3, limit=9)
        ] == [2]
        both = await store.corrected_lines(sid, after=0, upto=4, limit=9)
        assert [(line.seq, line.text) for line in both] == [
            (2, "two, fixed again"),
            (4, "four, fixed"),
        ]
        assert [
            line.seq for line in await store.corrected_lines(sid, after=2, upto=9, limit=9)
        ] == [4]
        assert [
            line.seq for line in await store.corrected_lines(sid, after=0, upto=9, limit=1)
        ] == [2]

    async def test_concurrent_corrections_of_a_line_are_numbered_in_turn(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        await append(store, session.id, 1)
        texts = [f"take {i}" for i in range(5)]
        done = await asyncio.gather(
            *(
                store.revise_line(
                    tenant_id=tenant.id, session_id=session.id, seq=1, text=t, author="tenant"
                )
                for t in texts
            )
        )
        line = await store.revised_line(session.id, 1)
        assert line is not None
        assert [r.revision for r in line.revisions] == [1, 2, 3, 4, 5]
        # Each one's previous text is what the one before it stored.
        by_text = {r.text: r.revision for r in line.revisions}
        previous = {by_text[d.line.revisions[-1].text]: d.previous_text for d in done if d}
        assert previous[1] == "line 1"
        for n in range(2, 6):
            assert previous[n] == line.revisions[n - 2].text

    async def test_a_seq_is_written_once(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        await append(store, session.id, 1)
        with pytest.raises(IntegrityError):
            await append(store, session.id, 1)
        assert [line.seq for line in await store.lines(session.id)] == [1]

    async def test_a_final_retried_with_its_commit_key_is_stored_once(self, store: Repo) -> None:
        """A retry after a lost answer (the first COMMIT landed) finds its line."""
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        other = await new_session(store, tenant)

        async def final(session_id: str, text: str, key: str) -> int:
            line = await store.append_final(
                session_id,
                text=text,
                lang="en-US",
                ts=1,
                start_ms=0,
                end_ms=500,
                audio_ms=500,
                commit_key=key,
            )
            return line.seq

        assert await final(session.id, "first", "k1") == 1
        assert await final(session.id, "first", "k1") == 1  # the retry: the same line
        assert await final(session.id, "second", "k2") == 2
        assert await final(other.id, "elsewhere", "k1") == 1  # keys are per session
        lines = await store.lines(session.id)
        assert [(line.seq, line.text) for line in lines] == [(1, "first"), (2, "second")]
        fresh = await store.get_session(session.id)
        assert fresh is not None and fresh.last_seq == 2

    # -- sessions ----------------------------------------------------------------------

    async def test_capped_insert_admits_exactly_the_cap(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        rows = [session_row(tenant) for _ in range(8)]
        results = await asyncio.gather(*[store.insert_session(r, max_live=3) for r in rows])
        assert sum(result is None for result in results) == 3
        assert {r.count for r in results if isinstance(r, Capped)} == {3}
        assert len(await store.list_sessions(tenant.id, status="live")) == 3
        # An ended session frees its slot.
        live = await store.list_sessions(tenant.id)
        assert await store.mark_ended(live[0].id, "test")
        assert await store.insert_session(session_row(tenant), max_live=3) is None

    async def test_list_sessions_newest_first_by_status(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        first = await new_session(store, tenant, created_at=time.time() - 10)
        second = await new_session(store, tenant)
        assert await store.mark_ended(first.id, "test")
        assert [s.id for s in await store.list_sessions(tenant.id)] == [second.id, first.id]
        assert [s.id for s in await store.list_sessions(tenant.id, status="ended")] == [first.id]
        assert [s.id for s in await store.list_sessions(tenant.id, limit=1)] == [second.id]

    async def test_producer_claim_admits_one_of_two_and_burns_the_token(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant, ingest_jti="jti-1")
        claims = await asyncio.gather(
            *[
                store.claim_producer(
                    session.id,
                    tenant_id=tenant.id,
                    jti="jti-1",
                    producer_id=producer,
                    lease_s=30,
                    max_active=10,
                )
                for producer in ("p1", "p2")
            ]
        )
        assert sorted(c.outcome for c in claims) == ["claimed", "refused"]
        winner = next(c for c in claims if c.outcome == "claimed")
        assert winner.session is not None and winner.session.ingest_jti is None
        fresh = await store.get_session(session.id)
        assert fresh is not None and fresh.producer_id == winner.session.producer_id
        assert fresh.producer_lease_until is not None and fresh.producer_lease_until > time.time()

        # Released, the session can be claimed again, but not with the burned token.
        await store.release_producer(session.id, fresh.producer_id or "")
        again = await store.claim_producer(
            session.id, tenant_id=tenant.id, jti="jti-1", producer_id="p3", lease_s=30,
            max_active=10,
        )  # fmt: skip
        assert again.outcome == "refused"
        assert again.session is not None and again.session.producer_id is None
        # A replaced token works once.
        await store.set_ingest_jti(session.id, "jti-2")
        fresh_claim = await store.claim_producer(
            session.id, tenant_id=tenant.id, jti="jti-2", producer_id="p3", lease_s=30,
            max_active=10,
        )  # fmt: skip
        assert fresh_claim.outcome == "claimed"

    async def test_producer_claim_honours_the_lease_the_cap_and_the_end(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        a = await new_session(store, tenant)
        b = await new_session(store, tenant)

        async def claim(sid: str, producer: str, *, lease_s: float = 30, cap: int = 10) -> str:
            result = await store.claim_producer(
                sid, tenant_id=tenant.id, jti=None, producer_id=producer, lease_s=lease_s,
                max_active=cap,
            )  # fmt: skip
            return result.outcome

        assert await claim(a.id, "p1", lease_s=0.2) == "claimed"
        assert await claim(a.id, "p2") == "refused"  # the lease holds
        await asyncio.sleep(0.3)
        assert await claim(a.id, "p2") == "claimed"  # the lease passed

        capped = await store.claim_producer(
            b.id, tenant_id=tenant.id, jti=None, producer_id="p3", lease_s=30, max_active=1
        )
        assert (capped.outcome, capped.active) == ("capped", 1)
        untouched = await store.get_session(b.id)
        assert untouched is not None and untouched.producer_id is None

        assert await store.mark_ended(b.id, "test")
        assert await claim(b.id, "p3") == "refused"
        missing = await store.claim_producer(
            "nosuchsess", tenant_id=tenant.id, jti=None, producer_id="p4", lease_s=30,
            max_active=10,
        )  # fmt: skip
        assert (missing.outcome, missing.session) == ("refused", None)

    async def test_lease_renewal_and_release_are_fenced(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        claim = await store.claim_producer(
            session.id, tenant_id=tenant.id, jti=None, producer_id="p1", lease_s=5,
            max_active=10,
        )  # fmt: skip
        assert claim.outcome == "claimed" and claim.session is not None
        first_lease = claim.session.producer_lease_until or 0.0

        assert not await store.renew_producer(session.id, "p2", lease_s=60)
        assert await store.renew_producer(session.id, "p1", lease_s=60)
        renewed = await store.get_session(session.id)
        assert renewed is not None and (renewed.producer_lease_until or 0.0) > first_lease

        await store.release_producer(session.id, "p2")
        kept = await store.get_session(session.id)
        assert kept is not None and kept.producer_id == "p1"
        await store.release_producer(session.id, "p1")
        released = await store.get_session(session.id)
        assert released is not None
        assert (released.producer_id, released.producer_lease_until) == (None, None)
        assert not await store.renew_producer(session.id, "p1", lease_s=60)

    async def test_mark_ended_is_true_once(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant, ingest_jti="jti-1")
        results = await asyncio.gather(
            *[store.mark_ended(session.id, reason) for reason in ("first", "second", "third")]
        )
        assert sorted(results) == [False, False, True]
        ended = await store.get_session(session.id)
        assert ended is not None
        assert (ended.status, ended.ingest_jti) == ("ended", None)
        assert ended.end_reason in ("first", "second", "third") and ended.ended_at is not None
        assert not await store.mark_ended(session.id, "again")
        assert not await store.mark_ended("nosuchsess", "again")

    async def test_snapshot_reads_the_state_document_parts(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        for seq in (1, 2, 3):
            await append(store, session.id, seq)
        await store.set_detected_lang(session.id, "fr-FR")
        snap = await store.session_snapshot(session.id)
        assert snap is not None
        assert (snap.line_count, snap.summary, snap.session.detected_lang) == (3, None, "fr-FR")
        assert snap.tenant is not None and snap.tenant.id == tenant.id
        await store.mark_summary_pending(session.id)
        snap = await store.session_snapshot(session.id)
        assert snap is not None and snap.summary is not None
        assert snap.summary.status == "pending"
        assert await store.session_snapshot("nosuchsess") is None

    # -- tenants and summaries ------------------------------------------------------------

    async def test_tenants_by_id_key_and_update(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        found = await store.tenant_by_key_hash(tenant.key_hash)
        assert found is not None and found.id == tenant.id
        assert await store.tenant_by_key_hash("f" * 64) is None
        changed = await store.update_tenant(tenant.id, {"name": "renamed", "disabled": True})
        assert changed is not None and (changed.name, changed.disabled) == ("renamed", True)
        stored = await store.get_tenant(tenant.id)
        assert stored is not None and (stored.name, stored.disabled) == ("renamed", True)
        assert await store.update_tenant("tn_nosuchtenant", {"name": "x"}) is None
        assert tenant.id in [t.id for t in await store.list_tenants()]

    async def test_summary_pending_ready_failed(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        await store.mark_summary_failed(session.id, "no row: nothing to mark")
        assert await store.get_summary(session.id) is None
        await store.mark_summary_pending(session.id)
        await store.mark_summary_failed(session.id, "quota")
        failed = await store.get_summary(session.id)
        assert failed is not None and (failed.status, failed.error) == ("failed", "quota")
        await store.mark_summary_pending(session.id)
        pending = await store.get_summary(session.id)
        assert pending is not None and (pending.status, pending.error) == ("pending", None)
        content: wire.SummaryContent = {"tldr": "t", "decisions": [], "actionItems": [], "qa": []}
        await store.save_summary(
            session.id, model="m", lang="en-US", content=content, from_seq=1, to_seq=4
        )
        ready = await store.get_summary(session.id)
        assert ready is not None
        assert (ready.status, ready.content, ready.from_seq, ready.to_seq) == (
            "ready",
            content,
            1,
            4,
        )

    # -- usage ---------------------------------------------------------------------------------

    async def test_usage_adds_per_tenant_per_day(self, store: Repo) -> None:
        t1, t2 = await new_tenant(store), await new_tenant(store)
        assert await store.add_usage(t1.id, 100, day="2020-01-01") == 100
        assert await store.add_usage(t1.id, 50, day="2020-01-01") == 150
        assert await store.add_usage(t1.id, 7, day="2020-01-02") == 7
        assert await store.add_usage(t2.id, 1, day="2020-01-01") == 1
        await asyncio.gather(*[store.add_usage(t2.id, 10, day="2020-01-01") for _ in range(10)])
        assert await store.usage_ms(t1.id, day="2020-01-01") == 150
        assert await store.usage_ms(t1.id, day="2020-01-02") == 7
        assert await store.usage_ms(t2.id, day="2020-01-01") == 101
        assert await store.usage_ms(t2.id, day="2020-01-03") == 0
        assert await store.usage_ms(t1.id) == 0  # today
        assert await store.add_usage(t1.id, 5) == 5
        assert await store.usage_ms(t1.id) == 5

    # -- jobs ------------------------------------------------------------------------------

    async def test_jobs_are_claimed_one_worker_at_a_time(self, store: Repo) -> None:
        # The oldest due jobs of the database, so a shared database's jobs are not taken.
        tenant = await new_tenant(store)
        first, second = job_row(tenant, created_at=LONG_AGO), job_row(tenant, created_at=2e3)
        for job in (first, second):
            assert (await store.insert_job(job))[1]
        claims = await asyncio.gather(
            *[store.claim_job(owner, lease_s=30) for owner in ("w1", "w2")]
        )
        taken = [job for job in claims if job is not None]
        # Never the same job twice; a loser (SQLite serializes) gets nothing and retries.
        assert len({job.id for job in taken}) == len(taken) >= 1
        assert first.id in {job.id for job in taken}
        if len(taken) == 1:
            retry = await store.claim_job("w2", lease_s=30)
            assert retry is not None
            taken.append(retry)
        assert {job.id for job in taken} == {first.id, second.id}
        for job in taken:
            assert (job.status, job.attempts) == ("running", 1)
            assert job.lease_owner in ("w1", "w2")
            assert job.lease_until is not None and job.lease_until > time.time()
        # A running job is not claimed again while its lease holds.
        assert await store.claim_job("w3", lease_s=30, job_id=first.id) is None
        for job in taken:
            assert await store.finish_job(job.id, job.lease_owner or "", status="ready")

    async def test_an_expired_lease_is_taken_over_and_completion_is_fenced(
        self, store: Repo
    ) -> None:
        tenant = await new_tenant(store)
        job = job_row(tenant, created_at=LONG_AGO)
        await store.insert_job(job)
        old = await store.claim_job("old", lease_s=0.2)
        assert old is not None and old.id == job.id
        await asyncio.sleep(0.3)
        new = await store.claim_job("new", lease_s=30)
        assert new is not None and new.id == job.id
        assert (new.lease_owner, new.attempts) == ("new", 2)

        # The old owner lost its lease: none of its writes land.
        assert not await store.renew_job_lease(job.id, "old", lease_s=30)
        assert not await store.requeue_job(job.id, "old", run_after=0)
        assert not await store.finish_job(job.id, "old", status="failed", error="late")
        current = await store.get_job(job.id)
        assert current is not None
        assert (current.status, current.lease_owner, current.error) == ("running", "new", None)

        assert await store.renew_job_lease(job.id, "new", lease_s=30)
        assert await store.finish_job(job.id, "new", status="ready", result={"ok": True})
        done = await store.get_job(job.id)
        assert done is not None
        assert (done.status, done.result, done.lease_until) == ("ready", {"ok": True}, None)
        assert await store.claim_job("any", lease_s=30, job_id=job.id) is None

    async def test_a_requeued_job_runs_again(self, store: Repo) -> None:
        tenant = await new_tenant(store)
        job = job_row(tenant, run_after=time.time() + 3600)
        await store.insert_job(job)
        # An inline run takes its queued job at once, whatever its run_after.
        first = await store.claim_job("w1", lease_s=30, job_id=job.id)
        assert first is not None and first.attempts == 1
        assert await store.requeue_job(job.id, "w1", run_after=time.time() + 3600)
        queued = await store.get_job(job.id)
        assert queued is not None and (queued.status, queued.lease_until) == ("queued", None)
        second = await store.claim_job("w2", lease_s=30, job_id=job.id)
        assert second is not None and (second.attempts, second.lease_owner) == (2, "w2")
        assert await store.finish_job(job.id, "w2", status="failed", error="gave up")
        failed = await store.get_job(job.id)
        assert failed is not None and (failed.status, failed.error) == ("failed", "gave up")

    async def test_one_job_per_idempotency_key(self, store: Repo) -> None:
        tenant, other = await new_tenant(store), await new_tenant(store)
        key = _id("key-")
        job, created = await store.insert_job(job_row(tenant, idempotency_key=key, status="ready"))
        assert created
        found = await store.job_by_idempotency_key(tenant.id, key)
        assert found is not None and found.id == job.id
        assert await store.job_by_idempotency_key(tenant.id, "other-key") is None
        assert await store.job_by_idempotency_key(other.id, key) is None
        # Another tenant's key is another job.
        theirs, created = await store.insert_job(
            job_row(other, idempotency_key=key, status="ready")
        )
        assert created and theirs.id != job.id
        # Concurrent duplicates: one insert wins, the rest get its job.
        key2 = _id("key-")
        results = await asyncio.gather(
            *[
                store.insert_job(job_row(tenant, idempotency_key=key2, status="ready"))
                for _ in range(5)
            ]
        )
        assert sum(created for _, created in results) == 1
        assert len({job.id for job, _ in results}) == 1

    # -- housekeeping --------------------------------------------------------------------------

    async def test_abandoned_sessions_are_live_idle_and_without_a_producer(
        self, store: Repo
    ) -> None:
        tenant = await new_tenant(store)
        idle = await new_session(store, tenant, updated_at=LONG_AGO)
        streaming = await new_session(
            store,
            tenant,
            updated_at=LONG_AGO,
            producer_id="p1",
            producer_lease_until=time.time() + 60,
        )
        lapsed = await new_session(
            store, tenant, updated_at=LONG_AGO, producer_id="p2", producer_lease_until=LONG_AGO
        )
        ended = await new_session(store, tenant, updated_at=LONG_AGO, status="ended", ended_at=3e3)
        recent = await new_session(store, tenant)
        found = {s.id for s in await store.abandoned_sessions(idle_before=2e3, now=time.time())}
        assert {idle.id, lapsed.id} <= found
        assert not {streaming.id, ended.id, recent.id} & found

    async def test_retention_deletes_only_expired_ended_sessions_with_their_data(
        self, store: Repo
    ) -> None:
        tenant = await new_tenant(store)
        expired = [
            await new_session(store, tenant, status="ended", ended_at=LONG_AGO + i)
            for i in range(3)
        ]
        kept_ended = await new_session(store, tenant, status="ended", ended_at=3e3)
        kept_live = await new_session(store, tenant, created_at=LONG_AGO)
        jobs: dict[str, str] = {}
        for session in [*expired, kept_ended, kept_live]:
            await append(store, session.id, 1)
            await store.revise_line(
                tenant_id=tenant.id, session_id=session.id, seq=1, text="fixed", author="owner"
            )
            await store.mark_summary_pending(session.id)
            job, _ = await store.insert_job(
                job_row(tenant, session_id=session.id, kind="session_summary", status="ready")
            )
            jobs[session.id] = job.id

        # A batch at a time, until none is left (a shared database may hold more).
        assert await store.delete_ended_sessions(ended_before=2e3, limit=2) == 2
        rest = [await store.delete_ended_sessions(ended_before=2e3, limit=2)]
        while rest[-1]:
            rest.append(await store.delete_ended_sessions(ended_before=2e3, limit=2))
        assert sum(rest) >= 1 and all(n <= 2 for n in rest)

        for session in expired:
            assert await store.get_session(session.id) is None
            assert await store.lines(session.id) == []
            assert await store.revised_line(session.id, 1) is None
            assert await store.get_summary(session.id) is None
            assert await store.get_job(jobs[session.id]) is None
        for session in (kept_ended, kept_live):
            assert await store.get_session(session.id) is not None
            assert len(await store.lines(session.id)) == 1
            assert await store.get_summary(session.id) is not None
            assert await store.get_job(jobs[session.id]) is not None

    # -- speaker names (issue 14) -------------------------------------------------------------

    async def test_speaker_names_upserted_atomically_and_pruned_with_their_session(
        self, store: Repo
    ) -> None:
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        other = await new_session(store, tenant)
        assert await store.speaker_names(session.id) == {}
        # A track connecting with an unnamed token (the name is the id), then named.
        await store.upsert_speaker(session.id, "p1", "p1")
        await store.upsert_speaker(session.id, "p1", "Priya")
        # A reconnect with an unnamed token keeps the name; a rename always replaces.
        await store.upsert_speaker(session.id, "p1", "p1")
        await store.set_speaker_name(session.id, "p2", "Sam")
        await store.set_speaker_name(session.id, "p2", "Sam Lee")
        await store.set_speaker_name(other.id, "p1", "Someone else")
        assert await store.speaker_names(session.id) == {"p1": "Priya", "p2": "Sam Lee"}
        assert await store.speaker_name(session.id, "p2") == "Sam Lee"
        assert await store.speaker_name(session.id, "p9") is None
        assert [(s.speaker_id, s.name) for s in await store.speakers(session.id)] == [
            ("p1", "Priya"),
            ("p2", "Sam Lee"),
        ]
        # Concurrent writers of one speaker (tracks on two nodes, the owner renaming):
        # one row, one of the names, no integrity error.
        await asyncio.gather(
            *(store.upsert_speaker(session.id, "p3", f"Name {i}") for i in range(6)),
            *(store.set_speaker_name(session.id, "p3", f"Rename {i}") for i in range(6)),
        )
        names = await store.speaker_names(session.id)
        assert len(names) == 3 and names["p3"].startswith(("Name ", "Rename "))

        ended = await new_session(store, tenant, status="ended", ended_at=LONG_AGO)
        await store.set_speaker_name(ended.id, "p1", "Priya")
        while await store.delete_ended_sessions(ended_before=2e3, limit=100):
            pass
        assert await store.speaker_names(ended.id) == {}
        assert await store.speaker_names(session.id) == names

    # -- webhook events (issue 16) -------------------------------------------------------------

    async def test_events_are_recorded_with_the_change_they_report(self, store: Repo) -> None:
        """``session.ended`` once per session end, ``summary.ready``/``summary.failed``
        with the summary, in the same transaction (so read back at once)."""
        tenant = await new_tenant(store)
        session = await new_session(store, tenant)
        await asyncio.gather(*[store.mark_ended(session.id, "stop") for _ in range(3)])
        [ended] = await store.recent_events(tenant.id, "session.ended", limit=50)
        assert (ended.session_id, ended.data["sessionId"]) == (session.id, session.id)
        assert ended.data["endReason"] == "stop" and ended.id.startswith("evt_")
        await store.mark_summary_pending(session.id)
        await store.mark_summary_failed(session.id, "quota")
        content: wire.SummaryContent = {
            "tldr": "t",
            "decisions": ["d"],
            "actionItems": [],
            "qa": [],
        }
        await store.save_summary(
            session.id, model="m", lang="en-US", content=content, from_seq=None, to_seq=None
        )
        [failed] = await store.recent_events(tenant.id, "summary.failed", limit=50)
        assert failed.data["error"] == "quota"
        [ready] = await store.recent_events(tenant.id, "summary.ready", limit=50)
        assert ready.data["summary"] == content and "- d" in ready.data["markdownBody"]
        assert await store.recent_events(tenant.id, "job.finished", limit=50) == []
