"""Following an event log with resume: the decisions, written once for both clients.

A watch stream may break (the node restarts, the connection drops) or close before the
log's last event (the node shut down cleanly). `Follower` keeps the last sequence number
seen and says what to do next: open the stream again after it, after a pause that doubles
on each failure in a row, or give up with the error. The clients only do the I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ._errors import DeadlineExceeded, InvalidArgument, StreamEnded, SupervisorError, WaitTimeout, is_transient
from ._chat import ThreadEvent, ThreadMessage, event_of
from ._models import RunStatus, TaskEvent, TaskStatus, WorkflowEvent
from ._proto.supervisor.v1 import chat_pb2, tasks_pb2, workflows_pb2

_Event = TypeVar("_Event")


@dataclass(frozen=True)
class ResumePolicy:
    """How a watch resumes after a break: `max_consecutive_failures` attempts in a row
    without an event before giving up, pausing `initial_backoff` seconds, doubled after
    each failure up to `max_backoff`. The default (10 attempts, 0.1 s to 2 s) rides out
    about 13 s of a node being away."""

    max_consecutive_failures: int = 10
    initial_backoff: float = 0.1
    max_backoff: float = 2.0

    @classmethod
    def never(cls) -> ResumePolicy:
        """Never resume: the first break raises."""
        return cls(max_consecutive_failures=0)

    def pauses(self) -> Iterator[float]:
        """The pauses of one run of failures, one per allowed failure."""
        pause = min(self.initial_backoff, self.max_backoff)
        for _ in range(self.max_consecutive_failures):
            yield pause
            pause = min(pause * 2, self.max_backoff)


class Follower:
    """The state of one resuming watch of `what` (e.g. "task 0192..."), from `after_seq`,
    within `deadline` (a `time.monotonic()` instant, or None)."""

    def __init__(self, what: str, after_seq: int, policy: ResumePolicy, deadline: float | None) -> None:
        self.what = what
        self.last_seq = after_seq
        self.policy = policy
        self.deadline = deadline
        self._pauses = policy.pauses()

    def remaining(self) -> float | None:
        """Seconds left before the deadline (for the next call's timeout), or None."""
        if self.deadline is None:
            return None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise self.timeout()
        return left

    def timeout(self) -> WaitTimeout:
        """The error of a wait that ran out of time."""
        return WaitTimeout(f"{self.what} had not ended when the wait's time ran out; it goes on")

    def call_timeout(self, per_call: float | None) -> float | None:
        """The timeout of a call made for this watch: the client's per-call timeout, cut
        to what is left before the deadline."""
        return _cut(per_call, self.remaining())

    def received(self, seq: int) -> bool:
        """An event arrived: whether it is new (past the last one seen). A new one moves
        the watch on and starts a fresh run of pauses; one seen already is dropped (a
        server repeating itself never resets the budget of failures)."""
        if seq <= self.last_seq:
            return False
        self.last_seq = seq
        self._pauses = self.policy.pauses()
        return True

    def progressed(self) -> None:
        """Something new arrived that has no sequence number (a piece of a reply): the
        watch is alive, so a fresh run of pauses starts."""
        self._pauses = self.policy.pauses()

    def closed_early(self) -> StreamEnded:
        """The stream closed while the log had not ended."""
        return StreamEnded(f"the event stream of {self.what} ended before its last event")

    def pause_after(self, err: SupervisorError) -> float:
        """The pause before opening the stream again after `err`, or raises the error to
        give to the caller (not transient, attempts used up, or past the deadline)."""
        if isinstance(err, DeadlineExceeded) and self.deadline is not None:
            if time.monotonic() >= self.deadline - 0.001:
                raise self.timeout() from err
        if not (isinstance(err, StreamEnded) or is_transient(err)):
            raise err
        pause = next(self._pauses, None)
        if pause is None:
            raise err
        if self.deadline is not None and time.monotonic() + pause >= self.deadline:
            raise self.timeout() from err
        return pause


#: Seconds a wait whose time ran out still gives its last look at the task or run (it
#: may have ended just then).
LAST_LOOK = 1.0


def final_timeout(deadline: float | None, per_call: float | None) -> float | None:
    """The timeout of the read that ends a wait, or takes its last look once the time ran
    out: the time left (at least `LAST_LOOK`), cut to the client's per-call timeout."""
    if deadline is None:
        return per_call
    return _cut(per_call, max(deadline - time.monotonic(), LAST_LOOK))


def _cut(per_call: float | None, left: float | None) -> float | None:
    """A per-call timeout cut to `left` seconds (None on either side: no bound there)."""
    if left is None:
        return per_call
    return left if per_call is None else min(per_call, left)


def deadline_after(timeout: float | None) -> float | None:
    """The monotonic instant `timeout` seconds from now (None: no deadline)."""
    if timeout is None:
        return None
    if timeout < 0:
        raise InvalidArgument(f"timeout must be zero or more seconds, not {timeout}")
    return time.monotonic() + timeout


@dataclass(frozen=True)
class Owner:
    """What a log belongs to (a task, a run), read when its stream closes to tell whether
    the log has ended: the method (`get`) and request that read it, and the test."""

    get: str
    request: Any
    has_ended: Callable[[Any], bool]


@dataclass(frozen=True)
class Log(Generic[_Event]):
    """An event log to follow: which stub (`service`) and method read it, how its items
    become events, and how to tell its end. A task's log ends with its terminal event; a
    workflow run's stream is read until the node closes it (a retried run goes on after
    its terminal event), and the run is then read to check that it ended; a thread's
    never ends (it has no `owner`)."""

    what: str
    service: str
    watch: str
    watch_request: Callable[[int], Any]
    #: The SDK's form of a stream item (None: a kind this SDK does not know, skipped).
    convert: Callable[[Any], _Event | None]
    #: An event's sequence number, or None for one without (a piece of a reply).
    seq_of: Callable[[_Event], int | None]
    is_last: Callable[[_Event], bool]
    owner: Owner | None


def task_log(id: str) -> Log[TaskEvent]:
    """Task `id`'s event log."""
    return Log(
        what=f"task {id}",
        service="tasks",
        watch="WatchTask",
        watch_request=lambda seq: tasks_pb2.WatchTaskRequest(id=id, after_seq=seq),
        convert=TaskEvent.from_proto,
        seq_of=lambda event: event.seq,
        is_last=lambda event: event.is_terminal,
        owner=Owner(
            get="GetTask",
            request=tasks_pb2.GetTaskRequest(id=id),
            has_ended=lambda task: TaskStatus.from_proto(task.status).is_terminal,
        ),
    )


def run_log(id: str) -> Log[WorkflowEvent]:
    """Workflow run `id`'s event log."""
    return Log(
        what=f"workflow run {id}",
        service="workflows",
        watch="WatchWorkflow",
        watch_request=lambda seq: workflows_pb2.WatchWorkflowRequest(id=id, after_seq=seq),
        convert=WorkflowEvent.from_proto,
        seq_of=lambda event: event.seq,
        is_last=lambda event: False,
        owner=Owner(
            get="GetWorkflow",
            request=workflows_pb2.GetWorkflowRequest(id=id),
            has_ended=lambda run: RunStatus.from_proto(run.status).is_terminal,
        ),
    )


def thread_log(id: str) -> Log[ThreadEvent]:
    """Thread `id`'s live log: its messages (numbered), the open reply's pieces and turn
    changes (not numbered: they only show the watch is alive)."""
    return Log(
        what=f"thread {id}",
        service="chat",
        watch="WatchThread",
        watch_request=lambda seq: chat_pb2.WatchThreadRequest(thread_id=id, after_seq=seq),
        convert=event_of,
        seq_of=lambda event: event.seq if isinstance(event, ThreadMessage) else None,
        is_last=lambda event: False,
        owner=None,
    )


def accepted(follower: Follower, log: Log[_Event], item: Any) -> _Event | None:
    """The event a stream item is, if the watch should pass it on: None for an unknown
    kind and for a numbered event seen already. A new one moves `follower` on."""
    event = log.convert(item)
    if event is None:
        return None
    seq = log.seq_of(event)
    if seq is None:
        follower.progressed()
    elif not follower.received(seq):
        return None
    return event
