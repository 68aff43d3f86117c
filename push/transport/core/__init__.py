"""The transport's protocol decisions, without I/O: events in, decisions out.

Theory of operation. The asyncio layer (``push.transport.connection``, ``.pool``,
``.adapter``) owns the sockets, the h2 state machine, the futures and the timers.
Whenever something happens (a SETTINGS frame, a GOAWAY, a stream reset, a PING
ack, a timer firing, a socket write, "the caller wants a connection"), it calls
one synchronous method here with plain values (stream ids, error codes, the
current monotonic time ``now``) and performs what the answer says: wake *n*
waiters, resend this stream, report it as possibly processed, send a PING, open
a connection, arm a timer for time *t*, close. Nothing here awaits, reads a
clock or raises an httpx error, so every rule is tested by calling it with
chosen times (``tests/test_transport_core.py``), the way h11/h2 and httpcore's
pool separate deciding from doing.

- ``core.connection``: one connection's lifecycle state, its stream budget
  (the server's live SETTINGS_MAX_CONCURRENT_STREAMS against the open streams),
  GOAWAY handling, "was this stream processed", and the PING / idle policy.
- ``core.pool``: which connection takes the next stream, how many are free,
  when to open another connection and the back-off after failed ones.
- ``core.request``: one request's deadlines (one read deadline across
  transparent resends) and whether a provably unprocessed request may be resent.

These modules import only the standard library and ``push.transport.values``.
"""
