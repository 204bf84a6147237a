//! Conversation threads through a real node: three turns whose replies stream piece by
//! piece, a node killed with `kill -9` between turns and during one, the history each
//! reply's prompt carries, search, conversion into a task, and `supervisor chat` both as a
//! one-shot command and as a REPL reading standard input.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures::StreamExt as _;
use supervisor_client::Client;
use supervisor_proto::v1::{
    self, ConvertThreadRequest, CreateThreadRequest, GetThreadRequest, PostMessageRequest,
    SearchThreadsRequest, ThreadRole, WatchThreadRequest, thread_event::Event,
};

use common::{NodeProcess, cli};

/// Guard against hangs only; no assertion depends on how long anything took.
const PATIENCE: Duration = Duration::from_secs(90);

/// The mock takes a second per reply and streams it in four pieces.
const SLOW_MOCK: [(&str, &str); 2] = [
    ("SUPERVISOR_PROVIDERS__MOCK__LATENCY", "1s"),
    ("SUPERVISOR_PROVIDERS__MOCK__STREAM_CHUNKS", "4"),
];

/// What a watch saw of one turn: the pieces of the reply, then the reply.
struct Turn {
    deltas: Vec<v1::ReplyDelta>,
    reply: v1::ThreadMessage,
}

/// Posts `text` and follows the thread from the posted message until its reply.
async fn turn(client: &Client, thread: &str, text: &str) -> Turn {
    let posted = client
        .chat_service()
        .post_message(PostMessageRequest {
            thread_id: thread.to_string(),
            text: text.to_string(),
        })
        .await
        .expect("post")
        .into_inner();
    let message = posted.message.expect("the message");
    assert_eq!(message.role, ThreadRole::User as i32);
    follow(client, thread, message.seq, &message.task_id).await
}

