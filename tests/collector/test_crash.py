"""The collector SIGKILLed and restarted while two apps keep tracking: every event stored exactly once."""

from __future__ import annotations

import signal
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

from tests.support import (
    ADMIN_TOKEN,
    API_KEY,
    Collector,
    free_port,
    output_of,
    read_line_matching,
    spawn,
    stop_process,
)  # fmt: skip

EVENTS_PER_APP = 1500
_APP = textwrap.dedent(
    """
    import sys, time, sqreen_mw
    url, name, n, token = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    client = sqreen_mw.init(token=token, url=url, app_name=name, heartbeat_interval=0.2, batch_size=50,
                            shutdown_timeout=60, request_timeout=5)
    for i in range(n):
        sqreen_mw.track("crash.test", properties={"seq": i, "app": name})
        time.sleep(0.003)
    delivered = sqreen_mw.flush(90)
    print("stats", client.statistics(), "delivered", delivered, flush=True)
    sys.exit(0 if delivered else 1)
    """
)


def _collector(db: Path, port: int) -> Collector:
    proc = spawn(
        [
            sys.executable, "-m", "sqreen_mw.collector.cli", "serve", "--db", str(db), "--api-key", API_KEY,
            "--admin-token", ADMIN_TOKEN, "--port", str(port),
        ]
    )  # fmt: skip
    read_line_matching(proc, r"listening on http://", 30)
    return Collector(f"http://127.0.0.1:{port}", proc)


def test_sigkilled_collector_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    db, port = tmp_path / "crash.db", free_port()
    collector = _collector(db, port)
    apps = [spawn([sys.executable, "-c", _APP, collector.url, f"app{i}", str(EVENTS_PER_APP), API_KEY]) for i in (1, 2)]
    try:
        for _ in range(3):  # kill it mid-traffic, leave it down a moment, restart it on the same file
            time.sleep(1.0)
            assert collector.process is not None
            stop_process(collector.process, signal.SIGKILL)
            time.sleep(0.5)
            collector = _collector(db, port)
        codes = [app.wait(180) for app in apps]
        assert codes == [0, 0], [output_of(app) for app in apps]
        stored = collector.events(name="crash.test")
        seen = Counter((e["properties"]["app"], e["properties"]["seq"]) for e in stored)
        assert len(stored) == 2 * EVENTS_PER_APP, [output_of(app) for app in apps]
        assert set(seen) == {(f"app{i}", s) for i in (1, 2) for s in range(EVENTS_PER_APP)}
        assert max(seen.values()) == 1  # once each, across every retry of a batch whose answer was lost
    finally:
        for app in apps:
            if app.poll() is None:
                stop_process(app, signal.SIGKILL)
        if collector.process is not None:
            stop_process(collector.process, signal.SIGTERM)
