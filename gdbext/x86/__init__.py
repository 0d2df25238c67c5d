"""Pure decoders: bytes and integers in, frozen dataclasses out.

Nothing in this package imports gdb, so every decoder can be exercised by a
unit test or run over a snapshot saved to a file.  The one exception type a
decoder raises on input it cannot make sense of is DecodeError; any other
exception escaping a decoder is a bug.
"""
from __future__ import annotations


class DecodeError(ValueError):
    """Input a decoder cannot interpret (wrong length, impossible value, unparseable text).

    A subclass of ValueError so callers that already catch ValueError keep working.
    The message is one line and says what was wrong with the input.
    """


__all__ = ["DecodeError"]
