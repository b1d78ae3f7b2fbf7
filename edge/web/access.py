"""Signed or anonymous: the one place that decides, for the answer and for the body.

Every leaf of the resource tree (the service root, a bucket, an object, a bad target) is a
`TargetResource`. Its `render` checks whether the request is signed; a signed request is
authenticated by the management API and answered by the leaf's `render_signed`, anything
else by `render_anonymous`. Its `body_sink_for` makes the same decision at the end of the
headers, before a byte of the body is read: only an authenticated request for an operation
that takes a body (the leaf's `body_limit`) gets a spool. Anonymous requests may only read,
and a read has no body, so nothing anonymous can make the edge write to its disk.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.web.resource import Resource
from twisted.web.server import Request

from edge.api import errors, signature
from edge.api.management import Denied, ManagementAPI, request_query
from edge.config import Credential
from edge.web.bodies import BodyRefused, BodySpool, BodySpools, refusal_of
from edge.web.replies import error
from edge.web.target import Target

READ_METHODS = (b"GET", b"HEAD")


@dataclass(frozen=True)
class SignedAccess:
    """What a signed request needs: the management API (None: no signed requests at all)
    and where the bodies it accepts are spooled."""

    api: ManagementAPI | None
    spools: BodySpools


class TargetResource(Resource):
    """A leaf for one request's target; subclasses say what anonymous and signed requests
    get, and how large a body each signed operation takes."""

    isLeaf = True

    def __init__(self, target: Target, access: SignedAccess) -> None:
        super().__init__()
        self.target = target
        self.access = access

    def _signed_api(self, request: Request) -> ManagementAPI | None:
        api = self.access.api
        if api is not None and signature.is_signed(
            request.getHeader(b"authorization"), self.target.query
        ):
            return api
        return None

    def render(self, request: Request) -> bytes | int:
        refused = refusal_of(request)
        if refused is not None:
            return error(request, refused.error, refused.message)
        api = self._signed_api(request)
        if api is None:
            return self.render_anonymous(request)
        target = self.target
        try:
            credential = api.authenticate(request, target.bucket_name, target.key)
            return self.render_signed(request, api, credential)
        except Denied as e:
            return error(request, e.error, e.message)

    def body_sink_for(self, request: Request, length: int | None) -> BodySpool:
        """Where the body of `request` goes, decided from its line and headers before a byte
        of it is read (`EdgeRequest.gotLength`); raises `BodyRefused` to refuse it unread.
        (The API checks the signature again when it answers.)"""
        api = self._signed_api(request)
        if api is None:
            if request.method in READ_METHODS:
                raise BodyRefused(errors.INVALID_REQUEST, "a GET or HEAD request has no body")
            raise BodyRefused(errors.ACCESS_DENIED)
        target = self.target
        try:
            api.authenticate(request, target.bucket_name, target.key)
        except Denied as e:
            raise BodyRefused(e.error, e.message) from None
        limit = self.body_limit(request.method, request_query(request))
        if limit is None:
            raise BodyRefused(errors.INVALID_REQUEST)
        if length is not None and length > limit:
            raise BodyRefused(errors.ENTITY_TOO_LARGE)
        return self.access.spools.open(length, limit)

    def render_anonymous(self, request: Request) -> bytes | int:
        """The answer to an unsigned request (or to any request when there is no API)."""
        raise NotImplementedError

    def render_signed(
        self, request: Request, api: ManagementAPI, credential: Credential
    ) -> bytes | int:
        """The answer to an authenticated request: by default, the management API's."""
        target = self.target
        return api.render(request, target.bucket_name, target.key, credential)

    def body_limit(self, method: bytes, query: dict[str, str]) -> int | None:
        """The largest body the signed operation takes, or None when it takes none."""
        return None
