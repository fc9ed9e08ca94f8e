"""ASGI entry point: ``uvicorn exampleproject.asgi:application --lifespan off`` from ``examples/django_app``.

Django's ASGI handler refuses the lifespan protocol, hence ``--lifespan off``; queued events are still flushed at exit
by the SIGTERM and ``atexit`` handlers that ``sqreen_mw.init()`` installs.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exampleproject.settings")
application = get_asgi_application()
