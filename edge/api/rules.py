"""Origin rules: which origin a miss goes to, and how (COS's `OriginConfiguration`).

A bucket has an ordered list of rules. The YAML `origin:` key is shorthand for one rule
(Proxy, condition 404, no prefix, 302, query string kept); rules set through the API
(`PUT /?origin`) replace that list, are stored atomically under `.cosedge/origin/` and
survive restarts. A miss takes the first rule that matches its key: lowest `RulePriority`
first, then the longest prefix.

`Proxy` answers the miss with a redirect at once and copies the object in the background
(the seed service's behaviour); `Redirect` only redirects. `Mirror` (the client waits for the
origin) and HTTPS origins are refused until they get their own issue.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from edge.api import cosxml
from edge.config import BucketConfig, OriginAddress
from edge.store.changestamp import ChangeStamp
from edge.store.interface import SharedWrites
from edge.store.statefiles import fsync_dir, write_atomically

PROXY = "Proxy"
REDIRECT = "Redirect"
REDIRECT_CODES = (301, 302, 307)
MAX_RULES = 20  # COS caps a bucket's origin rules too
MAX_XML_BYTES = 64 * 1024


class RuleError(ValueError):
    """An origin configuration the edge will not take; the message says which part and why."""


class MalformedRuleXML(RuleError):
    """The body is not an XML document the edge reads at all (COS's MalformedXML)."""


@dataclass(frozen=True)
class OriginRule:
    priority: int
    origin_type: str
    origin: OriginAddress
    prefix: str = ""
    follow_query_string: bool = True
    redirect_code: int = 302

    def matches(self, key: str) -> bool:
        return key.startswith(self.prefix)

    def to_json(self) -> dict[str, object]:
        return {
            "priority": self.priority,
            "type": self.origin_type,
            "host": self.origin.netloc,
            "prefix": self.prefix,
            "follow_query_string": self.follow_query_string,
            "redirect_code": self.redirect_code,
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, object]) -> OriginRule:
        return cls(
            priority=int(raw["priority"]),  # type: ignore[call-overload]
            origin_type=str(raw["type"]),
            origin=OriginAddress.parse(raw["host"]),
            prefix=str(raw.get("prefix", "")),
            follow_query_string=bool(raw.get("follow_query_string", True)),
            redirect_code=int(raw.get("redirect_code", 302)),  # type: ignore[call-overload]
        )


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


# --- XML ---------------------------------------------------------------------------------

# Documented COS elements the edge accepts and ignores: they tune Mirror fetches, header
# forwarding or error pass-through, none of which a 302-based pull does.
_IGNORED_PARAMETERS = {
    "TransparentErrorCode",
    "HttpHeader",
    "FollowRedirection",
    "CopyOriginData",
    "HttpRedirectCode",
    "FollowQueryString",
    "Protocol",
}


def _text(element: ET.Element | None) -> str:
    return (element.text or "").strip() if element is not None else ""


def _bool(value: str, where: str, default: bool) -> bool:
    if not value:
        return default
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise RuleError(f"{where}: expected true or false, not {value!r}")


def _non_empty(element: ET.Element | None) -> bool:
    return element is not None and (bool(_text(element)) or len(element) > 0)


def parse_origin_xml(body: bytes) -> list[OriginRule]:
    """Rules from a `PUT /?origin` body; `RuleError` names the offending element.

    Parsed without DTDs or entities (`cosxml.parse`), and by local names, so a body in the
    S3 namespace reads the same as one without.
    """
    if len(body) > MAX_XML_BYTES:
        raise RuleError("OriginConfiguration is larger than 64 KiB")
    try:
        root = cosxml.parse(body)
    except cosxml.XMLProblem as e:
        raise MalformedRuleXML(str(e)) from None
    if root.tag != "OriginConfiguration":
        raise MalformedRuleXML(f"root element must be OriginConfiguration, not {root.tag}")
    rules: list[OriginRule] = []
    elements = root.findall("OriginRule")
    if not elements:
        raise RuleError("OriginConfiguration has no OriginRule")
    if len(elements) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} OriginRule elements")
    for n, element in enumerate(elements, start=1):
        rules.append(_parse_rule(element, f"OriginRule[{n}]"))
    priorities = [r.priority for r in rules]
    if len(set(priorities)) != len(priorities):
        raise RuleError("RulePriority values must be unique")
    return list(ordered(rules))


