"""Errors: every failed call raises a `SupervisorError` carrying the gRPC code and the
server's message; a subclass per code lets callers catch the ones they handle."""

from __future__ import annotations

import grpc


class SupervisorError(Exception):
    """A call failed. `code` is the gRPC status code, `message` the server's text (it
    names what was wrong and what to do)."""

    #: The code a subclass stands for (UNKNOWN on the base class).
    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.message: str = message

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(SupervisorError, ValueError):
    """The request was refused as invalid (also raised before sending, for a task type,
    priority or status name the API does not have)."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SupervisorError, LookupError):
    """No task, run or schedule with that id or name (in the caller's tenant)."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SupervisorError):
    """An idempotency key this tenant already used for a different request."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(SupervisorError):
    """No key, or a key the node does not accept (expired, revoked, unknown)."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SupervisorError):
    """The key's role or tenant may not do this."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(SupervisorError):
    """Over a limit: a quota, a budget, the node's admission, or a request size."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(SupervisorError):
    """Not possible in the current state (retrying a task that succeeded, ...)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(SupervisorError):
    """The node could not be reached or is shutting down: try again, or another node."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(SupervisorError):
    """A call did not finish within its time limit."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class WaitTimeout(DeadlineExceeded, TimeoutError):
    """`wait` or `wait_workflow` gave up before the task or run ended (it goes on)."""


class StreamEnded(SupervisorError):
    """A watch stream closed before its last event while the task or run had not ended,
    more often than the resume policy allows."""

    default_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[SupervisorError]] = {
    cls.default_code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        Unauthenticated,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Unavailable,
        DeadlineExceeded,
    )
}


def from_rpc_error(err: grpc.RpcError) -> SupervisorError:
    """The `SupervisorError` (of the code's subclass) for a failed gRPC call."""
    code_fn = getattr(err, "code", None)
    details_fn = getattr(err, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = details if isinstance(details, str) and details else str(err)
    cls = _BY_CODE.get(code, SupervisorError)
    return cls(message, code)


# Texts of connection failures that arrive under other codes than UNAVAILABLE.
_BROKEN_CONNECTION = (
    "socket closed",
    "connection reset",
    "broken pipe",
    "rst_stream",
    "goaway",
    "connection refused",
)


def is_transient(err: SupervisorError) -> bool:
    """Whether a watch that failed with `err` may be resumed: the node is unavailable,
    or the connection broke under the stream."""
    if err.code == grpc.StatusCode.UNAVAILABLE:
        return True
    if err.code in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED):
        text = err.message.lower()
        return any(needle in text for needle in _BROKEN_CONNECTION)
    return False
