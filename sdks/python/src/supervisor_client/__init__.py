"""Python client SDK for Supervisor's gRPC API (`supervisor.v1`).

    from supervisor_client import Client

    with Client("127.0.0.1:50051") as client:
        task = client.submit(type="testing", prompt="add tests for the parser")
        done = client.wait(task.id, timeout=60)
        print(done.status, done.output)

Conversations: `create_thread`, then `ask(thread.id, "...", on_text=print)` returns each
reply as it ends (`watch_thread` follows a thread live). `AsyncClient` has the same
methods on asyncio. Failed calls raise `SupervisorError`
subclasses carrying the gRPC code and the server's message.
"""

from ._aio import AsyncClient
from ._chat import Reply, ReplyDelta, SearchHit, Thread, ThreadEvent, ThreadMessage, TurnStatus
from ._client import Client
from ._errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    StreamEnded,
    SupervisorError,
    Unauthenticated,
    Unavailable,
    WaitTimeout,
)
from ._follow import ResumePolicy
from ._models import (
    PRIORITIES,
    TASK_TYPES,
    Artifact,
    Identity,
    RunStatus,
    Schedule,
    StepRun,
    Task,
    TaskEvent,
    TaskStats,
    TaskStatus,
    Usage,
    Validation,
    ValidationIssue,
    WorkflowEvent,
    WorkflowRun,
)
from ._requests import DEFAULT_ADDRESS, TLS, WorkflowInput

__all__ = [
    "AlreadyExists",
    "Artifact",
    "AsyncClient",
    "Client",
    "DEFAULT_ADDRESS",
    "DeadlineExceeded",
    "FailedPrecondition",
    "Identity",
    "InvalidArgument",
    "NotFound",
    "PRIORITIES",
    "PermissionDenied",
    "Reply",
    "ReplyDelta",
    "ResourceExhausted",
    "ResumePolicy",
    "RunStatus",
    "Schedule",
    "SearchHit",
    "StepRun",
    "StreamEnded",
    "SupervisorError",
    "TASK_TYPES",
    "TLS",
    "Task",
    "TaskEvent",
    "TaskStats",
    "TaskStatus",
    "Thread",
    "ThreadEvent",
    "ThreadMessage",
    "TurnStatus",
    "Unauthenticated",
    "Unavailable",
    "Usage",
    "Validation",
    "ValidationIssue",
    "WaitTimeout",
    "WorkflowEvent",
    "WorkflowInput",
    "WorkflowRun",
]
