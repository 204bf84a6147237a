"""The Temporal side of the comparison: a workflow that runs one no-op activity, and the
worker that serves it."""

import asyncio
import sys
from datetime import timedelta

from temporalio import activity, workflow

TASK_QUEUE = "bench"


@activity.defn
async def noop() -> None:
    """Does nothing: the comparison measures the orchestration, not the work."""
    return None


@workflow.defn
class NoopWorkflow:
    """One activity, then done."""

    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity(noop, start_to_close_timeout=timedelta(seconds=60))


async def serve(address: str) -> None:
    """Runs a worker for NoopWorkflow until killed. The workflow sandbox is off (the
    fastest configuration the SDK offers), so the figures are Temporal's best case."""
    from temporalio.client import Client
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[NoopWorkflow],
        activities=[noop],
        workflow_runner=UnsandboxedWorkflowRunner(),
        max_concurrent_activities=256,
        max_concurrent_workflow_tasks=256,
    )
    print("temporal worker ready", flush=True)
    await worker.run()


def main() -> None:
    asyncio.run(serve(sys.argv[1]))
