"""Origin rules: COS OriginConfiguration parsing, refusals, ordering, storage."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from edge.api.rules import (
    OriginRule,
    OriginRules,
    RuleError,
    first_match,
    ordered,
)
from edge.api.rules_xml import parse_origin_xml, render_origin_xml
from edge.config import BucketConfig, OriginAddress, OriginConfig


def rule_xml(inner: str = "", host: str = "202.96.128.86", extra: str = "") -> bytes:
    return (
        "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
        f"<OriginType>Proxy</OriginType>{inner}"
        f"<OriginInfo><HostInfo><HostName>{host}</HostName></HostInfo></OriginInfo>"
        f"</OriginRule>{extra}</OriginConfiguration>"
    ).encode()


def standby_xml(tag: str, host: str = "202.96.128.87") -> bytes:
    return rule_xml().replace(b"</HostName>", f"</HostName><{tag}>{host}</{tag}>".encode())


def file_info_xml(inner: str) -> bytes:
    return rule_xml().replace(b"</HostInfo>", f"</HostInfo><FileInfo>{inner}</FileInfo>".encode())


def test_defaults_and_round_trip():
    """A minimal rule (priority, Proxy, host) parses to an OriginRule with the defaults: no
    prefix, query string followed, redirect code 302; rendering it back to XML and parsing
    that again gives the same rule."""
    (rule,) = parse_origin_xml(rule_xml())
    assert rule == OriginRule(1, "Proxy", OriginAddress.parse("202.96.128.86"))
    assert parse_origin_xml(render_origin_xml([rule])) == [rule]


def test_mirror_rule_round_trips_without_a_redirect_code():
    """OriginType Mirror is accepted (SPEC §11); a HttpRedirectCode sent with it is ignored
    (a Mirror never redirects) and not rendered back, so GET ?origin gives what COS takes."""
    body = rule_xml(
        "<OriginParameter><HttpRedirectCode>301</HttpRedirectCode></OriginParameter>"
    ).replace(b"Proxy", b"Mirror")
    (rule,) = parse_origin_xml(body)
    assert rule == OriginRule(1, "Mirror", OriginAddress.parse("202.96.128.86"))
    rendered = render_origin_xml([rule])
    assert b"<OriginType>Mirror</OriginType>" in rendered
    assert b"HttpRedirectCode" not in rendered
    assert parse_origin_xml(rendered) == [rule]


@pytest.mark.parametrize(
    "body, words",
    [
        (b"<nope", "not well-formed"),
        (b"<Other/>", "root element"),
        (b"<OriginConfiguration/>", "no OriginRule"),
        (rule_xml().replace(b"Proxy", b"Teleport"), "must be Proxy, Redirect or Mirror"),
        (
            rule_xml("<OriginParameter><Protocol>FTP</Protocol></OriginParameter>"),
            "HTTP, HTTPS or FOLLOW",
        ),
        (
            rule_xml(
                "<HTTPStandbyCode><StatusCode>200</StatusCode></HTTPStandbyCode>",
            ),
            "not a 4xx or 5xx",
        ),
        (rule_xml("<HTTPStandbyCode/>"), "lists no StatusCode"),
        (
            rule_xml(
                "<OriginParameter><HTTPStandbyCode><StatusCode>404</StatusCode>"
                "</HTTPStandbyCode></OriginParameter>"
                "<HTTPStandbyCode><StatusCode>404</StatusCode></HTTPStandbyCode>"
            ),
            "both in OriginRule and OriginParameter",
        ),
        (
            rule_xml(
                "<OriginParameter><FollowRedirection>yes</FollowRedirection></OriginParameter>"
            ),
            "FollowRedirection: expected true or false",
        ),
        (standby_xml("StandbyHostName_11"), "N must be 1 to 10"),
        (standby_xml("StandbyHost"), "StandbyHost: not supported"),
        (standby_xml("StandbyHostName_1", "http://x.com"), "StandbyHostName_1: .* has a scheme"),
        (file_info_xml("<FixedFileConfiguration/>"), "FixedFileConfiguration: not supported"),
        (
            file_info_xml("<PrefixConfiguration><Pre>a</Pre></PrefixConfiguration>"),
            "PrefixConfiguration.Pre: unknown element",
        ),
        (
            rule_xml("<OriginParameter><HttpRedirectCode>308</HttpRedirectCode></OriginParameter>"),
            "301, 302 or 307",
        ),
        (rule_xml("<OriginParameter><Bogus>1</Bogus></OriginParameter>"), "unknown element"),
        (rule_xml("<OriginCondition><Suffix>.jpg</Suffix></OriginCondition>"), "Suffix"),
        (
            rule_xml("<OriginCondition><HTTPStatusCode>403</HTTPStatusCode></OriginCondition>"),
            "404",
        ),
        (rule_xml(host=""), "HostName: is required"),
        (rule_xml(host="http://x.com/path"), "HostName"),
        (rule_xml(host="a.com:99999"), "HostName"),
        (rule_xml().replace(b"<RulePriority>1", b"<RulePriority>x"), "whole number"),
    ],
)
def test_refusals_name_the_element(body, words):
    """Each malformed OriginConfiguration (bad XML, wrong root, no rule, an unknown type,
    an unknown protocol, a standby code that is not 4xx/5xx or none at all, standby codes in
    both places, a non-boolean FollowRedirection, a standby numbered past 10 or misnamed or
    with a scheme, an unsupported or misspelt FileInfo part, a 308 redirect, an unknown or
    unsupported element, a status other than 404, a bad or missing HostName, a non-numeric
    priority) raises a RuleError naming what is wrong."""
    with pytest.raises(RuleError, match=words):
        parse_origin_xml(body)


FULL_RULE = (
    "<OriginConfiguration><OriginRule><RulePriority>2</RulePriority>"
    "<OriginType>Proxy</OriginType>"
    "<OriginCondition><HTTPStatusCode>404</HTTPStatusCode><Prefix>img/</Prefix></OriginCondition>"
    "<OriginParameter><Protocol>HTTPS</Protocol>"
    "<TransparentErrorCode>false</TransparentErrorCode>"
    "<FollowQueryString>false</FollowQueryString>"
    "<HttpHeader><FollowAllHeaders>false</FollowAllHeaders></HttpHeader>"
    "<FollowRedirection>true</FollowRedirection>"
    "<HttpRedirectCode>307</HttpRedirectCode><CopyOriginData>true</CopyOriginData>"
    "</OriginParameter>"
    "<OriginInfo><HostInfo><HostName>a.example.com</HostName>"
    "<StandbyHostName_1>b.example.com:8443</StandbyHostName_1>"
    "<StandbyHostName_2>202.96.128.87</StandbyHostName_2></HostInfo>"
    "<FileInfo><PrefixConfiguration><Prefix>img/</Prefix>"
    "<ReplacedWithPrefix>static/images/</ReplacedWithPrefix></PrefixConfiguration>"
    "<SuffixConfiguration><Suffix>.jpg</Suffix><ReplacedWithSuffix>.jpeg</ReplacedWithSuffix>"
    "</SuffixConfiguration></FileInfo></OriginInfo>"
    "<HTTPStandbyCode><StatusCode>404</StatusCode><StatusCode>5xx</StatusCode></HTTPStandbyCode>"
    "</OriginRule></OriginConfiguration>"
)


def test_every_element_round_trips_in_cos_order():
    """A rule using every element the edge knows parses to those settings, and GET's
    document gives back each element PUT sent (the kept TransparentErrorCode, HttpHeader
    and CopyOriginData too) in COS's element order: GET's body is PUT's, byte for byte
    after the declaration."""
    (rule,) = parse_origin_xml(FULL_RULE.encode())
    assert rule.protocol == "HTTPS" and rule.follow_redirects and not rule.follow_query_string
    assert [s.netloc for s in rule.standbys] == ["b.example.com:8443", "202.96.128.87"]
    assert rule.standby_codes == ("404", "5xx")
    assert rule.origin_path("img/a.jpg") == "static/images/a.jpeg"
    assert rule.origin_path("img/a.png") == "static/images/a.png"
    assert rule.origin_path("css/a.css") is None
    body = render_origin_xml([rule])
    assert body == b'<?xml version="1.0" encoding="UTF-8"?>\n' + FULL_RULE.encode()
    assert parse_origin_xml(body) == [rule]
    again = OriginRule.from_json(json.loads(json.dumps(rule.to_json())))
    assert again == rule


def test_standby_codes_are_also_read_under_origin_parameter():
    """HTTPStandbyCode where COS's API page puts it (inside OriginParameter) reads the same
    as where its SDKs put it (in OriginRule), and GET shows it in the OriginRule."""
    inner = (
        "<OriginParameter><HTTPStandbyCode><StatusCode>403</StatusCode></HTTPStandbyCode>"
        "</OriginParameter>"
    )
    (rule,) = parse_origin_xml(rule_xml(inner))
    assert rule.standby_codes == ("403",)
    rendered = ET.fromstring(render_origin_xml([rule])).find("OriginRule")
    assert rendered is not None and rendered.findtext("HTTPStandbyCode/StatusCode") == "403"


def test_plan_scheme_and_standby_statuses():
    """FOLLOW takes the client's scheme; without HTTPStandbyCode any 5xx (only) sends a
    copy to the standby, with one only the listed statuses (exact or `4xx`) do."""
    origin = OriginAddress.parse("202.96.128.86")
    follow = OriginRule(1, "Proxy", origin, protocol="FOLLOW")
    assert follow.scheme(True) == "https" and follow.scheme(False) == "http"
    plain = OriginRule(1, "Proxy", origin).plan("k", secure=False)
    assert plain.fails_over(503) and not plain.fails_over(404) and plain.path is None
    listed = OriginRule(1, "Proxy", origin, standby_codes=("404", "4xx")).plan("k", False)
    assert listed.fails_over(404) and listed.fails_over(410) and not listed.fails_over(503)
    assert plain.url(origin, "a b/c") == b"http://202.96.128.86/a%20b/c"


def test_rules_saved_by_the_previous_release_still_load(tmp_path):
    """A rule file of the release before origin modes (the six seed keys only) loads as
    plain-HTTP rules without standbys, redirects or rewrites."""
    folder = tmp_path / "origin"
    folder.mkdir()
    old = {
        "bucket": "b-1",
        "rules": [
            {
                "priority": 1,
                "type": "Proxy",
                "host": "202.96.128.86:8080",
                "prefix": "p/",
                "follow_query_string": False,
                "redirect_code": 301,
            }
        ],
    }
    (folder / "b-1.json").write_text(json.dumps(old))
    rules = OriginRules(tmp_path, {})
    rules.load()
    (rule,) = rules.rules("b-1")
    assert rule == OriginRule(
        1, "Proxy", OriginAddress.parse("202.96.128.86:8080"), "p/", False, 301
    )
    assert rule.protocol == "HTTP" and rule.standbys == () and not rule.follow_redirects


def test_duplicate_priorities_refused():
    """Two rules with the same RulePriority are refused with a RuleError saying priorities must
    be unique."""
    one = rule_xml().decode().split("<OriginConfiguration>")[1].split("</OriginConfiguration>")[0]
    with pytest.raises(RuleError, match="unique"):
        parse_origin_xml(f"<OriginConfiguration>{one}{one}</OriginConfiguration>".encode())


def test_order_is_priority_then_longest_prefix():
    """Rules are ordered by priority, then longest prefix first within a priority; `first_match`
    returns the first rule in that order whose prefix the key starts with (priority 1 with no
    prefix beats priority 2 `a/b/`, which beats `a/`), or None when no prefix matches."""
    origin = OriginAddress.parse("202.96.128.86")
    rules = ordered(
        [
            OriginRule(2, "Proxy", origin, "a/b/"),
            OriginRule(1, "Proxy", origin, ""),
            OriginRule(2, "Proxy", origin, "a/"),
        ]
    )
    assert [(r.priority, r.prefix) for r in rules] == [(1, ""), (2, "a/b/"), (2, "a/")]
    assert first_match(rules, "a/b/c").prefix == ""
    assert first_match(rules[1:], "a/b/c").prefix == "a/b/"
    assert first_match(rules[1:], "z") is None


def test_yaml_shorthand_then_api_rules_persist(tmp_path):
    """A YAML `origin:` acts as a rule matching every key (none when it is disabled); rules set
    through the API replace it and are still in force after a reload from the folder, and an
    empty rule set from the API reloads as empty instead of falling back to the YAML origin."""
    address = OriginAddress.parse("202.96.128.86:8080")
    buckets = {
        "b-1": BucketConfig("b-1", (), OriginConfig(True, address)),
        "c-1": BucketConfig("c-1", (), OriginConfig(False, address)),
    }
    rules = OriginRules(tmp_path, buckets)
    rules.load()
    assert rules.match("b-1", "k").origin == address  # shorthand
    assert rules.match("c-1", "k") is None  # origin disabled
    rules.replace("b-1", [OriginRule(1, "Redirect", address, "x/")])
    again = OriginRules(tmp_path, buckets)
    again.load()
    assert again.match("b-1", "k") is None and again.match("b-1", "x/k").origin_type == "Redirect"
    again.replace("b-1", [])
    third = OriginRules(tmp_path, buckets)
    third.load()
    assert third.rules("b-1") == ()  # an empty rule set from the API stays empty


def test_deleting_api_rules_restores_the_yaml_shorthand_now_and_after_restart(tmp_path):
    """DELETE ?origin drops the API's rule set: the YAML `origin:` applies again at once
    and after a restart (it used to be shadowed for good), and `source` says which applies."""
    address = OriginAddress.parse("202.96.128.86")
    buckets = {"b-1": BucketConfig("b-1", (), OriginConfig(True, address))}
    rules = OriginRules(tmp_path, buckets)
    rules.load()
    assert rules.source("b-1") == "the config file (origin:)"
    rules.replace("b-1", [OriginRule(1, "Redirect", OriginAddress.parse("202.96.128.87"))])
    assert rules.match("b-1", "k").origin_type == "Redirect"
    assert rules.source("b-1").startswith("the API")
    rules.delete("b-1")
    assert rules.match("b-1", "k").origin == address
    assert rules.source("b-1") == "the config file (origin:)"
    again = OriginRules(tmp_path, buckets)
    again.load()
    assert again.match("b-1", "k").origin == address
    assert again.source("b-2").startswith("nowhere")


def test_rules_set_in_one_process_reach_another(tmp_path):
    """Worker processes: a rule set through one instance is seen by another sharing the
    folder once its timer refreshes it; between refreshes the miss path reads memory only."""
    address = OriginAddress.parse("202.96.128.86")
    one, two = OriginRules(tmp_path, {}), OriginRules(tmp_path, {})
    one.load()
    two.load()
    assert two.match("b-1", "k") is None
    one.replace("b-1", [OriginRule(1, "Proxy", address)])
    assert two.match("b-1", "k") is None  # no file read on the request path
    two.refresh()
    assert two.match("b-1", "k") is not None
    one.delete("b-1")
    two.refresh()
    assert two.match("b-1", "k") is None


def test_buckets_made_in_one_process_reach_another(tmp_path):
    """A bucket created or deleted by one process reaches another on its next refresh,
    and the store hears of each change once."""
    from edge.api.buckets import BucketRegistry

    changes = []
    one = BucketRegistry({}, tmp_path)
    two = BucketRegistry({}, tmp_path, lambda added, removed: changes.append((added, removed)))
    one.load()
    two.load()
    one.create("new-1250000000")
    two.refresh()
    assert two.get("new-1250000000") is not None
    one.delete("new-1250000000")
    two.refresh()
    assert two.get("new-1250000000") is None
    assert changes == [({"new-1250000000"}, set()), (set(), {"new-1250000000"})]


def test_two_processes_creating_different_buckets_keep_both(tmp_path):
    """Two processes that each create a bucket from a view that lacks the other's keep
    both (a whole-list rewrite from a stale view used to lose the first); creating the
    same bucket twice has one winner."""
    from edge.api.buckets import BucketExists, BucketRegistry

    one, two = BucketRegistry({}, tmp_path), BucketRegistry({}, tmp_path)
    one.load()
    two.load()
    one.create("first-1250000000")
    two.create("second-1250000000")  # two has not refreshed: it does not know "first"
    fresh = BucketRegistry({}, tmp_path)
    assert sorted(fresh.load()) == ["first-1250000000", "second-1250000000"]
    with pytest.raises(BucketExists):
        two.create("first-1250000000")


def test_bucket_list_of_an_older_release_is_taken_over(tmp_path):
    """`.cosedge/buckets.json` of an earlier release becomes one file per bucket."""
    import json

    from edge.api.buckets import BucketRegistry

    (tmp_path / "buckets.json").write_text(json.dumps({"created": ["old-1250000000"]}))
    registry = BucketRegistry({}, tmp_path)
    assert registry.load() == ["old-1250000000"]
    assert (tmp_path / "buckets" / "old-1250000000").is_file()
    assert not (tmp_path / "buckets.json").exists()


@pytest.mark.logs_errors
def test_state_watcher_survives_a_failing_refresh():
    """One refresher that raises does not end change detection (a bare TimerService stops
    on its callable's first exception): the others still run, and so does the next tick."""
    from twisted.internet.testing import MemoryReactorClock

    from edge.store.changestamp import StateWatcher

    calls = []

    def broken() -> None:
        calls.append("broken")
        raise OSError("disk went away")

    clock = MemoryReactorClock()
    watcher = StateWatcher(0.5, [broken, lambda: calls.append("ok")], clock)
    watcher.startService()
    clock.advance(0.5)
    clock.advance(0.5)
    watcher.stopService()
    assert calls.count("ok") == calls.count("broken") >= 2
