"""``sailthru.list``: list membership add/remove, in real time or through the job API.

Real time (small batches): ``POST /user {"lists": {name: 1|0}}`` per event, which also starts
any Lifecycle Optimizer flow listening for the list join.

Bulk (a batch of at least ``job_threshold`` events, or ``mode = "backfill"``): one ``import``
job per list for plain adds (``emails`` comma list) and one ``update`` job whose JSON-lines
file carries removals and adds with vars; the sink polls ``/job`` until each job completes and
maps ``failed_rows`` back to the events (FatalError for those rows). Jobs do not start
Lifecycle Optimizer flows or sends, which is what a backfill wants.

Which list and which direction, by default: Engage audiences (``context.personas`` with
``computation_class`` audience/journey_step: ``traits[key]`` / ``properties[key]`` true =
add, false = remove, list = ``list_names[key]``, else ``list_name``, else the key); ``Subscribed`` /
``Audience Entered`` add and ``Unsubscribed`` / ``Audience Exited`` remove, list =
``properties.list_name`` / ``properties.list`` / ``properties.audience_key`` / ``list_name``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import anyio
import msgspec

import sailseg

from ..config import AccountConfig
from ..errors import SailthruRetryableError
from ..mapping import find_email
from .base import Request, SailthruSink, list_flag_problems

__all__ = ["ListSink", "Membership"]


@dataclass
class Membership:
    email: str
    list: str
    add: bool
    vars: dict[str, Any] = field(default_factory=dict)


class ListSink(SailthruSink):
    name = "sailthru.list"
    description = "Add/remove Sailthru list members (real time via /user, bulk via jobs)"
    max_batch: ClassVar[int] = 1000
    batch_linger: ClassVar[float] = 1.0

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        list_name: str | None = None
        list_names: dict[str, str] = {}
        add_events: list[str] = msgspec.field(default_factory=lambda: ["Subscribed", "Audience Entered"])
        remove_events: list[str] = msgspec.field(default_factory=lambda: ["Unsubscribed", "Audience Exited"])
        mode: str = "realtime"
        job_threshold: int = 100
        job_poll_interval: float = 2.0
        job_timeout: float = 600.0
        #: most members the runtime hands over in one batch (so per job); None: the class default
        max_batch: int | None = None
        #: how long the runtime may hold members to fill a batch (s); None: the class default
        batch_linger: float | None = None
        #: > 0: send a partial batch once no member arrived for this long (s) while no job
        #: was being submitted (the audience ended); 0: wait the full ``batch_linger``
        batch_idle: float = 0.0

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        if config.mode not in ("realtime", "backfill"):
            raise sailseg.ConfigError(f"{self.name}: `mode` must be realtime or backfill")
        if config.job_threshold < 1:
            raise sailseg.ConfigError(f"{self.name}: `job_threshold` must be >= 1")
        # bulk loads want big jobs: Sailthru API calls per member fall with the batch size
        # (W2: 1,000 per batch made ~234 calls per 100k members); the runtime reads these
        if config.max_batch is not None:
            if config.max_batch < 1:
                raise sailseg.ConfigError(f"{self.name}: `max_batch` must be >= 1")
            self.max_batch = config.max_batch  # type: ignore[misc]
        if config.batch_linger is not None:
            if config.batch_linger < 0:
                raise sailseg.ConfigError(f"{self.name}: `batch_linger` must be >= 0")
            self.batch_linger = config.batch_linger  # type: ignore[misc]
        if config.batch_idle < 0:
            raise sailseg.ConfigError(f"{self.name}: `batch_idle` must be >= 0")
        self.batch_idle = config.batch_idle  # type: ignore[misc]

    # -- decoding ------------------------------------------------------------------------
    def membership(self, event: sailseg.Event) -> Membership:
        p = event.payload
        email = find_email(event)
        if not email:
            raise sailseg.SkipEvent("no email for the list membership")
        personas = (p.get("context") or {}).get("personas") or {}
        holder = p.get("traits") if p.get("type") == "identify" else p.get("properties")
        holder = holder if isinstance(holder, dict) else {}
        key = personas.get("computation_key") if isinstance(personas, dict) else None
        add: bool | None = None
        name: str | None = None
        if key and personas.get("computation_class") in ("audience", "journey_step"):
            if isinstance(holder.get(key), bool):
                add = holder[key]
                name = self.config.list_names.get(key) or self.config.list_name or key
        if add is None and p.get("type") == "track":
            ev = p.get("event")
            if ev in self.config.add_events:
                add = True
            elif ev in self.config.remove_events:
                add = False
            if add is not None:
                name = (holder.get("list_name") or holder.get("list") or
                        self.config.list_names.get(str(holder.get("audience_key"))) or
                        holder.get("audience_key") or self.config.list_name)
        over = event.meta.get("sailthru") or {}
        if isinstance(over.get("lists"), dict) and len(over["lists"]) == 1:
            if problems := list_flag_problems(over["lists"]):
                raise sailseg.FatalError("; ".join(problems), response={"lists": "invalid"})
            (name, flag), = over["lists"].items()
            add = bool(flag)
        if add is None or not name:
            raise sailseg.SkipEvent("not a list membership event (or no list name)")
        vars_ = _d if isinstance(_d := over.get("vars"), dict) else {}
        return Membership(email=email, list=str(name), add=add, vars=dict(vars_))

    def build(self, event: sailseg.Event) -> Request:
        m = self.membership(event)
        req: dict[str, Any] = {"id": m.email, "key": "email", "lists": {m.list: 1 if m.add else 0}}
        if m.vars:
            req["vars"] = m.vars
        return "POST", "user", req

    def request_for(self, event: sailseg.Event) -> Request:
        return self.build(event)  # overrides already folded in by membership()

    # -- sending -------------------------------------------------------------------------
    async def send(self, event: sailseg.Event) -> Any:
        if self.config.mode == "backfill":
            result = (await self.send_batch([event]))[0]
            if isinstance(result, Exception):
                raise result
            return result
        return await super().send(event)

    async def send_batch(self, events: Sequence[sailseg.Event]) -> list[Any]:
        return await (await self.submit_batch(events))()

    async def submit_batch(self, events: Sequence[sailseg.Event]) -> sailseg.BatchVerdict:
        """Submit the batch's jobs; the verdict polls them and maps ``failed_rows`` back.

        Why two phases: a Sailthru job completes minutes after it is accepted; meanwhile
        (past a short patience) the runtime counts the members apart from ``max_inflight``
        and keeps claiming, so the next job fills (``Sink.submit_batch``). The verdict keeps
        of each member its position, email, list and direction, not the event."""
        if self.config.mode != "backfill" and len(events) < self.config.job_threshold:
            return _given(await super().send_batch(events))
        results: list[Any] = [None] * len(events)
        members: list[tuple[int, Membership]] = []
        for i, ev in enumerate(events):
            try:
                members.append((i, self.membership(ev)))
            except sailseg.DeliveryError as exc:
                results[i] = exc
        if not members:
            return _given(results)
        try:
            job_ids = await self._submit_jobs([m for _, m in members])
        except sailseg.DeliveryError as exc:
            for i, _ in members:
                results[i] = exc
            return _given(results)
        kept = [(i, m.email, m.list, m.add) for i, m in members]
        del members

        async def verdict() -> list[Any]:
            try:
                failed = await self._wait_jobs(job_ids)
            except sailseg.DeliveryError as exc:
                for i, *_ in kept:
                    results[i] = exc
                return results
            # one result per (list, operation), shared by its members: a backfill's job of
            # 50,000 would otherwise build 50,000 equal dicts (results are only read)
            ok: dict[tuple[str, bool], dict[str, Any]] = {}
            for i, email, lst, add in kept:
                err = failed.get(email.lower()) if failed else None
                if err:
                    results[i] = sailseg.FatalError(f"Sailthru job rejected the row: {err}",
                                                    response={"job_row_error": err})
                    continue
                res = ok.get((lst, add))
                if res is None:
                    res = ok[(lst, add)] = {"ok": True, "via": "job", "list": lst,
                                            "op": "add" if add else "remove"}
                results[i] = res
            return results

        return verdict

    async def _submit_jobs(self, members: list[Membership]) -> list[str]:
        """Submit import/update jobs for ``members``; return their job ids."""
        imports: dict[str, list[str]] = {}
        update_rows: list[dict[str, Any]] = []
        for m in members:
            if m.add and not m.vars:
                imports.setdefault(m.list, []).append(m.email)
            else:
                row: dict[str, Any] = {"email": m.email, "lists": {m.list: 1 if m.add else 0}}
                if m.vars:
                    row["vars"] = m.vars
                update_rows.append(row)
        job_ids: list[str] = []
        for lst, emails in imports.items():
            body = await self.client.post("job", {"job": "import", "list": lst, "emails": ",".join(emails)})
            job_ids.append(str(body["job_id"]))
        if update_rows:
            content = b"".join(msgspec.json.encode(r) + b"\n" for r in update_rows)
            body = await self.client.post("job", {"job": "update"}, file=("update.jsonl", content))
            job_ids.append(str(body["job_id"]))
        return job_ids

    async def _wait_jobs(self, job_ids: list[str]) -> dict[str, str]:
        """Wait for the jobs; return {email (lower case): error} of their failed rows."""
        failed: dict[str, str] = {}
        for jid in job_ids:
            status = await wait_for_job(self.client, jid, interval=self.config.job_poll_interval,
                                        timeout=self.config.job_timeout)
            for row in status.get("failed_rows") or []:
                if isinstance(row, dict) and row.get("email"):
                    failed[str(row["email"]).lower()] = str(row.get("errormsg") or "failed")
        return failed


def _given(results: list[Any]) -> sailseg.BatchVerdict:
    """A verdict already known (nothing left to wait for)."""
    async def verdict() -> list[Any]:
        return results
    return verdict


async def wait_for_job(client: Any, job_id: str, *, interval: float, timeout: float) -> dict[str, Any]:
    """Poll ``GET /job`` until ``completed``; bounded by ``timeout``.

    :raises sailseg.FatalError: the job ended in ``error``.
    :raises SailthruRetryableError: it did not finish within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        status = await client.get("job", {"job_id": job_id})
        state = status.get("status") if isinstance(status, dict) else None
        if state == "completed":
            return status
        if state == "error":
            raise sailseg.FatalError(f"Sailthru job {job_id} failed: {status.get('errormsg', '')}",
                                     response={"job_id": job_id, "status": "error"})
        if time.monotonic() + interval > deadline:
            raise SailthruRetryableError(f"Sailthru job {job_id} not completed after {timeout:.0f}s",
                                         response={"job_id": job_id, "status": state})
        await anyio.sleep(interval)
