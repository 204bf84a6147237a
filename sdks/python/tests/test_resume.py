"""The resuming watch against servers that misbehave (a fake TaskService in this
process), a node that stays away for seconds, and bad arguments."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

import supervisor_client as sv
from conftest import Node, free_port
from supervisor_client._proto.supervisor.v1 import tasks_pb2, tasks_pb2_grpc


class Repeating(tasks_pb2_grpc.TaskServiceServicer):
    """Sends event 1 again on every watch and closes; GetTask says the task is queued,
    or blocks until `release` is set when `hang` is."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.release = threading.Event()
        self.watches = 0

    def WatchTask(self, request: tasks_pb2.WatchTaskRequest, context: Any) -> Iterator[tasks_pb2.TaskEvent]:
        self.watches += 1
        yield tasks_pb2.TaskEvent(
            task_id=request.id, seq=1, type=tasks_pb2.TASK_EVENT_TYPE_SUBMITTED, status=tasks_pb2.TASK_STATUS_QUEUED
        )

    def GetTask(self, request: tasks_pb2.GetTaskRequest, context: Any) -> tasks_pb2.Task:
        if self.hang:
            self.release.wait(60)
        return tasks_pb2.Task(id=request.id, status=tasks_pb2.TASK_STATUS_QUEUED)


@pytest.fixture()
def fake() -> Iterator[tuple[str, Repeating]]:
    servicer = Repeating()  # type: ignore[abstract]  # the other RPCs are not served
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    tasks_pb2_grpc.add_TaskServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    servicer.release.set()
    server.stop(0)


def test_a_repeated_event_is_dropped_and_does_not_reset_the_failures(fake: tuple[str, Repeating]) -> None:
    address, servicer = fake
    policy = sv.ResumePolicy(max_consecutive_failures=3, initial_backoff=0.01, max_backoff=0.01)
    with sv.Client(address, resume=policy) as client:
        events = client.watch("t1")
        assert next(events).seq == 1
        with pytest.raises(sv.StreamEnded, match="ended before its last event"):
            next(events)
    assert servicer.watches == 4, "the first watch and three resumes, then it gives up"


def test_the_deadline_bounds_every_call_of_a_wait(fake: tuple[str, Repeating]) -> None:
    address, servicer = fake
    servicer.hang = True
    outcome: list[BaseException] = []

    def wait() -> None:
        with sv.Client(address, timeout=None) as client:
            try:
                client.wait("t1", timeout=1)
            except BaseException as err:  # noqa: BLE001 - handed to the test's thread
                outcome.append(err)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the wait went on past its deadline (a GetTask without a timeout)"
    assert len(outcome) == 1 and isinstance(outcome[0], sv.WaitTimeout), outcome


def test_a_finished_task_is_returned_whatever_the_timeout(node: Node) -> None:
    with sv.Client(node.address) as client:
        task = client.submit(type="testing", prompt="done before the wait")
        assert client.wait(task.id, timeout=60).status is sv.TaskStatus.SUCCEEDED
        assert client.wait(task.id, timeout=0).status is sv.TaskStatus.SUCCEEDED


def test_a_watch_outlasts_a_node_away_for_seconds(slow_node: Node) -> None:
    with sv.Client(slow_node.address) as client:
        task = client.submit(type="bug_fix", prompt="the node comes back later")
        events = client.watch(task.id)
        assert next(events).seq == 1
        slow_node.kill()
        # Back after 10 s, within the default policy's ~13 s of pauses: grpc's own reconnect
        # delay (growing past 2 s unless the client caps it) must not waste them.
        def come_back() -> None:
            time.sleep(10)
            slow_node.start()

        threading.Thread(target=come_back, daemon=True).start()
        rest = list(events)
    assert [e.seq for e in rest] == list(range(2, len(rest) + 2))
    assert rest[-1].type == "succeeded"


def test_bad_arguments_are_invalid_argument_errors() -> None:
    with sv.Client(f"127.0.0.1:{free_port()}") as client:
        calls: list[tuple[Callable[[], object], str]] = [
            (lambda: client.submit(type="testing", prompt="x", max_attempts=-1), "out of range"),
            (lambda: client.submit(type="testing", prompt="x", priorty="high"), "priorty"),
            (lambda: client.submit(type="testing", prompt="x", context={"a": 1}), "a task"),
            (lambda: client.submit(type="testing", prompt="x", labels=None), "a task"),
            (lambda: list(client.list_tasks(page_size=-1)), "a task list"),
            (lambda: client.submit_workflow(5), "a workflow"),  # type: ignore[arg-type]
            (lambda: client.submit_workflow({"name": "x", "vars": {"n": float("nan")}}), "JSON"),
        ]
        for call, named in calls:
            with pytest.raises(sv.InvalidArgument, match=named):
                call()
    with pytest.raises(sv.InvalidArgument, match="tls=False"):
        sv.Client("https://127.0.0.1:1", tls=False)
    with pytest.raises(sv.InvalidArgument, match="non-ASCII"):
        sv.Client("127.0.0.1:1", token="svk_é")
