"""Conversation threads through both clients against a real node."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import supervisor_client as sv
from conftest import Node


@pytest.fixture()
def chat_node(tmp_path: Path) -> Iterator[Node]:
    """A node whose mock takes a second per reply, in four pieces."""
    n = Node(
        tmp_path / "data",
        {"SUPERVISOR_PROVIDERS__MOCK__LATENCY": "1s", "SUPERVISOR_PROVIDERS__MOCK__STREAM_CHUNKS": "4"},
    )
    yield n
    n.stop()


def test_a_conversation_streams_its_replies_and_becomes_a_task(chat_node: Node) -> None:
    with sv.Client(chat_node.address) as client:
        thread = client.create_thread("code_analysis", title="parser", context={"area": "parser"})
        assert (thread.title, thread.type, thread.context) == ("parser", "code_analysis", {"area": "parser"})

        pieces: list[str] = []
        first = client.ask(thread.id, "Where is the parser weakest?", timeout=60, on_text=pieces.append)
        assert first.role == "assistant" and first.status is sv.TaskStatus.SUCCEEDED
        assert len(pieces) >= 2, pieces
        assert "".join(pieces) == first.text

        second = client.ask(thread.id, "How would you test the tokenizer?", timeout=60)
        assert second.seq == 4 and second.text

        got = client.get_thread(thread.id)
        assert [m.role for m in got.messages] == ["user", "assistant", "user", "assistant"]
        assert got.messages[2].text == "How would you test the tokenizer?"
        assert got.open_turn_task_id == ""
        assert [t.id for t in client.list_threads(limit=5)][0] == thread.id

        hits = client.search_threads("TOKENIZER")
        assert any(h.thread_id == thread.id and h.message.seq == 3 for h in hits), hits

        task = client.convert_thread(thread.id, type="testing", instruction="Write those tests.")
        assert task.type == "testing" and "How would you test the tokenizer?" in task.prompt
        assert client.wait(task.id, timeout=60).status is sv.TaskStatus.SUCCEEDED

        # One turn at a time.
        client.post(thread.id, "third")
        with pytest.raises(sv.FailedPrecondition):
            client.post(thread.id, "too soon")
        with pytest.raises(sv.InvalidArgument):
            client.create_thread("no_such_type")

        assert client.delete_thread(thread.id) == 5
        with pytest.raises(sv.NotFound):
            client.get_thread(thread.id)


def test_the_async_client_asks_too(chat_node: Node) -> None:
    async def main() -> None:
        async with sv.AsyncClient(chat_node.address) as client:
            thread = await client.create_thread()
            pieces: list[str] = []
            reply = await client.ask(thread.id, "hello", timeout=60, on_text=pieces.append)
            assert reply.status is sv.TaskStatus.SUCCEEDED and "".join(pieces) == reply.text
            got = await client.get_thread(thread.id)
            assert got.message_count == 2
            assert [t.id async for t in client.list_threads(limit=1)] == [thread.id]

    asyncio.run(main())


def test_a_reply_is_pieced_together_once() -> None:
    reply = sv.Reply("t")
    assert reply.add(sv.ReplyDelta("t", 1, 0, "héllo ", lease=7)) == "héllo "
    # A resumed watch sends the open reply again from its start.
    assert reply.add(sv.ReplyDelta("t", 1, 0, "héllo ", lease=7)) == ""
    assert reply.add(sv.ReplyDelta("t", 1, 0, "héllo wor", lease=7)) == "wor"
    assert reply.add(sv.ReplyDelta("other", 1, 10, "x", lease=7)) == ""
    # A new attempt (a new lease, even under the same attempt number) starts over.
    assert reply.add(sv.ReplyDelta("t", 1, 0, "again", lease=9)) == "again"
    assert reply.restarted and reply.text == "again"
    assert reply.add(sv.ReplyDelta("t", 1, 10, "late", lease=7)) == ""
