"""The asyncio client: the same calls on grpc.aio against a real node."""

from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

import supervisor_client as sv
from conftest import REPO, Node


def test_submit_wait_and_watch(node: Node) -> None:
    async def main() -> None:
        async with sv.AsyncClient(node.address) as client:
            tasks = await asyncio.gather(
                *(client.submit(type="testing", prompt=f"async {i}", labels=["aio"]) for i in range(3))
            )
            done = await asyncio.gather(*(client.wait(t.id, timeout=60) for t in tasks))
            assert [d.status for d in done] == [sv.TaskStatus.SUCCEEDED] * 3
            events = [e async for e in client.watch(tasks[0].id)]
            assert [e.seq for e in events] == list(range(1, len(events) + 1))
            assert events[-1].type == "succeeded"
            listed = [t.id async for t in client.list_tasks(label="aio", limit=2)]
            assert len(listed) == 2
            assert (await client.stats()).succeeded >= 3

    asyncio.run(main())


def test_errors_and_timeouts(slow_node: Node) -> None:
    async def main() -> None:
        async with sv.AsyncClient(slow_node.address) as client:
            with pytest.raises(sv.NotFound) as err:
                await client.get(str(uuid.uuid4()))
            assert err.value.code == grpc.StatusCode.NOT_FOUND
            with pytest.raises(sv.InvalidArgument, match="unknown task type"):
                await client.submit(type="nope", prompt="x")
            task = await client.submit(type="feature", prompt="slow")
            with pytest.raises(sv.WaitTimeout):
                await client.wait(task.id, timeout=0.5)
            cancelled = await client.cancel(task.id, reason="enough")
            assert cancelled.status is sv.TaskStatus.CANCELLED
            assert (await client.retry(task.id)).retry_of == task.id

    asyncio.run(main())


def test_watch_resumes_across_a_node_crash(slow_node: Node) -> None:
    async def main() -> list[int]:
        async with sv.AsyncClient(slow_node.address) as client:
            task = await client.submit(type="bug_fix", prompt="survives a crash")
            seqs = []
            async for event in client.watch(task.id):
                seqs.append(event.seq)
                if len(seqs) == 1:
                    slow_node.kill()
                    slow_node.start()
                last = event
            assert last.type == "succeeded"
            return seqs

    seqs = asyncio.run(main())
    assert seqs == list(range(1, len(seqs) + 1))


def test_workflows_and_schedules(node: Node) -> None:
    name = f"aio-{uuid.uuid4().hex[:8]}"

    async def main() -> None:
        async with sv.AsyncClient(node.address) as client:
            assert (await client.validate_workflow(REPO / "examples" / "review-pr.yaml")).valid
            run = await client.submit_workflow(REPO / "examples" / "review-pr.yaml")
            kinds = [e.kind async for e in client.watch_workflow(run.id)]
            assert kinds[-1] == "run_succeeded"
            done = await client.wait_workflow(run.id, timeout=60)
            assert done.status is sv.RunStatus.SUCCEEDED
            assert run.id in [r.id async for r in client.list_workflows(status="succeeded")]
            schedule = await client.create_schedule(name, REPO / "examples" / "nightly-audit.yaml")
            assert not schedule.paused
            assert (await client.pause_schedule(name)).paused
            assert not (await client.resume_schedule(name)).paused
            assert name in [s.name for s in await client.list_schedules()]
            triggered = await client.trigger_schedule(name)
            assert (await client.cancel_workflow(triggered.id)).status is sv.RunStatus.CANCELLED
            assert (await client.retry_workflow(triggered.id)).status is sv.RunStatus.RUNNING
            await client.delete_schedule(name)

    asyncio.run(main())
