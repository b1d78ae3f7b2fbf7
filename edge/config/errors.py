"""Config problems: each one the file, the key and the reason, in one line.

A start-up that refuses a bad config must say exactly what to fix; collecting every
top-level key's problem (`ConfigProblems`) lets one run report them all.
"""

from __future__ import annotations

from collections.abc import Sequence


class ConfigError(Exception):
    """A config problem: `str()` is the one line an operator sees on start-up."""

    def __init__(self, source: str, key: str, reason: str) -> None:
        super().__init__(source, key, reason)
        self.source = source
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.source}: {self.key}: {self.reason}"

    @property
    def problems(self) -> list[ConfigError]:
        """Every problem found; start-up names the first, `cosedge check-config` all."""
        return [self]

    def first_line(self) -> str:
        """The one line start-up prints: the first problem, and how many more there are."""
        more = len(self.problems) - 1
        first = str(self.problems[0])
        return first if not more else f"{first} (and {more} more: cosedge check-config)"


class ConfigProblems(ConfigError):
    """Several independent problems in one file, found in one pass."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        first = problems[0]
        super().__init__(first.source, first.key, first.reason)
        self._problems = list(problems)

    @property
    def problems(self) -> list[ConfigError]:
        return list(self._problems)

    def __str__(self) -> str:
        return "\n".join(ConfigError.__str__(p) for p in self._problems)


def raise_problems(problems: Sequence[ConfigError]) -> None:
    """Raise what was collected: nothing, the one problem, or all of them."""
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigProblems(problems)
