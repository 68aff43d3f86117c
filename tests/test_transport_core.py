"""The transport's sans-IO core (push/transport/core): its decisions, driven by events and an injected clock.

No sockets, no event loop, no sleeps: time is a number the test moves.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from push.transport.core.connection import (
    CHECKING,
    CLOSED,
    CONNECTING,
    DRAINING,
    READY,
    ConnectionCore,
    Verdict,
    reset_verdict,
)
from push.transport.core.pool import BACKOFF_MAX, Open, PoolCore
from push.transport.core.request import RequestCore
from push.transport.values import CANCEL, INITIAL_MAX_STREAMS, NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, GoAway

CORE_DIR = Path(__file__).resolve().parent.parent / "push" / "transport" / "core"


class Clock:
    """Monotonic seconds that move only when told to (the asyncio layer passes ``loop.time()``)."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class Conn:
    """What the pool core sees of a connection: anything with a ``core``."""

    core: ConnectionCore
    name: str = field(default="c")


def ready(clock: Clock, max_streams: int = 10, active: int = 0) -> ConnectionCore:
    core = ConnectionCore(clock.now)
    core.settings(max_streams)
    assert core.opened()
    for _ in range(active):
        core.stream_opened()
    return core


# --------------------------------------------------------------------------- connection lifecycle


def test_new_connection_waits_for_settings_then_opens_with_the_servers_limit() -> None:
    clock = Clock()
    core = ConnectionCore(clock.now)
    assert core.state is CONNECTING and core.max_streams == INITIAL_MAX_STREAMS
    assert core.free() == 0  # no stream before the server's SETTINGS
    assert core.settings(1) == (0, 0)  # not open yet: nobody to wake, no budget counted
    assert core.opened()
    assert core.state is READY and core.free() == 1 and core.budget == 1


def test_goaway_during_setup_fails_the_open_and_blames_nobody_yet() -> None:
    core = ConnectionCore(0.0)
    assert core.goaway_received(GoAway(0, 0, b"")) == (False, False)  # the connect path reports it
    assert not core.opened()
    assert core.close() == (False, None)
    assert core.close() is None  # closing twice is a no-op


def test_settings_lowered_below_open_streams_stops_new_streams_until_enough_finish() -> None:
    core = ready(Clock(), max_streams=5, active=4)
    assert core.settings(1) == (0, -4)  # the budget gauge drops by 4
    assert core.free() == -3 and not core.slot_freed()
    for _ in range(3):
        assert not core.stream_closed()
    assert not core.slot_freed()  # 1 open, limit 1
    core.stream_closed()
    assert core.slot_freed() and core.free() == 1


def test_settings_raised_wakes_one_waiter_per_new_slot() -> None:
    core = ready(Clock(), max_streams=2, active=3)  # above the limit, e.g. after a lowering
    assert core.settings(6) == (3, 4)  # 6 - max(2 old, 3 open) new slots
    core.begin_ping(0.0, b"p" * 8, 5.0)
    assert core.settings(8) == (0, 2)  # checking: no new stream until the PING is answered


# --------------------------------------------------------------------------- was this stream processed


def test_goaway_hands_back_only_the_streams_above_last_stream_id() -> None:
    core = ready(Clock(), active=3)
    core.response_complete()
    was_usable, turned_away = core.goaway_received(GoAway(0, 3, b""))
    assert (was_usable, turned_away) == (True, False)
    assert core.state is DRAINING and core.free() == 0
    assert [sid for sid in (1, 3, 5, 7) if core.unprocessed_by_goaway(sid)] == [5, 7]


def test_goaway_before_any_answer_counts_as_turned_away() -> None:
    core = ready(Clock(), active=1)
    assert core.goaway_received(GoAway(0, 0, b"")) == (True, True)


def test_no_goaway_means_no_stream_is_known_unprocessed() -> None:
    core = ready(Clock(), active=1)
    assert not core.unprocessed_by_goaway(1)


@pytest.mark.parametrize("code,verdict", [
    (REFUSED_STREAM, Verdict.RESEND),  # RFC 9113 §8.7: not processed
    (CANCEL, Verdict.RESET),
    (NO_ERROR, Verdict.RESET),
    (PROTOCOL_ERROR, Verdict.RESET),
    (0x2, Verdict.RESET),  # INTERNAL_ERROR
])
def test_reset_verdicts(code: int, verdict: Verdict) -> None:
    assert reset_verdict(code) is verdict


def test_close_resends_what_was_never_written_and_reports_the_rest() -> None:
    core = ready(Clock())
    written = core.stream_opened()
    core.flushed()  # its frames reached the socket
    queued = core.stream_opened()  # queued in h2, the write not done yet
    assert core.closed_verdict(written) is Verdict.LOST
    assert core.closed_verdict(queued) is Verdict.RESEND
    core.flushed()
    assert core.closed_verdict(queued) is Verdict.LOST


def test_draining_connection_closes_when_its_last_stream_ends() -> None:
    core = ready(Clock(), active=2)
    core.goaway_received(GoAway(0, 99, b""))
    assert not core.stream_closed()
    assert core.stream_closed()  # drained: close it


