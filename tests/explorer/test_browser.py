"""The explorer walked through in a real headless Chromium against a real collector fed through the ingest API."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import Collector

from ._browser import log_in
from ._data import agent_login, event, heartbeat, send, shop_traffic

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shop(collector: Collector) -> Iterator[Collector]:
    session = agent_login(collector)
    now = time.time()
    send(collector, session, [*shop_traffic(now), event("order.placed", now - 20 * 86_400, ip="192.0.2.1")])
    heartbeat(collector, session, {"queued": 3, "sent": 41, "dropped": {"queue_full": 7}})
    yield collector


def _column(page: Any, index: int) -> list[str]:
    return [cell.strip() for cell in page.locator(f"table[data-rows] tbody tr td:nth-child({index})").all_inner_texts()]


def test_walk_through(page: Any, shop: Collector) -> None:
    log_in(page, shop)
    # Overview: totals over the default 24 h (the 20-day-old event is outside), the chart drawn with data.
    assert page.locator("#total").inner_text() == "40"
    page.wait_for_selector("#chart[data-drawn='2'] canvas")
    legend = page.locator("#chart .u-legend").inner_text()
    assert "sq.auth_track" in legend and "order.placed" in legend
    painted = page.evaluate(
        """() => { const c = document.querySelector('#chart canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let n = 0; for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; } return n; }"""
    )
    assert painted > 1000, f"the chart canvas is (nearly) blank: {painted} painted pixels"
    assert "30 failed" in page.locator(".card").nth(1).inner_text()
    # Times in the viewer's zone (Asia/Tokyo here), UTC on hover.
    stamp = page.locator("time").first
    assert stamp.get_attribute("title").endswith("UTC")
    assert stamp.inner_text() != stamp.get_attribute("datetime")
    # The 30-day preset reaches the old event.
    page.get_by_role("link", name="30d", exact=True).click()
    page.wait_for_url(re.compile(r"range=30d"))
    assert page.locator("#total").inner_text() == "41"

    # Events filtered by name, the filter kept in the URL.
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Events", exact=True).click()
    page.get_by_label("Name").fill("order.placed")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"/events\?.*name=order.placed"))
    assert _column(page, 2) == ["order.placed"] * 5
    page.reload()
    assert _column(page, 2) == ["order.placed"] * 5

    # By IP, as a CIDR.
    page.goto(shop.url + "/events")
    page.get_by_label("IP or CIDR").fill("198.51.100.0/24")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"ip=198.51.100.0%2F24"))
    assert _column(page, 3) == ["198.51.100.9"] * 30

    # One event's detail.
    page.locator("a.event-link").first.click()
    page.wait_for_url(re.compile(r"/events/[0-9a-f-]{36}$"))
    detail = page.locator("main").inner_text()
    assert page.url.rsplit("/", 1)[1] in detail
    assert "sq.auth_track" in detail and "198.51.100.9" in detail and "success" in detail

    # Breakdown by a property; a row is a filter.
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Breakdown", exact=True).click()
    page.get_by_label("Group by").select_option("property")
    page.get_by_label("Property key").fill("success")
    page.get_by_role("button", name="Apply").click()
    page.wait_for_url(re.compile(r"group=property"))
    rows = page.locator("table[data-rows] tbody tr").all_inner_texts()
    # value, events, distinct users, distinct IPs; the orders (no "success" property) come last as "(none)".
    assert [r.split("\t")[:4] for r in rows] == [
        ["false", "30", "6", "1"], ["true", "5", "1", "1"], ["(none)", "5", "1", "1"]
    ]
    page.get_by_role("link", name="false", exact=True).click()
    page.wait_for_url(re.compile(r"/events\?.*prop=success%3Dfalse"))
    assert len(_column(page, 1)) == 30

    # Actor timeline of the attacking IP, in order.
    page.get_by_role("link", name="198.51.100.9").first.click()
    page.wait_for_url(re.compile(r"/actor\?ip=198.51.100.9"))
    assert page.get_by_role("heading", level=1).inner_text() == "IP 198.51.100.9"
    items = page.locator("ol.timeline li time")
    assert items.count() == 30
    stamps = [items.nth(i).get_attribute("datetime") for i in range(items.count())]
    assert stamps == sorted(stamps)

    # Agents: the drops cannot be missed.
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Agents", exact=True).click()
    assert "7 queue_full" in page.get_by_role("alert").inner_text()
    assert "shop" in page.locator("table[data-rows]").inner_text()

    # Log out: the pages are closed again.
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(shop.url + "/events")
    assert "/login" in page.url


def test_keyboard_and_phone_width(page: Any, shop: Collector) -> None:
    log_in(page, shop, "/events")
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.name") == "name"
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("j")
    page.keyboard.press("j")
    assert page.locator("tr.current").count() == 1
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/events/[0-9a-f-]{36}$"))
    page.set_viewport_size({"width": 375, "height": 800})
    for path in ("/", "/events", "/breakdown", "/agents", "/actor?ip=198.51.100.9"):
        page.goto(shop.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is wider than a phone screen by {overflow}px"
    page.set_viewport_size({"width": 1280, "height": 900})
