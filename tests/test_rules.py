"""Origin rules: COS OriginConfiguration parsing, refusals, ordering, storage."""

from __future__ import annotations

import pytest

from edge.api.rules import (
    OriginRule,
    OriginRules,
    RuleError,
    first_match,
    ordered,
    parse_origin_xml,
    render_origin_xml,
)
from edge.config import BucketConfig, OriginAddress, OriginConfig


def rule_xml(inner: str = "", host: str = "202.96.128.86", extra: str = "") -> bytes:
    return (
        "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
        f"<OriginType>Proxy</OriginType>{inner}"
        f"<OriginInfo><HostInfo><HostName>{host}</HostName></HostInfo></OriginInfo>"
        f"</OriginRule>{extra}</OriginConfiguration>"
    ).encode()


def test_defaults_and_round_trip():
    """A minimal rule (priority, Proxy, host) parses to an OriginRule with the defaults: no
    prefix, query string followed, redirect code 302; rendering it back to XML and parsing
    that again gives the same rule."""
    (rule,) = parse_origin_xml(rule_xml())
    assert rule == OriginRule(1, "Proxy", OriginAddress.parse("202.96.128.86"))
    assert parse_origin_xml(render_origin_xml([rule])) == [rule]


@pytest.mark.parametrize(
    "body, words",
    [
        (b"<nope", "not well-formed"),
        (b"<Other/>", "root element"),
        (b"<OriginConfiguration/>", "no OriginRule"),
        (rule_xml().replace(b"Proxy", b"Mirror"), "Mirror"),
        (rule_xml().replace(b"Proxy", b"Teleport"), "must be Proxy or Redirect"),
        (rule_xml("<OriginParameter><Protocol>HTTPS</Protocol></OriginParameter>"), "only HTTP"),
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
    """Each malformed OriginConfiguration (bad XML, wrong root, no rule, Mirror or unknown type,
    HTTPS, a 308 redirect, an unknown or unsupported element, a status other than 404, a bad
    or missing HostName, a non-numeric priority) raises a RuleError naming what is wrong."""
    with pytest.raises(RuleError, match=words):
        parse_origin_xml(body)


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