def test_local_drain_and_close_return_the_budget_once() -> None:
    core = ready(Clock(), max_streams=7)
    assert core.drain() is True
    assert core.state is DRAINING and core.drain() is False
    assert core.close() == (False, 7)
    assert core.state is CLOSED and core.budget is None


def test_first_response_proves_the_connection() -> None:
    core = ready(Clock(), active=2)
    assert core.response_complete() is True
    assert core.response_complete() is False


# --------------------------------------------------------------------------- PING / idle policy


def test_idle_connection_is_pinged_before_reuse_and_closed_if_silent() -> None:
    clock = Clock()
    core = ready(clock)
    pool = PoolCore(max_connections=2, ping_after_idle=60.0)
    conn = Conn(core)
    clock.advance(60.0)
    assert pool.pick([conn], clock.now) == (conn, [])  # exactly 60 s: not idle yet
    clock.advance(0.001)
    assert pool.pick([conn], clock.now) == (None, [conn])  # PING it, don't use it

    deadline = core.begin_ping(clock.now, b"ping0001", 5.0)
    assert deadline == pytest.approx(clock.now + 5.0)
    assert core.state is CHECKING and core.free() == 0
    assert core.begin_ping(clock.now, b"ping0002", 5.0) is None  # one check at a time
    assert pool.pick([conn], clock.now) == (None, [])
    clock.advance(4.999)
    assert not core.ping_overdue(clock.now)  # a timer that fires early is re-armed, not obeyed
    clock.advance(0.001)
    assert core.ping_overdue(clock.now)


def test_answered_ping_reopens_the_connection_and_wakes_its_free_slots() -> None:
    clock = Clock()
    core = ready(clock, max_streams=4, active=1)
    core.begin_ping(clock.now, b"ping0001", 5.0)
    clock.advance(1.0)
    assert core.ping_acked(b"other-01") is None  # not our PING: ignored
    core.data_received(clock.now)
    assert core.ping_acked(b"ping0001") == 3
    assert core.state is READY and core.ping_deadline is None
    clock.advance(10.0)
    assert not core.ping_overdue(clock.now)
    assert not core.idle(clock.now, 60.0)  # traffic at the ack restarted the idle clock


def test_ping_ack_after_goaway_wakes_nobody() -> None:
    core = ready(Clock())
    core.begin_ping(0.0, b"ping0001", 5.0)
    core.goaway_received(GoAway(0, 0, b""))
    assert core.ping_acked(b"ping0001") == 0
    assert core.state is DRAINING


def test_timed_out_request_triggers_a_health_check_only_on_a_ready_connection() -> None:
    core = ready(Clock())
    assert core.request_timed_out()
    core.begin_ping(0.0, b"ping0001", 5.0)
    assert not core.request_timed_out()  # already checking
    core.goaway_received(GoAway(0, 0, b""))
    assert not core.request_timed_out()


def test_close_cancels_a_pending_ping() -> None:
    core = ready(Clock())
    core.begin_ping(0.0, b"ping0001", 5.0)
    core.close()
    assert not core.ping_overdue(100.0)


# --------------------------------------------------------------------------- pool


def test_pick_takes_the_least_loaded_ready_connection() -> None:
    clock = Clock()
    pool = PoolCore(max_connections=3, ping_after_idle=60.0)
    busy, light, setting_up = (Conn(ready(clock, 10, 8), "busy"), Conn(ready(clock, 10, 2), "light"),
                               Conn(ConnectionCore(clock.now), "setting up"))
    full = Conn(ready(clock, 2, 2), "full")
    assert pool.pick([busy, setting_up, full, light], clock.now) == (light, [])
    assert pool.pick([full, setting_up], clock.now) == (None, [])


def test_free_streams_counts_ready_slots_less_the_waiters() -> None:
    clock = Clock()
    conns = [Conn(ready(clock, 10, 4)), Conn(ready(clock, 1, 3)), Conn(ConnectionCore(clock.now))]
    assert PoolCore.free_streams(conns, 0) == 6  # an over-full connection does not count negative
    assert PoolCore.free_streams(conns, 4) == 2
    assert PoolCore.free_streams(conns, 9) == 0


def test_open_decision() -> None:
    clock = Clock()
    pool = PoolCore(max_connections=2, ping_after_idle=60.0)
    live = Conn(ready(clock))
    assert pool.open_decision([], clock.now) is Open.NOW
    assert pool.open_decision([live], clock.now) is Open.NOW
    assert pool.open_decision([live, Conn(ready(clock))], clock.now) is Open.NO  # at max_connections
    assert pool.open_decision([live, Conn(ConnectionCore(clock.now))], clock.now) is Open.NO  # one at a time
    checking = ready(clock)
    checking.begin_ping(clock.now, b"ping0001", 5.0)
    assert pool.open_decision([Conn(checking)], clock.now) is Open.NO  # its PING decides first
    draining = ready(clock)
    draining.goaway_received(GoAway(0, 0, b""))
    assert pool.open_decision([Conn(draining), live], clock.now) is Open.NOW  # a draining one leaves room


