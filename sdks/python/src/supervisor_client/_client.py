"""The blocking client."""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Mapping
from typing import Any, TypeVar

import grpc

from ._chat import (
    Reply,
    SearchHit,
    Thread,
    ThreadEvent,
    ThreadMessage,
    convert_request,
    create_thread_request,
)
from ._errors import SupervisorError, WaitTimeout, from_rpc_error
from ._follow import Follower, Log, ResumePolicy, accepted, deadline_after, final_timeout, run_log, task_log, thread_log
from ._models import (
    Identity,
    RunStatus,
    Schedule,
    Task,
    TaskEvent,
    TaskStats,
    TaskStatus,
    Validation,
    WorkflowEvent,
    WorkflowRun,
)
from ._proto.supervisor.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from ._requests import (
    CHANNEL_OPTIONS,
    PER_CALL,
    TLS,
    Pages,
    PerCall,
    WorkflowInput,
    connection,
    list_tasks_request,
    list_workflows_request,
    schedule_request,
    submit_request,
    workflow_source,
)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
_Item = TypeVar("_Item")
_Event = TypeVar("_Event")


class Client:
    """A blocking client of one node (any node of a cluster serves every call).

    `address` is `host:port`, `http://host:port` or `https://host:port` (TLS); None reads
    `SUPERVISOR_SERVER`, else 127.0.0.1:50051. `token` is an API key (None reads
    `SUPERVISOR_TOKEN` or the file `SUPERVISOR_TOKEN_FILE` names). `tls` is a `TLS` (CA
    file, client certificate), True for the public authorities grpcio ships, or None to follow the
    address's scheme. `timeout` bounds each single call, in seconds; `resume` is how
    `watch` and `wait` ride out a node restart.

    Failed calls raise `SupervisorError` (a subclass per gRPC code). Use it as a context
    manager, or call `close()`. The generated stubs are there too, for the rest of the
    API: `client.tasks`, `client.workflows`, `client.auth`.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        token: str | None = None,
        tls: TLS | bool | None = None,
        timeout: float | None = 30.0,
        resume: ResumePolicy = ResumePolicy(),
    ) -> None:
        conn = connection(address, token, tls)
        self.address: str = conn.target
        self.timeout = timeout
        self.resume = resume
        self._metadata = conn.metadata
        if conn.credentials is not None:
            self._channel = grpc.secure_channel(conn.target, conn.credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.insecure_channel(conn.target, options=CHANNEL_OPTIONS)
        #: The generated TaskService stub (call it with `metadata=client.metadata`).
        self.tasks = tasks_pb2_grpc.TaskServiceStub(self._channel)
        #: The generated WorkflowService stub.
        self.workflows = workflows_pb2_grpc.WorkflowServiceStub(self._channel)
        #: The generated AuthService stub (tenants, keys, audit).
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        #: The generated ChatService stub (conversation threads).
        self.chat = chat_pb2_grpc.ChatServiceStub(self._channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every call carries (the key), for calls on the raw stubs."""
        return self._metadata

    def close(self) -> None:
        """Closes the connection; streams still open end."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(
        self, method: grpc.UnaryUnaryMultiCallable[_Req, _Resp], request: _Req, timeout: float | None | PerCall = PER_CALL
    ) -> _Resp:
        """Calls `method` within `timeout` seconds (by default the client's per-call timeout)."""
        try:
            limit = self.timeout if isinstance(timeout, PerCall) else timeout
            return method(request, timeout=limit, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    def _wait(self, log: Log[Any], deadline: float | None) -> Any:
        """Follows `log` to its end, then reads its owner (the task or run) as it ended. When
        the time runs out, one last look: it may have ended just then."""
        owner = log.owner
        assert owner is not None, f"{log.what} never ends: there is no end to wait for"
        get = getattr(getattr(self, log.service), owner.get)
        try:
            for _ in self._follow(log, 0, deadline):
                pass
        except WaitTimeout as timed_out:
            try:
                ended = self._call(get, owner.request, final_timeout(deadline, self.timeout))
            except SupervisorError:
                raise timed_out from None
            if owner.has_ended(ended):
                return ended
            raise
        return self._call(get, owner.request, final_timeout(deadline, self.timeout))

    def _pages(self, method: Any, pages: Pages[_Item], items: str) -> Iterator[_Item]:
        while not pages.done:
            page = self._call(method, pages.request)
            yield from pages.take(getattr(page, items), page.next_page_token)

    def whoami(self) -> Identity:
        """The tenant and role the node gives this client's key."""
        return Identity.from_proto(self._call(self.auth.WhoAmI, auth_pb2.WhoAmIRequest()))

    # Tasks.

    def submit(self, type: str | int, prompt: str, **options: Any) -> Task:
        """Submits a task and returns it as stored (QUEUED). `type` is a name as the CLI
        spells it ("testing", "bug_fix", "pr_review", ...; see `TASK_TYPES`). Options:
        priority ("low" ... "critical"), labels, context, idempotency_key, max_attempts,
        timeout_ms, specialty, routing_strategy, preferred_providers,
        excluded_providers, max_cost_usd."""
        return Task.from_proto(self._call(self.tasks.SubmitTask, submit_request(type, prompt, **options)))

    def get(self, id: str) -> Task:
        """Reads a task, with its result once it has one."""
        return Task.from_proto(self._call(self.tasks.GetTask, tasks_pb2.GetTaskRequest(id=id)))

    def list_tasks(
        self,
        *,
        status: TaskStatus | str | None = None,
        type: str | None = None,
        label: str = "",
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[Task]:
        """Tasks, newest first, filtered by status, type and label, fetched a page at a
        time as the iterator is read (at most `limit`). Results carry no output text."""
        request = list_tasks_request(status, type, label, page_size)
        return self._pages(self.tasks.ListTasks, Pages(request, limit, Task.from_proto), "tasks")

    def cancel(self, id: str, reason: str = "") -> Task:
        """Cancels a task that has not finished (a cancelled one stays as it is)."""
        return Task.from_proto(self._call(self.tasks.CancelTask, tasks_pb2.CancelTaskRequest(id=id, reason=reason)))

    def retry(self, id: str) -> Task:
        """Re-runs a failed or cancelled task as a new task (its `retry_of` names `id`)."""
        return Task.from_proto(self._call(self.tasks.RetryTask, tasks_pb2.RetryTaskRequest(id=id)))

    def stats(self) -> TaskStats:
        """Tasks by status: the cluster's, or the caller's tenant's with authentication on."""
        return TaskStats.from_proto(self._call(self.tasks.GetTaskStats, tasks_pb2.GetTaskStatsRequest()))

    def watch(self, id: str, after_seq: int = 0) -> Iterator[TaskEvent]:
        """A task's events after `after_seq`, live, ending after its terminal event. When
        the stream breaks (the node restarts, the connection drops), the watch resumes
        after the last event seen, as `resume` says: no event is lost or repeated."""
        return self._follow(task_log(id), after_seq, None)

    def wait(self, id: str, timeout: float | None = None) -> Task:
        """Waits until the task ends and returns it as it ended (see `.status`). Raises
        `WaitTimeout` (a `TimeoutError`) after `timeout` seconds; None waits for ever."""
        return Task.from_proto(self._wait(task_log(id), deadline_after(timeout)))

    def _follow(self, log: Log[_Event], after_seq: int, deadline: float | None) -> Generator[_Event, None, None]:
        """Reads `log` from `after_seq`, resuming after breaks (see `_follow.Follower`)."""
        follower = Follower(log.what, after_seq, self.resume, deadline)
        service = getattr(self, log.service)
        while True:
            stream = None
            try:
                request = log.watch_request(follower.last_seq)
                stream = getattr(service, log.watch)(request, timeout=follower.remaining(), metadata=self._metadata)
                for item in stream:
                    event = accepted(follower, log, item)
                    if event is None:
                        continue
                    yield event
                    if log.is_last(event):
                        return
                if log.owner is not None:
                    owner = self._call(
                        getattr(service, log.owner.get), log.owner.request, follower.call_timeout(self.timeout)
                    )
                    if log.owner.has_ended(owner):
                        return
                failure: SupervisorError = follower.closed_early()
            except grpc.RpcError as err:
                failure = from_rpc_error(err)
            except SupervisorError as err:
                failure = err
            finally:
                if stream is not None:
                    stream.cancel()
            time.sleep(follower.pause_after(failure))

    # Workflows.

    def validate_workflow(self, workflow: WorkflowInput) -> Validation:
        """Checks a definition (a YAML/JSON file path or a dict): every error and warning."""
        request = workflows_pb2.ValidateWorkflowRequest(source=workflow_source(workflow))
        return Validation.from_proto(self._call(self.workflows.ValidateWorkflow, request))

    def submit_workflow(self, workflow: WorkflowInput, vars: Mapping[str, str] | None = None) -> WorkflowRun:
        """Starts a run of a workflow (a YAML/JSON file path or a dict), with variables
        over the definition's. An invalid definition raises `InvalidArgument` listing
        every problem."""
        request = workflows_pb2.SubmitWorkflowRequest(source=workflow_source(workflow), vars=dict(vars or {}))
        return WorkflowRun.from_proto(self._call(self.workflows.SubmitWorkflow, request))

    def get_workflow(self, id: str) -> WorkflowRun:
        """Reads a run: each step's state, task id and output summary."""
        return WorkflowRun.from_proto(self._call(self.workflows.GetWorkflow, workflows_pb2.GetWorkflowRequest(id=id)))

    def list_workflows(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str = "",
        page_size: int = 100,
        limit: int | None = None,
    ) -> Iterator[WorkflowRun]:
        """Runs, newest first, filtered by status and workflow name, a page at a time."""
        request = list_workflows_request(status, name, page_size)
        return self._pages(self.workflows.ListWorkflows, Pages(request, limit, WorkflowRun.from_proto), "runs")

    def cancel_workflow(self, id: str, reason: str = "") -> WorkflowRun:
        """Cancels a running run: running steps are cancelled, pending ones skipped."""
        request = workflows_pb2.CancelWorkflowRequest(id=id, reason=reason)
        return WorkflowRun.from_proto(self._call(self.workflows.CancelWorkflow, request))

    def retry_workflow(self, id: str) -> WorkflowRun:
        """Resumes a failed or cancelled run from its unfinished steps."""
        request = workflows_pb2.RetryWorkflowRequest(id=id)
        return WorkflowRun.from_proto(self._call(self.workflows.RetryWorkflow, request))

    def watch_workflow(self, id: str, after_seq: int = 0) -> Iterator[WorkflowEvent]:
        """A run's events after `after_seq`, live, until the run ends; resumes after
        breaks like `watch`."""
        return self._follow(run_log(id), after_seq, None)

    def wait_workflow(self, id: str, timeout: float | None = None) -> WorkflowRun:
        """Waits until the run ends and returns it (see `.status` and `.steps`). Raises
        `WaitTimeout` after `timeout` seconds; None waits for ever."""
        return WorkflowRun.from_proto(self._wait(run_log(id), deadline_after(timeout)))

    # Schedules.

    def create_schedule(
        self,
        name: str,
        workflow: WorkflowInput,
        *,
        cron: str = "",
        timezone: str = "",
        missed: str = "",
        vars: Mapping[str, str] | None = None,
    ) -> Schedule:
        """Creates (or replaces, by name) a schedule starting runs of `workflow`. Empty
        cron, timezone and missed come from the definition's `schedule:` block."""
        request = schedule_request(name, workflow, cron=cron, timezone=timezone, missed=missed, vars=vars)
        return Schedule.from_proto(self._call(self.workflows.CreateSchedule, request))

    def list_schedules(self) -> list[Schedule]:
        """Every schedule of the caller's tenant, by name."""
        pages: Pages[Schedule] = Pages(workflows_pb2.ListSchedulesRequest(page_size=1000), None, Schedule.from_proto)
        return list(self._pages(self.workflows.ListSchedules, pages, "schedules"))

    def pause_schedule(self, name: str) -> Schedule:
        """Stops a schedule's ticks until it is resumed."""
        return Schedule.from_proto(self._call(self.workflows.PauseSchedule, workflows_pb2.ScheduleRef(name=name)))

    def resume_schedule(self, name: str) -> Schedule:
        """Starts a paused schedule's ticks again."""
        return Schedule.from_proto(self._call(self.workflows.ResumeSchedule, workflows_pb2.ScheduleRef(name=name)))

    def trigger_schedule(self, name: str) -> WorkflowRun:
        """Starts a run now, outside the schedule's ticks."""
        return WorkflowRun.from_proto(self._call(self.workflows.TriggerSchedule, workflows_pb2.ScheduleRef(name=name)))

    def delete_schedule(self, name: str) -> Schedule:
        """Deletes a schedule (its runs stay); returns it as it was."""
        return Schedule.from_proto(self._call(self.workflows.DeleteSchedule, workflows_pb2.ScheduleRef(name=name)))

    # Conversations.

    def create_thread(
        self,
        type: str | int | None = None,
        *,
        title: str = "",
        context: Mapping[str, str] | None = None,
        about_task: str = "",
        preferred_providers: list[str] | None = None,
    ) -> Thread:
        """Starts a thread whose replies are tasks of `type` (default "code_analysis"),
        with `context` (e.g. `{"repo": "/src/app"}`), about the task `about_task` if given."""
        request = create_thread_request(type, title, context, about_task, preferred_providers)
        return Thread.from_proto(self._call(self.chat.CreateThread, request))

    def get_thread(self, id: str) -> Thread:
        """A thread with its messages."""
        return Thread.from_proto(self._call(self.chat.GetThread, chat_pb2.GetThreadRequest(id=id)))

    def list_threads(self, *, page_size: int = 100, limit: int | None = None) -> Iterator[Thread]:
        """Threads, newest first, without their messages, a page at a time."""
        request = chat_pb2.ListThreadsRequest(page_size=page_size)
        return self._pages(self.chat.ListThreads, Pages(request, limit, Thread.from_proto), "threads")

    def post(self, thread_id: str, text: str) -> ThreadMessage:
        """Posts a message; its `task_id` is the task writing the reply. Raises
        `FailedPrecondition` while the previous reply has not ended."""
        request = chat_pb2.PostMessageRequest(thread_id=thread_id, text=text)
        posted = self._call(self.chat.PostMessage, request)
        return ThreadMessage.from_proto(posted.message)

    def watch_thread(
        self, thread_id: str, after_seq: int = 0, timeout: float | None = None
    ) -> Generator[ThreadEvent, None, None]:
        """A thread live: its messages after `after_seq`, the open reply's pieces
        (`ReplyDelta`) and status changes (`TurnStatus`), each reply once its turn ended;
        it never ends by itself (stop reading, or give `timeout`, which raises
        `WaitTimeout`). After a break it resumes after the last message seen; the open
        reply's pieces then come again from its start (`Reply` skips what it has)."""
        return self._follow(thread_log(thread_id), after_seq, deadline_after(timeout))

    def ask(
        self,
        thread_id: str,
        text: str,
        timeout: float | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> ThreadMessage:
        """Posts `text` and returns its reply once its turn ended (check `.status`: a
        failed turn's reply has none, and says why in `.error`). `on_text` gets each new
        piece of the reply as it is written. Raises `WaitTimeout` after `timeout` seconds."""
        posted = self.post(thread_id, text)
        reply = Reply(posted.task_id)
        events = self.watch_thread(thread_id, posted.seq, timeout)
        try:
            for event in events:
                ended = reply.take(event, on_text)
                if ended is not None:
                    return ended
        finally:
            events.close()
        raise AssertionError("watch_thread never ends by itself")

    def search_threads(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages containing `query` (case-insensitive), newest threads first."""
        request = chat_pb2.SearchThreadsRequest(query=query, limit=limit)
        found = self._call(self.chat.SearchThreads, request)
        return [SearchHit.from_proto(h) for h in found.hits]

    def convert_thread(self, thread_id: str, type: str | int | None = None, instruction: str = "") -> Task:
        """Starts a task (of `type`, default the thread's) that does what the conversation
        agreed: its prompt is the conversation, then `instruction`."""
        request = convert_request(thread_id, type, instruction, "", None)
        return Task.from_proto(self._call(self.chat.ConvertThread, request).task)

    def delete_thread(self, thread_id: str) -> int:
        """Deletes a thread and its messages for good (a reply still running is
        cancelled); returns how many messages went."""
        request = chat_pb2.DeleteThreadRequest(id=thread_id)
        return int(self._call(self.chat.DeleteThread, request).messages_deleted)
