"""A provider plugin in Python: a node runs tasks on it over gRPC.

It serves `supervisor.plugin.v1.ProviderPlugin` (proto/supervisor/plugin/v1/provider.proto)
on the address in $SUPERVISOR_PLUGIN_LISTEN (the node sets it when it starts the plugin)
or --listen. What it "runs" is deliberately simple and needs no model or key: it answers
each task with a short plan for the task's type, streamed word by word, and counts words
as tokens. Replace `answer()` with a call to your model, tool or service; everything
around it (streaming, usage, cancel, health, refusing what it cannot serve) is what a
real plugin needs.

    ./run --listen 127.0.0.1:7400      # generates the gRPC code, then serves
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc

from supervisor.plugin.v1 import provider_pb2 as pb
from supervisor.plugin.v1 import provider_pb2_grpc as pb_grpc

TASK_TYPES = [
    "pr_review", "issue_summary", "code_analysis", "refactor", "bug_fix",
    "feature", "documentation", "testing", "deployment", "security_audit",
]
MODEL = "plan-writer-1"

STEPS = {
    "pr_review": "read the diff, check the tests, list what to change",
    "issue_summary": "read the issue, find the cause, summarise it",
    "code_analysis": "map the modules, find the hot spots, report",
    "refactor": "find the duplication, extract it, keep behaviour",
    "bug_fix": "reproduce it, find the cause, fix it, add a test",
    "feature": "design it, build it, test it, document it",
    "documentation": "read the code, explain it, add examples",
    "testing": "read the behaviour, write the tests, run them",
    "deployment": "check the manifests, roll out, watch the health",
    "security_audit": "list the inputs, check each boundary, report",
}


def answer(task_type: str, prompt: str) -> str:
    """The work itself: here a plan for the task's type (replace with a real model)."""
    words = len(prompt.split())
    return (
        f"[python plugin] {task_type.replace('_', ' ')}: {STEPS[task_type]}.\n"
        f"Prompt ({words} words): {prompt.strip()[:200]}\n"
    )


class Provider(pb_grpc.ProviderPluginServicer):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.lock = threading.Lock()
        self.running: dict[str, threading.Event] = {}
        self.served = 0

    def GetCapabilities(self, request: pb.GetCapabilitiesRequest, context: grpc.ServicerContext) -> pb.Capabilities:
        return pb.Capabilities(
            task_types=TASK_TYPES,
            models=[MODEL],
            max_context_tokens=8192,
            streaming=True,
            tools=False,
            description=f"python sample plugin (pid {os.getpid()})",
        )

    def Health(self, request: pb.HealthRequest, context: grpc.ServicerContext) -> pb.HealthResponse:
        with self.lock:
            busy, served = len(self.running), self.served
        return pb.HealthResponse(healthy=True, detail=f"{busy} running, {served} served")

    def Cancel(self, request: pb.CancelRequest, context: grpc.ServicerContext) -> pb.CancelResponse:
        with self.lock:
            stop = self.running.get(request.execution_id)
        if stop is not None:
            stop.set()
        return pb.CancelResponse(was_running=stop is not None)

    def Execute(self, request: pb.ExecuteRequest, context: grpc.ServicerContext) -> Iterator[pb.ExecuteEvent]:
        if request.task_type not in STEPS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"task type {request.task_type!r} is not served here")
        stop = threading.Event()
        with self.lock:
            self.running[request.execution_id] = stop
        try:
            text = answer(request.task_type, request.prompt)
            input_tokens = len(request.prompt.split()) + len(request.system_prompt.split())
            sent: list[str] = []
            # Word by word, as a model streams tokens.
            for piece in text.split(" "):
                piece = piece if not sent else " " + piece
                if stop.is_set() or not context.is_active():
                    yield pb.ExecuteEvent(failure=pb.Failure(retryable=True, kind="cancelled", message="cancelled by the node"))
                    return
                sent.append(piece)
                yield pb.ExecuteEvent(output=piece)
                if len(sent) % 8 == 0:
                    yield pb.ExecuteEvent(usage=pb.Usage(input_tokens=input_tokens, output_tokens=len(sent)))
                time.sleep(self.delay)
            usage = pb.Usage(input_tokens=input_tokens, output_tokens=len(sent))
            with self.lock:
                self.served += 1
            yield pb.ExecuteEvent(result=pb.Result(output="".join(sent), model=MODEL, usage=usage))
        finally:
            with self.lock:
                self.running.pop(request.execution_id, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default=os.environ.get("SUPERVISOR_PLUGIN_LISTEN", "127.0.0.1:7400"))
    parser.add_argument("--delay", type=float, default=float(os.environ.get("PLUGIN_DELAY", "0.02")),
                        help="seconds between two streamed words (default 0.02)")
    args = parser.parse_args()
    # Each running Execute holds a worker thread: keep room for Health and Cancel beside
    # the node's max_concurrency (16 by default) of executions.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64), maximum_concurrent_rpcs=48)
    pb_grpc.add_ProviderPluginServicer_to_server(Provider(args.delay), server)
    if server.add_insecure_port(args.listen) == 0:
        sys.exit(f"could not listen on {args.listen}")
    server.start()
    # The node stops a plugin with SIGTERM: finish what runs for a moment, then go.
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=1.0))
    print(f"python plugin listening on {args.listen} (pid {os.getpid()})", flush=True)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
