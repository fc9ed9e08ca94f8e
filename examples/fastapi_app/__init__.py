"""FastAPI example: ``uvicorn examples.fastapi_app.app:app`` from the repository root."""