/// Follows the thread after `after_seq` until the reply of `task`.
async fn follow(client: &Client, thread: &str, after_seq: u64, task: &str) -> Turn {
    let mut stream = client
        .chat_service()
        .watch_thread(WatchThreadRequest {
            thread_id: thread.to_string(),
            after_seq,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut deltas = Vec::new();
    let reply = tokio::time::timeout(PATIENCE, async {
        while let Some(event) = stream.next().await {
            match event.expect("event").event {
                Some(Event::Delta(d)) if d.task_id == task => deltas.push(d),
                Some(Event::Message(m))
                    if m.role == ThreadRole::Assistant as i32 && m.task_id == task =>
                {
                    return m;
                }
                _ => {}
            }
        }
        panic!("the watch ended without the reply");
    })
    .await
    .expect("the reply within the patience");
    Turn { deltas, reply }
}

/// The reply as its pieces of the last attempt spell it.
fn streamed(deltas: &[v1::ReplyDelta]) -> String {
    let last = deltas.iter().map(|d| d.lease).max().unwrap_or(0);
    let mut text = String::new();
    for d in deltas.iter().filter(|d| d.lease == last) {
        assert_eq!(d.offset as usize, text.len(), "pieces follow each other");
        text.push_str(&d.text);
    }
    text
}

async fn get_thread(client: &Client, id: &str) -> v1::Thread {
    client
        .chat_service()
        .get_thread(GetThreadRequest { id: id.to_string() })
        .await
        .expect("get the thread")
        .into_inner()
}

async fn connect(node: &NodeProcess) -> Client {
    Client::connect(&node.url()).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_turn_thread_streams_each_reply_and_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut node = NodeProcess::start(&data, &SLOW_MOCK);
    let client = connect(&node).await;
    let thread = client
        .chat_service()
        .create_thread(CreateThreadRequest {
            r#type: v1::TaskType::CodeAnalysis as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(thread.title.is_empty());

    // Turn 1 and 2: each reply arrives in pieces that spell it before it lands whole.
    let one = turn(&client, &thread.id, "Where is the parser's weak point?").await;
    assert_eq!(one.reply.seq, 2);
    assert_eq!(one.reply.status, v1::TaskStatus::Succeeded as i32);
    assert!(
        one.deltas.len() >= 2,
        "streamed in pieces: {:?}",
        one.deltas.len()
    );
    assert_eq!(streamed(&one.deltas), one.reply.text);
    let two = turn(&client, &thread.id, "And how would you test the tokenizer?").await;
    assert_eq!(two.reply.seq, 4);
    assert_eq!(streamed(&two.deltas), two.reply.text);

    // One turn at a time: a post while a reply runs is refused.
    let open = client
        .chat_service()
        .post_message(PostMessageRequest {
            thread_id: thread.id.clone(),
            text: "Third, between turns the node dies.".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let refused = client
        .chat_service()
        .post_message(PostMessageRequest {
            thread_id: thread.id.clone(),
            text: "too soon".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition, "{refused}");
    let third = open.message.unwrap();
    // Let the turn end, then kill the node between turns.
    follow(&client, &thread.id, third.seq, &third.task_id).await;
    node.kill9();
    drop(client);

    let mut node = NodeProcess::start(&data, &SLOW_MOCK);
    let client = connect(&node).await;
    let got = get_thread(&client, &thread.id).await;
    assert_eq!(got.messages.len(), 6, "nothing lost: {:?}", got.messages);
    assert_eq!(got.title, "Where is the parser's weak point?");

    // A node killed during a turn: the turn's task runs again and its reply lands once.
    let posted = client
        .chat_service()
        .post_message(PostMessageRequest {
            thread_id: thread.id.clone(),
            text: "Fourth: the node dies while you answer.".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let fourth = posted.message.unwrap();
    let turn_task = posted.turn.unwrap();
    // Killed once a piece of the reply is out.
    let mut watch = client
        .chat_service()
        .watch_thread(WatchThreadRequest {
            thread_id: thread.id.clone(),
            after_seq: fourth.seq,
        })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(PATIENCE, async {
        while let Some(event) = watch.next().await {
            if let Some(Event::Delta(_)) = event.unwrap().event {
                return;
            }
        }
    })
    .await
    .expect("a piece of the fourth reply");
    node.kill9();
    drop(watch);
    drop(client);
    let node = NodeProcess::start(&data, &SLOW_MOCK);
    let client = connect(&node).await;
    let four = follow(&client, &thread.id, fourth.seq, &fourth.task_id).await;
    assert_eq!(four.reply.seq, 8);
    assert_eq!(four.reply.status, v1::TaskStatus::Succeeded as i32);
    // The interrupted attempt and the one that finished ran under two leases (with the
    // same attempt number: a lost node's attempt does not count); the last one's pieces
    // spell the reply from offset 0.
    let mut leases: Vec<u64> = four.deltas.iter().map(|d| d.lease).collect();
    leases.dedup();
    assert_eq!(leases.len(), 2, "{:?}", four.deltas);
    assert_eq!(streamed(&four.deltas), four.reply.text);

    // Each reply's prompt carried the conversation before it.
    let task = client.get(&turn_task.id).await.unwrap();
    for earlier in [
        "Where is the parser's weak point?",
        "And how would you test the tokenizer?",
        two.reply.text.lines().next().unwrap(),
        "Third, between turns the node dies.",
    ] {
        assert!(
            task.prompt.contains(earlier),
            "{earlier:?} in {}",
            task.prompt
        );
    }
    assert!(
        task.prompt
            .ends_with("Fourth: the node dies while you answer.\n")
    );
    let got = get_thread(&client, &thread.id).await;
    let roles: Vec<i32> = got.messages.iter().map(|m| m.role).collect();
    let user = ThreadRole::User as i32;
    let agent = ThreadRole::Assistant as i32;
    assert_eq!(roles, [user, agent, user, agent, user, agent, user, agent]);
    assert!(got.open_turn_task_id.is_empty());

    // Search finds a message by any case of its text.
    let found = client
        .chat_service()
        .search_threads(SearchThreadsRequest {
            query: "TOKENIZER".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        found
            .hits
            .iter()
            .any(|h| h.thread_id == thread.id && h.message.as_ref().unwrap().seq == 3),
        "{:?}",
        found.hits
    );

    // "Do what we discussed": a task whose prompt is the conversation.
    let converted = client
        .chat_service()
        .convert_thread(ConvertThreadRequest {
            thread_id: thread.id.clone(),
            r#type: v1::TaskType::Testing as i32,
            instruction: "Write the tokenizer tests we discussed.".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let task = converted.task.unwrap();
    assert_eq!(task.r#type, v1::TaskType::Testing as i32);
    assert!(
        task.prompt
            .contains("And how would you test the tokenizer?")
    );
    assert!(
        task.prompt
            .ends_with("Write the tokenizer tests we discussed.\n")
    );
    let done = tokio::time::timeout(PATIENCE, client.wait(&task.id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.status, v1::TaskStatus::Succeeded as i32);

    // The CLI: one message and its reply, then a REPL fed by a pipe.
    let (code, out, err) = cli(
        &node.url(),
        &["chat", &thread.id, "--message", "Fifth, from the CLI."],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("[mock provider]"), "{out}");
    let mut repl = Command::new(env!("CARGO_BIN_EXE_supervisor"))
        .args(["chat", &thread.id, "--server", &node.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    repl.stdin
        .take()
        .unwrap()
        .write_all(b"Sixth, on two \\\nlines.\nSeventh.\n/quit\n")
        .unwrap();
    let out = repl.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("[mock provider]").count(), 2, "{stdout}");
    let got = get_thread(&client, &thread.id).await;
    assert_eq!(got.messages.len(), 14);
    assert_eq!(got.messages[10].text, "Sixth, on two \nlines.");
    let (code, out, _) = cli(&node.url(), &["chat", "--search", "seventh"]);
    assert_eq!(code, 0);
    assert!(out.contains(&thread.id), "{out}");

    // A turn cancelled while it runs is the thread's reply too, and the thread goes on.
    let posted = client
        .chat_service()
        .post_message(PostMessageRequest {
            thread_id: thread.id.clone(),
            text: "Never mind.".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let message = posted.message.unwrap();
    client
        .cancel(&message.task_id, "changed my mind")
        .await
        .unwrap();
    let cancelled = follow(&client, &thread.id, message.seq, &message.task_id).await;
    assert_eq!(cancelled.reply.status, v1::TaskStatus::Cancelled as i32);
    assert!(
        cancelled.reply.error.contains("changed my mind"),
        "{:?}",
        cancelled.reply
    );
    let after = turn(&client, &thread.id, "Back to the tokenizer.").await;
    assert_eq!(after.reply.status, v1::TaskStatus::Succeeded as i32);
    let task = client.get(&after.reply.task_id).await.unwrap();
    assert!(
        task.prompt.contains("no reply, the turn cancelled"),
        "{}",
        task.prompt
    );

    // Deleting a thread whose reply runs cancels that reply; the thread is gone.
    let count = get_thread(&client, &thread.id).await.message_count;
    let running = client
        .chat_service()
        .post_message(PostMessageRequest {
            thread_id: thread.id.clone(),
            text: "One more.".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .message
        .unwrap();
    let (code, out, err) = cli(&node.url(), &["chat", &thread.id, "--delete"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("its {} messages", count + 1)) && out.contains(&running.task_id),
        "{out}"
    );
    let gone = client
        .chat_service()
        .get_thread(GetThreadRequest {
            id: thread.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(gone.code(), tonic::Code::NotFound);
    let task = tokio::time::timeout(PATIENCE, client.wait(&running.task_id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(task.status, v1::TaskStatus::Cancelled as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("data"), &[]);
    let client = connect(&node).await;
    let mut chat = client.chat_service();
    let e = chat
        .post_message(PostMessageRequest {
            thread_id: "nope".into(),
            text: "hi".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("thread_id"), "{}", e.message());
    let e = chat
        .get_thread(GetThreadRequest {
            id: "0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let thread = chat
        .create_thread(CreateThreadRequest::default())
        .await
        .unwrap()
        .into_inner();
    for (text, field) in [("   ", "empty"), (&*"x".repeat(40_000), "at most")] {
        let e = chat
            .post_message(PostMessageRequest {
                thread_id: thread.id.clone(),
                text: text.to_string(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains(field), "{}", e.message());
    }
    let e = chat
        .create_thread(CreateThreadRequest {
            about_task_id: "0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e}");
    let e = chat
        .convert_thread(ConvertThreadRequest {
            thread_id: thread.id.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
}

/// A fake Claude CLI for thread turns: it records its arguments (`<dir>/args-<n>`, NUL
/// separated), adds a line to `notes.txt` in its working directory, starts a session
/// `sess-<n>` (marking its HOME) or, with `--resume`, checks that its HOME kept the mark,
/// and answers with how many lines `notes.txt` has and which session it resumed.
fn thread_cli(dir: &std::path::Path) -> String {
    format!(
        "#!/bin/bash\n\
         if [ \"$1\" = \"--version\" ]; then echo '1.0.0 (Claude Code)'; exit 0; fi\n\
         n=$(( $(cat {d}/runs 2>/dev/null || echo 0) + 1 )); echo $n > {d}/runs\n\
         printf '%s\\0' \"$@\" > {d}/args-$n\n\
         all=\"$*\"\n\
         resumed=no\n\
         while [ $# -gt 0 ]; do if [ \"$1\" = --resume ]; then resumed=$2; fi; shift; done\n\
         if [ $resumed != no ] && [ ! -e \"$HOME/.claude/mark\" ]; then echo 'no session here' >&2; exit 1; fi\n\
         mkdir -p \"$HOME/.claude/projects/w\" && touch \"$HOME/.claude/mark\" \"$HOME/.claude/projects/w/sess-$n.jsonl\"\n\
         echo \"turn $n\" >> notes.txt\n\
         case \"$all\" in *BREAK*) git add -A && git -c user.name=a -c user.email=a@example.invalid commit -qm 'half done'; exit 1;; esac\n\
         lines=$(wc -l < notes.txt)\n\
         echo '{{\"type\":\"system\",\"subtype\":\"init\",\"session_id\":\"sess-'$n'\",\"model\":\"claude-test\",\"tools\":[],\"cwd\":\".\"}}'\n\
         echo '{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"result\":\"lines='$lines' resumed='$resumed'\",\"num_turns\":1,\"usage\":{{\"input_tokens\":10,\"output_tokens\":5}}}}'\n",
        d = dir.display()
    )
}

/// The subjects of the commits on a thread's branch, newest first.
fn branch_log(repo: &std::path::Path, thread: &str) -> String {
    let log = Command::new("git")
        .args(["log", "--format=%s", &format!("supervisor/thread-{thread}")])
        .current_dir(repo)
        .output()
        .unwrap();
    String::from_utf8_lossy(&log.stdout).into_owned()
}

fn args_of(dir: &std::path::Path, run: u32) -> Vec<String> {
    std::fs::read(dir.join(format!("args-{run}")))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_cli_turns_resume_their_session_on_the_threads_branch() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    std::fs::write(repo.join("README"), "start\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "start"]);
    let config = common::fake_cli_config(dir.path(), &thread_cli(dir.path()));
    let config = config.display().to_string();
    let node = NodeProcess::start(
        &dir.path().join("data"),
        &[("SUPERVISOR_CONFIG", config.as_str())],
    );
    let client = connect(&node).await;
    let thread = client
        .chat_service()
        .create_thread(CreateThreadRequest {
            r#type: v1::TaskType::BugFix as i32,
            context: [("repo".to_string(), repo.display().to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    let one = turn(&client, &thread.id, "Look at the README.").await;
    assert_eq!(one.reply.text, "lines=1 resumed=no", "{:?}", one.reply);
    let first = args_of(dir.path(), 1);
    assert!(!first.contains(&"--resume".to_string()), "{first:?}");

    let two = turn(&client, &thread.id, "Now fix the typo.").await;
    assert_eq!(
        two.reply.text, "lines=2 resumed=sess-1",
        "the second turn saw the first turn's change and resumed its session"
    );
    let second = args_of(dir.path(), 2);
    let prompt = &second[second.iter().position(|a| a == "-p").unwrap() + 1];
    assert_eq!(
        prompt, "Now fix the typo.",
        "only the new message: {second:?}"
    );

    // Both turns' commits are on the thread's branch.
    let log = branch_log(&repo, &thread.id);
    assert_eq!(log.lines().count(), 3, "{log}");

    // A turn whose attempts commit and then fail leaves the branch as the turns before
    // left it.
    let broken = turn(&client, &thread.id, "BREAK it, please.").await;
    assert_eq!(
        broken.reply.status,
        v1::TaskStatus::Failed as i32,
        "{:?}",
        broken.reply
    );
    let log = branch_log(&repo, &thread.id);
    assert_eq!(log.lines().count(), 3, "no half-done commit: {log}");
}
