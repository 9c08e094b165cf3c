"""The web console in a real browser (Debian's Chromium, driven by chromedriver through
Selenium): log in with a one-time link, see the nodes, watch a workload applied from the
CLI appear without a reload, follow a replica's logs. Markup from devices is shown as text.

Set ``CONSOLE_SCREENSHOTS=docs/img`` to write the screenshots the README shows."""

from __future__ import annotations

import asyncio
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cloudless.runtime.types import LogStream

from ..cluster.harness import wait_for

PAYLOAD = '<img src=x onerror="document.title=1">'

WEB = b"""
name: web
image: busybox:latest
command: [httpd, -f, -p, "8080"]
resources: {cpu: 100m, memory: 16Mi}
replicas: 2
"""


def shot(driver: Any, name: str) -> None:
    where = os.environ.get("CONSOLE_SCREENSHOTS")
    if where:
        Path(where).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(where) / f"console-{name}.png"))


def until(driver: Any, predicate: Any, what: str, timeout: float = 20) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout, poll_frequency=0.2).until(
        lambda d: predicate(d), message=f"timed out waiting for {what}"
    )


def follow(driver: Any, css: str) -> str:
    """Follow the first link matching ``css`` (read in one script: the live fragment may be
    replaced between finding an element and clicking it)."""
    href = driver.execute_script(f"return document.querySelector({css!r}).href")
    driver.get(href)
    return str(href)


def text(driver: Any) -> str:
    return str(driver.find_element("tag name", "body").text)


async def test_console_in_a_browser(cluster, browser) -> None:  # type: ignore[no-untyped-def]
    _coord, client, _agents, start_agent = cluster
    runtimes = [await start_agent(0), await start_agent(1, labels={"owner": PAYLOAD})]
    await wait_for(lambda: [n["state"] for n in client.nodes()] == ["ready"] * 2, what="ready")
    link = (await asyncio.to_thread(client.call, "POST", "/v1/ui/login"))["url"]

    def step1() -> None:
        browser.get(link)  # trades the link for a session cookie, lands on the overview
        until(browser, lambda d: "Overview" in d.title, "the overview")
        assert browser.find_element("id", "nodes-total").text == "2"
        shot(browser, "overview")
        browser.get(link)  # one-time: a second use is refused
        assert "already used" in text(browser)
        browser.get(link.split("/ui/")[0] + "/ui/nodes")
        body = text(browser)
        assert "node0" in body and "node1" in body and "ready" in body
        # the device's label is shown as text, never run or parsed as markup
        assert PAYLOAD in body
        assert browser.title.startswith("Nodes")
        assert not browser.find_elements("css selector", "td img")
        browser.get(link.split("/ui/")[0] + "/ui/workloads")
        browser.execute_script("window.__stayed = true")  # gone if the page reloads

    await asyncio.to_thread(step1)
    await asyncio.to_thread(client.apply, WEB)

    def step2() -> str:
        until(
            browser,
            lambda d: "2/2" in d.find_element("id", "live").text,
            "web 2/2 on the workloads page, live",
        )
        assert browser.execute_script("return window.__stayed") is True  # no reload
        until(
            browser,
            lambda d: "workload web created" in d.find_element("id", "events").text,
            "the event in the live feed",
        )
        shot(browser, "workloads")
        follow(browser, "a[href='/ui/workloads/web']")
        until(browser, lambda d: "Placement" in text(d), "the workload page")
        shot(browser, "workload")
        href = follow(browser, "a[href$='/logs']")
        return href.rstrip("/").split("/")[-2]

    replica = await asyncio.to_thread(step2)
    for rt in runtimes:
        if replica in rt.host.containers:
            rt.write_log(replica, LogStream.STDOUT, b"hello from the replica\n")

    def step3() -> None:
        until(
            browser,
            lambda d: "hello from the replica" in d.find_element("id", "logs").text,
            "the replica's log line",
        )
        shot(browser, "logs")

    await asyncio.to_thread(step3)


async def test_console_refuses_without_session(cluster) -> None:  # type: ignore[no-untyped-def]
    coord, _client, _agents, _start = cluster
    ctx = ssl.create_default_context(cafile=str(coord.config.admin_dir / "ca.pem"))

    def get(path: str, cookie: str = "") -> tuple[int, str, dict[str, str]]:
        req = urllib.request.Request(coord.config.api_url + path)
        if cookie:
            req.add_header("Cookie", f"cloudless_session={cookie}")
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                return r.status, r.read().decode(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(), dict(e.headers)

    cases = [
        ("/ui/", "", "not logged in"),
        ("/ui/nodes", "garbage", "session not valid"),
        ("/ui/events", "e30.e30.e30", "session not valid"),  # forged: {}.{}.{}
        ("/ui/", "x" * 5000, "too long"),
        ("/ui/login?secret=nope", "", "unknown or was already used"),
        ("/ui/login?secret=" + "a" * 500, "", "unknown or was already used"),
    ]
    for path, cookie, why in cases:
        status, body, headers = await asyncio.to_thread(get, path, cookie)
        assert status == 401, (path, status)
        assert why in body, (path, body)
        assert "script-src 'none'" in headers["Content-Security-Policy"]
    # the login-link route itself needs a client certificate, like every /v1 route
    status, body, _ = await asyncio.to_thread(get, "/v1/ui/login")
    assert status in (401, 405), status
