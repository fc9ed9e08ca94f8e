"""What ``sqreen-mw demo`` does to the shop and what it shows: the demo playbooks, shoppers, a credential-stuffing
attacker and an abusive signed-in customer, then a report read back from the collector's API."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

ATTACKER_IP = "203.0.113.66"
ABUSER = ("mallory@example.com", "mallory-pass", "198.51.100.66")
SHOPPERS = [
    ("alice@example.com", "wonderland", "198.51.100.10"),
    ("bob@example.com", "builder", "198.51.100.11"),
    ("carol@example.com", "carol-pass", "198.51.100.12"),
]
LEAKED = ["123456", "password", "qwerty", "letmein", "dragon", "monkey", "abc123", "iloveyou", "admin", "welcome",
          "sunshine", "princess", "football", "master", "shadow", "michael", "superman", "trustno1", "batman",
          "hunter2"]

#: The demo's playbooks (the same format as ``sqreen-mw serve --playbooks FILE``).
DEMO_PLAYBOOKS = """
[allow]
ips = ["198.51.100.10"]   # alice's office: never blocked, whatever happens

[[playbook]]
name = "credential-stuffing"
description = "One IP failing to log in again and again"
event = "sq.auth_track"
where = { success = false }
actor = "ip"
threshold = 5
window = "1m"

[[playbook.response]]
action = "block_ip"
duration = "15m"

[[playbook]]
name = "order-burst"
description = "A signed-in customer placing orders faster than any person does (card testing)"
event = "order.placed"
actor = "user"
threshold = 5
window = "1m"

[[playbook.response]]
action = "block_user"
duration = "15m"

[[playbook]]
name = "reset-flood"
description = "Password resets from one IP, watched in dry run before enabling"
event = "password.reset"
actor = "ip"
threshold = 3
window = "5m"
dry_run = true

