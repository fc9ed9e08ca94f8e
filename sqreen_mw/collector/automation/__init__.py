"""Security automation on the collector: playbooks evaluated on ingest, their responses (blocks, webhooks, logs),
the blocks agents enforce, backtests on stored history.

- :mod:`.model`: the playbook format (DESIGN §8), its validator and durations.
- :mod:`.engine`: the sliding-window counters per playbook and actor; :func:`.engine.replay` for backtests.
- :mod:`.service`: :class:`Automation`, which ties them to storage (``app.state.automation``).
- :mod:`.webhooks`: webhook delivery in the background.
- :mod:`.api`: the admin API routes and the agents' push channel.
"""

from __future__ import annotations

from .model import Allowlist, Playbook, PlaybookError, parse_duration, parse_playbook
from .service import Automation, BlockRefused, block_json, firing_json, load_playbooks_file

__all__ = [
    "Allowlist",
    "Automation",
    "BlockRefused",
    "Playbook",
    "PlaybookError",
    "block_json",
    "firing_json",
    "load_playbooks_file",
    "parse_duration",
    "parse_playbook",
]
