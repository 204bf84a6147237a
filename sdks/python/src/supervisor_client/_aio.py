"""The asyncio client: `Client`'s methods on `grpc.aio`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import grpc
import grpc.aio

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

_Item = TypeVar("_Item")
_Event = TypeVar("_Event")


class AsyncClient:
    """An asyncio client of one node, with the same arguments and methods as `Client`
    (each a coroutine; `watch`, `list_tasks` and the like are async iterators).

    Create it inside a running event loop; use `async with`, or `await client.close()`.
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
            self._channel = grpc.aio.secure_channel(conn.target, conn.credentials, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.aio.insecure_channel(conn.target, options=CHANNEL_OPTIONS)
        #: The generated TaskService stub on grpc.aio.
        self.tasks = tasks_pb2_grpc.TaskServiceStub(self._channel)
        #: The generated WorkflowService stub on grpc.aio.
        self.workflows = workflows_pb2_grpc.WorkflowServiceStub(self._channel)
        #: The generated AuthService stub on grpc.aio (tenants, keys, audit).
        self.auth = auth_pb2_grpc.AuthServiceStub(self._channel)
        #: The generated ChatService stub on grpc.aio (conversation threads).
        self.chat = chat_pb2_grpc.ChatServiceStub(self._channel)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata every call carries (the key), for calls on the raw stubs."""
        return self._metadata

    async def close(self) -> None:
        """Closes the connection; streams still open end."""
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Any, request: Any, timeout: float | None | PerCall = PER_CALL) -> Any:
        """Calls `method` within `timeout` seconds (by default the client's per-call timeout)."""
        try:
            limit = self.timeout if isinstance(timeout, PerCall) else timeout
            return await method(request, timeout=limit, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def _wait(self, log: Log[Any], deadline: float | None) -> Any:
        """Follows `log` to its end, then reads its owner as it ended; see `Client._wait`."""
        owner = log.owner
        assert owner is not None, f"{log.what} never ends: there is no end to wait for"
        get = getattr(getattr(self, log.service), owner.get)
        try:
            async for _ in self._follow(log, 0, deadline):
                pass
        except WaitTimeout as timed_out:
            try:
                ended = await self._call(get, owner.request, final_timeout(deadline, self.timeout))
            except SupervisorError:
                raise timed_out from None
            if owner.has_ended(ended):
                return ended
            raise
        return await self._call(get, owner.request, final_timeout(deadline, self.timeout))

    async def _pages(self, method: Any, pages: Pages[_Item], items: str) -> AsyncIterator[_Item]:
        while not pages.done:
            page = await self._call(method, pages.request)
            for item in pages.take(getattr(page, items), page.next_page_token):
                yield item

    async def whoami(self) -> Identity:
        """The tenant and role the node gives this client's key."""
        return Identity.from_proto(await self._call(self.auth.WhoAmI, auth_pb2.WhoAmIRequest()))

    # Tasks.

    async def submit(self, type: str | int, prompt: str, **options: Any) -> Task:
        """Submits a task and returns it as stored; see `Client.submit`."""
        return Task.from_proto(await self._call(self.tasks.SubmitTask, submit_request(type, prompt, **options)))

    async def get(self, id: str) -> Task:
        """Reads a task, with its result once it has one."""
        return Task.from_proto(await self._call(self.tasks.GetTask, tasks_pb2.GetTaskRequest(id=id)))

    def list_tasks(
        self,
        *,
        status: TaskStatus | str | None = None,
        type: str | None = None,
        label: str = "",
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[Task]:
        """Tasks, newest first, a page at a time; see `Client.list_tasks`."""
        request = list_tasks_request(status, type, label, page_size)
        return self._pages(self.tasks.ListTasks, Pages(request, limit, Task.from_proto), "tasks")

    async def cancel(self, id: str, reason: str = "") -> Task:
        """Cancels a task that has not finished."""
        request = tasks_pb2.CancelTaskRequest(id=id, reason=reason)
        return Task.from_proto(await self._call(self.tasks.CancelTask, request))

    async def retry(self, id: str) -> Task:
        """Re-runs a failed or cancelled task as a new task."""
        return Task.from_proto(await self._call(self.tasks.RetryTask, tasks_pb2.RetryTaskRequest(id=id)))

    async def stats(self) -> TaskStats:
        """Tasks by status: the cluster's, or the caller's tenant's with authentication on."""
        return TaskStats.from_proto(await self._call(self.tasks.GetTaskStats, tasks_pb2.GetTaskStatsRequest()))

    def watch(self, id: str, after_seq: int = 0) -> AsyncIterator[TaskEvent]:
        """A task's events after `after_seq`, live, resuming after breaks; see `Client.watch`."""
        return self._follow(task_log(id), after_seq, None)

    async def wait(self, id: str, timeout: float | None = None) -> Task:
        """Waits until the task ends and returns it; see `Client.wait`."""
        return Task.from_proto(await self._wait(task_log(id), deadline_after(timeout)))

    async def _follow(self, log: Log[_Event], after_seq: int, deadline: float | None) -> AsyncGenerator[_Event, None]:
        """Reads `log` from `after_seq`, resuming after breaks (see `_follow.Follower`)."""
        follower = Follower(log.what, after_seq, self.resume, deadline)
        service = getattr(self, log.service)
        while True:
            call = None
            try:
                request = log.watch_request(follower.last_seq)
                call = getattr(service, log.watch)(request, timeout=follower.remaining(), metadata=self._metadata)
                async for item in call:
                    event = accepted(follower, log, item)
                    if event is None:
                        continue
                    yield event
                    if log.is_last(event):
                        return
                if log.owner is not None:
                    owner = await self._call(
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
                if call is not None:
                    call.cancel()
            await asyncio.sleep(follower.pause_after(failure))

    # Workflows.

    async def validate_workflow(self, workflow: WorkflowInput) -> Validation:
        """Checks a definition: every error and warning."""
        request = workflows_pb2.ValidateWorkflowRequest(source=workflow_source(workflow))
        return Validation.from_proto(await self._call(self.workflows.ValidateWorkflow, request))

    async def submit_workflow(self, workflow: WorkflowInput, vars: Mapping[str, str] | None = None) -> WorkflowRun:
        """Starts a run of a workflow; see `Client.submit_workflow`."""
        request = workflows_pb2.SubmitWorkflowRequest(source=workflow_source(workflow), vars=dict(vars or {}))
        return WorkflowRun.from_proto(await self._call(self.workflows.SubmitWorkflow, request))

    async def get_workflow(self, id: str) -> WorkflowRun:
        """Reads a run."""
        request = workflows_pb2.GetWorkflowRequest(id=id)
        return WorkflowRun.from_proto(await self._call(self.workflows.GetWorkflow, request))

    def list_workflows(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str = "",
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[WorkflowRun]:
        """Runs, newest first, a page at a time; see `Client.list_workflows`."""
        request = list_workflows_request(status, name, page_size)
        return self._pages(self.workflows.ListWorkflows, Pages(request, limit, WorkflowRun.from_proto), "runs")

    async def cancel_workflow(self, id: str, reason: str = "") -> WorkflowRun:
        """Cancels a running run."""
        request = workflows_pb2.CancelWorkflowRequest(id=id, reason=reason)
        return WorkflowRun.from_proto(await self._call(self.workflows.CancelWorkflow, request))

    async def retry_workflow(self, id: str) -> WorkflowRun:
        """Resumes a failed or cancelled run from its unfinished steps."""
        request = workflows_pb2.RetryWorkflowRequest(id=id)
        return WorkflowRun.from_proto(await self._call(self.workflows.RetryWorkflow, request))

    def watch_workflow(self, id: str, after_seq: int = 0) -> AsyncIterator[WorkflowEvent]:
        """A run's events after `after_seq`, live, until the run ends; resumes after breaks."""
        return self._follow(run_log(id), after_seq, None)

    async def wait_workflow(self, id: str, timeout: float | None = None) -> WorkflowRun:
        """Waits until the run ends and returns it; see `Client.wait_workflow`."""
        return WorkflowRun.from_proto(await self._wait(run_log(id), deadline_after(timeout)))

    # Schedules.

    async def create_schedule(
        self,
        name: str,
        workflow: WorkflowInput,
        *,
        cron: str = "",
        timezone: str = "",
        missed: str = "",
        vars: Mapping[str, str] | None = None,
    ) -> Schedule:
        """Creates (or replaces, by name) a schedule; see `Client.create_schedule`."""
        request = schedule_request(name, workflow, cron=cron, timezone=timezone, missed=missed, vars=vars)
        return Schedule.from_proto(await self._call(self.workflows.CreateSchedule, request))

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule of the caller's tenant, by name."""
        pages: Pages[Schedule] = Pages(workflows_pb2.ListSchedulesRequest(page_size=1000), None, Schedule.from_proto)
        return [s async for s in self._pages(self.workflows.ListSchedules, pages, "schedules")]

    async def pause_schedule(self, name: str) -> Schedule:
        """Stops a schedule's ticks until it is resumed."""
        request = workflows_pb2.ScheduleRef(name=name)
        return Schedule.from_proto(await self._call(self.workflows.PauseSchedule, request))

    async def resume_schedule(self, name: str) -> Schedule:
        """Starts a paused schedule's ticks again."""
        request = workflows_pb2.ScheduleRef(name=name)
        return Schedule.from_proto(await self._call(self.workflows.ResumeSchedule, request))

    async def trigger_schedule(self, name: str) -> WorkflowRun:
        """Starts a run now, outside the schedule's ticks."""
        request = workflows_pb2.ScheduleRef(name=name)
        return WorkflowRun.from_proto(await self._call(self.workflows.TriggerSchedule, request))

    async def delete_schedule(self, name: str) -> Schedule:
        """Deletes a schedule (its runs stay); returns it as it was."""
        request = workflows_pb2.ScheduleRef(name=name)
        return Schedule.from_proto(await self._call(self.workflows.DeleteSchedule, request))

    # Conversations.

    async def create_thread(
        self,
        type: str | int | None = None,
        *,
        title: str = "",
        context: Mapping[str, str] | None = None,
        about_task: str = "",
        preferred_providers: list[str] | None = None,
    ) -> Thread:
        """Starts a thread; see `Client.create_thread`."""
        request = create_thread_request(type, title, context, about_task, preferred_providers)
        return Thread.from_proto(await self._call(self.chat.CreateThread, request))

    async def get_thread(self, id: str) -> Thread:
        """A thread with its messages."""
        return Thread.from_proto(await self._call(self.chat.GetThread, chat_pb2.GetThreadRequest(id=id)))

    def list_threads(self, *, page_size: int = 100, limit: int | None = None) -> AsyncIterator[Thread]:
        """Threads, newest first, without their messages, a page at a time."""
        request = chat_pb2.ListThreadsRequest(page_size=page_size)
        return self._pages(self.chat.ListThreads, Pages(request, limit, Thread.from_proto), "threads")

    async def post(self, thread_id: str, text: str) -> ThreadMessage:
        """Posts a message; see `Client.post`."""
        request = chat_pb2.PostMessageRequest(thread_id=thread_id, text=text)
        posted = await self._call(self.chat.PostMessage, request)
        return ThreadMessage.from_proto(posted.message)

    def watch_thread(
        self, thread_id: str, after_seq: int = 0, timeout: float | None = None
    ) -> AsyncGenerator[ThreadEvent, None]:
        """A thread live, resuming after breaks; see `Client.watch_thread`."""
        return self._follow(thread_log(thread_id), after_seq, deadline_after(timeout))

    async def ask(
        self,
        thread_id: str,
        text: str,
        timeout: float | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> ThreadMessage:
        """Posts `text` and returns its reply once its turn ended; see `Client.ask`."""
        posted = await self.post(thread_id, text)
        reply = Reply(posted.task_id)
        events = self.watch_thread(thread_id, posted.seq, timeout)
        try:
            async for event in events:
                ended = reply.take(event, on_text)
                if ended is not None:
                    return ended
        finally:
            await events.aclose()
        raise AssertionError("watch_thread never ends by itself")

    async def search_threads(self, query: str, limit: int = 20) -> list[SearchHit]:
        """Messages containing `query` (case-insensitive), newest threads first."""
        request = chat_pb2.SearchThreadsRequest(query=query, limit=limit)
        found = await self._call(self.chat.SearchThreads, request)
        return [SearchHit.from_proto(h) for h in found.hits]

    async def convert_thread(self, thread_id: str, type: str | int | None = None, instruction: str = "") -> Task:
        """Starts a task that does what the conversation agreed; see `Client.convert_thread`."""
        request = convert_request(thread_id, type, instruction, "", None)
        return Task.from_proto((await self._call(self.chat.ConvertThread, request)).task)

    async def delete_thread(self, thread_id: str) -> int:
        """Deletes a thread and its messages; see `Client.delete_thread`."""
        request = chat_pb2.DeleteThreadRequest(id=thread_id)
        return int((await self._call(self.chat.DeleteThread, request)).messages_deleted)
