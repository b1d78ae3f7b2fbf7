"""A DNS stand-in: `ScriptedResolver` answers host name lookups from a script, at once.

What the edge does with DNS answers (caching, rebinding, empty answers, refused
addresses) is tested with it instead of real DNS, which tests must never reach.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IHostnameResolver, IHostResolution, IResolutionReceiver
from zope.interface import implementer


@implementer(IHostResolution)
class _Resolution:
    def __init__(self, name: str) -> None:
        self.name = name

    def cancel(self) -> None:
        """Scripted answers are given at once: there is nothing to cancel."""


@implementer(IHostnameResolver)
class ScriptedResolver:
    """A name resolver that answers from a script, at once, for testing what the edge
    does with DNS answers (caching, rebinding, empty answers) without real DNS.

    The Nth lookup of a name gets `script[name][min(N, last)]`; a name not in the script
    resolves to nothing. `lookups` records every name looked up, in order.
    """

    def __init__(self, script: Mapping[str, Sequence[Sequence[str]]]) -> None:
        self.script = {name: [list(a) for a in answers] for name, answers in script.items()}
        self.lookups: list[str] = []

    def resolveHostName(
        self,
        resolutionReceiver: IResolutionReceiver,
        hostName: str,
        portNumber: int = 0,
        addressTypes: Any = None,
        transportSemantics: str = "TCP",
    ) -> IHostResolution:
        resolution = _Resolution(hostName)
        resolutionReceiver.resolutionBegan(resolution)
        answers = self.script.get(hostName, [])
        seen = self.lookups.count(hostName)
        self.lookups.append(hostName)
        if answers:
            for address in answers[min(seen, len(answers) - 1)]:
                resolutionReceiver.addressResolved(IPv4Address("TCP", address, portNumber))
        resolutionReceiver.resolutionComplete()
        return resolution
