"""The console in a real browser against a real edge: sign in, see the bucket, set an
origin and find it saved through the API, see a refused address's message as the API words
it. One browser session and one edge for the module; the tests run in order (each starts
from a fresh sign-in, so none depends on another's page)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select

from tests.browser.conftest import (
    SECRET_KEY,
    ConsoleEdge,
    sign_in,
    text_of,
    wait_for,
)
from tests.integration.conftest import BUCKET

pytestmark = pytest.mark.browser


def open_origin_page(browser: Any, edge: ConsoleEdge) -> None:
    sign_in(browser, edge)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, BUCKET), "the bucket list")
    browser.find_element(By.LINK_TEXT, BUCKET).click()
    wait_for(browser, lambda d: d.find_elements(By.NAME, "address"), "the origin rules")


def rules_saved(edge: ConsoleEdge) -> list[dict[str, str]]:
    """The bucket's rules as the API answers GET ?origin (Python-signed)."""
    status, body = edge.signed("GET", f"/{BUCKET}/", {"origin": ""})
    assert status == 200, body
    rules = []
    for rule in ET.fromstring(body).iter("OriginRule"):
        rules.append({child.tag: (child.text or "") for child in rule.iter() if len(child) == 0})
    return rules


def test_a_wrong_key_is_refused_in_words(browser: Any, console_edge: ConsoleEdge) -> None:
    """An unknown SecretId: the sign-in form stays, showing the API's code and message,
    and nothing is kept in the session."""
    sign_in(browser, console_edge, secret_id="AKIDnobody")
    wait_for(browser, lambda d: text_of(d, "#signin-message[role=alert]"), "the refusal")
    message = text_of(browser, "#signin-message")
    assert "InvalidAccessKeyId" in message
    assert "The access key Id format you provided is invalid." in message
    assert browser.execute_script("return sessionStorage.length") == 0


def test_sign_in_shows_the_bucket(browser: Any, console_edge: ConsoleEdge) -> None:
    """The right key pair: the bucket list (GET Service, signed in the browser) names the
    bucket, and the key pair is in sessionStorage only, not localStorage or a cookie."""
    sign_in(browser, console_edge)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, BUCKET), "the bucket list")
    assert browser.execute_script("return localStorage.length") == 0
    assert browser.get_cookies() == []
    assert "AKIDconsoleBrowser" in text_of(browser, "#who")


def test_set_origin_rules_are_saved(browser: Any, console_edge: ConsoleEdge) -> None:
    """The first rule's address is changed and a second rule (prefix, Redirect, 301) added:
    the page shows each address's verdict and ISP before saving, and GET ?origin then
    answers exactly the two rules."""
    open_origin_page(browser, console_edge)
    address = browser.find_element(By.NAME, "address")
    assert address.get_attribute("value") == console_edge.origin_address
    browser.find_element(By.XPATH, "//button[text()='Add rule']").click()
    rules = browser.find_elements(By.CSS_SELECTOR, "fieldset.rule")
    assert len(rules) == 2
    second = rules[1]
    second.find_element(By.NAME, "address").send_keys(console_edge.origin_address)
    second.find_element(By.NAME, "prefix").send_keys("img/")
    Select(second.find_element(By.NAME, "type")).select_by_value("Redirect")
    Select(second.find_element(By.NAME, "redirect-code")).select_by_value("301")
    second.find_element(By.NAME, "follow-query").click()
    browser.find_element(By.ID, "save-rules").click()
    wait_for(browser, lambda d: "Saved: 2 rules" in text_of(d, "#origin-message"), "the save")
    verdicts = [v.text for v in browser.find_elements(By.CSS_SELECTOR, ".addresses li")]
    assert len(verdicts) == 2 and all("127.0.0.1" in v and "accepted" in v for v in verdicts)
    saved = rules_saved(console_edge)
    assert [(r["RulePriority"], r["OriginType"], r["Prefix"], r["HostName"]) for r in saved] == [
        ("1", "Proxy", "", console_edge.origin_address),
        ("2", "Redirect", "img/", console_edge.origin_address),
    ]
    assert [(r["HttpRedirectCode"], r["FollowQueryString"]) for r in saved] == [
        ("302", "true"),
        ("301", "false"),
    ]


def api_refusal(edge: ConsoleEdge, address: str) -> str:
    """The Message the API itself answers for a PUT ?origin naming `address`."""
    body = (
        "<OriginConfiguration><OriginRule><RulePriority>1</RulePriority>"
        "<OriginType>Proxy</OriginType><OriginInfo><HostInfo>"
        f"<HostName>{address}</HostName></HostInfo></OriginInfo></OriginRule>"
        "</OriginConfiguration>"
    )
    status, answer = edge.signed("PUT", f"/{BUCKET}/", {"origin": ""}, body.encode())
    assert status == 400, answer
    return ET.fromstring(answer).findtext("Message") or ""


