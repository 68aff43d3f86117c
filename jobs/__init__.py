"""Scheduled jobs: opt-out (``jobs.optout``), retry (``jobs.retry``), cleanup (``jobs.cleanup``).

``jobs.runner`` holds the registry and ``run_job`` (locked, recorded runs);
``jobs.scheduler`` runs them on their intervals (``python -m jobs.scheduler``).
Nothing is imported here, so ``python -m jobs.scheduler`` loads each module once.
"""
