//! `fake-openai`: a small, fast OpenAI-compatible server for the gateway comparison.
//!
//! Every gateway path of `benches/run` (Supervisor's `openai` provider, the LiteLLM proxy,
//! and a client calling it directly) ends here, so the differences between the paths are
//! what each gateway adds. It answers `POST .../chat/completions` (streamed as SSE when the
//! body asks for `"stream": true`, else one JSON body) and `GET .../models`, over
//! HTTP/1.1 with keep-alive, immediately unless `--delay` is given.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Parser)]
#[command(about = "A fast fake OpenAI-compatible chat completions server")]
struct Args {
    /// Address to listen on (port 0: a free one; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Time to wait before answering each completion.
    #[arg(long, default_value = "0ms", value_parser = humantime::parse_duration)]
    delay: Duration,
    /// Worker threads of the server's runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// The model name every answer reports.
const MODEL: &str = "fake-model";
/// Largest request head or body accepted, in bytes.
const MAX_REQUEST: usize = 1 << 20;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("could not start the runtime")?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("could not listen on {}", args.listen))?;
    println!("fake-openai listening on {}", listener.local_addr()?);
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let delay = args.delay;
        tokio::spawn(async move {
            // A connection error ends only that connection.
            let _ = connection(socket, delay).await;
        });
    }
}

/// One parsed request: method, path, body, and whether the client wants the connection
/// closed after the answer.
struct Request {
    method: String,
    path: String,
    body: Vec<u8>,
    close: bool,
}

/// Serves requests on one connection until the client closes it.
async fn connection(mut socket: TcpStream, delay: Duration) -> anyhow::Result<()> {
    let mut buf = Vec::with_capacity(8192);
    loop {
        let Some(request) = read_request(&mut socket, &mut buf).await? else {
            return Ok(());
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let (status, content_type, body) = answer(&request);
        let head = format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{}\r\n",
            body.len(),
            if request.close {
                "connection: close\r\n"
            } else {
                ""
            }
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(body.as_bytes());
        socket.write_all(&out).await?;
        if request.close {
            return Ok(());
        }
    }
}

/// Reads one request (head and `content-length` body); `None` when the client closed the
/// connection between requests.
async fn read_request(
    socket: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> anyhow::Result<Option<Request>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        anyhow::ensure!(buf.len() < MAX_REQUEST, "request head too large");
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let path = first.next().unwrap_or_default().to_string();
    let mut length = 0usize;
    let mut close = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            let value = value.trim();
            if name == "content-length" {
                length = value.parse().context("bad content-length")?;
            } else if name == "connection" && value.eq_ignore_ascii_case("close") {
                close = true;
            } else if name == "transfer-encoding" {
                anyhow::bail!("chunked request bodies are not supported");
            }
        }
    }
    anyhow::ensure!(length <= MAX_REQUEST, "request body too large");
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 8192];
        let n = socket.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "connection closed inside a request body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Ok(Some(Request {
        method,
        path,
        body,
        close,
    }))
}

/// Status line, content type and body for a request.
fn answer(request: &Request) -> (&'static str, &'static str, String) {
    let path = request.path.split('?').next().unwrap_or_default();
    match (request.method.as_str(), path) {
        ("POST", p) if p.ends_with("/chat/completions") => {
            let body: serde_json::Value =
                serde_json::from_slice(&request.body).unwrap_or(serde_json::Value::Null);
            if body["stream"].as_bool() == Some(true) {
                ("200 OK", "text/event-stream", streamed())
            } else {
                ("200 OK", "application/json", whole())
            }
        }
        ("GET", p) if p.ends_with("/models") => (
            "200 OK",
            "application/json",
            serde_json::json!({"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "bench"}]})
                .to_string(),
        ),
        _ => (
            "404 Not Found",
            "application/json",
            serde_json::json!({"error": {"message": format!("no route for {} {}", request.method, path), "type": "invalid_request_error"}})
                .to_string(),
        ),
    }
}

const WORDS: [&str; 3] = ["The fix ", "is in ", "place."];

fn usage() -> serde_json::Value {
    serde_json::json!({"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18})
}

/// A streamed answer: a role chunk, three content chunks, a finish chunk, a usage chunk
/// and `[DONE]`, as OpenAI sends them with `stream_options.include_usage`.
fn streamed() -> String {
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        serde_json::json!({
            "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        })
    };
    let mut events = vec![chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    )];
    for word in WORDS {
        events.push(chunk(serde_json::json!({"content": word}), None));
    }
    events.push(chunk(serde_json::json!({}), Some("stop")));
    events.push(serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": MODEL,
        "choices": [], "usage": usage(),
    }));
    let mut out = String::new();
    for event in events {
        out.push_str("data: ");
        out.push_str(&event.to_string());
        out.push_str("\n\n");
    }
    out.push_str("data: [DONE]\n\n");
    out
}

/// A whole (non-streamed) answer.
fn whole() -> String {
    serde_json::json!({
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": WORDS.concat()}, "finish_reason": "stop"}],
        "usage": usage(),
    })
    .to_string()
}
