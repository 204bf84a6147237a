"""Tasks through the blocking client against a real node."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import pytest

import supervisor_client as sv
from conftest import Node


def test_submit_then_wait_returns_the_finished_task(node: Node) -> None:
    with sv.Client(node.address) as client:
        task = client.submit(type="testing", prompt="add tests for the parser", labels=["sdk"], priority="high")
        assert task.status is sv.TaskStatus.QUEUED
        assert (task.type, task.priority, task.labels) == ("testing", "high", ["sdk"])
        assert task.output is None

        done = client.wait(task.id, timeout=60)
        assert done.id == task.id
        assert done.status == "succeeded" and done.status.is_terminal
        assert done.output, "the mock's output is the result"
        assert done.provider == "mock"
        assert done.usage.output_tokens > 0
        assert done.finished_at is not None and done.created_at is not None
        assert done.finished_at >= done.created_at
        assert done.raw.result.output == done.output


def test_the_readme_script_runs_as_written(node: Node) -> None:
    # The first Python block of the SDK's README, run in a fresh interpreter.
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    script = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(script.strip().splitlines()) == 5, script
    script = script.replace("127.0.0.1:50051", node.address)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("succeeded "), out.stdout


def test_the_address_and_key_come_from_the_environment(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERVISOR_SERVER", f"http://{node.address}")
    with sv.Client() as client:
        assert client.address == node.address
        assert client.stats().total >= 0


def test_bad_names_are_refused_before_sending_and_name_the_choices(node: Node) -> None:
    with sv.Client(node.address) as client:
        with pytest.raises(sv.InvalidArgument) as err:
            client.submit(type="wizardry", prompt="x")
        assert "unknown task type 'wizardry'" in str(err.value)
        assert "pr_review" in str(err.value) and "security_audit" in str(err.value)
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert isinstance(err.value, ValueError)
        with pytest.raises(sv.InvalidArgument, match="unknown priority 'asap'"):
            client.submit(type="testing", prompt="x", priority="asap")
        with pytest.raises(sv.InvalidArgument, match="unknown task status 'done'"):
            list(client.list_tasks(status="done"))
        # Spellings the CLI accepts work here too.
        assert client.submit(type="Bug-Fix", prompt="fix it").type == "bug_fix"


def test_server_errors_carry_the_code_and_message(node: Node) -> None:
    with sv.Client(node.address) as client:
        with pytest.raises(sv.InvalidArgument) as err:
            client.submit(type="testing", prompt="")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert "prompt" in err.value.message
        with pytest.raises(sv.InvalidArgument) as err:
            client.submit(type="testing", prompt="x", max_attempts=1000)
        assert "max_attempts" in err.value.message
        missing = str(uuid.uuid4())
        with pytest.raises(sv.NotFound) as not_found:
            client.get(missing)
        assert not_found.value.code == grpc.StatusCode.NOT_FOUND
        assert str(not_found.value).startswith("NOT_FOUND: ")
        with pytest.raises(sv.NotFound):
            client.wait(missing, timeout=10)
        key = f"sdk-{uuid.uuid4()}"
        first = client.submit(type="testing", prompt="once", idempotency_key=key)
        assert client.submit(type="testing", prompt="once", idempotency_key=key).id == first.id
        with pytest.raises(sv.AlreadyExists) as exists:
            client.submit(type="testing", prompt="another prompt", idempotency_key=key)
        assert "prompt" in exists.value.message


def test_an_unreachable_node_is_unavailable() -> None:
    with sv.Client("127.0.0.1:1", timeout=5) as client:
        with pytest.raises(sv.Unavailable) as err:
            client.stats()
        assert err.value.code == grpc.StatusCode.UNAVAILABLE


def test_bad_addresses_say_what_is_expected() -> None:
    with pytest.raises(sv.InvalidArgument, match="unsupported scheme 'ftp'"):
        sv.Client("ftp://127.0.0.1:50051")
    with pytest.raises(sv.InvalidArgument, match="http://"):
        sv.Client("http://127.0.0.1:50051", tls=True)
    with pytest.raises(sv.InvalidArgument, match="cannot read the CA file"):
        sv.Client("https://127.0.0.1:50051", tls=sv.TLS(ca_file="/nonexistent/ca.pem"))


def test_watch_streams_the_log_in_order_to_its_terminal_event(node: Node) -> None:
    with sv.Client(node.address) as client:
        task = client.submit(type="documentation", prompt="document the retry policy")
        events = list(client.watch(task.id))
        seqs = [e.seq for e in events]
        assert seqs == list(range(1, len(events) + 1))
        types = [e.type for e in events]
        assert types[0] == "submitted" and types[-1] == "succeeded"
        assert "started" in types and "output" in types
        assert events[-1].is_terminal and events[-1].status is sv.TaskStatus.SUCCEEDED
        assert "".join(e.output for e in events if e.type == "output") == client.get(task.id).output
        # From a position: only what follows it.
        tail = list(client.watch(task.id, after_seq=seqs[-2]))
        assert [e.seq for e in tail] == [seqs[-1]]


def test_list_pages_through_filters(node: Node) -> None:
    label = f"page-{uuid.uuid4().hex[:8]}"
    with sv.Client(node.address) as client:
        ids = [client.submit(type="refactor", prompt=f"refactor {i}", labels=[label]).id for i in range(5)]
        listed = list(client.list_tasks(label=label, page_size=2))
        assert [t.id for t in listed] == list(reversed(ids)), "newest first, every page"
        assert [t.id for t in client.list_tasks(label=label, page_size=2, limit=3)] == list(reversed(ids))[:3]
        for task_id in ids:
            client.wait(task_id, timeout=60)
        succeeded = list(client.list_tasks(label=label, status="succeeded", type="refactor"))
        assert len(succeeded) == 5
        assert list(client.list_tasks(label=label, type="feature")) == []


def test_cancel_and_retry(slow_node: Node) -> None:
    with sv.Client(slow_node.address) as client:
        task = client.submit(type="feature", prompt="a long one")
        cancelled = client.cancel(task.id, reason="not needed")
        assert cancelled.status is sv.TaskStatus.CANCELLED
        assert "not needed" in cancelled.error
        again = client.retry(task.id)
        assert again.retry_of == task.id and again.id != task.id
        with pytest.raises(sv.FailedPrecondition):
            client.retry(again.id)
        client.cancel(again.id)


def test_wait_times_out_while_the_task_goes_on(slow_node: Node) -> None:
    with sv.Client(slow_node.address) as client:
        task = client.submit(type="feature", prompt="takes three seconds")
        with pytest.raises(sv.WaitTimeout) as err:
            client.wait(task.id, timeout=0.5)
        assert isinstance(err.value, TimeoutError)
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert task.id in err.value.message
        assert client.wait(task.id, timeout=60).status is sv.TaskStatus.SUCCEEDED


def test_watch_resumes_across_a_node_crash_without_losing_or_repeating(slow_node: Node) -> None:
    with sv.Client(slow_node.address) as client:
        task = client.submit(type="bug_fix", prompt="survives a crash")
        events = client.watch(task.id)
        first = next(events)
        assert first.type == "submitted"
        slow_node.kill()
        slow_node.start()  # same port, same data: the task is taken up again
        rest = list(events)
    seqs = [first.seq] + [e.seq for e in rest]
    assert seqs == list(range(1, len(seqs) + 1)), "no event lost or repeated"
    assert rest[-1].type == "succeeded"


def test_without_resume_a_crash_raises_unavailable(slow_node: Node) -> None:
    with sv.Client(slow_node.address, resume=sv.ResumePolicy.never()) as client:
        task = client.submit(type="bug_fix", prompt="no resume")
        events = client.watch(task.id)
        next(events)
        slow_node.kill()
        with pytest.raises(sv.SupervisorError) as err:
            list(events)
        assert err.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


def test_stats_count_what_the_node_holds(node: Node) -> None:
    with sv.Client(node.address) as client:
        before = client.stats()
        client.wait(client.submit(type="code_analysis", prompt="count me").id, timeout=60)
        after = client.stats()
        assert after.succeeded == before.succeeded + 1
        assert after.total == before.total + 1


def test_the_resume_policy_doubles_its_pauses_to_the_cap() -> None:
    assert list(sv.ResumePolicy().pauses()) == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0]
    assert list(sv.ResumePolicy.never().pauses()) == []
    assert list(sv.ResumePolicy(3, initial_backoff=5, max_backoff=2).pauses()) == [2, 2, 2]




def test_pages_stop_at_the_limit_or_the_last_page() -> None:
    from supervisor_client._proto.supervisor.v1 import tasks_pb2
    from supervisor_client._requests import Pages

    request = tasks_pb2.ListTasksRequest(page_size=2)
    pages: Pages[str] = Pages(request, 3, str)
    assert pages.take([1, 2], "t1") == ["1", "2"] and not pages.done
    assert request.page_token == "t1"
    assert pages.take([3, 4], "t2") == ["3"] and pages.done
    unlimited: Pages[str] = Pages(tasks_pb2.ListTasksRequest(), None, str)
    assert unlimited.take([1], "") == ["1"] and unlimited.done
    assert Pages(tasks_pb2.ListTasksRequest(), 0, str).done
