"""``Answers``: what an answer goes through on its way out, as a message does in
``Dispatch.make``: the codec rules, the answer's own options and the outbound interceptors.

Every answer (a handler's return value, ``message.reply``, ``reply_and_request``) is shaped
here before it is pushed into the reply Subject (or a transport's wire): its options' headers
merged under its own, its body transformed by the codec chosen for it (``CodecRegistry``:
named, else the default along its type's MRO, else the selector's), and copied under
``copy=True``. Then the interceptors see it, as ``Envelope("reply", message)`` (the message's
address is the reply address), or a failure as ``Envelope("failure", message)`` (its body is
the error the requester gets): they may stamp a reply's headers or replace its body, see a
failure (which has no headers) but not change it, and raise to reject either (``shape``
raises it). Nothing is done, and one truth test is the cost, while there are no codecs, no
interceptors, and the answer has no options.
"""

from __future__ import annotations

from ._exchange import Reply
from ._taps import Taps
from .codecs import CodecRegistry
from .message import freeze_headers, make_message, own_copy
from .options import DeliveryOptions, check_delivery_options


class Answers:
    """The codec rules and options applied to every answer (see the module)."""

    __slots__ = ("active", "codecs", "taps")

    def __init__(self, codecs: CodecRegistry, taps: Taps) -> None:
        self.codecs = codecs
        self.taps = taps
        self.active = False  # whether an answer without options may change on its way out

    def refresh(self) -> None:
        """The codecs or the interceptors changed: whether answers must be shaped now."""
        self.active = self.codecs.active or bool(self.taps.interceptors)

    def shape(self, reply: Reply, options: DeliveryOptions | None) -> Reply:
        """``reply`` as its requester will get it; what a codec raises goes to the caller."""
        options = check_delivery_options(options)
        if reply.error is not None:
            return self._intercepted(reply) if self.taps.interceptors else reply
        body = self.codecs.outgoing(reply.body, options)
        if options is not None:
            if options.copy:
                body = own_copy(body)
            if options.headers is not None:
                reply.headers = freeze_headers(options.headers).merged(
                    freeze_headers(reply.headers)
                )
        reply.body = body
        return self._intercepted(reply) if self.taps.interceptors else reply

    def _intercepted(self, reply: Reply) -> Reply:
        error = reply.error
        message = make_message(
            reply.body if error is None else error,
            reply.reply_address,
            freeze_headers(reply.headers),
            "reply" if error is None else "failure",
        )
        seen = self.taps.intercept(message.kind, message)
        if error is None and seen is not message:
            reply.body = seen.body
            reply.headers = seen.headers
        return reply
