"""The requests both clients send, built from Python arguments, and the connection
settings (address, TLS, key) they share. Nothing here does I/O but reading files."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Generic, ParamSpec, TypeVar, Union

import grpc

from ._errors import InvalidArgument
from ._models import (
    PRIORITIES,
    TASK_TYPES,
    RunStatus,
    TaskStatus,
    enum_value,
    run_status_value,
    status_value,
)
from ._proto.supervisor.v1 import tasks_pb2, workflows_pb2

#: Where a client connects when given no address and `SUPERVISOR_SERVER` is not set.
DEFAULT_ADDRESS = "127.0.0.1:50051"
#: The environment variables the clients read, as the CLI and the Rust SDK do.
SERVER_ENV = "SUPERVISOR_SERVER"
TOKEN_ENV = "SUPERVISOR_TOKEN"
TOKEN_FILE_ENV = "SUPERVISOR_TOKEN_FILE"
CA_FILE_ENV = "SUPERVISOR_CA_FILE"

#: A workflow: a path to a YAML or JSON file, or the definition as a dict.
WorkflowInput = Union[str, "os.PathLike[str]", Mapping[str, Any]]


@dataclass(frozen=True)
class TLS:
    """TLS settings: the authority that signed the node's certificate (`ca_file`, PEM;
    None trusts the public ones grpcio ships, not the system's store), and a client
    certificate when the node asks for one."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        """The channel credentials these settings describe."""
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidArgument("TLS needs both cert_file and key_file for a client certificate, or neither")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file, "CA file"),
            private_key=_read(self.key_file, "client key file"),
            certificate_chain=_read(self.cert_file, "client certificate file"),
        )


def _read(path: str | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise InvalidArgument(f"cannot read the {what} {path}: {err.strerror}") from err


@dataclass(frozen=True)
class Connection:
    """Where and how a client connects: the target for grpc, TLS credentials or None,
    and the metadata every call carries."""

    target: str
    credentials: grpc.ChannelCredentials | None
    metadata: tuple[tuple[str, str], ...]


def connection(address: str | None, token: str | None, tls: TLS | bool | None) -> Connection:
    """Resolves a client's arguments, falling back on the environment: the address on
    `SUPERVISOR_SERVER`, the key on `SUPERVISOR_TOKEN` or the file `SUPERVISOR_TOKEN_FILE`
    names, the CA file on `SUPERVISOR_CA_FILE`. `https://` turns TLS on."""
    address = address or os.environ.get(SERVER_ENV) or DEFAULT_ADDRESS
    scheme, sep, rest = address.partition("://")
    if not sep:
        scheme, rest = "", address
    elif scheme not in ("http", "https"):
        raise InvalidArgument(
            f"unsupported scheme {scheme!r} in {address!r}; expected host:port, http://host:port or https://host:port"
        )
    target = rest.rstrip("/")
    if not target or "/" in target:
        raise InvalidArgument(f"bad server address {address!r}; expected host:port")
    if tls is None:
        tls = scheme == "https"
    if tls is True:
        ca_file = os.environ.get(CA_FILE_ENV) or None
        tls = TLS(ca_file=ca_file)
    if tls is not False and scheme == "http":
        raise InvalidArgument(f"TLS is asked for but {address!r} is http://; use https:// or host:port")
    if tls is False and scheme == "https":
        raise InvalidArgument(f"{address!r} is https:// but tls=False; use http:// or host:port for plain text")
    credentials = tls.credentials() if isinstance(tls, TLS) else None
    if token is None:
        token = _token_from_env()
    metadata: tuple[tuple[str, str], ...] = ()
    if token:
        token = token.strip()
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise InvalidArgument("the token holds spaces, control characters or non-ASCII text; pass the key as created")
        metadata = (("authorization", f"Bearer {token}"),)
    return Connection(target, credentials, metadata)


def _token_from_env() -> str | None:
    token = os.environ.get(TOKEN_ENV)
    if token:
        return token
    path = os.environ.get(TOKEN_FILE_ENV)
    if path:
        data = _read(path, f"token file ({TOKEN_FILE_ENV})")
        return data.decode("utf-8", errors="replace").strip() if data else None
    return None


#: Channel options: find a dead connection under a long watch within ~40 s, and try a
#: lost node again within 2 s at most (grpc's own reconnect delay grows to 2 minutes:
#: calls made meanwhile would fail at once, using up a watch's resume attempts while the
#: node is back).
CHANNEL_OPTIONS = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
)


class PerCall:
    """The client's own per-call timeout, as a call's default (see `PER_CALL`)."""


PER_CALL = PerCall()


_P = ParamSpec("_P")
_R = TypeVar("_R")


def checked(what: str) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Turns the `TypeError` or `ValueError` of a request built from bad arguments (a
    negative count, a misspelt option, a label that is not a string...) into
    `InvalidArgument` naming `what` was being built."""

    def wrap(build: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(build)
        def built(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            try:
                return build(*args, **kwargs)
            except InvalidArgument:
                raise
            except (TypeError, ValueError) as err:
                raise InvalidArgument(f"bad arguments for {what}: {err}") from None

        return built

    return wrap


@checked("a task")
def submit_request(
    type: str | int,
    prompt: str,
    *,
    priority: str | int | None = None,
    labels: Iterable[str] = (),
    context: Mapping[str, str] | None = None,
    idempotency_key: str = "",
    max_attempts: int = 0,
    timeout_ms: int = 0,
    specialty: str = "",
    routing_strategy: str = "",
    preferred_providers: Iterable[str] = (),
    excluded_providers: Iterable[str] = (),
    max_cost_usd: float = 0.0,
) -> tasks_pb2.SubmitTaskRequest:
    """A SubmitTaskRequest; names of types and priorities are checked here."""
    if isinstance(labels, str):
        raise InvalidArgument("labels is a list of strings, not one string")
    return tasks_pb2.SubmitTaskRequest(
        type=enum_value("task type", TASK_TYPES, type),  # type: ignore[arg-type]
        prompt=prompt,
        priority=enum_value("priority", PRIORITIES, priority) if priority is not None else 0,  # type: ignore[arg-type]
        labels=list(labels),
        context=dict(context or {}),
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        timeout_ms=timeout_ms,
        specialty=specialty,
        routing_strategy=routing_strategy,
        preferred_providers=list(preferred_providers),
        excluded_providers=list(excluded_providers),
        max_cost_usd=max_cost_usd,
    )


@checked("a workflow")
def workflow_source(workflow: WorkflowInput) -> workflows_pb2.WorkflowSource:
    """A WorkflowSource: a `.yaml`/`.yml`/`.json` file is sent as text (the node parses
    and validates it, naming lines), a dict as JSON."""
    if isinstance(workflow, Mapping):
        try:
            text = json.dumps(workflow, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise InvalidArgument(f"the workflow dict cannot be sent as JSON: {err}") from err
        return workflows_pb2.WorkflowSource(json=text)
    if isinstance(workflow, str) and "\n" in workflow:
        raise InvalidArgument(
            "a workflow is a file path or a dict; for YAML text use yaml.safe_load(text) or a file"
        )
    path = Path(workflow)
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise InvalidArgument(f"the workflow file {path} should end in .yaml, .yml or .json")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise InvalidArgument(f"cannot read the workflow file {path}: {err.strerror}") from err
    except UnicodeDecodeError as err:
        raise InvalidArgument(f"the workflow file {path} is not UTF-8: {err}") from err
    if suffix == ".json":
        return workflows_pb2.WorkflowSource(json=text)
    return workflows_pb2.WorkflowSource(yaml=text)


@checked("a schedule")
def schedule_request(
    name: str,
    workflow: WorkflowInput,
    *,
    cron: str = "",
    timezone: str = "",
    missed: str = "",
    vars: Mapping[str, str] | None = None,
) -> workflows_pb2.CreateScheduleRequest:
    """A CreateScheduleRequest; empty cron, timezone and missed come from the
    definition's `schedule:` block."""
    return workflows_pb2.CreateScheduleRequest(
        name=name,
        cron=cron,
        timezone=timezone,
        missed=missed,
        source=workflow_source(workflow),
        vars=dict(vars or {}),
    )


@checked("a task list")
def list_tasks_request(
    status: TaskStatus | str | None, type: str | None, label: str, page_size: int
) -> tasks_pb2.ListTasksRequest:
    """A ListTasksRequest; status and type names are checked here."""
    return tasks_pb2.ListTasksRequest(
        status=status_value(status) if status is not None else 0,  # type: ignore[arg-type]
        type=enum_value("task type", TASK_TYPES, type) if type is not None else 0,  # type: ignore[arg-type]
        label=label,
        page_size=page_size,
    )


@checked("a run list")
def list_workflows_request(
    status: RunStatus | str | None, name: str, page_size: int
) -> workflows_pb2.ListWorkflowsRequest:
    """A ListWorkflowsRequest; the status name is checked here."""
    return workflows_pb2.ListWorkflowsRequest(
        status=run_status_value(status) if status is not None else 0,  # type: ignore[arg-type]
        name=name,
        page_size=page_size,
    )


_Item = TypeVar("_Item")


class Pages(Generic[_Item]):
    """Reads a paged list: `request` is sent again with each `next_page_token` until the
    last page or `limit` items. The clients send; `take` converts one page's items."""

    def __init__(self, request: Any, limit: int | None, convert: Callable[[Any], _Item]) -> None:
        self.request = request
        self.left = limit
        self.convert = convert
        self.done = limit is not None and limit <= 0

    def take(self, items: Iterable[Any], next_page_token: str) -> list[_Item]:
        """The items of a page (converted) that are within the limit."""
        taken: list[_Item] = []
        for item in items:
            if self.left is not None:
                if self.left <= 0:
                    break
                self.left -= 1
            taken.append(self.convert(item))
        self.request.page_token = next_page_token
        self.done = not next_page_token or self.left == 0
        return taken
