"""A ``multipart/form-data`` body (what ``POST /v1/files`` receives from OpenAI's clients), read with the standard
library's email parser: no extra dependency."""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass


class FormError(ValueError):
    """A form body that cannot be read; says why."""


@dataclass(frozen=True)
class FormField:
    name: str
    filename: str | None
    data: bytes


def parse_form(content_type: str, body: bytes) -> dict[str, FormField]:
    """The fields of a ``multipart/form-data`` body, by name (the first of each name)."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise FormError("the body must be multipart/form-data with a boundary (a 'file' field and a 'purpose' field)")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise FormError("the multipart body could not be read")
    fields: dict[str, FormField] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name or name in fields:
            continue
        data = part.get_payload(decode=True) or b""
        fields[str(name)] = FormField(str(name), part.get_filename(), data)
    return fields
