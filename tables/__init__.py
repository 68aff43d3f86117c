"""Storage layer: SQLModel tables, engine factory, migrations and bulk data functions.

    from tables import make_engine, upgrade
    engine = make_engine(os.environ["PUSH_DATABASE_URL"])
    upgrade(engine)                      # safe on every start
    with engine.begin() as conn:
        state = store.load_analysis_state(conn, keys)
"""

from tables import store
from tables.engine import make_engine
from tables.migrate import current_revision, head_revision, upgrade
from tables.types import as_utc, utc_now

__all__ = ["store", "make_engine", "upgrade", "current_revision", "head_revision", "as_utc", "utc_now"]
