"""COS's `OriginConfiguration` XML, both ways: PUT `?origin` bodies in, GET `?origin` out.

Parsed without DTDs or entities (`cosxml.parse`) and by local names, so a body in the S3
namespace reads the same as one without. Every element the edge acts on is checked and
refused with the element named (`RuleError`); the few COS elements it accepts without
acting on them (header forwarding, error pass-through) are kept as sent, so GET returns
what PUT was given. Output follows COS's element order (the order of its SDKs' structs):
`RulePriority`, `OriginType`, `OriginCondition`, `OriginParameter` (`Protocol`,
`TransparentErrorCode`, `FollowQueryString`, `HttpHeader`, `FollowRedirection`,
`HttpRedirectCode`, `CopyOriginData`), `OriginInfo` (`HostInfo` with `HostName` and
`StandbyHostName_N`, then `FileInfo`), `HTTPStandbyCode`.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import replace

from edge.api import cosxml
from edge.api.rules import (
    MAX_RULES,
    MAX_STANDBYS,
    MIRROR,
    PROTOCOLS,
    PROXY,
    REDIRECT,
    REDIRECT_CODES,
    MalformedRuleXML,
    OriginRule,
    Rewrite,
    RuleError,
    ordered,
)
from edge.config import OriginAddress

MAX_XML_BYTES = 64 * 1024

# Documented COS elements the edge accepts and keeps without acting on them: they tune
# header forwarding, error pass-through or Mirror copies, none of which a 302-based pull
# does. In COS's order, with the elements the edge acts on between them.
_KEPT_PARAMETERS = (
    "TransparentErrorCode",
    "HttpHeader",
    "FollowRedirectionConfiguration",
    "CopyOriginData",
)
_PARAMETERS = {
    "Protocol",
    "FollowQueryString",
    "FollowRedirection",
    "HttpRedirectCode",
    "HTTPStandbyCode",
    *_KEPT_PARAMETERS,
}
_STANDBY_RE = re.compile(r"^StandbyHostName_([0-9]+)$")
_STATUS_RE = re.compile(r"^[45](?:[0-9]{2}|xx)$")
_MAX_REWRITE = 1024


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
    """Rules from a `PUT /?origin` body; `RuleError` names the offending element."""
    if len(body) > MAX_XML_BYTES:
        raise RuleError("OriginConfiguration is larger than 64 KiB")
    try:
        root = cosxml.parse(body)
    except cosxml.XMLProblem as e:
        raise MalformedRuleXML(str(e)) from None
    if root.tag != "OriginConfiguration":
        raise MalformedRuleXML(f"root element must be OriginConfiguration, not {root.tag}")
    elements = root.findall("OriginRule")
    if not elements:
        raise RuleError("OriginConfiguration has no OriginRule")
    if len(elements) > MAX_RULES:
        raise RuleError(f"at most {MAX_RULES} OriginRule elements")
    rules = [_parse_rule(element, f"OriginRule[{n}]") for n, element in enumerate(elements, 1)]
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
    if origin_type not in (PROXY, REDIRECT, MIRROR):
        raise RuleError(
            f"{where}.OriginType: must be Proxy, Redirect or Mirror, not {origin_type!r}"
        )

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
    rule = OriginRule(priority, origin_type, _host(element, where), prefix)
    if parameter is not None:
        rule = _with_parameters(rule, parameter, f"{where}.OriginParameter")
    codes = [
        c for c in (element, parameter) if c is not None and c.find("HTTPStandbyCode") is not None
    ]
    if len(codes) > 1:
        raise RuleError(f"{where}.HTTPStandbyCode: given both in OriginRule and OriginParameter")
    standby_codes: tuple[str, ...] = ()
    if codes:
        standby_codes = _standby_codes(codes[0].find("HTTPStandbyCode"), f"{where}.HTTPStandbyCode")
    info = element.find("OriginInfo")
    standbys = _standbys(info.find("HostInfo"), where) if info is not None else ()
    prefix_rewrite = suffix_rewrite = None
    file_info = info.find("FileInfo") if info is not None else None
    if file_info is not None:
        prefix_rewrite, suffix_rewrite = _rewrites(file_info, f"{where}.OriginInfo.FileInfo")
    return replace(
        rule,
        standbys=standbys,
        standby_codes=standby_codes,
        prefix_rewrite=prefix_rewrite,
        suffix_rewrite=suffix_rewrite,
    )


def _with_parameters(rule: OriginRule, parameter: ET.Element, where: str) -> OriginRule:
    kept: list[tuple[str, str]] = []
    for child in parameter:
        if child.tag not in _PARAMETERS:
            raise RuleError(f"{where}.{child.tag}: unknown element")
        if child.tag in _KEPT_PARAMETERS:
            child.tail = None
            kept.append((child.tag, ET.tostring(child, encoding="unicode")))
    protocol = (_text(parameter.find("Protocol")) or "HTTP").upper()
    if protocol not in PROTOCOLS:
        raise RuleError(f"{where}.Protocol: must be HTTP, HTTPS or FOLLOW, not {protocol!r}")
    follow_query = _bool(
        _text(parameter.find("FollowQueryString")), f"{where}.FollowQueryString", True
    )
    follow_redirects = _bool(
        _text(parameter.find("FollowRedirection")), f"{where}.FollowRedirection", False
    )
    redirect_code = 302
    code_text = _text(parameter.find("HttpRedirectCode"))
    if rule.origin_type == MIRROR:  # a Mirror never redirects: ignored (COS refuses it)
        code_text = ""
    if code_text:
        try:
            redirect_code = int(code_text)
        except ValueError:
            redirect_code = 0
        if redirect_code not in REDIRECT_CODES:
            raise RuleError(f"{where}.HttpRedirectCode: must be 301, 302 or 307")
    return OriginRule(
        rule.priority,
        rule.origin_type,
        rule.origin,
        rule.prefix,
        follow_query,
        redirect_code,
        protocol=protocol,
        follow_redirects=follow_redirects,
        kept=tuple(kept),
    )


def _address(text: str, where: str) -> OriginAddress:
    try:
        return OriginAddress.parse(text)
    except ValueError as e:
        raise RuleError(f"{where}: {e}") from None


def _host(element: ET.Element, where: str) -> OriginAddress:
    info = element.find("OriginInfo")
    if info is not None and len(info.findall("HostInfo")) > 1:
        raise RuleError(f"{where}.OriginInfo.HostInfo: one HostInfo per rule (no weights)")
    host_text = _text(element.find("OriginInfo/HostInfo/HostName"))
    if not host_text:
        raise RuleError(f"{where}.OriginInfo.HostInfo.HostName: is required")
    return _address(host_text, f"{where}.OriginInfo.HostInfo.HostName")


def _standbys(host_info: ET.Element | None, where: str) -> tuple[OriginAddress, ...]:
    """`StandbyHostName_1..10`, in the order of their numbers."""
    if host_info is None:
        return ()
    numbered: dict[int, OriginAddress] = {}
    for child in host_info:
        here = f"{where}.OriginInfo.HostInfo.{child.tag}"
        if child.tag in ("HostName", "Weight"):
            continue
        match = _STANDBY_RE.match(child.tag)
        if match is None:
            raise RuleError(f"{here}: not supported")
        n = int(match.group(1))
        if not 1 <= n <= MAX_STANDBYS:
            raise RuleError(f"{here}: N must be 1 to {MAX_STANDBYS}")
        if n in numbered:
            raise RuleError(f"{here}: given twice")
        numbered[n] = _address(_text(child), here)
    return tuple(numbered[n] for n in sorted(numbered))


def _standby_codes(element: ET.Element | None, where: str) -> tuple[str, ...]:
    codes: list[str] = []
    for child in element if element is not None else ():
        if child.tag != "StatusCode":
            raise RuleError(f"{where}.{child.tag}: unknown element")
        code = _text(child).lower()
        if not _STATUS_RE.match(code):
            raise RuleError(f"{where}.StatusCode: {code!r} is not a 4xx or 5xx status")
        if code not in codes:
            codes.append(code)
    if not codes:
        raise RuleError(f"{where}: lists no StatusCode")
    return tuple(codes)


def _rewrites(file_info: ET.Element, where: str) -> tuple[Rewrite | None, Rewrite | None]:
    found: dict[str, Rewrite] = {}
    for child in file_info:
        if child.tag not in ("PrefixConfiguration", "SuffixConfiguration"):
            raise RuleError(f"{where}.{child.tag}: not supported")
        part = child.tag[: -len("Configuration")]  # Prefix / Suffix
        here = f"{where}.{child.tag}"
        for grandchild in child:
            if grandchild.tag not in (part, f"ReplacedWith{part}"):
                raise RuleError(f"{here}.{grandchild.tag}: unknown element")
        match = _rewrite_text(child.find(part), f"{here}.{part}")
        replacement = _rewrite_text(child.find(f"ReplacedWith{part}"), f"{here}.ReplacedWith{part}")
        found[part] = Rewrite(match, replacement)
    return found.get("Prefix"), found.get("Suffix")


def _rewrite_text(element: ET.Element | None, where: str) -> str:
    text = element.text or "" if element is not None else ""
    if len(text) > _MAX_REWRITE:
        raise RuleError(f"{where}: longer than {_MAX_REWRITE} characters")
    if any(ord(c) < 0x20 or c in "\\\x7f" for c in text):
        raise RuleError(f"{where}: contains a control character or a backslash")
    return text


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
        _render_parameters(cosxml.sub(node, "OriginParameter"), rule)
        info = cosxml.sub(node, "OriginInfo")
        host = cosxml.sub(info, "HostInfo")
        cosxml.sub(host, "HostName", rule.origin.netloc)
        for n, standby in enumerate(rule.standbys, 1):
            cosxml.sub(host, f"StandbyHostName_{n}", standby.netloc)
        if rule.prefix_rewrite is not None or rule.suffix_rewrite is not None:
            file_info = cosxml.sub(info, "FileInfo")
            for part, rewrite in (("Prefix", rule.prefix_rewrite), ("Suffix", rule.suffix_rewrite)):
                if rewrite is not None:
                    config = cosxml.sub(file_info, f"{part}Configuration")
                    cosxml.sub(config, part, rewrite.match)
                    cosxml.sub(config, f"ReplacedWith{part}", rewrite.replacement)
        if rule.standby_codes:
            codes = cosxml.sub(node, "HTTPStandbyCode")
            for code in rule.standby_codes:
                cosxml.sub(codes, "StatusCode", code)
    return cosxml.document(root)


def _render_parameters(parameter: ET.Element, rule: OriginRule) -> None:
    kept = dict(rule.kept)

    def keep(tag: str) -> None:
        if tag in kept:
            parameter.append(ET.fromstring(kept[tag]))

    cosxml.sub(parameter, "Protocol", rule.protocol)
    keep("TransparentErrorCode")
    cosxml.sub(parameter, "FollowQueryString", str(rule.follow_query_string).lower())
    keep("HttpHeader")
    cosxml.sub(parameter, "FollowRedirection", str(rule.follow_redirects).lower())
    keep("FollowRedirectionConfiguration")
    if rule.origin_type != MIRROR:  # COS takes none for a Mirror rule
        cosxml.sub(parameter, "HttpRedirectCode", rule.redirect_code)
    keep("CopyOriginData")
