"""The console in headless Chromium: first contentful paint of the overview, and the time
from an event written (a node cordoned through the API) to its line shown in the page's
event feed, N times. Needs chromium, chromedriver and selenium (skipped otherwise)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.common import percentile


async def console_timings(samples: int) -> dict[str, Any]:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return {"skipped": "chromium/chromedriver missing"}
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    from cloudless.agent.agent import Agent
    from cloudless.cli.client import Client, ClientConfig
    from cloudless.coordinator.wiring.process import Coordinator
    from cloudless.lib.clock import SystemClock
    from cloudless.runtime.fake import FakeRuntime
    from tests.integration.cluster.harness import agent_config, coordinator_config, wait_for

    tmp = Path(tempfile.mkdtemp(prefix="bench-console-"))
    coord = Coordinator(coordinator_config(tmp))
    tasks = [asyncio.create_task(coord.run())]
    await asyncio.wait_for(coord.ready.wait(), 30)
    client = Client(ClientConfig.load(tmp / "coord" / "admin" / "config.json"))
    token = await asyncio.to_thread(client.create_token)
    cfg = replace(agent_config(tmp, coord.config.api_url, token, 0))
    tasks.append(asyncio.create_task(Agent(cfg, FakeRuntime(SystemClock())).run()))
    await wait_for(lambda: [n["state"] for n in client.nodes()] == ["ready"], what="ready")
    node_id = (await asyncio.to_thread(client.nodes))[0]["id"]
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(shutil.which("chromium"))
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--ignore-certificate-errors",
        f"--user-data-dir={tmp / 'chromium'}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(shutil.which("chromedriver"))), options=opts)
    try:
        paints, latencies = [], []
        for _ in range(samples):
            link = (await asyncio.to_thread(client.call, "POST", "/v1/ui/login"))["url"]
            await asyncio.to_thread(driver.get, link)
            fcp = await asyncio.to_thread(
                driver.execute_script,
                "const p=performance.getEntriesByName('first-contentful-paint');"
                "return p.length?p[0].startTime:null",
            )
            if fcp is not None:
                paints.append(float(fcp) / 1000)
        count = "return document.getElementById('events').children.length"
        newest = "const e=document.getElementById('events').firstChild;return e?e.innerText:''"
        for i in range(samples):
            verb = "cordon" if i % 2 == 0 else "uncordon"
            before = await asyncio.to_thread(driver.execute_script, count)
            t0 = time.perf_counter()
            await asyncio.to_thread(client.call, "POST", f"/v1/nodes/{node_id}/{verb}")
            while True:
                n = await asyncio.to_thread(driver.execute_script, count)
                top = await asyncio.to_thread(driver.execute_script, newest)
                if n > before and node_id in str(top):
                    break
                if time.perf_counter() - t0 > 10:
                    raise TimeoutError(f"event {i} ({verb}) not shown within 10 s")
                await asyncio.sleep(0.005)
            latencies.append(time.perf_counter() - t0)
        return {
            "first_contentful_paint_p50_s": percentile(paints, 50),
            "first_contentful_paint_p95_s": percentile(paints, 95),
            "event_to_browser_p50_s": percentile(latencies, 50),
            "event_to_browser_p95_s": percentile(latencies, 95),
            "samples": samples,
            "note": "event latency includes the API call that writes it (cordon/uncordon) "
            "and a 5 ms browser poll",
        }
    finally:
        driver.quit()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        shutil.rmtree(tmp, ignore_errors=True)
