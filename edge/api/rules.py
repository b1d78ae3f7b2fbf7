"""Origin rules: which origin a miss goes to, and how (COS's `OriginConfiguration`).

A bucket has an ordered list of rules. The YAML `origin:` key is shorthand for one rule
(Proxy, condition 404, no prefix, 302, query string kept); rules set through the API
(`PUT /?origin`) replace that list, are stored atomically under `.cosedge/origin/` and
survive restarts. A miss takes the first rule that matches its key: lowest `RulePriority`
first, then the longest prefix.

`Proxy` answers the miss with a redirect at once and copies the object in the background
(the seed service's behaviour); `Redirect` only redirects; `Mirror` answers the miss with the
origin's bytes while storing them (edge.web.mirror). A rule also says how the origin
is asked (SPEC §11): its `Protocol` (HTTP, HTTPS, or FOLLOW the client's scheme), standby
origins and the statuses that move a copy to them, whether the origin's redirects are
followed, and a prefix/suffix rewrite of the origin path; `plan` turns that into the
fetch's `OriginPlan`. The XML form is rules_xml.py's.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.api import cosxml
from edge.config import BucketConfig, OriginAddress
from edge.origin.request import HTTP, HTTPS, OriginPlan
from edge.store.changestamp import ChangeStamp
from edge.store.interface import SharedWrites
from edge.store.statefiles import fsync_dir, write_atomically

PROXY = "Proxy"
REDIRECT = "Redirect"
MIRROR = "Mirror"  # SPEC §11: the client gets the origin's bytes in the same response
REDIRECT_CODES = (301, 302, 307)
MAX_RULES = 20  # COS caps a bucket's origin rules too
MAX_STANDBYS = 10  # StandbyHostName_1..10
PROTOCOLS = ("HTTP", "HTTPS", "FOLLOW")


class RuleError(ValueError):
    """An origin configuration the edge will not take; the message says which part and why."""


class MalformedRuleXML(RuleError):
    """The body is not an XML document the edge reads at all (COS's MalformedXML)."""


@dataclass(frozen=True)
class Rewrite:
    """`FileInfo`'s `PrefixConfiguration` or `SuffixConfiguration`: `match` becomes
    `replacement` in the origin path (`Prefix` -> `ReplacedWithPrefix`)."""

    match: str
    replacement: str


@dataclass(frozen=True)
class OriginRule:
    priority: int
    origin_type: str
    origin: OriginAddress
    prefix: str = ""
    follow_query_string: bool = True
    redirect_code: int = 302
    protocol: str = "HTTP"  # HTTP | HTTPS | FOLLOW (the client's scheme)
    standbys: tuple[OriginAddress, ...] = ()
    standby_codes: tuple[str, ...] = ()  # HTTPStandbyCode; empty: 5xx
    follow_redirects: bool = False
    prefix_rewrite: Rewrite | None = None
    suffix_rewrite: Rewrite | None = None
    # COS elements accepted without effect, as sent (tag, XML), so GET returns them.
    kept: tuple[tuple[str, str], ...] = ()

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefix)

    def scheme(self, secure: bool) -> str:
        """The origin's scheme for a client that came over TLS (`secure`) or not."""
        if self.protocol == "FOLLOW":
            return HTTPS if secure else HTTP
        return HTTPS if self.protocol == "HTTPS" else HTTP

    def origin_path(self, key: str) -> str | None:
        """The origin path of `key` after the rule's rewrites; None when none applies."""
        path = key
        prefix, suffix = self.prefix_rewrite, self.suffix_rewrite
        if prefix is not None and path.startswith(prefix.match):
            path = prefix.replacement + path[len(prefix.match) :]
        if suffix is not None and path.endswith(suffix.match):
            path = path[: len(path) - len(suffix.match)] + suffix.replacement
        return None if path == key else path

    def plan(self, key: str, secure: bool) -> OriginPlan:
        """How a copy of `key` asks the origin (standbys and redirects are Proxy copies')."""
        return OriginPlan(
            scheme=self.scheme(secure),
            path=self.origin_path(key),
            standbys=self.standbys,
            standby_codes=self.standby_codes,
            follow_redirects=self.follow_redirects,
        )

    def to_json(self) -> dict[str, object]:
        """The saved form; every key added after the seed's six is optional in
        `from_json`, so rule files of earlier releases still load."""
        return {
            "priority": self.priority,
            "type": self.origin_type,
            "host": self.origin.netloc,
            "prefix": self.prefix,
            "follow_query_string": self.follow_query_string,
            "redirect_code": self.redirect_code,
            "protocol": self.protocol,
            "standbys": [s.netloc for s in self.standbys],
            "standby_codes": list(self.standby_codes),
            "follow_redirects": self.follow_redirects,
            "prefix_rewrite": _rewrite_json(self.prefix_rewrite),
            "suffix_rewrite": _rewrite_json(self.suffix_rewrite),
            "kept": [list(k) for k in self.kept],
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> OriginRule:
        protocol = str(raw.get("protocol", "HTTP"))
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r}")
        return cls(
            priority=int(raw["priority"]),  # type: ignore[call-overload]
            origin_type=str(raw["type"]),
            origin=OriginAddress.parse(raw["host"]),
            prefix=str(raw.get("prefix", "")),
            follow_query_string=bool(raw.get("follow_query_string", True)),
            redirect_code=int(raw.get("redirect_code", 302)),  # type: ignore[call-overload]
            protocol=protocol,
            standbys=tuple(OriginAddress.parse(s) for s in _list(raw, "standbys")),
            standby_codes=tuple(str(c) for c in _list(raw, "standby_codes")),
            follow_redirects=bool(raw.get("follow_redirects", False)),
            prefix_rewrite=_rewrite_from(raw.get("prefix_rewrite")),
            suffix_rewrite=_rewrite_from(raw.get("suffix_rewrite")),
            kept=tuple(_kept(k) for k in _list(raw, "kept")),
        )


