"""The console's own parsing and building, run in Chromium against the edge's Python:
the OriginConfiguration it sends reads back as the same rules through
`edge.api.rules.parse_origin_xml`, and its reading of the Prometheus exposition finds the
samples `prometheus_client` writes, label escapes included."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter, generate_latest

from edge.api.rules import OriginRule, Rewrite
from edge.api.rules_xml import parse_origin_xml, render_origin_xml
from edge.config import OriginAddress
from tests.browser.conftest import ConsoleEdge

pytestmark = pytest.mark.browser


def on_console_page(browser: Any, edge: ConsoleEdge) -> None:
    if not browser.current_url.startswith(edge.base + "/console/"):
        browser.get(edge.base + "/console/")


def test_origin_xml_from_the_page_reads_back_as_the_same_rules(
    browser: Any, console_edge: ConsoleEdge
) -> None:
    """Three rules, one with a prefix needing XML escapes, Redirect 307 and no query string,
    one Mirror (sent without a redirect code): the edge's parser reads exactly what the
    page's form held."""
    on_console_page(browser, console_edge)
    rules = [
        {
            "priority": "2",
            "type": "Redirect",
            "prefix": "a&b/<c>/\"d'/图片/",
            "address": "origin.example.com:8080",
            "redirectCode": "307",
            "followQueryString": False,
        },
        {
            "priority": "3",
            "type": "Mirror",
            "prefix": "video/",
            "address": "203.0.113.8",
            "redirectCode": "301",
            "followQueryString": True,
        },
        {
            "priority": "1",
            "type": "Proxy",
            "prefix": "",
            "address": "203.0.113.7",
            "redirectCode": "302",
            "followQueryString": True,
        },
    ]
    body = browser.execute_script("return CosApi.originXml(arguments[0])", rules)
    parsed = parse_origin_xml(body.encode("utf-8"))
    assert [
        (
            r.priority,
            r.origin_type,
            r.prefix,
            r.origin.netloc,
            r.redirect_code,
            r.follow_query_string,
        )
        for r in parsed
    ] == [
        (1, "Proxy", "", "203.0.113.7", 302, True),
        (2, "Redirect", "a&b/<c>/\"d'/图片/", "origin.example.com:8080", 307, False),
        (3, "Mirror", "video/", "203.0.113.8", 302, True),
    ]
    assert "HttpRedirectCode>301<" not in body  # none for a Mirror rule, as COS takes it


def test_metrics_reading_matches_prometheus_client(browser: Any, console_edge: ConsoleEdge) -> None:
    """Counts by bucket and outcome from a real exposition: another bucket's samples, a
    metric whose name extends this one's, and a label value with escapes are told apart."""
    registry = CollectorRegistry()
    requests = Counter("cosedge_requests", "Requests.", ["bucket", "outcome"], registry=registry)
    longer = Counter("cosedge_requests_totally", "Not it.", ["bucket"], registry=registry)
    requests.labels("b-1", "hit").inc(7)
    requests.labels("b-1", "redirect").inc(2)
    requests.labels("b-1", "error").inc()
    requests.labels('odd"\\bucket\n', "hit").inc(5)
    requests.labels("b-2", "hit").inc(100)
    longer.labels("b-1").inc(50)
    text = generate_latest(registry).decode()
    on_console_page(browser, console_edge)
    script = """
    const sums = {};
    for (const s of CosApi.samples(arguments[0], "cosedge_requests_total")) {
      const key = s.labels.bucket + "|" + s.labels.outcome;
      sums[key] = (sums[key] || 0) + s.value;
    }
    return sums;
    """
    assert browser.execute_script(script, text) == {
        "b-1|hit": 7,
        "b-1|redirect": 2,
        "b-1|error": 1,
        'odd"\\bucket\n|hit': 5,
        "b-2|hit": 100,
    }


def test_saving_a_rule_keeps_what_the_page_does_not_edit(
    browser: Any, console_edge: ConsoleEdge
) -> None:
    """A rule as GET ?origin renders it, with a path rewrite, standby status codes, header
    settings and two standbys: the page reads its fields, and after a change of priority,
    prefix and the second standby what it sends reads back with every other part unchanged."""
    original = OriginRule(
        3,
        "Proxy",
        OriginAddress.parse("origin.example.com"),
        "img/",
        protocol="HTTPS",
        follow_redirects=True,
        standbys=(OriginAddress.parse("203.0.113.9:8080"), OriginAddress.parse("b.example")),
        standby_codes=("404", "5xx"),
        prefix_rewrite=Rewrite("img/", "static/images/"),
        kept=(
            ("HttpHeader", "<HttpHeader><FollowAllHeaders>true</FollowAllHeaders></HttpHeader>"),
        ),
    )
    document = render_origin_xml([original]).decode()
    on_console_page(browser, console_edge)
    script = """
    const rules = CosApi.rulesOf(CosApi.parseXml(arguments[0]));
    const seen = Object.assign({}, rules[0]);
    delete seen.xml;
    rules[0].priority = "4";
    rules[0].prefix = "pics/";
    rules[0].standbys = [rules[0].standbys[0], "c.example"];
    return [seen, CosApi.originXml(rules)];
    """
    seen, body = browser.execute_script(script, document)
    assert seen["priority"] == "3" and seen["address"] == "origin.example.com"
    assert seen["standbys"] == ["203.0.113.9:8080", "b.example"]
    assert (seen["protocol"], seen["followRedirects"]) == ("HTTPS", True)
    assert {"FileInfo", "HTTPStandbyCode", "HttpHeader"} <= set(seen["kept"])
    [parsed] = parse_origin_xml(body.encode())
    assert parsed == replace(
        original,
        priority=4,
        prefix="pics/",
        standbys=(OriginAddress.parse("203.0.113.9:8080"), OriginAddress.parse("c.example")),
    )
