"""The asyncio client: `Client`'s methods on `grpc.aio`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any, Callable, TypeVar

import grpc
import grpc.aio

from ._errors import SupervisorError, from_rpc_error
from ._follow import Follower, ResumePolicy, deadline_after
from ._models import (
    Identity,
    TASK_TYPES,
    RunStatus,
    Schedule,
    Task,
    TaskEvent,
    TaskStats,
    TaskStatus,
    Validation,
    WorkflowEvent,
    WorkflowRun,
    enum_value,
    run_status_value,
    status_value,
)
from ._proto.supervisor.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    tasks_pb2,
    tasks_pb2_grpc,
    workflows_pb2,
    workflows_pb2_grpc,
)
from ._requests import (
    CHANNEL_OPTIONS,
    TLS,
    WorkflowInput,
    connection,
    schedule_request,
    submit_request,
    workflow_source,
)

_Req = TypeVar("_Req")
_Resp = TypeVar("_Resp")
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

    async def _call(self, method: Callable[..., Any], request: Any) -> Any:
        try:
            return await method(request, timeout=self.timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from None

    async def whoami(self) -> Identity:
        """The tenant and role the node gives this client's key."""
        response: auth_pb2.WhoAmIResponse = await self._call(self.auth.WhoAmI, auth_pb2.WhoAmIRequest())
        return Identity.from_proto(response)

    # Tasks.

    async def submit(self, type: str | int, prompt: str, **options: Any) -> Task:
        """Submits a task and returns it as stored; see `Client.submit`."""
        request = submit_request(type, prompt, **options)
        response: tasks_pb2.Task = await self._call(self.tasks.SubmitTask, request)
        return Task.from_proto(response)

    async def get(self, id: str) -> Task:
        """Reads a task, with its result once it has one."""
        response: tasks_pb2.Task = await self._call(self.tasks.GetTask, tasks_pb2.GetTaskRequest(id=id))
        return Task.from_proto(response)

    async def list_tasks(
        self,
        *,
        status: TaskStatus | str | None = None,
        type: str | None = None,
        label: str = "",
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[Task]:
        """Tasks, newest first, a page at a time; see `Client.list_tasks`."""
        request = tasks_pb2.ListTasksRequest(
            status=status_value(status) if status is not None else 0,  # type: ignore[arg-type]
            type=enum_value("task type", TASK_TYPES, type) if type is not None else 0,  # type: ignore[arg-type]
            label=label,
            page_size=page_size,
        )
        yielded = 0
        while True:
            page: tasks_pb2.ListTasksResponse = await self._call(self.tasks.ListTasks, request)
            for task in page.tasks:
                if limit is not None and yielded >= limit:
                    return
                yielded += 1
                yield Task.from_proto(task)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def cancel(self, id: str, reason: str = "") -> Task:
        """Cancels a task that has not finished."""
        request = tasks_pb2.CancelTaskRequest(id=id, reason=reason)
        response: tasks_pb2.Task = await self._call(self.tasks.CancelTask, request)
        return Task.from_proto(response)

    async def retry(self, id: str) -> Task:
        """Re-runs a failed or cancelled task as a new task."""
        response: tasks_pb2.Task = await self._call(self.tasks.RetryTask, tasks_pb2.RetryTaskRequest(id=id))
        return Task.from_proto(response)

    async def stats(self) -> TaskStats:
        """Tasks by status, cluster-wide."""
        response: tasks_pb2.TaskStats = await self._call(self.tasks.GetTaskStats, tasks_pb2.GetTaskStatsRequest())
        return TaskStats.from_proto(response)

    def watch(self, id: str, after_seq: int = 0) -> AsyncIterator[TaskEvent]:
        """A task's events after `after_seq`, live, resuming after breaks; see `Client.watch`."""
        return self._follow_task(id, after_seq, None)

    async def wait(self, id: str, timeout: float | None = None) -> Task:
        """Waits until the task ends and returns it; see `Client.wait`."""
        async for _ in self._follow_task(id, 0, deadline_after(timeout)):
            pass
        return await self.get(id)

    def _follow_task(self, id: str, after_seq: int, deadline: float | None) -> AsyncIterator[TaskEvent]:
        async def has_ended() -> bool:
            return (await self.get(id)).status.is_terminal

        return self._follow(
            Follower(f"task {id}", after_seq, self.resume, deadline),
            lambda seq, timeout: self.tasks.WatchTask(
                tasks_pb2.WatchTaskRequest(id=id, after_seq=seq), timeout=timeout, metadata=self._metadata
            ),
            TaskEvent.from_proto,
            lambda event: event.is_terminal,
            has_ended,
        )

    async def _follow(
        self,
        follower: Follower,
        open_stream: Callable[[int, float | None], Any],
        convert: Callable[[Any], _Event],
        is_last: Callable[[_Event], bool],
        has_ended: Callable[[], Any],
    ) -> AsyncIterator[_Event]:
        """Reads a log through `follower`'s resumes (see `_follow.Follower`)."""
        while True:
            call = None
            try:
                call = open_stream(follower.last_seq, follower.remaining())
                async for message in call:
                    event = convert(message)
                    follower.received(message.seq)
                    yield event
                    if is_last(event):
                        return
                if await has_ended():
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
        response: workflows_pb2.ValidateWorkflowResponse = await self._call(self.workflows.ValidateWorkflow, request)
        return Validation.from_proto(response)

    async def submit_workflow(self, workflow: WorkflowInput, vars: Mapping[str, str] | None = None) -> WorkflowRun:
        """Starts a run of a workflow; see `Client.submit_workflow`."""
        request = workflows_pb2.SubmitWorkflowRequest(source=workflow_source(workflow), vars=dict(vars or {}))
        return await self._run(self.workflows.SubmitWorkflow, request)

    async def get_workflow(self, id: str) -> WorkflowRun:
        """Reads a run."""
        return await self._run(self.workflows.GetWorkflow, workflows_pb2.GetWorkflowRequest(id=id))

    async def list_workflows(
        self,
        *,
        status: RunStatus | str | None = None,
        name: str = "",
        page_size: int = 100,
        limit: int | None = None,
    ) -> AsyncIterator[WorkflowRun]:
        """Runs, newest first, a page at a time; see `Client.list_workflows`."""
        request = workflows_pb2.ListWorkflowsRequest(
            status=run_status_value(status) if status is not None else 0,  # type: ignore[arg-type]
            name=name,
            page_size=page_size,
        )
        yielded = 0
        while True:
            page: workflows_pb2.ListWorkflowsResponse = await self._call(self.workflows.ListWorkflows, request)
            for run in page.runs:
                if limit is not None and yielded >= limit:
                    return
                yielded += 1
                yield WorkflowRun.from_proto(run)
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def cancel_workflow(self, id: str, reason: str = "") -> WorkflowRun:
        """Cancels a running run."""
        return await self._run(self.workflows.CancelWorkflow, workflows_pb2.CancelWorkflowRequest(id=id, reason=reason))

    async def retry_workflow(self, id: str) -> WorkflowRun:
        """Resumes a failed or cancelled run from its unfinished steps."""
        return await self._run(self.workflows.RetryWorkflow, workflows_pb2.RetryWorkflowRequest(id=id))

    def watch_workflow(self, id: str, after_seq: int = 0) -> AsyncIterator[WorkflowEvent]:
        """A run's events after `after_seq`, live, until the run ends; resumes after breaks."""
        return self._follow_run(id, after_seq, None)

    async def wait_workflow(self, id: str, timeout: float | None = None) -> WorkflowRun:
        """Waits until the run ends and returns it; see `Client.wait_workflow`."""
        async for _ in self._follow_run(id, 0, deadline_after(timeout)):
            pass
        return await self.get_workflow(id)

    def _follow_run(self, id: str, after_seq: int, deadline: float | None) -> AsyncIterator[WorkflowEvent]:
        async def has_ended() -> bool:
            return (await self.get_workflow(id)).status.is_terminal

        return self._follow(
            Follower(f"workflow run {id}", after_seq, self.resume, deadline),
            lambda seq, timeout: self.workflows.WatchWorkflow(
                workflows_pb2.WatchWorkflowRequest(id=id, after_seq=seq), timeout=timeout, metadata=self._metadata
            ),
            WorkflowEvent.from_proto,
            lambda event: False,
            has_ended,
        )

    async def _run(self, method: Callable[..., Any], request: Any) -> WorkflowRun:
        response: workflows_pb2.WorkflowRun = await self._call(method, request)
        return WorkflowRun.from_proto(response)

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
        return await self._schedule(self.workflows.CreateSchedule, request)

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule of the caller's tenant, by name."""
        schedules: list[Schedule] = []
        request = workflows_pb2.ListSchedulesRequest(page_size=1000)
        while True:
            page: workflows_pb2.ListSchedulesResponse = await self._call(self.workflows.ListSchedules, request)
            schedules += [Schedule.from_proto(s) for s in page.schedules]
            if not page.next_page_token:
                return schedules
            request.page_token = page.next_page_token

    async def pause_schedule(self, name: str) -> Schedule:
        """Stops a schedule's ticks until it is resumed."""
        return await self._schedule(self.workflows.PauseSchedule, workflows_pb2.ScheduleRef(name=name))

    async def resume_schedule(self, name: str) -> Schedule:
        """Starts a paused schedule's ticks again."""
        return await self._schedule(self.workflows.ResumeSchedule, workflows_pb2.ScheduleRef(name=name))

    async def trigger_schedule(self, name: str) -> WorkflowRun:
        """Starts a run now, outside the schedule's ticks."""
        return await self._run(self.workflows.TriggerSchedule, workflows_pb2.ScheduleRef(name=name))

    async def delete_schedule(self, name: str) -> Schedule:
        """Deletes a schedule (its runs stay); returns it as it was."""
        return await self._schedule(self.workflows.DeleteSchedule, workflows_pb2.ScheduleRef(name=name))

    async def _schedule(self, method: Callable[..., Any], request: Any) -> Schedule:
        response: workflows_pb2.Schedule = await self._call(method, request)
        return Schedule.from_proto(response)
