"""Multipart forms (`multipart/form-data`), read by the standard library's `email`
package: the audio endpoints' uploads and a WebRTC call's offer."""

from __future__ import annotations

from dataclasses import dataclass
from email import message_from_bytes
from email.message import Message as MimeMessage
from email.policy import HTTP

from router.errors import BadRequest


@dataclass(frozen=True, slots=True)
class Part:
    """One field of a form."""

    payload: bytes
    #: the file name, for an upload that gave one
    filename: str | None
    content_type: str

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


def multipart_parts(raw: bytes, content_type: str, what: str) -> dict[str, Part]:
    """A multipart form's fields by name (the last of a repeated one); a 400 that says
    what `what` takes if the body is not such a form."""
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest(f"{what} is a multipart/form-data request")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = message_from_bytes(head + raw, policy=HTTP)
    if not message.is_multipart():
        raise BadRequest("the multipart body could not be read")
    parts: dict[str, Part] = {}
    for part in message.iter_parts():
        assert isinstance(part, MimeMessage)
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if isinstance(name, str) and isinstance(payload, bytes):
            parts[name] = Part(payload, part.get_filename(), part.get_content_type())
    return parts