def test_failed_connects_back_off_while_another_connection_works() -> None:
    clock = Clock()
    pool = PoolCore(max_connections=2, ping_after_idle=60.0)
    live = [Conn(ready(clock))]
    delays = []
    for _ in range(7):
        pool.failed(clock.now)
        delays.append(pool.open_not_before - clock.now)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, BACKOFF_MAX, BACKOFF_MAX]
    assert pool.open_decision(live, clock.now) is Open.LATER
    assert pool.open_decision([], clock.now) is Open.NOW  # nothing works: try at once
    clock.advance(BACKOFF_MAX - 0.001)
    assert pool.open_decision(live, clock.now) is Open.LATER
    clock.advance(0.001)
    assert pool.open_decision(live, clock.now) is Open.NOW
    pool.failed(clock.now)
    pool.proven()  # a connection answered: back to no delay
    assert pool.open_decision(live, clock.now) is Open.NOW
    pool.failed(clock.now)
    assert pool.open_not_before - clock.now == 0.5


def test_a_connection_that_dies_before_answering_counts_as_a_failed_attempt() -> None:
    clock = Clock()
    pool = PoolCore(max_connections=2, ping_after_idle=60.0)
    silent = ready(clock)
    assert pool.removed(silent, True, clock.now) == 1  # wake one: its place may be refilled
    assert pool.open_not_before == clock.now + 0.5
    pool.proven()
    answered = ready(clock)
    answered.response_complete()
    assert pool.removed(answered, True, clock.now) == 1
    assert pool.open_not_before == 0.0
    assert pool.removed(ConnectionCore(clock.now), False, clock.now) == 0  # failed set-up: no wake storm


def test_waiters_fail_together_only_when_no_connection_is_left() -> None:
    clock = Clock()
    assert PoolCore.fail_waiters([])
    closed = ready(clock)
    closed.close()
    assert PoolCore.fail_waiters([Conn(closed)])
    assert not PoolCore.fail_waiters([Conn(closed), Conn(ConnectionCore(clock.now))])
    assert not PoolCore.fail_waiters([Conn(ready(clock))])


def test_an_opened_connection_wakes_one_more_waiter_than_its_slots() -> None:
    assert PoolCore.opened_wake(ready(Clock(), max_streams=3, active=1)) == 3


# --------------------------------------------------------------------------- request deadlines and resends


def test_pool_timeout_bounds_each_wait() -> None:
    clock = Clock()
    req = RequestCore(read_timeout=None, pool_timeout=2.0, max_resends=3)
    assert req.wait_deadline(clock.now) == clock.now + 2.0
    assert req.sent(clock.now) is None
    assert not req.too_late(clock.advance(1e6))


def test_no_timeouts_means_no_deadlines() -> None:
    req = RequestCore(read_timeout=None, pool_timeout=None, max_resends=3)
    assert req.wait_deadline(0.0) is None and req.sent(0.0) is None


def test_one_read_deadline_across_resends() -> None:
    clock = Clock()
    req = RequestCore(read_timeout=5.0, pool_timeout=10.0, max_resends=3)
    assert req.wait_deadline(clock.now) == clock.now + 10.0  # not sent yet: the pool timeout alone
    first = req.sent(clock.now)
    assert first == clock.now + 5.0
    clock.advance(3.0)
    assert req.unprocessed() and req.front  # refused: resend, ahead of new requests
    assert not req.too_late(clock.now)
    assert req.wait_deadline(clock.now) == first  # the wait for a resend ends at the read deadline
    assert req.sent(clock.now) == first  # a resend does not extend it
    clock.advance(2.0)
    assert req.unprocessed()
    assert req.too_late(clock.now)  # the caller gets a pool timeout: it was never processed


def test_resends_stop_after_max_resends() -> None:
    req = RequestCore(read_timeout=None, pool_timeout=None, max_resends=2)
    assert [req.unprocessed() for _ in range(3)] == [True, True, False]
    assert req.resends - 1 == 2  # what ResendLimitExceeded reports
    assert not RequestCore(None, None, max_resends=0).unprocessed()


def test_a_connection_that_cannot_take_the_stream_requeues_at_the_front() -> None:
    req = RequestCore(read_timeout=1.0, pool_timeout=1.0, max_resends=3)
    assert not req.front
    req.requeue()
    assert req.front and req.resends == 0 and req.read_deadline is None


# --------------------------------------------------------------------------- the core stays sans-IO


ALLOWED_IMPORTS = {"__future__", "enum", "typing", "push.transport.values", "push.transport.core.connection"}


@pytest.mark.parametrize("path", sorted(CORE_DIR.glob("*.py")), ids=lambda p: p.name)
def test_core_imports_no_io(path: Path) -> None:
    imported: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert imported <= ALLOWED_IMPORTS, f"{path.name} imports {sorted(imported - ALLOWED_IMPORTS)}"


def test_values_module_is_plain() -> None:
    tree = ast.parse((CORE_DIR.parent / "values.py").read_text())
    imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert imported <= {"__future__", "json", "dataclasses"}
