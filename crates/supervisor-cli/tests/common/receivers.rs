//! Real receivers for the observability tests: Arize Phoenix (OTLP traces) and Prometheus
//! (scrapes `/metrics`), each a child process on free loopback ports, killed when dropped.
//! `scripts/obs-env` installs both; without them these helpers panic, so tests fail rather
//! than skip.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

/// The workspace's `target/obs-venv`, where `scripts/obs-env` installs Phoenix.
pub fn obs_venv() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/obs-venv")
}

/// A span as Phoenix stored it. Phoenix keeps no resource attributes (so no `service.name`)
/// and no OTel span kind; the project is the resource's `openinference.project.name`, or
/// `default` without one.
#[derive(Clone, Debug)]
pub struct Span {
    pub project: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_id: Option<String>,
    pub name: String,
    /// `OK`, `ERROR` or `UNSET`.
    pub status_code: String,
    pub attributes: Map<String, Value>,
    /// The span as Phoenix's REST API returned it (times, events, status message...).
    pub raw: Value,
}

/// Arize Phoenix serving on free loopback ports, over a fresh SQLite database in a tempdir.
pub struct Phoenix {
    child: Child,
    http: String,
    grpc: String,
    dir: tempfile::TempDir,
}

impl Phoenix {
    /// Starts Phoenix from `target/obs-venv` and waits until it answers.
    pub fn start() -> Phoenix {
        let bin = obs_venv().join("bin/phoenix");
        assert!(
            bin.exists(),
            "Arize Phoenix is not installed at {}: run scripts/obs-env",
            bin.display()
        );
        let dir = tempfile::tempdir().expect("tempdir for Phoenix");
        let (http, grpc) = (free_addr(), free_addr());
        let log = std::fs::File::create(dir.path().join("phoenix.log")).expect("Phoenix log");
        let mut cmd = Command::new(&bin);
        // Phoenix reads its settings from PHOENIX_* (and OTEL_*) variables: none inherited.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy();
            if k.starts_with("PHOENIX_") || k.starts_with("OTEL_") {
                cmd.env_remove(&*k);
            }
        }
        let child = cmd
            .arg("serve")
            .current_dir(dir.path())
            .env("PHOENIX_HOST", "127.0.0.1")
            .env("PHOENIX_PORT", port_of(&http))
            // Phoenix binds its gRPC port on all interfaces ([::]); nothing sends there but us.
            .env("PHOENIX_GRPC_PORT", port_of(&grpc))
            .env("PHOENIX_WORKING_DIR", dir.path())
            .env("PHOENIX_TELEMETRY_ENABLED", "false")
            .env("PHOENIX_ALLOW_EXTERNAL_RESOURCES", "false")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("Phoenix log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (run scripts/obs-env)", bin.display()));
        let mut phoenix = Phoenix {
            child,
            http,
            grpc,
            dir,
        };
        let log = phoenix.dir.path().join("phoenix.log");
        let (http, grpc) = (&phoenix.http, &phoenix.grpc);
        wait_ready("Phoenix", &mut phoenix.child, &log, 120, || {
            answers(http, "/readyz") && TcpStream::connect(grpc).is_ok()
        });
        phoenix
    }

    /// Where to export OTLP over gRPC: `http://127.0.0.1:PORT`.
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Where to export OTLP over HTTP (protobuf, at `/v1/traces`): `http://127.0.0.1:PORT`.
    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Every span Phoenix holds, in all its projects.
    pub fn spans(&self) -> Vec<Span> {
        let mut spans = Vec::new();
        for project in self.get_all("/v1/projects?limit=100") {
            let (Some(id), Some(name)) = (project["id"].as_str(), project["name"].as_str()) else {
                panic!("Phoenix listed a project without id or name: {project}");
            };
            let path = format!("/v1/projects/{}/spans?limit=1000", encode(id));
            for raw in self.get_all(&path) {
                let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
                spans.push(Span {
                    project: name.to_string(),
                    trace_id: text(&raw["context"]["trace_id"]),
                    span_id: text(&raw["context"]["span_id"]),
                    parent_id: raw["parent_id"].as_str().map(str::to_string),
                    name: text(&raw["name"]),
                    status_code: text(&raw["status_code"]),
                    attributes: raw["attributes"].as_object().cloned().unwrap_or_default(),
                    raw,
                });
            }
        }
        spans
    }

    /// Polls [`Phoenix::spans`] until `pred` holds for them, and returns them; panics after
    /// `timeout` with the spans seen last.
    pub fn wait_for_spans(&self, pred: impl Fn(&[Span]) -> bool, timeout: Duration) -> Vec<Span> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return spans;
            }
            if Instant::now() > deadline {
                let names: Vec<_> = spans.iter().map(|s| (&s.project, &s.name)).collect();
                panic!("spans not as expected within {timeout:?}; (project, name): {names:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// GETs a paginated Phoenix list (`{"data": [...], "next_cursor": ...}`) in full.
    fn get_all(&self, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page_path = match &cursor {
                Some(c) => format!("{path}&cursor={}", encode(c)),
                None => path.to_string(),
            };
            let page = get_json(&self.http, &page_path);
            if let Some(data) = page["data"].as_array() {
                items.extend(data.iter().cloned());
            }
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return items,
            }
        }
    }
}

