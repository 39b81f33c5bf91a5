"""``sailthru.poll``: scheduled, incremental, resumable pollers for purchases and engagement.

Purchases: one ``export_purchase_log`` job per day from the cursor day to today (the
tap-sailthru pattern); each CSV row becomes an ``Order Completed``. The cursor (next day to
export) advances past a day only once the day is over and its events were accepted, so a crash
repeats at most one day, and the deterministic ``messageId`` (``sailthru-purchase-<id>``)
makes the repeat a duplicate. Purchases this process posted itself (found in the
``sailthru.purchase`` ledger) are skipped so orders do not echo back to Segment.

Engagement: per sent blast (``blast_ids``, or ``GET /blast status=sent``), a ``blast_query``
export job; each row with an ``open_time`` after the blast's cursor becomes ``Email Opened``,
each click (``first_ten_clicks`` + times, else ``click_time``) ``Email Link Clicked``.
Cursors live in ``ctx.kv`` (namespace ``sailthru.poll``).

Exports are read as they download and accepted in chunks of ``accept_chunk`` rows (one
``ctx.accept``, one store transaction each; :mod:`.exports`), so memory does not grow with
the export and delivery starts while the rest is still being read. A malformed file raises
:class:`~.exports.SailthruBadExport` naming the job and line; the cursor stays where it was.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

import anyio
import msgspec

import sailseg

from .client import SailthruClient, client_for
from .config import SECRET_FIELDS, AccountConfig
from .exports import export_rows
from .segment_out import ANONYMOUS_ID_MODES, iso, message_id, segment_message
from .sinks.lists import wait_for_job
from .sinks.purchase import LEDGER_NS

__all__ = ["PollTrigger", "CURSOR_NS", "purchase_row_event", "engagement_row_events"]

CURSOR_NS = "sailthru.poll"
log = logging.getLogger("sailseg.sailthru.poll")


def _parse_time(text: str) -> datetime | None:
    text = (text or "").strip()
    if not text:
        return None
    if len(text) == 19 and text[10] in " T":
        # the export's usual shape: fromisoformat is C (strptime was ~30% of the W3 export
        # ingest's thread CPU for 100,000 rows); anything else takes the general path below
        try:
            return datetime.fromisoformat(text).replace(tzinfo=UTC)
        except ValueError:
            pass
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    try:
        from email.utils import parsedate_to_datetime

        return parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None


def _timestamp(text: str) -> str:
    """The Segment ``timestamp`` of an export time (as ``iso(_parse_time(text))``, epoch when
    unreadable). The export's usual ``YYYY-MM-DD HH:MM:SS`` is rewritten as text once checked
    (no datetime round trip: two per engagement row on the W3 path)."""
    t = text.strip()
    if len(t) == 19 and t[10] in " T" and t[4] == t[7] == "-" and t[13] == t[16] == ":":
        try:
            datetime.fromisoformat(t)
        except ValueError:
            pass
        else:
            return f"{t[:10]}T{t[11:]}.000Z"
    when = _parse_time(text)
    return iso(when) if when else iso(0)


def purchase_row_event(row: dict[str, str], *, anonymous_id: str = "none") -> dict[str, Any] | None:
    """One purchase-log CSV row -> ``Order Completed`` (prices back from cents to units)."""
    pid = row.get("purchase_id")
    email = row.get("email")
    if not pid or not email:
        return None
    try:
        items = json.loads(row.get("items") or "[]")
    except ValueError:
        items = []
    products = []
    for it in items if isinstance(items, list) else []:
        if not isinstance(it, dict):
            continue
        prod = {"product_id": str(it.get("id", "")), "name": it.get("title"),
                "price": (int(it.get("price") or 0)) / 100, "quantity": int(it.get("qty") or 1),
                "url": it.get("url")}
        if it.get("tags"):
            prod["category"] = it["tags"][0] if isinstance(it["tags"], list) else it["tags"]
        products.append(prod)
    total = int(row.get("price") or 0) / 100
    when = _parse_time(row.get("date", ""))
    props: dict[str, Any] = {"order_id": row.get("extid") or pid, "total": total, "revenue": total,
                             "products": products, "sailthru_purchase_id": pid}
    if row.get("channel"):
        props["channel"] = row["channel"]
    return segment_message(type="track", event="Order Completed", mid=message_id("purchase", pid),
                           timestamp=iso(when) if when else iso(0), email=email,
                           anonymous_id=anonymous_id, properties=props)


def engagement_row_events(row: dict[str, str], blast: dict[str, Any], *, after: str = "",
                          anonymous_id: str = "none") -> list[dict[str, Any]]:
    """Opens and clicks of one blast_query row at or after ``after`` ("YYYY-MM-DD HH:MM:SS"; same-second repeats dedupe by messageId)."""
    email = row.get("email") or None
    sid = row.get("profile_id") or None
    if not email and not (anonymous_id == "sid" and sid):
        return []
    bid = str(blast.get("blast_id", ""))
    base = {"email_id": f"{bid}:{sid or row.get('email_hash', '')}", "campaign_id": bid,
            "campaign_name": blast.get("name", ""), "email_subject": blast.get("subject", ""),
            "sailthru_profile_id": sid or ""}
    out: list[dict[str, Any]] = []
    open_t = row.get("open_time", "")
    if open_t and open_t >= after:
        out.append(segment_message(type="track", event="Email Opened", properties=dict(base),
                                   mid=message_id("open", bid, sid or email, open_t),
                                   timestamp=_timestamp(open_t), email=email, sid=sid,
                                   anonymous_id=anonymous_id))
    try:
        urls = _json_list(row.get("first_ten_clicks"))
        times = _json_list(row.get("first_ten_clicks_time"))
    except ValueError:
        urls, times = [], []
    if not urls and row.get("click_time"):
        urls, times = [None], [row["click_time"]]
    for i, url in enumerate(urls if isinstance(urls, list) else []):
        ct = str(times[i]) if isinstance(times, list) and i < len(times) and times[i] else row.get("click_time", "")
        if not ct or ct < after:
            continue
        props = dict(base)
        if url:
            props["link_url"] = url
        props["link_id"] = str(i)
        out.append(segment_message(type="track", event="Email Link Clicked", properties=props,
                                   mid=message_id("click", bid, sid or email, i, ct),
                                   timestamp=_timestamp(ct), email=email, sid=sid,
                                   anonymous_id=anonymous_id))
    return out


def _json_list(text: str | None) -> Any:
    """A JSON column of the export (``first_ten_clicks``...); ``[]`` when empty, without
    parsing (most rows: two empty columns per row were ~1 us each of json.loads)."""
    return json.loads(text) if text else []


def _latest(row: dict[str, str]) -> str:
    times = [row.get("open_time") or "", row.get("click_time") or ""]
    try:
        ft = _json_list(row.get("first_ten_clicks_time"))
        if isinstance(ft, list):
            times += [str(x) for x in ft if x]
    except ValueError:
        pass
    return max(times)


class PollTrigger(sailseg.Trigger):
    name = "sailthru.poll"
    description = "Poll Sailthru purchase logs and blast engagement into Segment-spec events"
    secret_fields: ClassVar[tuple[str, ...]] = SECRET_FIELDS

    class Config(AccountConfig, forbid_unknown_fields=True, kw_only=True):
        streams: list[str] = msgspec.field(default_factory=lambda: ["purchases", "engagement"])
        interval: float = 900.0
        start_date: str | None = None
        lookback_days: int = 1
        blast_ids: list[str] = []
        discover_blasts: bool = True
        max_blasts: int = 50
        job_poll_interval: float = 5.0
        job_timeout: float = 1800.0
        skip_own_purchases: bool = True
        anonymous_id: str = "email_sha256"
        accept_chunk: int = 1000

    config: Config

    def __init__(self, config: Any, ctx: sailseg.ComponentContext) -> None:
        super().__init__(config, ctx)
        bad = set(config.streams) - {"purchases", "engagement"}
        if bad:
            raise sailseg.ConfigError(f"{self.name}: unknown streams {sorted(bad)}; use purchases, engagement")
        if config.anonymous_id not in ANONYMOUS_ID_MODES:
            raise sailseg.ConfigError(f"{self.name}: `anonymous_id` must be one of {ANONYMOUS_ID_MODES}")
        if config.accept_chunk < 1:
            raise sailseg.ConfigError(f"{self.name}: `accept_chunk` must be >= 1")
        self._client: SailthruClient | None = None

    def emitted_identifiers(self) -> frozenset[str]:
        """``email`` always; ``anonymousId`` too with ``anonymous_id = "email_sha256"``."""
        return frozenset({"email", "anonymousId"} if self.config.anonymous_id == "email_sha256"
                         else {"email"})

    async def doctor(self) -> list[sailseg.Check]:
        """Credentials, reachability, clock and rate budget of the account (read-only)."""
        from .doctor import account_checks

        return await account_checks(self.config, self.ctx, self.name)

    async def start(self) -> None:
        if not self.ctx.has_store:
            raise sailseg.ConfigError(f"{self.name}: needs a store for its cursors (no ctx.kv)")
        self._client = client_for(self.ctx, self.config, component=self.name)

    @property
    def client(self) -> SailthruClient:
        if self._client is None:
            self._client = client_for(self.ctx, self.config, component=self.name)
        return self._client

    async def run(self) -> None:
        while True:
            try:
                with self.ctx.poll_span():  # one span per run: its HTTP calls are children
                    await self.poll_once()
            except (sailseg.DeliveryError, sailseg.Backpressure) as exc:
                log.warning("%s: poll failed, retrying next interval: %s", self.name, exc)
            await anyio.sleep(self.config.interval)

    async def poll_once(self) -> dict[str, int]:
        """One incremental pass over every stream; returns accepted counts per stream."""
        out: dict[str, int] = {}
        if "purchases" in self.config.streams:
            out["purchases"] = await self.poll_purchases()
        if "engagement" in self.config.streams:
            out["engagement"] = await self.poll_engagement()
        return out

    # -- cursors -------------------------------------------------------------------------
    def _ckey(self, stream: str) -> str:
        return f"{self.ctx.instance or self.name}:{stream}"

    async def get_cursor(self, stream: str) -> dict[str, Any]:
        raw = await self.ctx.kv.get(CURSOR_NS, self._ckey(stream))
        return msgspec.json.decode(raw) if raw else {}

    async def set_cursor(self, stream: str, value: dict[str, Any]) -> None:
        await self.ctx.kv.set(CURSOR_NS, self._ckey(stream), msgspec.json.encode(value))

    def _today(self) -> date:
        return datetime.fromtimestamp(self.ctx.clock(), UTC).date()

    async def _export(self, params: dict[str, Any]) -> AsyncGenerator[list[dict[str, str]]]:
        """Run an export job and yield its rows in lists of at most ``accept_chunk`` as the file
        downloads (never the whole file in memory; see :mod:`.exports`).

        :raises SailthruBadExport: the file is malformed (names the job and the line).
        """
        body = await self.client.post("job", params)
        job_id = str(body["job_id"])
        status = await wait_for_job(self.client, job_id,
                                    interval=self.config.job_poll_interval, timeout=self.config.job_timeout)
        if status.get("expired") or not status.get("export_url"):
            raise sailseg.RetryableError(f"Sailthru export {job_id} has no export_url")
        what = f"Sailthru {params['job']} export {job_id}"
        async with self.client.open_export(str(status["export_url"])) as chunks:
            async for rows in export_rows(chunks, chunk_rows=self.config.accept_chunk, what=what):
                yield rows

    # -- purchases -----------------------------------------------------------------------
    async def poll_purchases(self) -> int:
        cursor = await self.get_cursor("purchases")
        today = self._today()
        if cursor.get("day"):
            day = datetime.strptime(cursor["day"], "%Y%m%d").date()
        elif self.config.start_date:
            day = date.fromisoformat(self.config.start_date)
        else:
            day = today - timedelta(days=self.config.lookback_days)
        accepted = 0
        ledger_prefix = None
        if self.config.skip_own_purchases:
            ledger_prefix = self.client.account_id
        while day <= today:
            ymd = day.strftime("%Y%m%d")
            export = self._export({"job": "export_purchase_log", "start_date": ymd, "end_date": ymd})
            async with aclosing(export):  # the download closes when accept raises
                async for rows in export:
                    messages = []
                    for row in rows:
                        if ledger_prefix and row.get("extid") and (
                            await self.ctx.kv.get(LEDGER_NS, f"{ledger_prefix}:{row['extid']}")
                        ):
                            continue
                        msg = purchase_row_event(row, anonymous_id=self.config.anonymous_id)
                        if msg is not None:
                            messages.append(msg)
                    if messages:
                        accepted += (await self.ctx.accept(messages)).accepted
            if day < today:
                await self.set_cursor("purchases", {"day": (day + timedelta(days=1)).strftime("%Y%m%d")})
            day += timedelta(days=1)
        return accepted

    # -- engagement ----------------------------------------------------------------------
    async def _blasts(self) -> list[dict[str, Any]]:
        ids = list(self.config.blast_ids)
        blasts: list[dict[str, Any]] = []
        if not ids and self.config.discover_blasts:
            body = await self.client.get("blast", {"status": "sent"})
            blasts = [b for b in (body.get("blasts") or []) if isinstance(b, dict)][: self.config.max_blasts]
        for bid in ids:
            blasts.append(await self.client.get("blast", {"blast_id": bid}))
        return blasts

    async def poll_engagement(self) -> int:
        cursor = await self.get_cursor("engagement")
        accepted = 0
        for blast in await self._blasts():
            bid = str(blast.get("blast_id", ""))
            if not bid:
                continue
            after = str(cursor.get(bid, ""))
            hwm = after
            # one ctx.accept (one store transaction) per chunk of rows as the export downloads;
            # the cursor moves only after the whole export was accepted
            export = self._export({"job": "blast_query", "blast_id": bid})
            async with aclosing(export):
                async for rows in export:
                    messages: list[dict[str, Any]] = []
                    for row in rows:
                        messages.extend(engagement_row_events(row, blast, after=after,
                                                              anonymous_id=self.config.anonymous_id))
                        hwm = max(hwm, _latest(row))
                    if messages:
                        accepted += (await self.ctx.accept(messages)).accepted
            if hwm != after:
                cursor[bid] = hwm
                await self.set_cursor("engagement", cursor)
        return accepted
