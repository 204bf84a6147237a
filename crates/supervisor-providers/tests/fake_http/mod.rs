//! A small HTTP/1.1 server on 127.0.0.1 for the provider tests. It speaks the real wire
//! format (status line, headers, chunked, length-delimited or close-delimited bodies, SSE
//! frames), records every request it gets, and answers with a scripted [`Reply`] whose
//! steps can pause on a gate, hang, or drop the connection mid-body.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::{JoinHandle, JoinSet};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`...
    pub method: String,
    /// The request target, e.g. `/v1/messages`.
    pub path: String,
    /// Headers with lowercased names, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// One step of writing a reply body.
pub enum Step {
    /// Write these bytes (one chunk when chunked) and flush.
    Send(Vec<u8>),
    /// Wait until the test notifies.
    Wait(Arc<Notify>),
    /// Never continue (the client has to give up).
    Hang,
    /// Close the connection now, without finishing the body.
    Drop,
}

/// How the body's end is marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `transfer-encoding: chunked`, ended by the zero chunk.
    Chunked,
    /// `content-length` (the sum of the `Send` steps).
    Length,
    /// No length: the body ends when the connection closes.
    Close,
}

/// A scripted answer.
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers besides the framing ones.
    pub headers: Vec<(String, String)>,
    /// How the body is delimited.
    pub framing: Framing,
    /// What to do, in order.
    pub steps: Vec<Step>,
    /// Wait forever before even sending the status line.
    pub hang_before_head: bool,
}

impl Reply {
    /// A JSON answer with a content-length.
    pub fn json(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            framing: Framing::Length,
            steps: vec![Step::Send(body.as_bytes().to_vec())],
            hang_before_head: false,
        }
    }

    /// A 200 `text/event-stream` answer, chunked, made of `steps`.
    pub fn sse(steps: Vec<Step>) -> Reply {
        Reply {
            status: 200,
            headers: vec![
                (
                    "content-type".into(),
                    "text/event-stream; charset=utf-8".into(),
                ),
                ("cache-control".into(), "no-cache".into()),
            ],
            framing: Framing::Chunked,
            steps,
            hang_before_head: false,
        }
    }

    /// An answer that never comes.
    pub fn never() -> Reply {
        Reply {
            hang_before_head: true,
            ..Reply::json(200, "")
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Changes the framing.
    pub fn framing(mut self, framing: Framing) -> Reply {
        self.framing = framing;
        self
    }
}

/// An SSE frame with an event name.
pub fn event(name: &str, data: &Value) -> Step {
    Step::Send(format!("event: {name}\ndata: {data}\n\n").into_bytes())
}

/// An SSE frame with only data (JSON or raw text such as `[DONE]`).
pub fn data(data: impl std::fmt::Display) -> Step {
    Step::Send(format!("data: {data}\n\n").into_bytes())
}

/// Raw bytes.
pub fn raw(bytes: &str) -> Step {
    Step::Send(bytes.as_bytes().to_vec())
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A running fake server; stops (with all its connections) when dropped.
pub struct FakeServer {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl FakeServer {
    /// Starts a server answering every request with `handler`.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            // Connections live in the set, so dropping the accept loop ends them too.
            let mut connections = JoinSet::new();
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                let recorded = recorded.clone();
                connections.spawn(async move {
                    let _ = serve(socket, handler, recorded).await;
                });
            }
        });
        FakeServer {
            addr,
            requests,
            task,
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    /// The only request received (panics unless there was exactly one).
    pub fn single_request(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected one request, got {all:?}");
        all.into_iter().next().expect("one request")
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL where nothing listens (a port that was just free).
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("http://{addr}")
}

/// Reads one request, records it, writes the scripted reply, closes.
async fn serve(
    mut socket: TcpStream,
    handler: Arc<Handler>,
    recorded: Arc<Mutex<Vec<Recorded>>>,
) -> std::io::Result<()> {
    let request = read_request(&mut socket).await?;
    recorded.lock().expect("lock").push(request.clone());
    let reply = handler(&request);
    if reply.hang_before_head {
        std::future::pending::<()>().await;
    }
    let mut head = format!("HTTP/1.1 {} {}\r\n", reply.status, reason(reply.status));
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    match reply.framing {
        Framing::Chunked => head.push_str("transfer-encoding: chunked\r\n"),
        Framing::Length => {
            let len: usize = reply
                .steps
                .iter()
                .map(|s| match s {
                    Step::Send(b) => b.len(),
                    _ => 0,
                })
                .sum();
            head.push_str(&format!("content-length: {len}\r\n"));
        }
        Framing::Close => {}
    }
    head.push_str("connection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await?;
    socket.flush().await?;
    for step in reply.steps {
        match step {
            Step::Send(bytes) => {
                if reply.framing == Framing::Chunked {
                    socket
                        .write_all(format!("{:x}\r\n", bytes.len()).as_bytes())
                        .await?;
                    socket.write_all(&bytes).await?;
                    socket.write_all(b"\r\n").await?;
                } else {
                    socket.write_all(&bytes).await?;
                }
                socket.flush().await?;
            }
            Step::Wait(gate) => gate.notified().await,
            Step::Hang => std::future::pending::<()>().await,
            Step::Drop => return Ok(()),
        }
    }
    if reply.framing == Framing::Chunked {
        socket.write_all(b"0\r\n\r\n").await?;
    }
    socket.shutdown().await
}

async fn read_request(socket: &mut TcpStream) -> std::io::Result<Recorded> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Recorded {
        method,
        path,
        headers,
        body,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        529 => "Site Overloaded",
        _ => "Status",
    }
}

/// Runs a request expected to fail and checks that `secret` (the API key) is nowhere in
/// the error, displayed or debugged.
pub async fn fail_without_leaking(
    provider: &dyn supervisor_providers::Provider,
    request: supervisor_providers::ProviderRequest,
    secret: &str,
) -> supervisor_providers::ProviderError {
    let (sink, _rx) = supervisor_providers::EventSink::channel();
    let err = provider
        .execute(request, sink)
        .await
        .expect_err("should fail");
    assert!(!err.to_string().contains(secret), "key leaked: {err}");
    assert!(!format!("{err:?}").contains(secret), "key leaked: {err:?}");
    err
}

/// Asserts a retryable error of kind `want`.
pub fn assert_retryable(err: &supervisor_providers::ProviderError, want: &str) {
    match err {
        supervisor_providers::ProviderError::Retryable { kind, .. } => {
            assert_eq!(*kind, want, "{err}")
        }
        other => panic!("expected retryable {want}, got {other:?}"),
    }
}

/// Asserts a permanent error of kind `want`.
pub fn assert_permanent(err: &supervisor_providers::ProviderError, want: &str) {
    match err {
        supervisor_providers::ProviderError::Permanent { kind, .. } => {
            assert_eq!(*kind, want, "{err}")
        }
        other => panic!("expected permanent {want}, got {other:?}"),
    }
}
