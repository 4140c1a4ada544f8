"""The states of a job and every transition between them: the one place that lists them.

::

                 enqueue (delay=0)                     complete
    (new) ----------------------------> WAITING ---claim---> ACTIVE ----------> COMPLETED
      |                                  ^  ^  ^               |  |
      | enqueue (delay>0)   claim:       |  |  |  claim: lease |  | fail (attempts left)
      v                     promote due  |  |  |  expired,     |  v
    DELAYED -----------------------------+  |  |  attempts     | RETRYING --claim: promote--+
                                            |  |  left         |                            |
    FAILED / CANCELLED ---------retry-------+  +---------------+ <-------------------------+
       ^    ^                                  release (graceful shutdown, attempt refunded)
       |    +-- cancel (waiting/delayed/retrying), fail (active, cancel requested)
       +------- fail (no attempts left, or not retryable), claim (lease expired, none left)

Every arrow is one Lua script (one round trip, atomic), named in :data:`TRANSITIONS`; the
scripts' header comments point back here. A job is stored once, as a hash
(``<queue>:job:<id>``), and referenced by id from exactly one state set at a time:

=============  ==============================  ============================================
state          where its id is                 score
=============  ==============================  ============================================
waiting        ``<queue>:waiting`` (zset)      (PRIORITY_MAX - priority) * 10^12 + sequence
delayed        ``<queue>:delayed`` (zset)      due time (ms, server clock)
retrying       ``<queue>:delayed`` (zset)      due time of the next attempt (ms)
active         ``<queue>:active`` (zset)       lease deadline (ms); renewed by heartbeats
completed      ``<queue>:completed`` (zset)    finish time (ms); trimmed by count and age
failed         ``<queue>:failed`` (zset)       finish time (ms); trimmed by count and age
cancelled      ``<queue>:cancelled`` (zset)    finish time (ms); trimmed like failed
=============  ==============================  ============================================
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "PRIORITY_MAX",
    "PRIORITY_MIN",
    "TERMINAL",
    "TRANSITIONS",
    "JobState",
    "Transition",
    "waiting_score",
]


class JobState(StrEnum):
    """Where a job is in its life. Stored as the ``state`` field of the job's hash."""

    WAITING = "waiting"
    """Ready to run; handed out by priority (higher first), then first in, first out."""
    DELAYED = "delayed"
    """Enqueued with a delay; becomes waiting at its due time."""
    RETRYING = "retrying"
    """An attempt failed; waits out its backoff, then becomes waiting again."""
    ACTIVE = "active"
    """Claimed by one worker, under a lease the worker renews while it runs the job."""
    COMPLETED = "completed"
    """Finished; its result is kept for a bounded time and count."""
    FAILED = "failed"
    """Out of attempts (or not retryable): the dead letter, kept with its error and traceback."""
    CANCELLED = "cancelled"
    """Cancelled before it finished; kept (and counted) apart from the failed jobs, with
    the same bounds."""
    REMOVED = "removed"
    """Gone from the server: drained, or trimmed after its retention. Never stored; an
    idempotent enqueue (a cron tick's id) reports it when its job already ran and was
    trimmed, so the tick is not enqueued again."""

    @property
    def pending(self) -> bool:
        """True for waiting, delayed and retrying: the job has not started its next attempt."""
        return self in (JobState.WAITING, JobState.DELAYED, JobState.RETRYING)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.REMOVED})

PRIORITY_MIN = -1000
PRIORITY_MAX = 1000
_SEQUENCE_SPAN = 10**12


def waiting_score(priority: int, sequence: int) -> int:
    """The waiting set's score: lower runs first, so higher priority gets the lower score.

    The largest score is 2001 * 10^12 < 2^53, so it is exact in the double a sorted set
    stores. Within one priority the sequence (an ``INCR`` counter) keeps FIFO order; it wraps
    after 10^12 enqueues, which is where FIFO would be broken once. Mirrors the scripts' own
    ``wscore`` function (kept here for the tests and the docs).
    """
    return (PRIORITY_MAX - priority) * _SEQUENCE_SPAN + sequence % _SEQUENCE_SPAN


@dataclass(frozen=True)
class Transition:
    source: JobState | None
    """``None``: the job did not exist yet."""
    target: JobState
    script: str
    """The ``.lua`` file that performs it."""
    why: str


_W, _D, _R, _A = JobState.WAITING, JobState.DELAYED, JobState.RETRYING, JobState.ACTIVE
_C, _F, _X = JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED
_GONE = JobState.REMOVED

TRANSITIONS: tuple[Transition, ...] = (
    Transition(None, _W, "enqueue", "enqueued without delay (or enqueue_many)"),
    Transition(None, _D, "enqueue", "enqueued with a delay"),
    Transition(_D, _W, "claim", "its due time came (promoted when a worker claims)"),
    Transition(_R, _W, "claim", "its backoff ended (promoted when a worker claims)"),
    Transition(_W, _A, "claim", "a worker took it; attempts + 1, lease starts"),
    Transition(_A, _A, "extend", "heartbeat: the worker renewed its lease"),
    Transition(_A, _C, "complete", "the function returned; result stored"),
    Transition(_A, _R, "fail", "the attempt raised or timed out, and attempts are left"),
    Transition(_A, _F, "fail", "the attempt failed with no attempts left, or not retryable"),
    Transition(_A, _X, "fail", "the attempt ended after a cancel request"),
    Transition(_A, _W, "claim", "lease expired (worker died or stalled), attempts left"),
    Transition(_A, _F, "claim", "lease expired with no attempts left"),
    Transition(_A, _W, "release", "graceful shutdown returned it; the attempt is refunded"),
    Transition(_W, _X, "cancel", "cancelled while waiting"),
    Transition(_D, _X, "cancel", "cancelled while delayed"),
    Transition(_R, _X, "cancel", "cancelled while waiting for a retry"),
    Transition(_F, _W, "retry", "retried by hand; attempts start again from zero"),
    Transition(_X, _W, "retry", "retried by hand; attempts start again from zero"),
    Transition(_W, _GONE, "drain", "the queue was drained"),
    Transition(_D, _GONE, "drain", "the queue was drained"),
    Transition(_R, _GONE, "drain", "the queue was drained"),
    Transition(_C, _GONE, "complete", "trimmed: past the completed jobs' count or age bound"),
    Transition(_F, _GONE, "fail", "trimmed: past the failed jobs' count or age bound"),
    Transition(_X, _GONE, "cancel", "trimmed: past the cancelled jobs' count or age bound"),
)
