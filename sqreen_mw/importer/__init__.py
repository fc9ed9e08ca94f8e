"""``sqreen-mw import FILE``: past events from JSON Lines or CSV into the collector (``docs/import.md``).

The command line registers :func:`add_arguments` and :func:`run`; the work is split into reading
(``_source``), row to wire event (``_events``), delivery (``_delivery`` over ``_session``) and progress
(``_progress``).
"""

from __future__ import annotations

from ._command import EXIT_NOT_DELIVERED, EXIT_USAGE, add_arguments, run

__all__ = ["EXIT_NOT_DELIVERED", "EXIT_USAGE", "add_arguments", "run"]
