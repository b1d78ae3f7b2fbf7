"""Fixtures for the console's browser tests: one headless Chromium and one real edge.

Debian's `chromium` and `chromium-driver` are required: without them these tests fail
rather than skip, since a console nobody ever ran in a browser is not tested. The whole set
shares one browser session and one edge (a real `twistd cosedge` whose `admin_listen` port
is the console's origin, with a key pair, one bucket and a plain-HTTP origin on 127.0.0.1
served from a thread: selenium's calls block, so an origin on the test's reactor would not
answer while the browser waits), so it stays quick.
"""

from __future__ import annotations

import http.client
import re
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from edge.api.signature import sign
from edge.testing.process import OutputDrain, start_twistd, static_origin, wait_ready
from tests.integration.conftest import BUCKET, DOMAIN

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SECRET_ID = "AKIDconsoleBrowser"
SECRET_KEY = "console-browser-secret"
# Generous: two cores shared with other work; a wait returns as soon as its condition holds.
WAIT = 20


@dataclass
class ConsoleEdge:
    """The edge the browser talks to: `base` is the console's origin (the admin port)."""

    public_port: int
    admin_port: int
    data_dir: Path
    origin_root: Path
    origin_address: str

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def signed(
        self, method: str, path: str, params: dict[str, str], body: bytes = b""
    ) -> tuple[int, bytes]:
        """A Python-signed API request to the admin port (what the console's should match)."""
        host = f"127.0.0.1:{self.admin_port}"
        authorization = sign(SECRET_ID, SECRET_KEY, method, path, params, {"host": host})
        query = "&".join(k if v == "" else f"{k}={v}" for k, v in params.items())
        conn = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            conn.request(
                method,
                path + ("?" + query if query else ""),
                body=body or None,
                headers={"Host": host, "Authorization": authorization},
            )
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()

    def public_get(self, key: str) -> int:
        """A plain read of the public port, by the bucket's domain (a hit or a miss)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.public_port, timeout=10)
        try:
            conn.request("GET", "/" + key, headers={"Host": DOMAIN})
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()


ADMIN_READY = re.compile(r"cosedge admin port ready: listening on 127\.0\.0\.1:(\d+)")


def wait_admin_port(drain: OutputDrain, timeout: float = 30) -> int:
    """The admin port's number, from its readiness line in the edge's output."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = ADMIN_READY.search(drain.text())
        if found:
            return int(found.group(1))
        time.sleep(0.05)
    raise AssertionError(f"the admin port did not become ready:\n{drain.text()}")


@pytest.fixture(scope="session")
def console_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleEdge]:
    """A real edge with a key pair for the console and one bucket whose origin is a
    plain-HTTP server on 127.0.0.1 (admitted by `extra_origin_cidrs`)."""
    root = tmp_path_factory.mktemp("console")
    origin_root = root / "origin"
    (origin_root / "img").mkdir(parents=True)
    with static_origin(origin_root) as origin_port:
        origin_address = f"127.0.0.1:{origin_port}"
        config = root / "console.yaml"
        config.write_text(
            "listen: 'tcp:0:interface=127.0.0.1'\n"
            "admin_listen: 'tcp:0:interface=127.0.0.1'\n"
            f"data_dir: {root / 'data'}\n"
            "extra_origin_cidrs: ['127.0.0.1/32']\n"
            f"credentials: [{{secret_id: {SECRET_ID}, secret_key: {SECRET_KEY}}}]\n"
            f"buckets:\n  {BUCKET}:\n    domains: [{DOMAIN}]\n"
            f"    origin: {{address: '{origin_address}'}}\n"
        )
        proc = start_twistd("--config", str(config), cwd=root)
        try:
            public_port, drain = wait_ready(proc)
            admin_port = wait_admin_port(drain)
            yield ConsoleEdge(public_port, admin_port, root / "data", origin_root, origin_address)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the whole set, at a desktop width (1280 px)."""
    for program in (CHROMIUM, CHROMEDRIVER):
        if not program.exists():
            pytest.fail(f"{program} is missing: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root (CI does)
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--window-size=1280,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_script_timeout(WAIT)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver: Any, condition: Callable[[Any], Any], what: str, timeout: float = WAIT) -> Any:
    """Wait until `condition(driver)` is truthy; fail naming `what` and the page's text."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition)
    except TimeoutException:
        text = driver.find_element(By.TAG_NAME, "body").text
        raise AssertionError(f"timed out waiting for {what}; the page shows:\n{text}") from None


def text_of(driver: Any, css: str) -> str:
    """The visible text of the first element matching `css` ("" when there is none)."""
    found: list[WebElement] = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def sign_in(driver: Any, edge: ConsoleEdge, secret_id: str = SECRET_ID) -> None:
    """Open the console signed out and sign in with a key pair through the form."""
    driver.get(edge.base + "/console/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(edge.base + "/console/#/")
    wait_for(driver, lambda d: d.find_elements(By.NAME, "secret-id"), "the sign-in form")
    driver.find_element(By.NAME, "secret-id").send_keys(secret_id)
    driver.find_element(By.NAME, "secret-key").send_keys(SECRET_KEY)
    driver.find_element(By.CSS_SELECTOR, "form.signin button[type=submit]").click()
