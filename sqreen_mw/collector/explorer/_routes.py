"""The explorer's routes: login and logout, the session gate in front of every page, and static files."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .._auth import _same
from .._records import AgentSession, EventRecord
from .._sqlite_explorer import BreakdownRow, ExplorerFilter, Overview
from ..automation import Automation
from . import _automation_views, _views
from ._pages import STATIC, render
from ._security import COOKIE, HEADERS, LoginLimiter, SecurityHeaders, Session, Sessions, safe_path, same_token

LOGIN_COOKIE = "sqreen_explorer_login"
MAX_FORM_BYTES = 16 * 1024

Page = Callable[["ExplorerStorage", Request, Session, dict[str, Any]], Awaitable[Response]]
AutomationPage = Callable[[Automation, Request, Session, dict[str, Any]], Awaitable[Response]]
AutomationForm = Callable[[Automation, Request, Session, dict[str, Any], dict[str, str]], Awaitable[Response]]


class ExplorerStorage(Protocol):
    """What the explorer reads (``SQLiteStorage`` provides it)."""

    def overview(self, since: float, until: float, bucket: int, top: int = 10) -> Overview: ...
    def search_events(self, f: ExplorerFilter, limit: int) -> list[EventRecord]: ...
    def get_event(self, event_id: str) -> EventRecord | None: ...
    def breakdown(self, f: ExplorerFilter, group: str, limit: int = 100) -> tuple[list[BreakdownRow], int, bool]: ...
    def actor_summary(self, f: ExplorerFilter) -> tuple[list[tuple[str, int]], float | None, float | None]: ...
    def list_agents(self, limit: int = 1000) -> list[AgentSession]: ...
    def rollup_backfill(self) -> tuple[int, int] | None: ...


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


class Explorer:
    """The explorer's web pages over a storage.

    :param storage: the collector's storage.
    :param admin_token: the token that logs in; None disables the explorer (its pages say how to enable it).
    :param automation: playbooks and blocks (``app.state.automation``); None leaves their pages out.
    :param heartbeat_delay: seconds between agent heartbeats (None: the SDK's default, 60): agents silent for three
        of them are shown as stale.
    :param session_max_age: seconds a login lasts.
    :param login_failures: failed logins allowed per client address per minute.
    """

    def __init__(
        self,
        storage: ExplorerStorage,
        admin_token: str | None,
        *,
        automation: Automation | None = None,
        heartbeat_delay: int | None = None,
        session_max_age: int = 8 * 3600,
        login_failures: int = 5,
    ) -> None:
        self.storage = storage
        self.admin_token = admin_token
        self.sessions = None if admin_token is None else Sessions(admin_token, session_max_age)
        self.limiter = LoginLimiter(login_failures, 60.0)
        self.automation = automation
        self.context: dict[str, Any] = {"heartbeat_delay": heartbeat_delay or 60, "automation": automation}

    def routes(self) -> list[BaseRoute]:
        """The explorer's routes: ``/``, ``/login``, ``/logout``, ``/events``, ... and ``/static``."""
        pages: list[tuple[str, Page]] = [
            ("/", _views.overview),
            ("/events", _views.events),
            ("/events/{event_id}", _views.event_detail),
            ("/breakdown", _views.breakdown),
            ("/actor", _views.actor),
            ("/agents", _views.agents),
        ]
        acting: list[BaseRoute] = []
        if self.automation is not None:
            a = _automation_views
            acting = [
                Route("/blocks", self._gate_automation(a.blocks), methods=["GET"]),
                Route("/blocks", self._post(a.add_block), methods=["POST"]),
                Route("/blocks/{block_id}/lift", self._post(a.lift_block), methods=["POST"]),
                Route("/playbooks", self._gate_automation(a.playbooks), methods=["GET"]),
                Route("/playbooks/backtest", self._post(a.run_backtest), methods=["POST"]),
                Route("/playbooks/{name}/state", self._post(a.set_playbook_state), methods=["POST"]),
            ]
        return [
            *acting,
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            *(Route(path, self._gate(page), methods=["GET"]) for path, page in pages),
            Mount("/static", app=SecurityHeaders(StaticFiles(directory=STATIC)), name="static"),
        ]

    def _cookie(self, request: Request, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", httponly=True, samesite="strict",
            secure=request.url.scheme == "https",
        )  # fmt: skip

    def session(self, request: Request) -> Session | None:
        """The request's valid session, or None."""
        return None if self.sessions is None else self.sessions.verify(request.cookies.get(COOKIE))

    def _gate(self, page: Page) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse("/login?" + urlencode({"next": target}), 303, headers=HEADERS)
            return await page(self.storage, request, session, self.context)

        return endpoint

    def _gate_automation(self, page: AutomationPage) -> Callable[[Request], Awaitable[Response]]:
        automation = self.automation
        if automation is None:  # pragma: no cover - routes exist only with automation
            raise RuntimeError("no automation")

        async def view(
            storage: ExplorerStorage, request: Request, session: Session, context: dict[str, Any]
        ) -> Response:
            return await page(automation, request, session, context)

        return self._gate(view)

    def _post(self, handler: AutomationForm) -> Callable[[Request], Awaitable[Response]]:
        """A state-changing form: a valid session and its CSRF token, or nothing happens."""
        automation = self.automation
        if automation is None:  # pragma: no cover - routes exist only with automation
            raise RuntimeError("no automation")

        async def endpoint(request: Request) -> Response:
            session = self.session(request)
            if session is None:
                return RedirectResponse("/login", 303, headers=HEADERS)
            form = await self._form(request)
            if form is None:
                return render("error.html", 413, message="The form is too large.")
            if not same_token(form.get("csrf"), session.csrf):
                return render("error.html", 403, message="Missing or wrong CSRF token: reload the page and try again.")
            return await handler(automation, request, session, self.context, form)

        return endpoint

    async def login_form(self, request: Request, *, status: int = 200, message: str | None = None) -> Response:
        """``GET /login``: the token form, with a CSRF token bound to a fresh pre-login cookie."""
        if self.sessions is None:
            return render("disabled.html", 404)
        if self.session(request) is not None and message is None:
            return RedirectResponse(safe_path(request.query_params.get("next")), 303, headers=HEADERS)
        nonce = secrets.token_urlsafe(18)
        response = render(
            "login.html", status, message=message, csrf=self.sessions.login_token(nonce),
            next=safe_path(request.query_params.get("next")),
        )  # fmt: skip
        self._cookie(request, response, LOGIN_COOKIE, nonce, 3600)
        return response

    async def _form(self, request: Request) -> dict[str, str] | None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
            return None
        form = await request.form(max_files=0, max_fields=40)
        return {k: v for k, v in form.items() if isinstance(v, str)}

    async def login(self, request: Request) -> Response:
        """``POST /login``: check the CSRF token and the admin token; set the session cookie."""
        if self.sessions is None or self.admin_token is None:
            return render("disabled.html", 404)
        client = _client(request)
        wait = self.limiter.retry_after(client)
        if wait:
            message = f"Too many failed logins from your address: try again in {wait} s."
            return await self._refused(request, 429, message, {"Retry-After": str(wait)})
        form = await self._form(request)
        if form is None:
            return await self._refused(request, 413, "The form is too large.")
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or not same_token(form.get("csrf"), self.sessions.login_token(nonce)):
            return await self._refused(request, 403, "The form expired (missing or wrong CSRF token): try again.")
        token = form.get("token", "").strip()
        if not token or not _same(token, self.admin_token):
            self.limiter.failed(client)
            return await self._refused(request, 401, "Wrong admin token.")
        cookie, _ = self.sessions.issue()
        response = RedirectResponse(safe_path(form.get("next")), 303, headers=HEADERS)
        self._cookie(request, response, COOKIE, cookie, self.sessions.max_age)
        response.delete_cookie(LOGIN_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def _refused(
        self, request: Request, status: int, message: str, headers: dict[str, str] | None = None
    ) -> Response:
        response = await self.login_form(request, status=status, message=message)
        response.headers.update(headers or {})
        return response

    async def logout(self, request: Request) -> Response:
        """``POST /logout``: end the session (CSRF-checked) and clear the cookie."""
        session = self.session(request)
        if session is None or self.sessions is None:
            return RedirectResponse("/login", 303, headers=HEADERS)
        form = await self._form(request)
        if form is None or not same_token(form.get("csrf"), session.csrf):
            return render("error.html", 403, message="Missing or wrong CSRF token: reload the page and try again.")
        self.sessions.revoke(session)
        response = RedirectResponse("/login", 303, headers=HEADERS)
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response
