"""Emulated ``/job``: import, update, export_purchase_log, blast_query, export_list_data.

Jobs move ``pending`` (``start_time`` set on the first poll) -> ``completed`` after
``job_polls_to_complete`` GETs; imports and updates are applied at completion, rows that fail
(invalid email, malformed line) are reported in ``failed_rows`` ([gap]: the real field name
is undocumented), and exports get an ``export_url`` served by the emulator itself, valid for
``export_ttl`` seconds (then ``expired: true``). Jobs never start Lifecycle Optimizer flows.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any

from .handlers import Handlers
from .state import EMAIL_RE, ApiError, rfc2822

__all__ = ["Jobs", "JOB_TYPES"]

JOB_TYPES = frozenset({"import", "update", "purchase_import", "export_list_data",
                       "export_purchase_log", "blast_query"})
_NAMES = {"import": "List Import", "update": "Bulk Update", "purchase_import": "Purchase Import",
          "export_list_data": "List Export", "export_purchase_log": "Purchase Log Export",
          "blast_query": "Blast Query"}

PURCHASE_LOG_COLUMNS = ["purchase_id", "email", "extid", "date", "price", "qty", "items", "channel"]
BLAST_QUERY_COLUMNS = ["profile_id", "email_hash", "send_time", "open_time", "click_time",
                       "first_ten_clicks", "first_ten_clicks_time", "purchase_time", "device"]


def _ymd(value: Any, name: str) -> datetime:
    try:
        return datetime.strptime(str(value), "%Y%m%d").replace(tzinfo=UTC)
    except ValueError:
        raise ApiError(18, f"Invalid {name}: expected YYYYMMDD, got {value}") from None


def _csv(columns: list[str], rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue().encode("utf-8")


class Jobs:
    def __init__(self, handlers: Handlers) -> None:
        self.h = handlers
        self.state = handlers.state
        self.settings = handlers.settings

    def create(self, p: dict[str, Any], files: dict[str, tuple[str, bytes]], now: float) -> dict[str, Any]:
        jtype = p.get("job")
        if jtype in (None, ""):
            raise ApiError(2, "Missing required parameter: job")
        if jtype not in JOB_TYPES:
            raise ApiError(99, f"Invalid job type: {jtype}")
        spec: dict[str, Any] = {k: v for k, v in p.items() if k != "file"}
        if "file" in files:
            spec["_file"] = files["file"][1]
        if jtype == "import":
            if p.get("list") in (None, ""):
                raise ApiError(2, "Missing required parameter: list")
            if not any(p.get(k) for k in ("emails", "url")) and "_file" not in spec:
                raise ApiError(2, "Missing required parameter: emails, file or url")
        elif jtype == "update":
            sources = [k for k in ("emails", "url", "query") if p.get(k)] + (["file"] if "_file" in spec else [])
            if len(sources) != 1:
                raise ApiError(99, "Exactly one of emails, url, file, query is required")
        elif jtype == "export_purchase_log":
            _require_dates(p)
        elif jtype == "blast_query":
            if str(p.get("blast_id")) not in self.state.blasts:
                raise ApiError(13, f"Unknown blast_id: {p.get('blast_id')}")
        elif jtype == "export_list_data":
            if str(p.get("list")) not in self.state.lists:
                raise ApiError(15, f"Unknown list: {p.get('list')}")
        job = {"job_id": self.state.next_id(), "name": _NAMES.get(str(jtype), str(jtype)),
               "status": "pending", "_spec": spec, "_polls": 0, "_created": now}
        self.state.jobs[str(job["job_id"])] = job
        if self.settings.job_polls_to_complete <= 0:
            self._complete(job, now)
        return self.view(job, now, base=None)

    def get(self, p: dict[str, Any], now: float) -> tuple[dict[str, Any], bool]:
        """The job's status (advancing it); second value: it completed on this call."""
        jid = p.get("job_id")
        if jid in (None, ""):
            raise ApiError(2, "Missing required parameter: job_id")
        job = self.state.jobs.get(str(jid))
        if job is None:
            raise ApiError(99, f"Unknown job_id: {jid}", status=404)
        completed_now = False
        if job["status"] == "pending":
            job["_polls"] += 1
            job.setdefault("start_time", now)
            if job["_polls"] >= self.settings.job_polls_to_complete:
                self._complete(job, now)
                completed_now = True
        return job, completed_now

    def view(self, job: dict[str, Any], now: float, base: str | None) -> dict[str, Any]:
        out = {k: v for k, v in job.items() if not k.startswith("_")}
        for t in ("start_time", "end_time"):
            if t in out:
                out[t] = rfc2822(out[t])
        if job["job_id"] in self.state.exports:
            _, expires = self.state.exports[job["job_id"]]
            out.pop("export_url", None)
            if now >= expires:
                out["expired"] = True
            elif base is not None:
                out["export_url"] = f"{base}/_emulator/exports/{job['job_id']}.csv"
        return out

    def export(self, job_id: str, now: float) -> bytes | None:
        data = self.state.exports.get(job_id)
        if data is None or now >= data[1]:
            return None
        return data[0]

    # -- processing ----------------------------------------------------------------------
    def _complete(self, job: dict[str, Any], now: float) -> None:
        spec = job["_spec"]
        jtype = spec["job"]
        failed: list[dict[str, Any]] = []
        try:
            if jtype == "import":
                self._import(spec, failed, now)
            elif jtype == "update":
                self._update(spec, failed, now)
            elif jtype == "export_purchase_log":
                self._export(job, _purchase_log(self, spec), now)
            elif jtype == "blast_query":
                self._export(job, self._blast_query(spec), now)
            elif jtype == "export_list_data":
                self._export(job, self._list_data(spec), now)
        except ApiError as exc:
            job["status"] = "error"
            job["errormsg"] = exc.message
        else:
            job["status"] = "completed"
        job.setdefault("start_time", now)
        job["end_time"] = now
        if jtype in ("import", "update"):
            job["failed_count"] = len(failed)
            job["failed_rows"] = failed[:1000]

    def _export(self, job: dict[str, Any], content: bytes, now: float) -> None:
        self.state.exports[job["job_id"]] = (content, now + self.settings.export_ttl)

    def _import(self, spec: dict[str, Any], failed: list[dict[str, Any]], now: float) -> None:
        lst = self.state.list_key(str(spec["list"]), self.settings.lists_case_sensitive)
        self.state.ensure_list(lst, now)
        rows: list[tuple[str, dict[str, Any]]] = []
        if spec.get("emails"):
            rows = [(e.strip(), {}) for e in str(spec["emails"]).split(",") if e.strip()]
        elif "_file" in spec:
            reader = csv.DictReader(io.StringIO(spec["_file"].decode("utf-8", "replace")))
            for r in reader:
                email = (r.pop("email", None) or "").strip()
                rows.append((email, {k: v for k, v in r.items() if k}))
        for i, (email, vars_) in enumerate(rows, 1):
            if not EMAIL_RE.match(email):
                failed.append({"row": i, "email": email, "errormsg": f"Invalid email: {email}"})
                continue
            user = self.state.find("email", email) or self.state.create("email", email, now)
            user.vars.update(vars_)
            self.state.join_list(user, lst, now, via="job")

    def _update(self, spec: dict[str, Any], failed: list[dict[str, Any]], now: float) -> None:
        common = _d if isinstance(_d := spec.get("update"), dict) else {}
        rows: list[dict[str, Any] | None] = []
        if spec.get("emails"):
            rows = [{"email": e.strip()} for e in str(spec["emails"]).split(",") if e.strip()]
        elif "_file" in spec:
            for line in spec["_file"].decode("utf-8", "replace").splitlines():
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    obj = None
                rows.append(obj if isinstance(obj, dict) else None)
        for i, row in enumerate(rows, 1):
            if row is None:
                failed.append({"row": i, "errormsg": "Malformed JSON line"})
                continue
            params = {**common, **row}
            kind = "email"
            ident = params.get("email") or params.get("id")
            if params.get("key") in ("extid", "sid"):
                kind = str(params["key"])
                ident = params.get("id")
            elif "extid" in params and not ident:
                kind, ident = "extid", params["extid"]
            if not ident or (kind == "email" and not EMAIL_RE.match(str(ident))):
                failed.append({"row": i, "email": ident, "errormsg": f"Invalid email: {ident}"})
                continue
            user = self.state.find(kind, str(ident))
            if user is None:
                if kind == "sid":
                    failed.append({"row": i, "errormsg": f"User not found with sid: {ident}"})
                    continue
                user = self.state.create(kind, str(ident), now)
            merged_vars = {**(common.get("vars") or {}), **(row.get("vars") or {})}
            for k, v in merged_vars.items():
                if v is None and self.settings.null_vars == "delete":
                    user.vars.pop(k, None)
                else:
                    user.vars[k] = v
            lists = {**(common.get("lists") or {}), **(row.get("lists") or {})}
            for name, flag in lists.items():
                key = self.state.list_key(str(name), self.settings.lists_case_sensitive)
                if str(flag) not in ("0", "False", "false", ""):
                    self.state.join_list(user, key, now, via="job")
                else:
                    user.lists.pop(key, None)
            optout = params.get("optout_email") or params.get("optout")
            if optout in ("none", "basic", "blast", "all"):
                user.optout_email = str(optout)

    def _blast_query(self, spec: dict[str, Any]) -> bytes:
        blast = self.state.blasts[str(spec["blast_id"])]
        cols = list(BLAST_QUERY_COLUMNS) + (["email"] if self.settings.blast_query_email_column else [])
        rows = []
        for r in blast.get("recipients", []):
            email = str(r.get("email", ""))
            user = self.state.find("email", email) if email else None
            clicks = r.get("clicks") or []
            rows.append({
                "profile_id": r.get("profile_id") or (user.sid if user else ""),
                "email_hash": hashlib.md5(email.strip().lower().encode()).hexdigest() if email else "",
                "send_time": _fmt(r.get("send_time") or blast.get("send_time")),
                "open_time": _fmt(r.get("open_time")),
                "click_time": _fmt(r.get("click_time")),
                "first_ten_clicks": json.dumps([c.get("url") for c in clicks[:10]]) if clicks else "",
                "first_ten_clicks_time": json.dumps([_fmt(c.get("time")) for c in clicks[:10]]) if clicks else "",
                "purchase_time": _fmt(r.get("purchase_time")),
                "device": r.get("device") or "",
                "email": email,
            })
        return _csv(cols, rows)

    def _list_data(self, spec: dict[str, Any]) -> bytes:
        name = str(spec["list"])
        members = self.state.list_members(name)
        var_names = sorted({k for u in members for k in u.vars})
        cols = ["email", "profile_id", "optout", "engagement", *var_names]
        rows = [{"email": u.keys.get("email", ""), "profile_id": u.sid, "optout": u.optout_email,
                 "engagement": "new", **{k: u.vars.get(k, "") for k in var_names}} for u in members]
        return _csv(cols, rows)


def _fmt(t: Any) -> str:
    if t in (None, ""):
        return ""
    if isinstance(t, (int, float)):
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return str(t)


def _require_dates(p: dict[str, Any]) -> None:
    for n in ("start_date", "end_date"):
        if p.get(n) in (None, ""):
            raise ApiError(2, f"Missing required parameter: {n}")
        _ymd(p[n], n)


def _purchase_log(jobs: Jobs, spec: dict[str, Any]) -> bytes:
    start = _ymd(spec["start_date"], "start_date").timestamp()
    end = _ymd(spec["end_date"], "end_date").timestamp() + 86400
    rows = []
    for rec in jobs.state.purchases:
        if start <= rec["time"] < end:
            rows.append({
                "purchase_id": rec["_id"], "email": rec["email"],
                "extid": (rec.get("purchase_keys") or {}).get("extid", ""),
                "date": _fmt(rec["time"]), "price": rec["price"], "qty": rec["qty"],
                "items": json.dumps(rec["items"]), "channel": rec.get("channel") or "",
            })
    return _csv(PURCHASE_LOG_COLUMNS, rows)
