"""Settings, the Celery app and logging: configuration only, no business logic."""
