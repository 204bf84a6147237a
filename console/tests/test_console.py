"""The console in a real browser against a real node: sign-in, live task and workflow
pages, what each role is offered and refused, and the overview's numbers against the API.
Every page is photographed into target/console-screenshots/."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect
from supervisor_client import Client, PermissionDenied

from conftest import Node, screenshot, sign_in

WORKFLOW = """\
name: console-check
steps:
  - id: plan
    task: { type: code_analysis, prompt: "plan the change" }
  - id: build
    needs: [plan]
    task: { type: feature, prompt: "build it" }
  - id: document
    needs: [plan]
    task: { type: documentation, prompt: "document it" }
  - id: review
    needs: [build, document]
    task: { type: pr_review, prompt: "review it" }
"""

# Set once the page has loaded: still there at the end means the page never reloaded.
MARK = "window.__notReloaded = true"
MARKED = "window.__notReloaded === true"


def test_sign_in_refuses_a_bad_key_then_accepts_the_admin(page: Page, node: Node) -> None:
    page.goto(node.url + "/")
    expect(page.get_by_label("API key or JWT")).to_be_visible()
    screenshot(page, "login")
    page.get_by_label("API key or JWT").fill("svk_not_a_key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("Unauthenticated: the API key is malformed")
    page.get_by_label("API key or JWT").fill(node.admin_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("navigation", name="Pages")).to_be_visible()
    expect(page.get_by_text("admin · tenant default")).to_be_visible()


def test_a_task_submitted_from_the_page_reaches_succeeded_live(page: Page, node: Node) -> None:
    key = node.key("developer", "console developer")
    sign_in(page, node, key, "/tasks")
    page.evaluate(MARK)
    form = page.get_by_test_id("submit-form")
    form.get_by_test_id("submit-type").select_option(label="testing")
    form.get_by_test_id("submit-prompt").fill("write the missing tests for the parser")
    form.get_by_test_id("submit-button").click()
    page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}$"))
    status = page.get_by_test_id("task-status")
    # It is seen waiting or running before it is seen done, on the same page.
    expect(status).not_to_have_attribute("data-status", "succeeded", timeout=1000)
    screenshot(page, "task-running")
    expect(status).to_have_attribute("data-status", "succeeded", timeout=30_000)
    assert page.evaluate(MARKED), "the page reloaded"
    # The event log shows the task's events, as WatchTask gives them.
    task_id = page.url.rsplit("/", 1)[1]
    with Client(node.address, token=key) as client:
        events = list(client.watch(task_id))
    expect(page.get_by_test_id("event-row")).to_have_count(len(events))
    screenshot(page, "task-detail")
    # The shareable URL opens the same task.
    page.goto(node.url + f"/tasks/{task_id}")
    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", "succeeded")


def test_a_workflow_submitted_from_yaml_changes_colour_step_by_step(page: Page, node: Node) -> None:
    key = node.key("developer", "console workflows")
    sign_in(page, node, key, "/workflows")
    page.evaluate(MARK)
    editor = page.get_by_test_id("workflow-editor")
    # A mistake is shown in place, and submitting is not possible.
    editor.fill(WORKFLOW.replace("needs: [build, document]", "needs: [build, nowhere]"))
    expect(page.get_by_test_id("workflow-issue").first).to_contain_text("nowhere", timeout=10_000)
    expect(page.get_by_test_id("workflow-submit")).to_be_disabled()
    screenshot(page, "workflow-invalid")
    editor.fill(WORKFLOW)
    expect(page.get_by_test_id("workflow-issue")).to_have_count(0, timeout=10_000)
    page.get_by_test_id("workflow-submit").click()
    page.wait_for_url(re.compile(r"/workflows/runs/[^/]+$"))
    nodes = page.get_by_test_id("dag-node")
    expect(nodes).to_have_count(4)
    # Every status each step shows, in order, as the page changes it.
    page.evaluate(
        """() => {
        window.__seen = {};
        const note = (el) => {
          const step = el.dataset.step, status = el.dataset.status;
          const seen = (window.__seen[step] ??= []);
          if (seen[seen.length - 1] !== status) seen.push(status);
        };
        document.querySelectorAll('[data-testid="dag-node"]').forEach(note);
        new MutationObserver((changes) => {
          for (const c of changes) {
            const el = c.target.closest ? c.target.closest('[data-testid="dag-node"]') : null;
            if (el) note(el);
          }
          document.querySelectorAll('[data-testid="dag-node"]').forEach(note);
        }).observe(document.body, { subtree: true, attributes: true, childList: true });
      }"""
    )
    screenshot(page, "workflow-running")
    for step in ("plan", "build", "document", "review"):
        expect(page.locator(f'[data-testid="dag-node"][data-step="{step}"]')).to_have_attribute(
            "data-status", "succeeded", timeout=60_000
        )
    seen: dict[str, list[str]] = page.evaluate("window.__seen")
    assert page.evaluate(MARKED), "the page reloaded"
    for step in ("plan", "build", "document", "review"):
        assert seen[step][-1] == "succeeded", seen
        assert len(seen[step]) >= 2, f"step {step} was never seen before it succeeded: {seen}"
    # The last step waited for the others: it was seen in a waiting state.
    assert seen["review"][0] != "running", seen
    screenshot(page, "workflow-done")


def test_a_viewer_is_offered_nothing_it_may_not_do_and_a_forged_cancel_is_refused(
    page: Page, slow_node: Node
) -> None:
    node = slow_node
    viewer = node.key("viewer", "console viewer")
    operator = node.key("operator", "console operator")
    with Client(node.address, token=node.admin_key) as admin:
        task = admin.submit("testing", "a slow task a viewer looks at", labels=["console"])
    # An operator looking at the running task is offered the cancel...
    sign_in(page, node, operator, f"/tasks/{task.id}")
    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", re.compile("queued|running"))
    expect(page.get_by_test_id("cancel-button")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    # ...a viewer is not, nor the submit forms.
    sign_in(page, node, viewer, f"/tasks/{task.id}")
    expect(page.get_by_test_id("task-status")).to_have_attribute("data-status", re.compile("queued|running"))
    expect(page.get_by_test_id("cancel-button")).to_have_count(0)
    screenshot(page, "task-viewer")
    page.goto(node.url + "/tasks")
    expect(page.get_by_test_id("task-list")).to_be_visible()
    expect(page.get_by_test_id("submit-form")).to_have_count(0)
    page.goto(node.url + "/workflows")
    expect(page.get_by_role("heading", level=1).first).to_be_visible()
    expect(page.get_by_test_id("workflow-submit")).to_have_count(0)
    # The same call the cancel button would make, forged in the viewer's page with its key.
    status = page.evaluate(
        """async (id) => {
        const enc = new TextEncoder().encode(id);
        const msg = new Uint8Array([0x0a, enc.length, ...enc]);
        const frame = new Uint8Array(5 + msg.length);
        new DataView(frame.buffer).setUint32(1, msg.length);
        frame.set(msg, 5);
        const r = await fetch('/supervisor.v1.TaskService/CancelTask', {
          method: 'POST',
          headers: {
            'content-type': 'application/grpc-web+proto',
            'x-grpc-web': '1',
            authorization: 'Bearer ' + sessionStorage.getItem('supervisor.token'),
          },
          body: frame,
        });
        const header = r.headers.get('grpc-status');
        if (header) return { status: Number(header), message: r.headers.get('grpc-message') };
        const text = new TextDecoder().decode(await r.arrayBuffer());
        const m = /grpc-status:\\s*(\\d+)/.exec(text);
        return { status: m ? Number(m[1]) : -1, message: text };
      }""",
        task.id,
    )
    assert status["status"] == 7, f"a viewer's cancel was not refused with PERMISSION_DENIED: {status}"
    with Client(node.address, token=viewer) as client:
        with pytest.raises(PermissionDenied):
            client.cancel(task.id)
        assert client.get(task.id).status.value in ("queued", "running")


def test_tenants_see_only_their_own_tasks(page: Page, node: Node) -> None:
    node.cli("tenant", "create", "console-other")
    other = node.key("developer", "other tenant", tenant="console-other")
    with Client(node.address, token=node.admin_key) as admin:
        mine = admin.submit("testing", "a task of the default tenant")
    with Client(node.address, token=other) as client:
        theirs = client.submit("testing", "a task of the other tenant")
    sign_in(page, node, other, f"/tasks/{mine.id}")
    expect(page.get_by_role("alert")).to_contain_text("NotFound")
    page.goto(node.url + "/tasks")
    # The list has loaded (its own task is there) and holds nothing of the other tenant.
    expect(page.locator(f'[data-task-id="{theirs.id}"]')).to_have_count(1)
    expect(page.locator(f'[data-task-id="{mine.id}"]')).to_have_count(0)


def test_a_task_with_repeated_labels_shows(page: Page, node: Node) -> None:
    # The API keeps labels as given, a repeated one too.
    with Client(node.address, token=node.admin_key) as admin:
        task = admin.submit("testing", "labelled twice", labels=["dup", "dup"])
    sign_in(page, node, node.admin_key, "/tasks?label=dup")
    expect(page.locator(f'[data-task-id="{task.id}"]')).to_have_count(1)
    page.goto(node.url + f"/tasks/{task.id}")
    expect(page.get_by_test_id("task-status")).to_be_visible()


def test_the_overview_shows_the_numbers_the_api_returns(page: Page, node: Node) -> None:
    key = node.key("admin", "console overview")
    with Client(node.address, token=key) as client:
        done = [client.submit("documentation", f"overview task {i}") for i in range(3)]
        for t in done:
            client.wait(t.id, timeout=60)
        sign_in(page, node, key, "/")
        # Counts change while other tests' tasks run: compare once both agree on a
        # settled moment, read twice around the page's numbers.
        fields = ("queued", "running", "retry_wait", "succeeded", "failed", "cancelled")
        deadline = time.monotonic() + 60
        while True:
            before = client.stats()
            shown = {f: page.get_by_test_id(f"stat-{f}").get_attribute("data-value") for f in fields}
            after = client.stats()
            api = {f: str(getattr(after, f)) for f in fields}
            if before == after and shown == api:
                break
            assert time.monotonic() < deadline, f"the overview shows {shown}, GetTaskStats says {api}"
            page.wait_for_timeout(500)
        for f in fields:
            assert page.get_by_test_id(f"stat-{f}").inner_text().replace(",", "") == api[f]
    screenshot(page, "overview")


def test_live_pages_pick_up_again_after_the_node_restarts(page: Page, tmp_path: Path) -> None:
    own = Node(tmp_path / "data", {"SUPERVISOR_PROVIDERS__MOCK__LATENCY": "100ms"})
    try:
        with Client(own.address, token=own.admin_key) as client:
            first = client.submit("testing", "before the crash")
            client.wait(first.id, timeout=60)
        sign_in(page, own, own.admin_key, "/")
        page.evaluate(MARK)
        succeeded = page.get_by_test_id("stat-succeeded")
        expect(succeeded).to_have_attribute("data-value", "1")
        own.kill9()
        own.start()
        with Client(own.address, token=own.admin_key) as client:
            second = client.submit("testing", "after the restart")
            client.wait(second.id, timeout=60)
        # The overview's stream broke with the process and resumed by itself.
        expect(succeeded).to_have_attribute("data-value", "2", timeout=30_000)
        assert page.evaluate(MARKED), "the page reloaded"
    finally:
        own.stop()


# Records, in the page, every text the open reply's bubble shows (per turn task), the
# turn statuses it shows, and the thread's final replies as they appear.
RECORD_CHAT = """() => {
  window.__chat = { streamed: {}, statuses: [], finals: {} };
  const note = () => {
    const reply = document.querySelector('[data-testid="chat-reply"]');
    if (reply) {
      const task = reply.dataset.taskId;
      const seen = (window.__chat.streamed[task] ??= []);
      const el = reply.querySelector('[data-testid="chat-reply-text"]');
      const text = el ? el.textContent : "";
      if (text && seen[seen.length - 1] !== text) seen.push(text);
      const st = window.__chat.statuses;
      if (st[st.length - 1] !== reply.dataset.status) st.push(reply.dataset.status);
    }
    for (const m of document.querySelectorAll('[data-testid="chat-message"][data-role="assistant"]')) {
      const task = m.dataset.taskId;
      if (!(task in window.__chat.finals)) {
        // How many streamed texts had been seen when the reply itself arrived.
        window.__chat.finals[task] = (window.__chat.streamed[task] ?? []).length;
      }
    }
  };
  new MutationObserver(note).observe(document.body, { subtree: true, childList: true, characterData: true, attributes: true });
}"""

# Hides the tab (follow() closes its stream) and shows it again (it resumes from the
# last message's seq, and the open reply is sent again from its first byte).
HIDE_TAB = """() => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
  document.dispatchEvent(new Event("visibilitychange"));
}"""
SHOW_TAB = """() => {
  delete document.visibilityState;
  document.dispatchEvent(new Event("visibilitychange"));
}"""


def test_a_chat_thread_streams_its_replies_token_by_token(page: Page, node: Node) -> None:
    key = node.key("developer", "console chat")
    watches: list[str] = []
    page.on("request", lambda r: watches.append(r.url) if r.url.endswith("ChatService/WatchThread") else None)
    sign_in(page, node, key, "/chat")
    page.evaluate(MARK)
    form = page.get_by_test_id("chat-create-form")
    form.get_by_test_id("chat-create-title").fill("console chat check")
    form.get_by_test_id("chat-create-type").select_option(label="code analysis")
    form.get_by_test_id("chat-create-context").fill("ticket=CON-7")
    form.get_by_test_id("chat-create-button").click()
    page.wait_for_url(re.compile(r"/chat/[0-9a-f-]{36}$"))
    thread_id = page.url.rsplit("/", 1)[1]
    expect(page.get_by_test_id("chat-title")).to_have_text("console chat check")
    expect(page.get_by_test_id("chat-empty")).to_be_visible()
    page.evaluate(RECORD_CHAT)
    box = page.get_by_test_id("chat-input")
    replies = page.locator('[data-testid="chat-message"][data-role="assistant"]')

    # The first message: Enter sends it; the box is closed while the reply is written.
    box.fill("what does the <b>parser</b> do?")
    box.press("Enter")
    expect(box).to_be_disabled()
    expect(page.get_by_test_id("chat-turn-status")).to_be_visible()
    screenshot(page, "chat-replying")
    expect(replies).to_have_count(1, timeout=30_000)
    expect(box).to_be_enabled()

    # The second, on two lines (Shift+Enter); the tab is hidden and shown again while its
    # reply streams, so that the watch resumes and is sent the reply again from byte 0.
    box.press_sequentially("and the lexer?")
    box.press("Shift+Enter")
    box.press_sequentially("in short")
    box.press("Enter")
    page.wait_for_function(
        """() => (document.querySelector('[data-testid="chat-reply-text"]')?.textContent ?? "").length > 0""",
        timeout=30_000,
    )
    opened = len(watches)
    page.evaluate(HIDE_TAB)
    page.wait_for_timeout(300)
    page.evaluate(SHOW_TAB)
    expect(replies).to_have_count(2, timeout=30_000)
    expect(box).to_be_enabled()
    expect(page.get_by_test_id("chat-reply")).to_have_count(0)
    assert len(watches) > opened, "the watch was not opened again after the tab showed"
    assert page.evaluate(MARKED), "the page reloaded"

    messages = page.get_by_test_id("chat-message")
    expect(messages).to_have_count(4)
    assert [m.get_attribute("data-role") for m in messages.all()] == ["user", "assistant", "user", "assistant"]
    texts = [m.get_by_test_id("chat-text").text_content() or "" for m in messages.all()]
    # Text, never HTML: the markup typed is shown as typed.
    assert texts[0] == "what does the <b>parser</b> do?"
    assert messages.nth(0).locator("b").count() == 0
    assert texts[2] == "and the lexer?\nin short"
    record = page.evaluate("window.__chat")
    for reply in replies.all():
        assert reply.get_attribute("data-status") == "succeeded"
        task_id = reply.get_attribute("data-task-id") or ""
        assert reply.get_by_test_id("chat-turn-task").get_attribute("href") == f"/tasks/{task_id}"
        final = reply.get_by_test_id("chat-text").text_content() or ""
        streamed: list[str] = record["streamed"].get(task_id, [])
        # The bubble grew piece by piece before the reply arrived, every text the start of
        # the reply (nothing repeated when the resumed watch sent it again from byte 0).
        assert len(streamed) >= 2, f"the reply of {task_id} was not seen streaming: {streamed}"
        assert record["finals"][task_id] == len(streamed), record
        for shorter, longer in zip(streamed, streamed[1:]):
            assert longer.startswith(shorter) and len(longer) > len(shorter), streamed
        assert final.startswith(streamed[-1]), (streamed, final)
    # The turn's status showed while it ran.
    assert "running" in record["statuses"], record["statuses"]
    screenshot(page, "chat-thread")

    # The page shows what GetThread (through the CLI) says the thread holds.
    shown = ""
    for m, text in zip(messages.all(), texts):
        who = "you" if m.get_attribute("data-role") == "user" else "agent"
        shown += f"#{m.get_attribute('data-seq')} {who} ({m.get_attribute('data-author')}):\n{text}"
        shown += "" if text.endswith("\n") else "\n"
    assert node.cli("chat", thread_id, "--show", token=key) == shown

    # The list finds the thread by a message's text, and the thread becomes a task.
    page.goto(node.url + "/chat?q=LEXER")
    expect(page.locator(f'[data-testid="chat-hit"][data-thread-id="{thread_id}"]')).to_have_count(1)
    page.goto(node.url + f"/chat/{thread_id}")
    expect(messages).to_have_count(4)
    page.get_by_test_id("chat-convert").click()
    page.wait_for_url(re.compile(r"/tasks/[0-9a-f-]{36}$"))
    expect(page.get_by_test_id("task-prompt")).to_contain_text("in short")

    # Deleted after a confirm step: back on the list, and gone from the node.
    page.goto(node.url + f"/chat/{thread_id}")
    page.get_by_test_id("chat-delete").click()
    page.get_by_test_id("chat-delete-confirm").click()
    page.wait_for_url(re.compile(r"/chat$"))
    with pytest.raises(AssertionError, match="no thread with id"):
        node.cli("chat", thread_id, "--show", token=key)


PAGES = ["/", "/tasks", "/workflows", "/schedules", "/chat", "/providers", "/cluster", "/budgets", "/analytics"]


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_page_opens_without_errors(page: Page, node: Node, theme: str) -> None:
    page.add_init_script(f"localStorage.setItem('supervisor.theme', '{theme}')")
    sign_in(page, node, node.admin_key)
    for path in PAGES:
        page.goto(node.url + path)
        expect(page.get_by_role("heading", level=1).first).to_be_visible()
        # Live pages keep a stream open, so the network never idles: give the first
        # answers a moment to render before the photograph.
        page.wait_for_timeout(1500)
        # A page that failed to load says so in an alert.
        alerts = page.get_by_role("alert")
        assert alerts.count() == 0, f"{path}: {alerts.all_inner_texts()}"
        name = "overview" if path == "/" else path.strip("/")
        screenshot(page, f"{name}-{theme}")
    page.goto(node.url + "/cluster")
    node_id = page.get_by_test_id("node-row").first.get_attribute("data-node")
    page.goto(node.url + f"/cluster/nodes/{node_id}")
    expect(page.get_by_role("heading", level=1).first).to_be_visible()
    screenshot(page, f"node-{theme}")
