"""``Answers``: what an answer goes through on its way out, as a message does in
``Dispatch.make``: the codec rules and the answer's own options.

Every answer (a handler's return value, ``message.reply``, ``reply_and_request``) is shaped
here before it is pushed into the reply Subject (or a transport's wire): its options' headers
merged under its own, its body transformed by the codec chosen for it (``CodecRegistry``:
named, else the default along its type's MRO, else the selector's), and copied under
``copy=True``. A failure has no body: it goes on as it is. Nothing is done, and one truth test
is the cost, while there are no codecs and the answer has no options.
"""

from __future__ import annotations

from ._exchange import Reply
from .codecs import CodecRegistry
from .message import freeze_headers, own_copy
from .options import DeliveryOptions, check_delivery_options


class Answers:
    """The codec rules and options applied to every answer (see the module)."""

    __slots__ = ("active", "codecs")

    def __init__(self, codecs: CodecRegistry) -> None:
        self.codecs = codecs
        self.active = False  # whether an answer without options may change on its way out

    def refresh(self) -> None:
        """The codecs changed: whether answers must be shaped now."""
        self.active = self.codecs.active

    def shape(self, reply: Reply, options: DeliveryOptions | None) -> Reply:
        """``reply`` as its requester will get it; what a codec raises goes to the caller."""
        options = check_delivery_options(options)
        if reply.error is not None:
            return reply
        body = self.codecs.outgoing(reply.body, options)
        if options is not None:
            if options.copy:
                body = own_copy(body)
            if options.headers is not None:
                reply.headers = freeze_headers(options.headers).merged(
                    freeze_headers(reply.headers)
                )
        reply.body = body
        return reply
