"""Incremental Server-Sent-Events parser over bytes, for relaying a stream unchanged.

Bytes are fed in whatever chunks the network delivers and come back as :class:`SSEEvent`
objects whose ``raw`` is exactly the bytes received: the ``raw`` of every event returned by
:meth:`SSEParser.feed`, followed by :meth:`SSEParser.flush`, is every byte fed, in order.

Parsing follows the WHATWG "event stream interpretation": lines end with LF, CRLF or a lone CR
(a CRLF split across chunks is one line ending); ``:`` starts a comment; ``name: value`` sets a
field (one space after the colon dropped); ``data`` lines join with ``\\n``; ``event`` sets the
type; a blank line dispatches; a UTF-8 BOM at the start is ignored.

Deviations, so that a relay forwards every byte at once:

* Events without ``data`` (comment-only keep-alives, stray blank lines) are dispatched too,
  with ``data=None``.
* A chunk ending with the ``\\r`` of a blank line dispatches its event at once; when the next
  chunk starts with ``\\n`` (the rest of that CRLF), that byte comes back alone as
  :data:`CRLF_TAIL`, a data-less event that belongs to the one before it.
"""

from __future__ import annotations

import msgspec

__all__ = ["CRLF_TAIL", "SSEEvent", "SSEParser"]

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D


class SSEEvent(msgspec.Struct, gc=False):
    """One dispatched event (a slotted ``msgspec.Struct``: cheap to create and compare).

    ``raw`` is the exact bytes of the event as received, from its first line through the
    blank line that ended it, line endings preserved. ``data`` is the joined ``data``
    field values, or ``None`` when the event had no ``data`` field. ``event`` is the value
    of the last ``event`` field, or ``None``.
    """

    raw: bytes
    data: bytes | None
    event: bytes | None = None


CRLF_TAIL = SSEEvent(b"\n", None)
"""The LF completing the CRLF of an event dispatched at a chunk's final CR (compare with ``is``)."""


class SSEParser:
    """Incremental SSE parser; see the module docstring for the exact semantics."""

    __slots__ = (
        "_at_start",
        "_cr",
        "_data",
        "_event",
        "_line_len",
        "_line_parts",
        "_raw_len",
        "_raw_parts",
    )

    def __init__(self) -> None:
        # Pieces of the current line, which has no line ending yet (no CR/LF inside).
        self._line_parts: list[bytes] = []
        self._line_len = 0
        # Raw bytes of the complete lines of the current, not yet dispatched, event.
        self._raw_parts: list[bytes] = []
        self._raw_len = 0
        # Field state of the current event.
        self._data: list[bytes] | None = None
        self._event: bytes | None = None
        # The last byte seen was a CR ending a line: a LF right after it is part of it.
        self._cr = False
        # No complete line seen yet (to strip a leading UTF-8 BOM).
        self._at_start = True

    @property
    def pending(self) -> int:
        """Number of buffered bytes not yet part of a complete event."""
        return self._raw_len + self._line_len

    def flush(self) -> bytes:
        """Return and clear the buffered bytes of an incomplete event; reset the parser."""
        parts = self._raw_parts
        parts.extend(self._line_parts)
        out = b"".join(parts)
        self._line_parts = []
        self._line_len = 0
        self._raw_parts = []
        self._raw_len = 0
        self._data = None
        self._event = None
        self._cr = False
        return out

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk`` and return the events it completes, in order."""
        if not chunk:
            return []
        # (``int in bytes`` is a plain memchr, much cheaper than a method call.)
        if (
            chunk[-1] == _LF
            and chunk[:5] == b"data:"
            and _CR not in chunk
            and _LF not in chunk[:-2]
            and chunk[-2] == _LF
            and not self._line_parts
            and not self._raw_parts
            and not self._cr
        ):
            # Fast path, the common case: the chunk is exactly one `data: ...\n\n` event
            # and nothing is buffered.
            self._at_start = False
            if chunk[5] == 0x20:
                return [SSEEvent(chunk, chunk[6:-2], None)]
            return [SSEEvent(chunk, chunk[5:-2], None)]
        if self._cr:
            self._cr = False
            if chunk[0] == _LF:
                # Second half of a CRLF split across chunks: the line was already handled.
                chunk = chunk[1:]
                if not self._raw_parts:  # ...and it dispatched an event: this LF ends that one
                    if not chunk:
                        return [CRLF_TAIL]
                    events = self.feed(chunk)
                    events.insert(0, CRLF_TAIL)
                    return events
                self._raw_parts.append(b"\n")
                self._raw_len += 1
                if not chunk:
                    return []

        keepends = _CR in chunk
        if not keepends and _LF not in chunk:
            # No line ending: just remember the piece (keeps long lines linear-time).
            self._line_parts.append(chunk)
            self._line_len += len(chunk)
            return []

        line_parts = self._line_parts
        if line_parts:
            line_parts.append(chunk)
            buf = b"".join(line_parts)
            self._line_parts = []
            self._line_len = 0
        else:
            buf = chunk

        if keepends:
            lines = buf.splitlines(keepends=True)
            tail = lines[-1]
            if tail[-1] == _CR:
                self._cr = True
                tail = b""
            elif tail[-1] == _LF:
                tail = b""
            else:
                lines.pop()
        else:
            lines = buf.split(b"\n")
            tail = lines.pop()

        pos = 0
        if self._at_start:
            self._at_start = False
            if buf.startswith(_BOM):
                # The BOM stays in ``raw`` but is not part of the first line's content.
                pos = 3
                lines[0] = lines[0][3:]

        out: list[SSEEvent] = []
        start = 0  # offset in buf where the current event's bytes begin
        data = self._data
        event = self._event
        raw_parts = self._raw_parts
        for line in lines:
            if keepends:
                pos += len(line)
                line = line.rstrip(b"\r\n")  # exactly one line ending: CR, LF or CRLF
            else:
                pos += len(line) + 1
            if not line:
                # Blank line: dispatch.
                if raw_parts:
                    raw_parts.append(buf[start:pos])
                    raw = b"".join(raw_parts)
                    raw_parts = []
                    self._raw_len = 0
                else:
                    raw = buf[start:pos]
                start = pos
                if data is None:
                    out.append(SSEEvent(raw, None, event))
                elif len(data) == 1:
                    out.append(SSEEvent(raw, data[0], event))
                else:
                    out.append(SSEEvent(raw, b"\n".join(data), event))
                data = None
                event = None
            elif line[:5] == b"data:":
                value = line[6:] if line[5:6] == b" " else line[5:]
                if data is None:
                    data = [value]
                else:
                    data.append(value)
            elif line[0] != 0x3A:  # not a ":" comment
                colon = line.find(b":")
                if colon < 0:
                    name = line
                    value = b""
                else:
                    name = line[:colon]
                    value = line[colon + 1 :]
                    if value[:1] == b" ":
                        value = value[1:]
                if name == b"data":
                    if data is None:
                        data = [value]
                    else:
                        data.append(value)
                elif name == b"event":
                    event = value

        if start < pos:
            raw_parts.append(buf[start:pos])
            self._raw_len += pos - start
        self._raw_parts = raw_parts
        self._data = data
        self._event = event
        if tail:
            self._line_parts.append(tail)
            self._line_len = len(tail)
        return out
