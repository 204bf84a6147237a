"""What the SDK returns: plain dataclasses over the API's messages, with short names as
the CLI spells them (`"testing"`, `TaskStatus.SUCCEEDED == "succeeded"`) and `datetime`s.
Each keeps the message it came from in `raw`, for fields not lifted here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any, TypeVar
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.timestamp_pb2 import Timestamp

from ._errors import InvalidArgument
from ._proto.supervisor.v1 import auth_pb2, tasks_pb2, workflows_pb2

def _enum(file: Any, name: str) -> EnumDescriptor:
    descriptor: EnumDescriptor = file.DESCRIPTOR.enum_types_by_name[name]
    return descriptor


def _short_names(enum: EnumDescriptor, prefix: str) -> dict[str, int]:
    """`{"bug_fix": 5, ...}` from `TASK_TYPE_BUG_FIX = 5`, without the unspecified value."""
    return {
        value.name[len(prefix) :].lower(): value.number
        for value in enum.values
        if value.name != f"{prefix}UNSPECIFIED"
    }


#: Task type names, as the CLI spells them ("pr_review", "bug_fix", "testing", ...).
TASK_TYPES: Mapping[str, int] = _short_names(_enum(tasks_pb2, "TaskType"), "TASK_TYPE_")
#: Priority names, lowest first ("low", "normal", "high", "urgent", "critical").
PRIORITIES: Mapping[str, int] = _short_names(_enum(tasks_pb2, "Priority"), "PRIORITY_")
_EVENT_TYPES = {n: s for s, n in _short_names(_enum(tasks_pb2, "TaskEventType"), "TASK_EVENT_TYPE_").items()}


def enum_value(kind: str, names: Mapping[str, int], value: str | int) -> int:
    """The number of `value` (a short name in any case, `-` for `_`, or a number), or
    `InvalidArgument` listing the names there are."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value in names.values():
            return value
    elif isinstance(value, str):
        number = names.get(value.strip().lower().replace("-", "_"))
        if number is not None:
            return number
    raise InvalidArgument(f"unknown {kind} {value!r}; expected one of: {', '.join(names)}")


def _name_of(names: Mapping[str, int], number: int) -> str:
    for name, n in names.items():
        if n == number:
            return name
    return "unspecified"


def _time(ts: Timestamp, present: bool) -> datetime | None:
    if not present:
        return None
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=timezone.utc)


class TaskStatus(str, Enum):
    """Where a task is in its lifecycle."""

    UNSPECIFIED = "unspecified"
    QUEUED = "queued"
    RUNNING = "running"
    RETRY_WAIT = "retry_wait"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Succeeded, failed or cancelled: it will not change again."""
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED)

    @classmethod
    def from_proto(cls, number: int) -> TaskStatus:
        """The status of `tasks_pb2.TaskStatus` value `number`."""
        return _status_of(cls, _enum(tasks_pb2, "TaskStatus"), "TASK_STATUS_", number)

    def to_proto(self) -> int:
        """This status as a `tasks_pb2.TaskStatus` value."""
        return int(tasks_pb2.TaskStatus.Value("TASK_STATUS_" + self.value.upper()))


class RunStatus(str, Enum):
    """Where a workflow run is."""

    UNSPECIFIED = "unspecified"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        """Ended (a failed or cancelled run may still be retried into a new attempt)."""
        return self not in (RunStatus.RUNNING, RunStatus.UNSPECIFIED)

    @classmethod
    def from_proto(cls, number: int) -> RunStatus:
        """The status of `workflows_pb2.RunStatus` value `number`."""
        return _status_of(cls, _enum(workflows_pb2, "RunStatus"), "RUN_STATUS_", number)

    def to_proto(self) -> int:
        """This status as a `workflows_pb2.RunStatus` value."""
        return int(workflows_pb2.RunStatus.Value("RUN_STATUS_" + self.value.upper()))


_Status = TypeVar("_Status", TaskStatus, RunStatus)


def _status_of(cls: type[_Status], enum: EnumDescriptor, prefix: str, number: int) -> _Status:
    """The member of `cls` for value `number` of `enum` (unspecified when unknown)."""
    value = enum.values_by_number.get(number)
    name = value.name.removeprefix(prefix).lower() if value is not None else ""
    return cls(name or "unspecified")


def _status_value(cls: type[_Status], kind: str, status: _Status | str) -> int:
    """A status given by name (or member) as its proto value; `InvalidArgument` listing
    the names for one `cls` does not have."""
    try:
        return cls(status.lower() if isinstance(status, str) else status).to_proto()
    except ValueError:
        names = ", ".join(s.value for s in cls if s.value != "unspecified")
        raise InvalidArgument(f"unknown {kind} {status!r}; expected one of: {names}") from None


def status_value(status: TaskStatus | str) -> int:
    """A task status given by name ("succeeded") as its proto value."""
    return _status_value(TaskStatus, "task status", status)


def run_status_value(status: RunStatus | str) -> int:
    """A run status given by name ("failed") as its proto value."""
    return _status_value(RunStatus, "run status", status)


@dataclass(frozen=True)
class Usage:
    """Tokens a provider reported."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @classmethod
    def from_proto(cls, usage: tasks_pb2.Usage) -> Usage:
        """From the API's message."""
        return cls(
            usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens
        )


