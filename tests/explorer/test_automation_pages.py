"""Blocks and playbooks in the explorer, in headless Chromium against a real collector with a playbooks file."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Collector, start_collector

from ._browser import log_in
from ._data import agent_login, event, send

pytestmark = pytest.mark.e2e

PLAYBOOKS = """
[[playbook]]
name = "credential-stuffing"
event = "sq.auth_track"
where = { success = false }
actor = "ip"
threshold = 10
window = "1h"

[[playbook.response]]
action = "block_ip"
duration = "15m"

[[playbook]]
name = "watch-orders"
event = "order.placed"
actor = "user"
threshold = 3
window = "1h"
dry_run = true

[[playbook.response]]
action = "log"
"""


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Collector]:
    directory: Path = tmp_path_factory.mktemp("guarded")
    (directory / "playbooks.toml").write_text(PLAYBOOKS)
    with start_collector(directory / "events.db", extra=["--playbooks", str(directory / "playbooks.toml")]) as c:
        session = agent_login(c)
        now = time.time()
        send(c, session, [event("sq.auth_track", now - 60 + i, ip="198.51.100.9", user={"email": f"v{i}@x"},
                                properties={"success": False}) for i in range(12)])
        send(c, session, [event("search", now - 30, ip="192.0.2.77", user={"email": "carol@example.com"})])
        yield c


def _blocks(collector: Collector, **params: Any) -> list[dict[str, Any]]:
    answer = httpx.get(f"{collector.url}/api/v1/blocks", params=params, timeout=10,
                       headers={"Authorization": f"Bearer {collector.admin_token}"})
    answer.raise_for_status()
    return list(answer.json()["blocks"])


def test_block_and_lift_an_ip_from_its_timeline(page: Any, guarded: Collector) -> None:
    log_in(page, guarded, "/actor?ip=192.0.2.77")
    assert "Never blocked." in page.locator("main").inner_text()
    form = page.get_by_role("form", name="Block this ip")
    form.get_by_label("Duration").select_option("15m")
    form.get_by_label("Reason").fill("probing <checkout>")
    form.get_by_role("button", name="Block this IP").click()
    page.wait_for_url(re.compile(r"/actor\?ip=192.0.2.77"))
    assert "active" in page.locator("main table").first.inner_text()
    blocks = [b for b in _blocks(guarded) if b["value"] == "192.0.2.77"]
    assert len(blocks) == 1 and blocks[0]["reason"] == "probing <checkout>" and blocks[0]["playbook"] is None

    page.get_by_role("navigation", name="Views").get_by_role("link", name="Blocks", exact=True).click()
    row = page.locator(f"tr[data-block='{blocks[0]['id']}']")
    assert "probing <checkout>" in row.inner_text() and "manual" in row.inner_text()
    row.get_by_role("button", name=re.compile("Lift")).click()
    page.wait_for_url(re.compile(r"/blocks$"))
    assert page.locator(f"tr[data-block='{blocks[0]['id']}']").count() == 0
    assert "lifted" in page.get_by_role("region", name="History").inner_text()
    assert not [b for b in _blocks(guarded) if b["value"] == "192.0.2.77"]  # no longer active


def test_playbook_block_firings_and_backtest(page: Any, guarded: Collector) -> None:
    log_in(page, guarded, "/blocks")
    active = page.get_by_role("region", name="Active").inner_text()
    assert "198.51.100.9" in active and "credential-stuffing" in active
    page.get_by_role("navigation", name="Views").get_by_role("link", name="Playbooks", exact=True).click()
    stuffing = page.locator("section#pb-credential-stuffing")
    assert "acting" in stuffing.inner_text()
    assert "dry run" in page.locator("section#pb-watch-orders").inner_text()
    firing = stuffing.locator("tbody tr").first
    assert "198.51.100.9" in firing.inner_text() and "block_ip: taken" in firing.inner_text()
    firing.locator("summary").click()
    firing.locator("a.event-link").first.click()
    page.wait_for_url(re.compile(r"/events/[0-9a-f-]{36}$"))
    assert "198.51.100.9" in page.locator("main").inner_text()

    # The attacker's timeline shows the block and the firing.
    page.goto(guarded.url + "/actor?ip=198.51.100.9")
    story = page.get_by_role("region", name="Blocks and firings").inner_text()
    assert "credential-stuffing" in story and "active" in story

    # Backtest: who the playbook would have caught over the last 24 h.
    page.goto(guarded.url + "/playbooks")
    backtest = page.get_by_role("region", name="Backtest")
    backtest.locator("select[name=playbook]").select_option("credential-stuffing")
    backtest.locator("select[name=range]").select_option("24h")
    backtest.get_by_role("button", name="Run backtest").click()
    result = page.get_by_role("status")
    assert re.search(r"\b1\b firing\(s\) over 12 events", result.inner_text())
    assert "198.51.100.9" in result.inner_text()


def test_switch_to_dry_run_and_back(page: Any, guarded: Collector) -> None:
    log_in(page, guarded, "/playbooks")
    section = page.locator("section#pb-watch-orders")
    section.get_by_role("button", name="Act for real").click()
    page.wait_for_url(re.compile(r"/playbooks$"))
    assert "acting" in page.locator("section#pb-watch-orders h2").inner_text()
    page.locator("section#pb-watch-orders").get_by_role("button", name="Switch to dry run").click()
    assert "dry run" in page.locator("section#pb-watch-orders h2").inner_text()


def test_refused_block_says_why(page: Any, guarded: Collector) -> None:
    log_in(page, guarded, "/blocks")
    form = page.get_by_role("region", name="Block")
    form.get_by_label("IP, CIDR or user").fill("127.0.0.1")
    form.get_by_role("button", name="Block").click()
    assert "never blocked" in page.get_by_role("alert").inner_text()
    form = page.get_by_role("region", name="Block")
    form.get_by_label("Kind").select_option("user")
    form.get_by_label("IP, CIDR or user").fill("just-a-name")
    form.get_by_role("button", name="Block").click()
    assert "key=value" in page.get_by_role("alert").inner_text()


def test_state_changes_need_the_csrf_token(guarded: Collector) -> None:
    with httpx.Client(base_url=guarded.url, timeout=10) as client:
        form = client.get("/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf
        client.post("/login", data={"csrf": csrf.group(1), "token": guarded.admin_token})
        before = len(_blocks(guarded))
        for path, data in (("/blocks", {"kind": "ip", "value": "192.0.2.99"}),
                           ("/playbooks/watch-orders/state", {"field": "enabled", "value": "false"}),
                           ("/playbooks/backtest", {"playbook": "watch-orders"})):
            assert client.post(path, data=data).status_code == 403, path
            assert client.post(path, data={**data, "csrf": "forged"}).status_code == 403, path
        assert len(_blocks(guarded)) == before
        active = [b for b in _blocks(guarded) if b["value"] == "198.51.100.9"]
        assert client.post(f"/blocks/{active[0]['id']}/lift", data={}).status_code == 403
        assert [b for b in _blocks(guarded) if b["value"] == "198.51.100.9"] == active
    # Without a session, nothing either.
    answer = httpx.post(f"{guarded.url}/blocks", data={"kind": "ip", "value": "192.0.2.99"}, timeout=10)
    assert answer.status_code == 303 and len(_blocks(guarded)) == before
