"""Single-instance lock per job, so two schedulers (or a scheduler and a manual
``run_job``) never run the same job at the same time: ``tables.locks`` under the
job's name. A job checks ``handle.lost`` between chunks and stops once the lock
is gone (its Postgres session ended, or its SQLite row was taken over).
"""

from __future__ import annotations

from tables.locks import HEARTBEAT_SECONDS, LOCK_TTL, LockHandle, lock_key, named_lock

JobLockHandle = LockHandle
job_lock = named_lock  # ``job_lock(engine, job, clock)``: a job's lock is the lock named after it

__all__ = ["HEARTBEAT_SECONDS", "LOCK_TTL", "JobLockHandle", "job_lock", "lock_key"]
