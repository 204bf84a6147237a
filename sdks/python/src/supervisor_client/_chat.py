"""Conversation threads (`ChatService`): what the clients return, and the piecing
together of a reply from its streamed parts, written once for both clients."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Union

from ._models import TASK_TYPES, TaskStatus, _name_of, _time, enum_value
from ._proto.supervisor.v1 import chat_pb2


@dataclass(frozen=True)
class ThreadMessage:
    """One message of a thread: a person's (`role == "user"`) or a reply
    (`role == "assistant"`, with the turn's `status` and, when it failed, `error`)."""

    seq: int
    role: str
    text: str
    #: The turn's task (for a user message, the task answering it).
    task_id: str
    #: How the turn ended (replies only; None for a user message).
    status: TaskStatus | None
    error: str
    author: str
    created_at: datetime | None
    raw: chat_pb2.ThreadMessage = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, m: chat_pb2.ThreadMessage) -> ThreadMessage:
        """From the API's message."""
        return cls(
            seq=m.seq,
            role="user" if m.role == chat_pb2.THREAD_ROLE_USER else "assistant",
            text=m.text,
            task_id=m.task_id,
            status=TaskStatus.from_proto(m.status) if m.status else None,
            error=m.error,
            author=m.author,
            created_at=_time(m.created_at, m.HasField("created_at")),
            raw=m,
        )


@dataclass(frozen=True)
class Thread:
    """A conversation (its `messages` only from `get_thread`)."""

    id: str
    title: str
    #: The task type of its replies ("code_analysis", "bug_fix", ...).
    type: str
    context: dict[str, str]
    message_count: int
    #: The task writing the current reply ("" when none runs).
    open_turn_task_id: str
    messages: list[ThreadMessage]
    created_by: str
    created_at: datetime | None
    updated_at: datetime | None
    raw: chat_pb2.Thread = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, t: chat_pb2.Thread) -> Thread:
        """From the API's message."""
        return cls(
            id=t.id,
            title=t.title,
            type=_name_of(TASK_TYPES, t.type),
            context=dict(t.context),
            message_count=t.message_count,
            open_turn_task_id=t.open_turn_task_id,
            messages=[ThreadMessage.from_proto(m) for m in t.messages],
            created_by=t.created_by,
            created_at=_time(t.created_at, t.HasField("created_at")),
            updated_at=_time(t.updated_at, t.HasField("updated_at")),
            raw=t,
        )


@dataclass(frozen=True)
class ReplyDelta:
    """A piece of a reply being written: `text` starts at byte `offset` of the reply of
    the attempt running under `lease` (a resumed watch sends the open reply again from 0;
    a new lease, which every attempt gets, starts over)."""

    task_id: str
    attempt: int
    offset: int
    text: str
    lease: int = 0


@dataclass(frozen=True)
class TurnStatus:
    """The running turn's task changed status."""

    task_id: str
    status: TaskStatus
    message: str


#: One item of `watch_thread`.
ThreadEvent = Union[ThreadMessage, ReplyDelta, TurnStatus]


@dataclass(frozen=True)
class SearchHit:
    """A message containing the searched text."""

    thread_id: str
    title: str
    message: ThreadMessage
    excerpt: str

    @classmethod
    def from_proto(cls, h: chat_pb2.SearchHit) -> SearchHit:
        """From the API's hit."""
        return cls(h.thread_id, h.title, ThreadMessage.from_proto(h.message), h.excerpt)


def event_of(ev: chat_pb2.ThreadEvent) -> ThreadEvent | None:
    """The SDK's form of one stream item (None for a kind this SDK does not know)."""
    kind = ev.WhichOneof("event")
    if kind == "message":
        return ThreadMessage.from_proto(ev.message)
    if kind == "delta":
        d = ev.delta
        return ReplyDelta(d.task_id, d.attempt, d.offset, d.text, d.lease)
    if kind == "turn":
        return TurnStatus(ev.turn.task_id, TaskStatus.from_proto(ev.turn.status), ev.turn.message)
    return None


class Reply:
    """The reply of one turn as its pieces arrive: `add` returns the text not seen
    before (nothing for bytes already held or an older attempt's; a new attempt starts
    the text over, and `restarted` says so)."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.lease = 0
        self.text = ""
        self._bytes = 0
        self.restarted = False

    def add(self, d: ReplyDelta) -> str:
        """Takes a piece; returns its new text ("" when it adds nothing)."""
        self.restarted = False
        if d.task_id != self.task_id or d.lease < self.lease:
            return ""
        if d.lease > self.lease:
            self.restarted = self._bytes > 0
            self.lease, self.text, self._bytes = d.lease, "", 0
        piece = d.text.encode()
        end = d.offset + len(piece)
        if end <= self._bytes or d.offset > self._bytes:
            return ""
        fresh = piece[self._bytes - d.offset :].decode(errors="replace")
        self.text += fresh
        self._bytes = end
        return fresh

    def take(self, event: ThreadEvent, on_text: Callable[[str], None] | None) -> ThreadMessage | None:
        """Takes one event of the thread's watch: a piece of this reply is added (its new
        text given to `on_text`); the turn's reply message is returned, which ends it."""
        if isinstance(event, ReplyDelta):
            fresh = self.add(event)
            if fresh and on_text is not None:
                on_text(fresh)
        elif isinstance(event, ThreadMessage) and event.role == "assistant" and event.task_id == self.task_id:
            return event
        return None


def create_thread_request(
    type: str | int | None,
    title: str,
    context: Mapping[str, str] | None,
    about_task: str,
    preferred_providers: list[str] | None,
) -> chat_pb2.CreateThreadRequest:
    """The request of `create_thread`, its type checked here."""
    return chat_pb2.CreateThreadRequest(
        title=title,
        type=enum_value("task type", TASK_TYPES, type) if type is not None else 0,  # type: ignore[arg-type]
        context=dict(context or {}),
        about_task_id=about_task,
        preferred_providers=list(preferred_providers or []),
    )


def convert_request(
    thread_id: str, type: str | int | None, instruction: str, workflow: str, vars: Mapping[str, str] | None
) -> chat_pb2.ConvertThreadRequest:
    """The request of `convert_thread`."""
    return chat_pb2.ConvertThreadRequest(
        thread_id=thread_id,
        type=enum_value("task type", TASK_TYPES, type) if type is not None else 0,  # type: ignore[arg-type]
        instruction=instruction,
        workflow=workflow,
        vars=dict(vars or {}),
    )
