"""Workflows and schedules through the blocking client against a real node."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

import supervisor_client as sv
from conftest import REPO, Node


def two_steps(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "vars": {"repo": "/src/app"},
        "steps": [
            {"id": "analyse", "task": {"type": "code_analysis", "prompt": "Analyse {{ vars.repo }}"}},
            {
                "id": "fix",
                "needs": ["analyse"],
                "task": {"type": "bug_fix", "prompt": "Fix it: {{ steps.analyse.output }}"},
            },
        ],
    }


def test_a_workflow_from_a_dict_runs_to_the_end(node: Node) -> None:
    with sv.Client(node.address) as client:
        run = client.submit_workflow(two_steps("from-dict"), vars={"repo": "/src/other"})
        assert run.status is sv.RunStatus.RUNNING
        assert run.vars["repo"] == "/src/other"
        done = client.wait_workflow(run.id, timeout=120)
        assert done.status is sv.RunStatus.SUCCEEDED
        assert [(s.id, s.state) for s in done.steps] == [("analyse", "succeeded"), ("fix", "succeeded")]
        fix = client.get(done.step("fix").task_id)
        assert fix.type == "bug_fix" and fix.status is sv.TaskStatus.SUCCEEDED
        with pytest.raises(KeyError, match="analyse, fix"):
            done.step("deploy")


def test_a_workflow_from_a_yaml_file_streams_its_events(node: Node) -> None:
    with sv.Client(node.address) as client:
        run = client.submit_workflow(REPO / "examples" / "review-pr.yaml")
        events = list(client.watch_workflow(run.id))
        kinds = [e.kind for e in events]
        assert kinds[0] == "run_started" and kinds[-1] == "run_succeeded"
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        started = {e.step for e in events if e.kind == "step_started"}
        assert {"correctness", "security", "tests", "summary"} == started
        assert client.get_workflow(run.id).status is sv.RunStatus.SUCCEEDED


def test_a_json_file_is_sent_as_json(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(two_steps("from-json")))
    with sv.Client(node.address) as client:
        run = client.submit_workflow(str(path))
        assert client.wait_workflow(run.id, timeout=120).status is sv.RunStatus.SUCCEEDED
        names = {r.name for r in client.list_workflows(name="from-json")}
        assert names == {"from-json"}


def test_invalid_definitions_are_reported_whole(node: Node, tmp_path: Path) -> None:
    cyclic = {
        "name": "cyclic",
        "steps": [
            {"id": "a", "needs": ["b"], "task": {"type": "testing", "prompt": "a"}},
            {"id": "b", "needs": ["a"], "task": {"type": "testing", "prompt": "b"}},
            {"id": "c", "needs": ["nowhere"], "task": {"type": "testing", "prompt": "c"}},
        ],
    }
    with sv.Client(node.address) as client:
        found = client.validate_workflow(cyclic)
        assert not found.valid
        codes = {issue.code for issue in found.errors}
        assert {"cycle", "unknown_dependency"} <= codes, found.errors
        with pytest.raises(sv.InvalidArgument) as err:
            client.submit_workflow(cyclic)
        assert "cycle" in err.value.message and "nowhere" in err.value.message
        assert client.validate_workflow(two_steps("fine")).valid

        broken = tmp_path / "broken.yaml"
        broken.write_text("name: broken\nsteps: [\n")
        with pytest.raises(sv.InvalidArgument) as err:
            client.submit_workflow(broken)
        assert "line" in err.value.message, err.value.message
        with pytest.raises(sv.InvalidArgument, match="cannot read the workflow file"):
            client.submit_workflow(tmp_path / "missing.yaml")
        with pytest.raises(sv.InvalidArgument, match=r"\.yaml, \.yml or \.json"):
            client.submit_workflow(tmp_path / "workflow.txt")


def test_cancel_and_retry_a_run(slow_node: Node) -> None:
    with sv.Client(slow_node.address) as client:
        run = client.submit_workflow(two_steps("cancel-me"))
        cancelled = client.cancel_workflow(run.id, reason="changed my mind")
        assert cancelled.status is sv.RunStatus.CANCELLED
        assert {s.state for s in cancelled.steps} <= {"cancelled", "skipped"}
        retried = client.retry_workflow(run.id)
        assert retried.status is sv.RunStatus.RUNNING and retried.retries == 1
        client.cancel_workflow(run.id)


def test_schedules_from_create_to_delete(node: Node) -> None:
    name = f"nightly-{uuid.uuid4().hex[:8]}"
    with sv.Client(node.address) as client:
        schedule = client.create_schedule(name, two_steps("scheduled"), cron="0 3 * * *", timezone="Europe/Paris")
        assert (schedule.name, schedule.cron, schedule.timezone, schedule.paused) == (
            name,
            "0 3 * * *",
            "Europe/Paris",
            False,
        )
        assert schedule.next_fire_at is not None
        assert name in {s.name for s in client.list_schedules()}
        assert client.pause_schedule(name).paused
        run = client.trigger_schedule(name)
        assert client.wait_workflow(run.id, timeout=120).status is sv.RunStatus.SUCCEEDED
        assert not client.resume_schedule(name).paused
        # The definition's own schedule: block gives the cron when none is passed.
        nightly = client.create_schedule(f"{name}-file", REPO / "examples" / "nightly-audit.yaml")
        assert nightly.cron
        assert client.delete_schedule(name).name == name
        client.delete_schedule(f"{name}-file")
        with pytest.raises(sv.NotFound):
            client.pause_schedule(name)
        with pytest.raises(sv.InvalidArgument, match="cron"):
            client.create_schedule(f"{name}-bad", two_steps("bad"), cron="every day")