@dataclass(frozen=True)
class Artifact:
    """A file produced beside the output, such as the diff of a repository task."""

    name: str
    media_type: str
    size_bytes: int
    content: str


@dataclass(frozen=True)
class Task:
    """A task as the node last reported it."""

    id: str
    type: str
    status: TaskStatus
    prompt: str
    priority: str
    labels: list[str]
    context: dict[str, str]
    tenant: str
    attempt: int
    max_attempts: int
    #: The result's text once succeeded (None before; empty in lists, see `output_bytes`).
    output: str | None
    output_bytes: int
    provider: str
    model: str
    usage: Usage
    #: What all attempts cost so far, in US dollars.
    cost_usd: float
    artifacts: list[Artifact]
    #: Why the last attempt failed, or why it was cancelled.
    error: str
    node_id: str
    retry_of: str
    waiting_for: str
    trace_id: str
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    #: The API's message, with every field.
    raw: tasks_pb2.Task = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, task: tasks_pb2.Task) -> Task:
        """From the API's message."""
        has_result = task.HasField("result")
        result = task.result
        return cls(
            id=task.id,
            type=_name_of(TASK_TYPES, task.type),
            status=TaskStatus.from_proto(task.status),
            prompt=task.prompt,
            priority=_name_of(PRIORITIES, task.priority),
            labels=list(task.labels),
            context=dict(task.context),
            tenant=task.tenant,
            attempt=task.attempt,
            max_attempts=task.max_attempts,
            output=result.output if has_result else None,
            output_bytes=result.output_bytes,
            provider=result.provider,
            model=result.model,
            usage=Usage.from_proto(result.usage),
            cost_usd=task.cost_usd,
            artifacts=[
                Artifact(a.name, a.media_type, a.size_bytes, a.content) for a in result.artifacts
            ],
            error=task.error,
            node_id=task.node_id,
            retry_of=task.retry_of,
            waiting_for=task.waiting_for,
            trace_id=task.trace_id,
            created_at=_time(task.created_at, task.HasField("created_at")),
            started_at=_time(task.started_at, task.HasField("started_at")),
            finished_at=_time(task.finished_at, task.HasField("finished_at")),
            raw=task,
        )


_TERMINAL_EVENTS = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class TaskEvent:
    """One entry of a task's event log."""

    task_id: str
    #: Position in the log, from 1.
    seq: int
    #: "submitted", "started", "output", "activity", "retry_scheduled", "requeued",
    #: "succeeded", "failed" or "cancelled".
    type: str
    #: The task's status after this event.
    status: TaskStatus
    attempt: int
    message: str
    #: Streamed output text ("output" events).
    output: str
    at: datetime | None
    node: str
    raw: tasks_pb2.TaskEvent = field(repr=False, compare=False)

    @property
    def is_terminal(self) -> bool:
        """The last event of the log: the task succeeded, failed or was cancelled."""
        return self.type in _TERMINAL_EVENTS

    @classmethod
    def from_proto(cls, event: tasks_pb2.TaskEvent) -> TaskEvent:
        """From the API's message."""
        return cls(
            task_id=event.task_id,
            seq=event.seq,
            type=_EVENT_TYPES.get(event.type, "unspecified"),
            status=TaskStatus.from_proto(event.status),
            attempt=event.attempt,
            message=event.message,
            output=event.output,
            at=_time(event.at, event.HasField("at")),
            node=event.node,
            raw=event,
        )


@dataclass(frozen=True)
class TaskStats:
    """Tasks held by the cluster, by status."""

    queued: int
    running: int
    retry_wait: int
    succeeded: int
    failed: int
    cancelled: int

    @property
    def total(self) -> int:
        """Every task counted."""
        return (
            self.queued + self.running + self.retry_wait + self.succeeded + self.failed + self.cancelled
        )

    @classmethod
    def from_proto(cls, stats: tasks_pb2.TaskStats) -> TaskStats:
        """From the API's message."""
        return cls(
            stats.queued, stats.running, stats.retry_wait, stats.succeeded, stats.failed, stats.cancelled
        )


