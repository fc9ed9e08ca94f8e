"""Flask example: ``gunicorn 'examples.flask_app.app:app'`` from the repository root."""