def _rewrite_json(rewrite: Rewrite | None) -> list[str] | None:
    return None if rewrite is None else [rewrite.match, rewrite.replacement]


def _rewrite_from(raw: object) -> Rewrite | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError(f"a rewrite must be [match, replacement], not {raw!r}")
    return Rewrite(str(raw[0]), str(raw[1]))


def _kept(raw: object) -> tuple[str, str]:
    """A kept element, parsed now so a damaged file fails the load, not a later GET."""
    if not isinstance(raw, list) or len(raw) != 2:
        raise ValueError(f"a kept element must be [tag, xml], not {raw!r}")
    tag, text = str(raw[0]), str(raw[1])
    if cosxml.parse(text.encode("utf-8")).tag != tag:  # XMLProblem is a ValueError
        raise ValueError(f"kept element {tag!r} holds another element")
    return tag, text


def _list(raw: Mapping[str, object], key: str) -> list[object]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ValueError(f"{key} must be a list, not {value!r}")
    return value


def shorthand_rule(bucket: BucketConfig) -> OriginRule | None:
    """SPEC §7: the YAML `origin:` key as one rule."""
    origin = bucket.active_origin
    if origin is None:
        return None
    return OriginRule(priority=1, origin_type=PROXY, origin=origin)


def ordered(rules: Iterable[OriginRule]) -> tuple[OriginRule, ...]:
    return tuple(sorted(rules, key=lambda r: (r.priority, -len(r.prefix))))


def first_match(rules: Iterable[OriginRule], key: str) -> OriginRule | None:
    for rule in rules:  # already ordered
        if rule.matches(key):
            return rule
    return None


# --- the per-bucket rule sets ------------------------------------------------------------


def _shorthands(buckets: Mapping[str, BucketConfig]) -> dict[str, tuple[OriginRule, ...]]:
    shorthands: dict[str, tuple[OriginRule, ...]] = {}
    for bucket in buckets.values():
        rule = shorthand_rule(bucket)
        shorthands[bucket.name] = (rule,) if rule else ()
    return shorthands


