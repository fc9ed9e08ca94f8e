"""Example applications instrumented with sqreen_mw (Flask, FastAPI, Django); see each directory's README."""
