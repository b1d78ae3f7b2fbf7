"""The console's migration page in a real browser after a short demo against a real edge:
a miss whose copy lands, hits of it, a miss whose copy fails. The page shows the hit ratio
`/metrics` gives, the stored and failed copies with the failure's reason, and one key's
status; with COSEDGE_CONSOLE_SCREENSHOT set, the page is saved there as a PNG (how
docs/console.png is made)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from typing import Any

import pytest
from selenium.webdriver.common.by import By

from tests.browser.conftest import ConsoleEdge, sign_in, text_of, wait_for
from tests.integration.conftest import BUCKET

pytestmark = pytest.mark.browser

STORED_KEY = "photos/cat.txt"
MISSING_KEY = "photos/lost.txt"  # the origin has no such file: its copy fails


def proxy_rule(edge: ConsoleEdge) -> None:
    """One Proxy rule to the test origin for every key, whatever earlier tests saved."""
    body = (
        "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
        "<OriginType>Proxy</OriginType><OriginInfo><HostInfo>"
        f"<HostName>{edge.origin_address}</HostName></HostInfo></OriginInfo></OriginRule>"
        "</OriginConfiguration>"
    )
    status, answer = edge.signed("PUT", f"/{BUCKET}/", {"origin": ""}, body.encode())
    assert status == 200, answer


def copy_state(edge: ConsoleEdge, key: str) -> dict[str, Any]:
    status, body = edge.signed("GET", f"/{BUCKET}/{key}", {"cosedge-copy": ""})
    assert status == 200, body
    answer: dict[str, Any] = json.loads(body)
    return answer


def wait_state(edge: ConsoleEdge, key: str, state: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        record = copy_state(edge, key)
        if record["state"] == state or time.monotonic() > deadline:
            assert record["state"] == state, record
            return record
        time.sleep(0.1)


def requests_by_outcome(edge: ConsoleEdge) -> dict[str, float]:
    """This bucket's cosedge_requests_total by outcome, read from /metrics by Python."""
    with urllib.request.urlopen(edge.base + "/metrics", timeout=10) as response:
        text = response.read().decode()
    outcomes: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("cosedge_requests_total{") and f'bucket="{BUCKET}"' in line:
            labels, value = line.rsplit(" ", 1)
            outcome = labels.split('outcome="', 1)[1].split('"', 1)[0]
            outcomes[outcome] = outcomes.get(outcome, 0) + float(value)
    return outcomes


def tile(browser: Any, label: str) -> str:
    """The text of the tile labelled `label`, read in one script: the page's refresh
    replaces the tiles every few seconds, so element handles could go stale."""
    script = """
    for (const node of document.querySelectorAll(".tile")) {
      if (node.querySelector(".tile-label").textContent === arguments[0]) return node.innerText;
    }
    return "";
    """
    return str(browser.execute_script(script, label))


def test_a_copy_appears_in_the_migration_view(browser: Any, console_edge: ConsoleEdge) -> None:
    """After a miss whose copy is stored, two hits of it and a miss whose copy fails, the
    page shows one stored and one failed copy, the failure's reason as the API gives it,
    the hit ratio `/metrics` gives, and the stored key's status."""
    proxy_rule(console_edge)
    (console_edge.origin_root / "photos").mkdir(exist_ok=True)
    (console_edge.origin_root / "photos" / "cat.txt").write_bytes(b"meow " * 200)
    assert console_edge.public_get(STORED_KEY) == 302
    wait_state(console_edge, STORED_KEY, "stored")
    assert console_edge.public_get(STORED_KEY) == 200
    assert console_edge.public_get(STORED_KEY) == 200
    assert console_edge.public_get(MISSING_KEY) == 302
    failure = wait_state(console_edge, MISSING_KEY, "failed")
    assert failure["reason"]

    sign_in(browser, console_edge)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, "Migration"), "the bucket list")
    browser.find_element(By.LINK_TEXT, "Migration").click()
    wait_for(browser, lambda d: "1" in tile(d, "Copies stored"), "the stored copy")
    assert "1" in tile(browser, "Copies failed")
    assert text_of(browser, "#migration-message") == ""  # nothing went unread

    outcomes = requests_by_outcome(console_edge)
    total = sum(outcomes.get(o, 0) for o in ("hit", "redirect", "not_found", "error"))
    assert outcomes.get("hit", 0) >= 2 and total >= 4
    ratio = f"{100 * outcomes['hit'] / total:.1f} %"
    browser.find_element(By.ID, "refresh").click()
    wait_for(browser, lambda d: ratio in tile(d, "Hit ratio"), f"the hit ratio {ratio}")
    assert f"{int(outcomes['hit'])} hits of {int(total)} requests" in tile(browser, "Hit ratio")

    failures = browser.find_element(By.CSS_SELECTOR, "[aria-labelledby=failures-heading]").text
    assert MISSING_KEY in failures and failure["reason"] in failures

    browser.find_element(By.NAME, "key").send_keys(STORED_KEY)
    browser.find_element(By.CSS_SELECTOR, ".key-form button[type=submit]").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "dl.status"), "the key status")
    status = browser.find_element(By.CSS_SELECTOR, "dl.status")
    assert status.get_attribute("data-state") == "stored"
    assert "Stored in the bucket" in status.text
    assert console_edge.origin_address in status.text

    target = os.environ.get("COSEDGE_CONSOLE_SCREENSHOT")
    if target:
        browser.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1280, max(900, int(height) + 40))
        try:
            browser.save_screenshot(target)
        finally:
            browser.set_window_size(1280, 900)