[[playbook.response]]
action = "block_ip"
duration = "5m"
"""


class DemoError(RuntimeError):
    """The demo shop did not answer as scripted."""


def checked(response: httpx.Response, *expected: int) -> httpx.Response:
    if response.status_code not in expected:
        raise DemoError(f"{response.request.method} {response.request.url.path} answered {response.status_code}: "
                        f"{response.text[:200]}")
    return response


@dataclass
class Outcome:
    """What the traffic saw: status codes per actor, and the measured times."""

    attacker: list[int] = field(default_factory=list)
    abuser: list[int] = field(default_factory=list)
    others: Counter[int] = field(default_factory=Counter)
    time_to_protect: float | None = None  # attacker: threshold-crossing attempt sent -> first 403 received
    user_time_to_protect: float | None = None
    after_lift: list[int] = field(default_factory=list)
    time_to_unblock: float | None = None


def _shop_round(http: httpx.Client, tokens: dict[str, str], outcome: Outcome) -> None:
    """Every shopper logs in and orders once (through the simulated proxy, each from their own IP)."""
    for email, password, ip in SHOPPERS:
        via = {"X-Forwarded-For": ip, "User-Agent": "Mozilla/5.0 (demo shopper)"}
        login = checked(http.post("/login", data={"email": email, "password": password}, headers=via), 200, 403)
        outcome.others[login.status_code] += 1
        if login.status_code == 200:
            tokens[email] = login.json()["token"]
        order = http.post("/orders", headers={**via, "Authorization": f"Bearer {tokens[email]}"},
                          json={"item": "teapot", "quantity": 1, "card_number": "4111 1111 1111 1111"})
        outcome.others[checked(order, 201, 403).status_code] += 1


def _until_refused(attempt: Callable[[], httpx.Response], threshold: int, limit: int,
                   statuses: list[int]) -> float | None:
    """Repeat ``attempt`` until it is refused (403); the time from sending the ``threshold``-th attempt (whose event
    crosses the playbook's threshold) to receiving the first 403, or None if ``limit`` attempts all got through."""
    crossed_at = None
    for n in range(1, limit + 1):
        sent = time.perf_counter()
        response = attempt()
        statuses.append(response.status_code)
        if n == threshold:
            crossed_at = sent
        if response.status_code == 403:
            return None if crossed_at is None else time.perf_counter() - crossed_at
        if n > threshold:
            time.sleep(0.01)  # an attacker's pace, not a busy loop
    return None


def drive_traffic(shop: str, collector: str, admin: str, say: Callable[[str], None]) -> Outcome:
    """Shoppers, the attacker and the abusive customer, then the attacker's block lifted."""
    outcome = Outcome()
    tokens: dict[str, str] = {}
    with httpx.Client(base_url=shop, timeout=10) as http:
        for email, password, ip in [*SHOPPERS, ABUSER]:
            via = {"X-Forwarded-For": ip, "User-Agent": "Mozilla/5.0 (demo shopper)"}
            tokens[email] = checked(http.post("/signup", data={"email": email, "password": password}, headers=via),
                                    201).json()["token"]
        _shop_round(http, tokens, outcome)
        say(f"  {len(SHOPPERS)} shoppers signed up, logged in and ordered ({', '.join(s[2] for s in SHOPPERS)})")

        attacker = {"X-Forwarded-For": ATTACKER_IP, "User-Agent": "python-requests/2.31 (stuffing)"}
        guesses = iter([(email, guess) for guess in LEAKED for email, _, _ in SHOPPERS])

        def stuff() -> httpx.Response:
            email, guess = next(guesses)
            return checked(http.post("/login", data={"email": email, "password": guess}, headers=attacker), 401, 403)

        outcome.time_to_protect = _until_refused(stuff, 5, 40, outcome.attacker)
        say(f"  attacker {ATTACKER_IP} tried leaked passwords: {_statuses(outcome.attacker)}")
        checked(http.post("/password/reset", data={"email": "alice@example.com"}, headers=attacker), 202, 403)
        for _ in range(3):  # three resets from one IP: the dry-run playbook records a firing, blocks nobody
            checked(http.post("/password/reset", data={"email": "bob@example.com"},
                              headers={"X-Forwarded-For": "192.0.2.44"}), 202)
        _shop_round(http, tokens, outcome)
        say(f"  meanwhile the shoppers went on: {_statuses(list(outcome.others.elements()))}")

        email, _, ip = ABUSER
        customer = {"X-Forwarded-For": ip, "Authorization": f"Bearer {tokens[email]}", "User-Agent": "Mozilla/5.0"}

        def order() -> httpx.Response:
            return checked(http.post("/orders", headers=customer, json={"item": "gift card", "quantity": 1}), 201, 403)

        outcome.user_time_to_protect = _until_refused(order, 5, 40, outcome.abuser)
        say(f"  signed-in {email} placed orders in a burst: {_statuses(outcome.abuser)}")

        with httpx.Client(base_url=collector, headers={"Authorization": f"Bearer {admin}"}, timeout=10) as api:
            block = next((b for b in api.get("/api/v1/blocks").json()["blocks"]
                          if b["kind"] == "ip" and b["value"] == ATTACKER_IP), None)
            if block is not None:
                lifted_at = time.perf_counter()
                checked(api.delete(f"/api/v1/blocks/{block['id']}"), 200)
                for _ in range(200):  # until the lift reached the shop
                    status = stuff().status_code
                    outcome.after_lift.append(status)
                    if status != 403:
                        outcome.time_to_unblock = time.perf_counter() - lifted_at
                        break
                    time.sleep(0.01)
                say(f"  the attacker's block lifted through the admin API: next attempt {outcome.after_lift[-1]}")
    return outcome


def _statuses(codes: list[int]) -> str:
    """``401 x5, then 403 x2``: runs of equal status codes."""
    runs: list[list[int]] = []
    for code in codes:
        if runs and runs[-1][0] == code:
            runs[-1][1] += 1
        else:
            runs.append([code, 1])
    return ", then ".join(f"{code} x{count}" for code, count in runs) or "none"


def _ms(seconds: float | None) -> str:
    return "not blocked" if seconds is None else f"{seconds * 1000:.0f} ms"


def report(outcome: Outcome, collector: str, admin: str, say: Callable[[str], None]) -> bool:
    """Print what the collector saw and did; True when the demo showed what it should."""
    with httpx.Client(base_url=collector, headers={"Authorization": f"Bearer {admin}"}, timeout=10) as api:
        firings = api.get("/api/v1/firings").json()["firings"]
        blocks = api.get("/api/v1/blocks", params={"all": 1}).json()["blocks"]
        events = api.get("/api/v1/events", params={"limit": 1000}).json()["events"]
    say(f"\nThe collector stored {len(events)} events:")
    for name, count in sorted(Counter(e["name"] for e in events).items()):
        say(f"  {count:4d}  {name}")
    say("\nPlaybooks that fired:")
    for f in reversed(firings):
        actor = f["actor"]["value"]
        done = ", ".join(f"{r['action']} {r['status']}" for r in f["responses"])
        say(f"  {f['playbook']:<20} {f['actor']['kind']} {actor}: {f['count']} events -> {done}")
    say("\nBlocks:")
    for b in reversed(blocks):
        state = "lifted" if b["lifted_at"] else f"until {b['expires_at']}"
        say(f"  {b['kind']:<4} {b['value']}  ({b['reason']}; {state})")
    ok = 403 in outcome.attacker and 403 in outcome.abuser and 403 not in outcome.others
    say("\nTime to protect (threshold-crossing request sent -> first 403):")
    say(f"  credential stuffing, by IP:  {_ms(outcome.time_to_protect)}")
    say(f"  order burst, by user:        {_ms(outcome.user_time_to_protect)}")
    lift = "no block to lift" if outcome.time_to_unblock is None else _ms(outcome.time_to_unblock)
    say(f"  unblock (lift -> next request let through): {lift}")
    say(f"  everyone else: {_statuses(sorted(outcome.others.elements()))} (never blocked)")
    order = next((e for e in events if e["name"] == "order.placed" and "card_number" in (e["body"] or {})), None)
    if order is not None:
        say("\nOne order.placed event, as stored (note the scrubbed card number and the inherited user):")
        say(f"  user_identifiers: {order['user_identifiers']}")
        say(f"  request: {order['request']}")
        say(f"  body: {order['body']}")
    return ok and outcome.time_to_unblock is not None


__all__ = ["DEMO_PLAYBOOKS", "DemoError", "Outcome", "drive_traffic", "report"]
