"""A minimal Django project instrumented with sqreen_mw: no database, no sessions, bearer tokens."""