@dataclass(frozen=True)
class StepRun:
    """One step of a workflow run."""

    id: str
    #: "pending", "running", "succeeded", "failed", "cancelled" or "skipped".
    state: str
    task_id: str
    output_summary: str
    failure: str


@dataclass(frozen=True)
class WorkflowRun:
    """A run of a workflow."""

    id: str
    name: str
    status: RunStatus
    vars: dict[str, str]
    steps: list[StepRun]
    retries: int
    created_at: datetime | None
    finished_at: datetime | None
    raw: workflows_pb2.WorkflowRun = field(repr=False, compare=False)

    def step(self, step_id: str) -> StepRun:
        """The step named `step_id` (`KeyError`, listing the steps, when the run has none)."""
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(f"run {self.id} has no step {step_id!r}; it has: {', '.join(s.id for s in self.steps)}")

    @classmethod
    def from_proto(cls, run: workflows_pb2.WorkflowRun) -> WorkflowRun:
        """From the API's message."""
        return cls(
            id=run.id,
            name=run.name,
            status=RunStatus.from_proto(run.status),
            vars=dict(run.vars),
            steps=[StepRun(s.id, s.state, s.task_id, s.output_summary, s.failure) for s in run.steps],
            retries=run.retries,
            created_at=_time(run.created_at, run.HasField("created_at")),
            finished_at=_time(run.finished_at, run.HasField("finished_at")),
            raw=run,
        )


@dataclass(frozen=True)
class WorkflowEvent:
    """One entry of a workflow run's event log."""

    run_id: str
    seq: int
    #: run_started, step_started, step_succeeded, step_failed, step_skipped,
    #: step_cancelled, run_succeeded, run_failed, run_cancelled, run_retried.
    kind: str
    step: str
    task_id: str
    message: str
    at: datetime | None
    raw: workflows_pb2.WorkflowEvent = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, event: workflows_pb2.WorkflowEvent) -> WorkflowEvent:
        """From the API's message."""
        return cls(
            run_id=event.run_id,
            seq=event.seq,
            kind=event.kind,
            step=event.step,
            task_id=event.task_id,
            message=event.message,
            at=_time(event.at, event.HasField("at")),
            raw=event,
        )


@dataclass(frozen=True)
class ValidationIssue:
    """One problem (or warning) found in a workflow definition."""

    #: A stable code such as "cycle" or "unknown_dependency".
    code: str
    step: str
    message: str


@dataclass(frozen=True)
class Validation:
    """What `validate_workflow` found."""

    valid: bool
    errors: list[ValidationIssue]
    warnings: list[ValidationIssue]

    @classmethod
    def from_proto(cls, response: workflows_pb2.ValidateWorkflowResponse) -> Validation:
        """From the API's message."""
        return cls(
            valid=response.valid,
            errors=[ValidationIssue(i.code, i.step, i.message) for i in response.errors],
            warnings=[ValidationIssue(i.code, i.step, i.message) for i in response.warnings],
        )


@dataclass(frozen=True)
class Schedule:
    """A schedule that starts runs of a workflow."""

    name: str
    cron: str
    timezone: str
    #: "skip" or "catch_up_one".
    missed: str
    paused: bool
    workflow_name: str
    next_fire_at: datetime | None
    last_fired_at: datetime | None
    last_run_id: str
    runs_started: int
    raw: workflows_pb2.Schedule = field(repr=False, compare=False)

    @classmethod
    def from_proto(cls, schedule: workflows_pb2.Schedule) -> Schedule:
        """From the API's message."""
        return cls(
            name=schedule.name,
            cron=schedule.cron,
            timezone=schedule.timezone,
            missed=schedule.missed,
            paused=schedule.paused,
            workflow_name=schedule.workflow_name,
            next_fire_at=_time(schedule.next_fire_at, schedule.HasField("next_fire_at")),
            last_fired_at=_time(schedule.last_fired_at, schedule.HasField("last_fired_at")),
            last_run_id=schedule.last_run_id,
            runs_started=schedule.runs_started,
            raw=schedule,
        )


@dataclass(frozen=True)
class Identity:
    """Who the node takes the caller for."""

    #: The tenant calls act in.
    tenant: str
    #: "viewer", "developer", "operator" or "admin".
    role: str
    #: "key:<id>", "jwt:<issuer>/<subject>", or "anonymous" when authentication is off.
    principal: str
    #: The key's name or the token's subject.
    name: str
    #: Whether the node checks credentials at all.
    auth_enabled: bool

    @classmethod
    def from_proto(cls, response: auth_pb2.WhoAmIResponse) -> Identity:
        """From the API's message."""
        return cls(response.tenant, response.role, response.principal, response.name, response.auth_enabled)