class OriginRules:
    """Every bucket's rules, in memory for the miss path, on disk for restarts.

    A bucket's rules come from one of two sources: the API's rule set saved under
    `.cosedge/origin/<bucket>.json`, or, when there is none, the YAML `origin:` shorthand.
    Deleting the API's rules (`DELETE /?origin`) removes that file, so the YAML applies
    again, now and after a restart.
    """

    def __init__(self, state_dir: Path, buckets: Mapping[str, BucketConfig]) -> None:
        self.folder = Path(state_dir) / "origin"
        self._shorthand = _shorthands(buckets)
        self._rules: dict[str, tuple[OriginRule, ...]] = dict(self._shorthand)
        self._stored: set[str] = set()
        self._stamp = ChangeStamp(self.folder / ".stamp")
        # A cluster's state bucket (SPEC §8), written before the local file; None on one node.
        self.shared: SharedWrites | None = None

    @property
    def stamp_path(self) -> Path:
        return self._stamp.path

    def reconfigure(self, buckets: Mapping[str, BucketConfig]) -> None:
        """The config file's `origin:` shorthands after a reload; a bucket whose rules
        were set through the API keeps those."""
        self._shorthand = _shorthands(buckets)
        rules = {b: r for b, r in self._rules.items() if b in self._stored}
        for bucket, shorthand in self._shorthand.items():
            rules.setdefault(bucket, shorthand)
        self._rules = rules

    def refresh(self) -> None:
        """Reload when another process changed a rule set (called on a timer)."""
        self._stamp.reload_if_changed(self.load, RuleError)

    def load(self) -> None:
        """Read the rule sets saved by the API; they replace the YAML shorthand."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self._stamp.mark_seen()
        rules = dict(self._shorthand)
        stored: set[str] = set()
        for path in sorted(self.folder.glob("*.json")):
            bucket = path.stem
            try:
                raw = json.loads(path.read_text(encoding="utf-8"))
                loaded = tuple(OriginRule.from_json(r) for r in raw["rules"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise RuleError(f"{path}: unreadable origin rules: {e}") from None
            rules[bucket] = ordered(loaded)
            stored.add(bucket)
        self._rules, self._stored = rules, stored

    def source(self, bucket: str) -> str:
        """Where the rules in force come from, for the start-up log and operators."""
        if bucket in self._stored:
            return f"the API ({self.folder / (bucket + '.json')})"
        if self._shorthand.get(bucket):
            return "the config file (origin:)"
        return "nowhere (no origin: misses answer 404)"

    def knows_every_rule(self) -> bool:
        """False on a cluster node that has not got the shared state yet (SPEC §8): a
        bucket without rules here may have rules set on another node."""
        return self.shared is None or self.shared.has_copy

    def rules(self, bucket: str) -> tuple[OriginRule, ...]:
        return self._rules.get(bucket, ())

    def match(self, bucket: str, key: str) -> OriginRule | None:
        return first_match(self._rules.get(bucket, ()), key)

    def replace(self, bucket: str, rules: Iterable[OriginRule]) -> None:
        """Save then apply: a crash between the two leaves the new rules on disk."""
        new = ordered(rules)
        self.save(bucket, new)
        self.apply(bucket, new)

    def save(self, bucket: str, rules: tuple[OriginRule, ...]) -> None:
        """Write a bucket's rule set durably (blocking: the API runs it in a thread)."""
        self._save(bucket, rules)

    def apply(self, bucket: str, rules: tuple[OriginRule, ...]) -> None:
        """Put a saved rule set in force (on the reactor thread) and tell other workers."""
        self._rules[bucket] = rules
        self._stored.add(bucket)
        self._stamp.touch()

    def delete(self, bucket: str) -> None:
        """Drop the API's rule set: the bucket's YAML shorthand (if any) applies again."""
        self._remove(bucket)
        self._rules[bucket] = self._shorthand.get(bucket, ())

    def forget(self, bucket: str) -> None:
        """A deleted bucket takes its rules with it."""
        self._remove(bucket)
        self._rules.pop(bucket, None)

    def _remove(self, bucket: str) -> None:
        self._stored.discard(bucket)
        try:
            (self.folder / f"{bucket}.json").unlink()
        except FileNotFoundError:
            return
        fsync_dir(self.folder)
        self._stamp.touch()

    @staticmethod
    def record(bucket: str, rules: tuple[OriginRule, ...]) -> bytes:
        """A rule set as saved, here and in a cluster's state bucket (the same bytes)."""
        record = {"bucket": bucket, "rules": [r.to_json() for r in rules]}
        return json.dumps(record, indent=1).encode()

    def _save(self, bucket: str, rules: tuple[OriginRule, ...]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / f"{bucket}.json", self.record(bucket, rules))
