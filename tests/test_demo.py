"""The README's main job: ``sqreen-mw demo`` runs end to end and reports the attack."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_and_reports_what_happened() -> None:
    result = subprocess.run([sys.executable, "-m", "sqreen_mw.collector.cli", "demo"], capture_output=True, text=True,
                            timeout=120)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    tracked = re.search(r"SDK: tracked (\d+), sent (\d+), dropped none \(flush complete\)", out)
    assert tracked and tracked.group(1) == tracked.group(2)
    stored = re.search(r"The collector stored (\d+) events", out)
    assert stored and stored.group(1) == tracked.group(1)
    assert re.search(r"\s24\s+203\.0\.113\.66\s+<-- credential stuffing", out)
    assert "'card_number': '[REDACTED]'" in out and "4111" not in out
