"""The titrate service: FastAPI app, per-domain routers/services/repositories, ORM, auth, workers, settings, CLI."""
