"""The one error the codecs raise."""

__all__ = ("ProtocolError",)


class ProtocolError(Exception):
    """The peer sent bytes that break the framing rules (h11-style: a reason, no I/O state).

    Once a decoder has raised it the decoder is unusable: framing cannot be recovered.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