impl Drop for Phoenix {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Labels of a Prometheus series.
pub type Labels = BTreeMap<String, String>;

/// Prometheus scraping `targets` every second as job `supervisor`, on a free loopback port.
pub struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Writes the scrape config for `targets` (`host:port`, an `http://` prefix is dropped),
    /// checks it with promtool, starts Prometheus and waits until it is ready.
    pub fn start(targets: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir for Prometheus");
        let targets: Vec<&str> = targets
            .iter()
            .map(|t| t.trim_start_matches("http://"))
            .collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: supervisor\n    metrics_path: /metrics\n    \
                 static_configs:\n      - targets: {}\n",
                serde_json::to_string(&targets).expect("targets as YAML")
            ),
        )
        .expect("write the Prometheus config");
        let check = Command::new("promtool")
            .args(["check", "config"])
            .arg(&config)
            .output()
            .unwrap_or_else(|e| panic!("run promtool: {e} (run scripts/obs-env)"));
        assert!(
            check.status.success(),
            "promtool check config failed: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let addr = free_addr();
        let log_path = dir.path().join("prometheus.log");
        let log = std::fs::File::create(&log_path).expect("Prometheus log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("Prometheus log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start prometheus: {e} (run scripts/obs-env)"));
        let mut prometheus = Prometheus { child, addr, dir };
        let addr = &prometheus.addr;
        wait_ready("Prometheus", &mut prometheus.child, &log_path, 60, || {
            answers(addr, "/-/ready")
        });
        prometheus
    }

    /// `127.0.0.1:PORT` of Prometheus itself.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Evaluates `promql` now (an instant query): each series' labels and value. A scalar
    /// comes back as one value without labels.
    pub fn query(&self, promql: &str) -> Vec<(Labels, f64)> {
        let body = get_json(
            &self.addr,
            &format!("/api/v1/query?query={}", encode(promql)),
        );
        assert_eq!(body["status"], "success", "query {promql}: {body}");
        let sample = |v: &Value| -> f64 {
            v[1].as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("query {promql}: a sample that is no number: {v}"))
        };
        let result = &body["data"]["result"];
        match body["data"]["resultType"].as_str() {
            Some("vector") => result
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect();
                    (labels, sample(&s["value"]))
                })
                .collect(),
            Some("scalar") => vec![(Labels::new(), sample(result))],
            _ => panic!("query {promql}: neither a vector nor a scalar: {body}"),
        }
    }

    /// Polls [`Prometheus::query`] until `pred` holds for its result, and returns it; panics
    /// after `timeout` with the last result.
    pub fn wait_until(
        &self,
        promql: &str,
        pred: impl Fn(&[(Labels, f64)]) -> bool,
        timeout: Duration,
    ) -> Vec<(Labels, f64)> {
        let deadline = Instant::now() + timeout;
        loop {
            let result = self.query(promql);
            if pred(&result) {
                return result;
            }
            assert!(
                Instant::now() < deadline,
                "{promql} not as expected within {timeout:?}; last: {result:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback address with a port free right now.
fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").to_string()
}

fn port_of(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or(addr)
}

/// Polls `ready` until it holds; panics with the log's tail if the child exits or `secs`
/// pass first.
fn wait_ready(what: &str, child: &mut Child, log: &Path, secs: u64, ready: impl Fn() -> bool) {
    let timeout = Duration::from_secs(secs);
    let deadline = Instant::now() + timeout;
    while !ready() {
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{what} not ready within {timeout:?} (exit: {exited:?}); its log ends:\n{}",
                tail.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether `GET path` on `addr` answers 200.
fn answers(addr: &str, path: &str) -> bool {
    matches!(http_request("GET", addr, path, None), Ok((200, _)))
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GETs `path` from `addr` and parses the JSON body; panics unless the answer is 200.
fn get_json(addr: &str, path: &str) -> Value {
    let (status, body) =
        http_request("GET", addr, path, None).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}"));
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "GET {addr}{path}: {text}");
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("GET {addr}{path}: {e}: {text}"))
}

/// A minimal blocking HTTP/1.1 request (one per connection): returns status and body,
/// decoding a chunked body. `body` is (content type, bytes).
pub fn http_request(
    method: &str,
    addr: &str,
    path: &str,
    body: Option<(&str, &[u8])>,
) -> std::io::Result<(u16, Vec<u8>)> {
    http_exchange(method, addr, path, &[], body).map(|a| (a.status, a.body))
}

/// An HTTP answer: status, headers (names in lower case) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case, in order.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpAnswer {
    /// The first header named `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Like [`http_request`], with extra request headers, answering the headers too.
pub fn http_exchange(
    method: &str,
    addr: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> std::io::Result<HttpAnswer> {
    use std::io::{Error, ErrorKind};
    let bad = |what: &str| Error::new(ErrorKind::InvalidData, format!("HTTP answer: {what}"));
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request += &format!("Host: {addr}\r\n");
    }
    for (name, value) in headers {
        request += &format!("{name}: {value}\r\n");
    }
    if let Some((content_type, bytes)) = body {
        request += &format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
            bytes.len()
        );
    }
    request += "\r\n";
    stream.write_all(request.as_bytes())?;
    if let Some((_, bytes)) = body {
        stream.write_all(bytes)?;
    }
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let end = find(&answer, b"\r\n\r\n").ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let mut rest = &answer[end + 4..];
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let headers: Vec<(String, String)> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = find(rest, b"\r\n").ok_or_else(|| bad("truncated chunk"))?;
            let size = String::from_utf8_lossy(&rest[..line_end]);
            let size = size.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16).map_err(|_| bad("chunk size"))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break body;
            }
            let chunk = rest.get(..size).ok_or_else(|| bad("truncated chunk"))?;
            body.extend_from_slice(chunk);
            rest = rest.get(size + 2..).ok_or_else(|| bad("truncated chunk"))?;
        }
    } else {
        match header("content-length") {
            Some(len) => {
                let len: usize = len.parse().map_err(|_| bad("content-length"))?;
                rest.get(..len)
                    .ok_or_else(|| bad("truncated body"))?
                    .to_vec()
            }
            None => rest.to_vec(),
        }
    };
    Ok(HttpAnswer {
        status,
        headers,
        body,
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
