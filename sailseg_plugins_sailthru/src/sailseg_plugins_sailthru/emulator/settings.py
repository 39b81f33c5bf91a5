"""Emulator settings, including every place where the docs leave a [gap].

Each [gap] in sailseg-api.md that changes observable behaviour is an option here, with the
default chosen from the best available evidence (noted per field).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EmulatorSettings", "DEFAULT_LIMITS", "DEFAULT_ACCOUNTS"]

#: per-minute limits (sailthru-api.md §4, right-hand column); key "METHOD /endpoint" or
#: "METHOD *" for the per-method default.
DEFAULT_LIMITS: dict[str, int] = {
    "POST /user": 18_000,
    "POST /send": 12_000,
    "POST *": 2_400,
    "GET *": 18_000,
    "DELETE *": 2_400,
}

DEFAULT_ACCOUNTS: dict[str, str] = {"emulator-key": "emulator-secret"}


@dataclass
class EmulatorSettings:
    """How the emulator behaves.

    :param accounts: api_key -> secret.
    :param limits: per-minute request limits (see :data:`DEFAULT_LIMITS`).
    :param user_not_found_status: HTTP status of "User not found with ..." (observed 400).
    :param invalid_email_status, invalid_email_code: observed 200 / 99 (2020); docs say code 11.
    :param sig_case_insensitive: [gap] accept an uppercase hex ``sig`` too.
    :param xml_when_format_missing: [3rd] answer XML when ``format`` is absent.
    :param keysconflict_default: [gap] ``error`` or ``merge`` when ``keysconflict`` is omitted.
    :param null_vars: [gap] what ``null`` var values do: ``delete`` or ``store``.
    :param lists_case_sensitive: [gap] list-name matching.
    :param job_polls_to_complete: GETs of a job before it completes (pending -> processing ->
        completed); 0 completes on creation.
    :param export_ttl: seconds an export URL stays valid (docs: about 2 hours).
    :param known_templates: when set, ``/send`` with another template gives error 14.
    :param postback_url: where :meth:`send_postback` posts (optout, hardbounce, update, verify).
    :param public_url: base of ``export_url`` links (default: from the request's Host).
    :param blast_query_email_column: [gap] include a raw ``email`` column in blast_query exports
        (the documented columns carry only ``email_hash``).
    :param max_body: largest request body in bytes (413 above).
    :param window_seconds: rate-limit window (60 like Sailthru; tests shrink it). The reset
        header may then be fractional.
    :param date_skew: seconds added to the ``Date`` header of every API answer (0: the
        server's own Date header); tests of ``sailseg doctor``'s clock check skew it.
    """

    accounts: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ACCOUNTS))
    limits: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_LIMITS))
    user_not_found_status: int = 400
    invalid_email_status: int = 200
    invalid_email_code: int = 99
    sig_case_insensitive: bool = False
    xml_when_format_missing: bool = True
    keysconflict_default: str = "error"
    null_vars: str = "delete"
    lists_case_sensitive: bool = True
    job_polls_to_complete: int = 2
    export_ttl: float = 7200.0
    known_templates: list[str] | None = None
    postback_url: str | None = None
    public_url: str | None = None
    blast_query_email_column: bool = True
    max_body: int = 20 * 1024 * 1024
    window_seconds: float = 60.0
    date_skew: float = 0.0

    def limit_for(self, method: str, endpoint: str) -> int:
        return self.limits.get(f"{method} /{endpoint}") or self.limits.get(f"{method} *") or 2_400
