"""Addresses as NATS subjects, and back: every legal address round-trips.

A subject is ``<prefix>.<space>.<segment>...``: the space is ``e`` for events (published
messages, one plain subscription per exported address or pattern) or ``c`` for consumers
(sent and requested messages, one queue subscription per exported consumer address) or
``a`` for scatter-gather requests (one plain subscription per exported consumer address). Each
dot-separated segment of the address is escaped on its own: ``A-Z a-z 0-9 _ -`` stay, every
other character becomes ``~HH`` per UTF-8 byte (``~`` itself included), and an empty segment
(``a..b``, ``.a``, ``a.``, which NATS would drop) is a lone ``~``. The segments ``*`` and
``>`` of a pattern stay NATS wildcards, so pattern and subject match the same addresses.
"""

from __future__ import annotations

import re

EVENTS = "e"
CONSUMERS = "c"
ALL_CONSUMERS = "a"  # scatter-gather: every process with a consumer, each with its own copy
MAX_SUBJECT_BYTES = 2048
"""The longest subject sent: the server reads a message's subject, reply subject and sizes in
one control line of at most 4,096 bytes (``max_control_line``), and closes the connection of
a client that sends a longer one."""

_PLAIN = re.compile(r"[A-Za-z0-9_-]+")
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPED = re.compile(r"(?:[A-Za-z0-9_-]|~[0-9A-F]{2})+")
_EMPTY = "~"


def check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str) or not all(_TOKEN.fullmatch(t) for t in prefix.split(".")):
        raise ValueError(
            "prefix must be one or more dot-separated tokens of letters, digits, '_' and '-', "
            f"got {prefix!r}"
        )
    return prefix


def _escape(segment: str) -> str:
    if _PLAIN.fullmatch(segment):
        return segment
    if not segment:
        return _EMPTY
    out: list[str] = []
    for char in segment:
        if char.isascii() and (char.isalnum() or char in "_-"):
            out.append(char)
        else:
            out.extend(f"~{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))
    return "".join(out)


def subject_of(prefix: str, space: str, address: str, pattern: bool = False) -> str:
    """The subject of ``address`` (``pattern``: its ``*``/``>`` segments stay wildcards);
    ``ValueError`` when it would be longer than the server accepts."""
    if pattern:
        escaped = ".".join(s if s in ("*", ">") else _escape(s) for s in address.split("."))
    else:
        escaped = ".".join(_escape(s) for s in address.split("."))
    subject = f"{prefix}.{space}.{escaped}"
    if len(subject) > MAX_SUBJECT_BYTES:
        raise ValueError(
            f"its subject would be {len(subject)} bytes once escaped, over the "
            f"{MAX_SUBJECT_BYTES} a NATS server reads; use a shorter address (characters "
            "other than ASCII letters, digits, '_' and '-' take 3 bytes per UTF-8 byte)"
        )
    return subject


def address_of(subject: str, start: int) -> str:
    """The address of a concrete ``subject`` whose escaped address begins at ``start``;
    ``ValueError`` for one no TinyBus sender would make."""
    return ".".join(_unescape(s) for s in subject[start:].split("."))


def _unescape(segment: str) -> str:
    if _PLAIN.fullmatch(segment):
        return segment
    if segment == _EMPTY:
        return ""
    if not _ESCAPED.fullmatch(segment):
        raise ValueError(f"the subject segment {segment!r} is not an escaped address segment")
    data = bytearray()
    index = 0
    while index < len(segment):
        if segment[index] == "~":
            data.append(int(segment[index + 1 : index + 3], 16))
            index += 3
        else:
            data.append(ord(segment[index]))
            index += 1
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise ValueError(f"the subject segment {segment!r} is not UTF-8 once unescaped") from None