def _parse_rule(element: ET.Element, where: str) -> OriginRule:
    try:
        priority = int(_text(element.find("RulePriority")))
    except ValueError:
        raise RuleError(f"{where}.RulePriority: must be a whole number") from None
    if priority < 1:
        raise RuleError(f"{where}.RulePriority: must be 1 or more")
    origin_type = _text(element.find("OriginType")) or PROXY
    if origin_type == "Mirror":
        raise RuleError(f"{where}.OriginType: Mirror (synchronous) origins are not supported")
    if origin_type not in (PROXY, REDIRECT):
        raise RuleError(f"{where}.OriginType: must be Proxy or Redirect, not {origin_type!r}")

    condition = element.find("OriginCondition")
    prefix = ""
    if condition is not None:
        status = _text(condition.find("HTTPStatusCode")) or "404"
        if status != "404":
            raise RuleError(f"{where}.OriginCondition.HTTPStatusCode: only 404 is supported")
        prefix = _text(condition.find("Prefix"))
        for unsupported in ("Suffix", "FilterHost"):
            if _non_empty(condition.find(unsupported)):
                raise RuleError(f"{where}.OriginCondition.{unsupported}: not supported")

    parameter = element.find("OriginParameter")
    follow_query = True
    redirect_code = 302
    if parameter is not None:
        for child in parameter:
            if child.tag not in _IGNORED_PARAMETERS:
                raise RuleError(f"{where}.OriginParameter.{child.tag}: unknown element")
        protocol = _text(parameter.find("Protocol")) or "HTTP"
        if protocol != "HTTP":
            raise RuleError(
                f"{where}.OriginParameter.Protocol: only HTTP origins are supported, not {protocol}"
            )
        follow_query = _bool(
            _text(parameter.find("FollowQueryString")),
            f"{where}.OriginParameter.FollowQueryString",
            True,
        )
        code_text = _text(parameter.find("HttpRedirectCode"))
        if code_text:
            try:
                redirect_code = int(code_text)
            except ValueError:
                redirect_code = 0
            if redirect_code not in REDIRECT_CODES:
                raise RuleError(
                    f"{where}.OriginParameter.HttpRedirectCode: must be 301, 302 or 307"
                )

    host_text = _text(element.find("OriginInfo/HostInfo/HostName"))
    if not host_text:
        raise RuleError(f"{where}.OriginInfo.HostInfo.HostName: is required")
    try:
        origin = OriginAddress.parse(host_text)
    except ValueError as e:
        raise RuleError(f"{where}.OriginInfo.HostInfo.HostName: {e}") from None
    return OriginRule(priority, origin_type, origin, prefix, follow_query, redirect_code)


def render_origin_xml(rules: Iterable[OriginRule]) -> bytes:
    """The GET `?origin` document, in COS's element order."""
    root = cosxml.element("OriginConfiguration")
    for rule in rules:
        node = cosxml.sub(root, "OriginRule")
        cosxml.sub(node, "RulePriority", rule.priority)
        cosxml.sub(node, "OriginType", rule.origin_type)
        condition = cosxml.sub(node, "OriginCondition")
        cosxml.sub(condition, "HTTPStatusCode", "404")
        cosxml.sub(condition, "Prefix", rule.prefix)
        parameter = cosxml.sub(node, "OriginParameter")
        cosxml.sub(parameter, "Protocol", "HTTP")
        cosxml.sub(parameter, "FollowQueryString", str(rule.follow_query_string).lower())
        cosxml.sub(parameter, "HttpRedirectCode", rule.redirect_code)
        host = cosxml.sub(cosxml.sub(node, "OriginInfo"), "HostInfo")
        cosxml.sub(host, "HostName", rule.origin.netloc)
    return cosxml.document(root)


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
