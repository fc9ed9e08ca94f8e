"""Attacker-controlled event data (names, properties, user agents, paths, bodies, users, agent fields) renders inert."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import Collector

from ._browser import log_in
from ._data import XSS, agent_login, event, heartbeat, send

pytestmark = pytest.mark.e2e
# Elements a payload would add if it were parsed as markup.
INJECTED = "#injected, img, svg, iframe, main script, body > style, [onerror], [onload], [onmouseover]"


@pytest.fixture(scope="module")
def hostile(collector: Collector) -> Iterator[Collector]:
    now = time.time()
    events = []
    for i, payload in enumerate(XSS):
        session = agent_login(collector, app_name=f"app{payload}", hostname=payload, sdk_version=payload)
        heartbeat(collector, session, {"queued": 1, "sent": 1, "dropped": {payload: 3}})
        events.append(event(
            f"evt{payload}"[:255], now - 100 - i, ip=f"198.51.100.{i + 1}", user={"email": payload, "id": i},
            properties={payload: payload, "note": payload, "n": i}, path=f"/p{payload}", agent=payload,
            body={"comment": payload},
        ))  # fmt: skip
        send(collector, session, events[-1:])
        # A user block named by attacker-chosen identifiers, with a reason quoting them.
        answer = httpx.post(f"{collector.url}/api/v1/blocks", timeout=10,
                            headers={"Authorization": f"Bearer {collector.admin_token}"},
                            json={"kind": "user", "value": {"email": payload}, "duration": "1h", "reason": payload})
        assert answer.status_code == 201, answer.text
    yield collector


def _assert_inert(page: Any, where: str) -> None:
    assert page.evaluate("typeof window.__xss") == "undefined", f"a payload ran on {where}"
    found = page.evaluate(f"Array.from(document.querySelectorAll({INJECTED!r})).map(e => e.outerHTML)")
    assert not found, f"markup from event data was parsed on {where}: {found}"
    scripts = page.evaluate("Array.from(document.scripts).map(s => s.getAttribute('src'))")
    assert all(src and src.startswith("/static/") for src in scripts), f"unexpected script on {where}: {scripts}"
    assert not page.problems, page.problems  # no dialog, no script error


def test_payloads_render_as_text(page: Any, hostile: Collector) -> None:
    log_in(page, hostile)
    pages = ["/", "/events", "/agents", "/breakdown?group=name", "/breakdown?group=user", "/breakdown?group=app",
             "/breakdown?group=property&key=note", "/actor?ip=198.51.100.1", "/blocks", "/playbooks",
             "/actor?user=0"]
    for path in pages:
        page.goto(hostile.url + path)
        page.wait_for_load_state("load")
        _assert_inert(page, path)
    page.goto(hostile.url + "/events")
    text = page.locator("main").inner_text()
    assert XSS[0] in text and XSS[1] in text  # shown, as text
    links = page.locator("a.event-link")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    assert len(hrefs) == len(XSS)
    for href in hrefs:
        page.goto(hostile.url + href)
        _assert_inert(page, href)
        assert "evt" in page.get_by_role("heading", level=1).inner_text()
    # Links built from the data stay on the explorer (no javascript: URL).
    bad = page.evaluate("Array.from(document.links).map(a => a.href).filter(h => !h.startsWith(location.origin))")
    assert not bad, bad
    # Hover and focus everything: no handler attached from the data fires.
    for element in page.locator("main a, main code, main td").all()[:80]:
        element.hover()
    _assert_inert(page, "after hovering")
    page.goto(hostile.url + "/actor?user=" + "%3Cscript%3Ewindow.__xss%3D1%3C%2Fscript%3E")
    _assert_inert(page, "actor page of a hostile user value")
