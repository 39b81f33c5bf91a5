"""Request decoding for the emulator: query strings, urlencoded and multipart bodies.

Why hand-rolled: the emulator must verify the signature over the parameters *exactly as
received* (never re-serialised), so it keeps the raw (name, value) pairs and the file parts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ..formdata import nest_brackets

__all__ = ["Form", "FormError", "parse_form", "nest_brackets"]


class FormError(ValueError):
    """The body could not be decoded (bad encoding, broken multipart)."""


@dataclass
class Form:
    """Decoded parameters: ``fields`` in order received, ``files`` name -> (filename, bytes)."""

    fields: list[tuple[str, str]] = field(default_factory=list)
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        for k, v in self.fields:
            if k == name:
                return v
        return None


def parse_form(query: bytes, body: bytes, content_type: str) -> Form:
    """Merge query-string and body parameters (``+`` is a space).

    :raises FormError: invalid UTF-8 or a malformed multipart body.
    """
    form = Form()
    try:
        if query:
            form.fields.extend(parse_qsl(query.decode("ascii", "strict"), keep_blank_values=True,
                                         errors="strict"))
        ctype = content_type.split(";", 1)[0].strip().lower()
        if body and ctype == "multipart/form-data":
            m = re.search(r'boundary="?([^";]+)"?', content_type)
            if not m:
                raise FormError("multipart body without a boundary")
            _parse_multipart(body, m.group(1).encode("latin-1"), form)
        elif body:
            form.fields.extend(parse_qsl(body.decode("ascii", "strict"), keep_blank_values=True,
                                         errors="strict"))
    except UnicodeDecodeError as exc:
        raise FormError(f"invalid UTF-8 in a parameter ({exc.reason})") from None
    return form


_DISPOSITION = re.compile(rb'name="([^"]*)"(?:;\s*filename="([^"]*)")?')


def _parse_multipart(body: bytes, boundary: bytes, form: Form) -> None:
    delim = b"--" + boundary
    parts = body.split(delim)
    if len(parts) < 3:
        raise FormError("malformed multipart body")
    for part in parts[1:-1]:
        part = part[2:] if part.startswith(b"\r\n") else part
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise FormError("malformed multipart part")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        m = _DISPOSITION.search(head)
        if not m:
            raise FormError("multipart part without a name")
        name = m.group(1).decode("utf-8")
        if m.group(2) is not None:
            form.files[name] = (m.group(2).decode("utf-8"), content)
        else:
            form.fields.append((name, content.decode("utf-8", "strict")))