@pytest.mark.parametrize("address", ["10.0.0.1", "8.8.8.8:80", "origin.example:99999"])
def test_a_refused_address_shows_the_apis_message(
    browser: Any, console_edge: ConsoleEdge, address: str
) -> None:
    """A private address, one outside the ISP tables and a malformed port: the dry run
    says so next to the field, saving shows the API's own COS error message word for word,
    and the saved rules stay as they were."""
    before = rules_saved(console_edge)
    expected = api_refusal(console_edge, address)
    open_origin_page(browser, console_edge)
    field = browser.find_element(By.NAME, "address")
    field.clear()
    field.send_keys(address, Keys.TAB)
    browser.find_element(By.ID, "save-rules").click()
    wait_for(browser, lambda d: "Not saved" in text_of(d, "#origin-message"), "the refusal")
    message = text_of(browser, "#origin-message")
    assert expected and expected in message, message
    assert "InvalidArgument" in message
    assert browser.find_elements(By.CSS_SELECTOR, "#origin-message[role=alert]")
    # The dry run said so before the save, next to the field.
    verdict = text_of(browser, "fieldset.rule .verdict-box")
    assert address.split(":")[0] in verdict and ("refused" in verdict or "port" in verdict)
    assert rules_saved(console_edge) == before


def test_usable_by_keyboard_alone(browser: Any, console_edge: ConsoleEdge) -> None:
    """Sign-in by typing and Enter, Tab to the bucket's link and Enter: the page's heading
    gets the focus, and Sign out (a real button) forgets the key pair."""
    browser.get(console_edge.base + "/console/")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    wait_for(
        browser,
        lambda d: d.switch_to.active_element.get_attribute("name") == "secret-id",
        "the focus in SecretId",
    )
    browser.switch_to.active_element.send_keys("AKIDconsoleBrowser", Keys.TAB)
    browser.switch_to.active_element.send_keys(SECRET_KEY, Keys.ENTER)
    wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, BUCKET), "the bucket list")
    for _ in range(20):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if browser.switch_to.active_element.text == BUCKET:
            break
    assert browser.switch_to.active_element.text == BUCKET
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_for(browser, lambda d: d.find_elements(By.NAME, "address"), "the origin page")
    focused = browser.switch_to.active_element
    assert focused.tag_name == "h1" and focused.text == BUCKET
    sign_out = browser.find_element(By.ID, "sign-out")
    assert sign_out.tag_name == "button"
    sign_out.send_keys(Keys.ENTER)
    wait_for(browser, lambda d: d.find_elements(By.NAME, "secret-id"), "the sign-in form")
    assert browser.execute_script("return sessionStorage.length") == 0


def test_readable_on_a_phone(browser: Any, console_edge: ConsoleEdge) -> None:
    """At 390 px wide, the bucket list, the origin rules and the migration page fit the
    width (nothing to scroll sideways) and a rule's fields stack in one column."""
    browser.set_window_size(390, 844)
    try:
        open_origin_page(browser, console_edge)
        fits = "return document.documentElement.scrollWidth <= window.innerWidth"
        assert browser.execute_script(fits)
        rule = browser.find_element(By.CSS_SELECTOR, "fieldset.rule .grid")
        priority = browser.find_element(By.NAME, "priority")
        address = browser.find_element(By.NAME, "address")
        assert address.location["y"] > priority.location["y"]
        assert address.size["width"] > rule.size["width"] * 0.9
        browser.find_element(By.LINK_TEXT, "Migration").click()
        wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, ".tile"), "the tiles")
        assert browser.execute_script(fits)
        browser.get(console_edge.base + "/console/#/")
        wait_for(browser, lambda d: d.find_elements(By.LINK_TEXT, BUCKET), "the bucket list")
        assert browser.execute_script(fits)
    finally:
        browser.set_window_size(1280, 900)


def test_switching_off_deletes_the_api_rules(browser: Any, console_edge: ConsoleEdge) -> None:
    """With rules set through the API, the switch deletes them (DELETE ?origin): the
    config file's `origin:` applies again, and the page says so and shows that rule."""
    body = (
        "<OriginConfiguration><OriginRule><RulePriority>5</RulePriority>"
        "<OriginType>Redirect</OriginType><OriginInfo><HostInfo>"
        f"<HostName>{console_edge.origin_address}</HostName></HostInfo></OriginInfo>"
        "</OriginRule></OriginConfiguration>"
    )
    status, answer = console_edge.signed("PUT", f"/{BUCKET}/", {"origin": ""}, body.encode())
    assert status == 200, answer
    open_origin_page(browser, console_edge)
    switch = browser.find_element(By.ID, "origin-switch")
    assert switch.get_attribute("aria-checked") == "true"
    assert browser.find_element(By.NAME, "priority").get_attribute("value") == "5"
    switch.click()
    wait_for(
        browser,
        lambda d: "config file's origin: applies again" in text_of(d, "#origin-message"),
        "the fallback notice",
    )
    assert [(r["RulePriority"], r["OriginType"]) for r in rules_saved(console_edge)] == [
        ("1", "Proxy")
    ]
    assert browser.find_element(By.NAME, "priority").get_attribute("value") == "1"
