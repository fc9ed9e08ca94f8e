"""Browser steps shared by the explorer tests."""

from __future__ import annotations

from typing import Any

from tests.support import Collector


def log_in(page: Any, collector: Collector, path: str = "/") -> None:
    """Open ``path``, land on the login page, paste the admin token, and arrive back at ``path``."""
    page.goto(collector.url + path)
    assert "/login" in page.url
    page.get_by_label("Admin token").fill(collector.admin_token)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)
    assert page.get_by_role("button", name="Log out").is_visible()
