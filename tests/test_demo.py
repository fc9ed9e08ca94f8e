"""The README's main job: ``sqreen-mw demo`` runs end to end: playbooks fire, attackers get 403, others 200."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_blocks_the_attackers_and_serves_everyone_else() -> None:
    result = subprocess.run([sys.executable, "-m", "sqreen_mw.collector.cli", "demo", "--no-wait"],
                            capture_output=True, text=True, timeout=180, check=False)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    tracked = re.search(r"SDK: tracked (\d+), sent (\d+), dropped none \(flush complete\)", out)
    assert tracked and tracked.group(1) == tracked.group(2)
    stored = re.search(r"The collector stored (\d+) events", out)
    assert stored
    # every tracked event, plus the SDK's own records of what it refused (sq.action.*), is stored once
    assert int(stored.group(1)) >= int(tracked.group(1))
    attacker = re.search(r"attacker 203\.0\.113\.66 tried leaked passwords: 401 x(\d+), then 403 x1", out)
    assert attacker and int(attacker.group(1)) >= 5, out
    assert re.search(r"placed orders in a burst: 201 x(\d+), then 403 x1", out), out
    assert re.search(r"credential-stuffing\s+ip 203\.0\.113\.66: 5 events -> block_ip taken", out), out
    assert re.search(r"order-burst\s+user \{'email': 'mallory@example.com'\}: 5 events -> block_user taken", out)
    assert re.search(r"reset-flood\s+ip 192\.0\.2\.44: 3 events -> block_ip dry_run", out), out
    protect = re.search(r"credential stuffing, by IP:\s+(\d+) ms", out)
    assert protect and int(protect.group(1)) < 2000, out
    assert re.search(r"unblock \(lift -> next request let through\): (\d+) ms", out), out
    assert "403" not in re.search(r"everyone else: (.*)\(never blocked\)", out).group(1)  # type: ignore[union-attr]
    assert "'card_number': '[REDACTED]'" in out and "4111" not in out
    assert "keeps running" not in out  # --no-wait
