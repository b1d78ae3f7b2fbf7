"""Refusals found below the HTTP layer, as plain exceptions carrying a COS error code.

The signature check, multipart bookkeeping and the XML codec decide *that* a request is
refused and with which COS code; only `edge.api.errors` turns the code into
a status and an XML body. Keeping the exception here lets those modules stay free of any
import from `edge.web`, so requests flow one way: web -> api/store/origin, never back.
"""

from __future__ import annotations


class CosProblem(Exception):
    """A refusal with the COS error code the response should carry, and why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
