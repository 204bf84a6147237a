//! The load generator: a steady rate of submits spread over the nodes.
//!
//! Submit `k` goes first to node `k mod n`. Every submit carries an idempotency key, so a
//! submit whose outcome is unknown (the node died mid-call, or froze and the call timed
//! out) is sent again to the next node without creating a second task. A task counts as
//! *accepted* when a submit call returned its id; the audit then holds the cluster to it.
//! Submits run concurrently (one tokio task each), so a frozen node delays only the
//! submits that were sent to it, by one call timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use supervisor_client::v1::{SubmitTaskRequest, TaskType};
use supervisor_client::{Client, ClientError};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::now_micros;

/// How the load is shaped.
#[derive(Debug, Clone)]
pub struct LoadSettings {
    /// Submits per second, all nodes together.
    pub rate: f64,
    /// Longest wait for one submit call before trying the next node.
    pub call_timeout: Duration,
    /// Longest a submit keeps trying (over every node) before it is given up.
    pub give_up_after: Duration,
    /// Prefix of the idempotency keys (unique per run).
    pub key_prefix: String,
    /// Attempts each task may take (a killed node's attempt does not count, but a task
    /// abandoned by its nodes more than three times per allowed attempt fails).
    pub max_attempts: u32,
    /// Once the load is stopped, a submit in flight makes no further tries (its current
    /// call still gets its answer): a flood ends when its offering ends, not up to
    /// `give_up_after` later. Off, submits keep trying, so that a fault's last submits
    /// still land.
    pub stop_retrying_when_stopped: bool,
}

/// A task the cluster accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The idempotency key it was submitted with.
    pub key: String,
    /// The task id the cluster returned.
    pub id: String,
    /// When the first submit call went out (unix microseconds).
    pub first_try_at: i64,
    /// Calls it took (more than one when a node failed to answer).
    pub calls: u32,
}

/// A submit that never got an answer with a task id.
#[derive(Debug, Clone)]
pub struct GivenUp {
    /// Its idempotency key.
    pub key: String,
    /// The last error seen.
    pub last_error: String,
}

/// What the load generator did.
#[derive(Debug, Default, Clone)]
pub struct LoadReport {
    /// Tasks accepted, in submit order.
    pub accepted: Vec<Accepted>,
    /// Submits never accepted.
    pub given_up: Vec<GivenUp>,
    /// Calls that failed or timed out and were sent again elsewhere.
    pub resent: u64,
    /// Calls refused for overload (`RESOURCE_EXHAUSTED`) and sent again after a pause.
    pub refused: u64,
    /// When the first submit went out and when the generator stopped (unix microseconds).
    pub started_at: i64,
    /// See `started_at`.
    pub stopped_at: i64,
}

/// The current gRPC addresses of the nodes (a restarted node gets a new port).
#[derive(Default)]
pub struct Targets {
    addrs: Mutex<Vec<String>>,
    clients: Mutex<HashMap<String, Client>>,
}

impl Targets {
    /// Targets at `addrs` (`host:port`), in node order.
    pub fn new(addrs: Vec<String>) -> Arc<Targets> {
        Arc::new(Targets {
            addrs: Mutex::new(addrs),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Points node `i` at a new address.
    pub fn set(&self, i: usize, addr: String) {
        if let Ok(mut addrs) = self.addrs.lock()
            && let Some(slot) = addrs.get_mut(i)
        {
            *slot = addr;
        }
    }

    fn count(&self) -> usize {
        self.addrs.lock().map(|a| a.len()).unwrap_or(0)
    }

    /// A client for node `i` (connected lazily: creating one never blocks).
    fn client(&self, i: usize) -> Result<Client, String> {
        let addr = {
            let addrs = self.addrs.lock().map_err(|_| "targets lock poisoned")?;
            addrs
                .get(i % addrs.len().max(1))
                .cloned()
                .ok_or("no nodes to send to")?
        };
        let mut clients = self.clients.lock().map_err(|_| "clients lock poisoned")?;
        if let Some(client) = clients.get(&addr) {
            return Ok(client.clone());
        }
        let uri = format!("http://{addr}");
        let channel = Endpoint::from_shared(uri.clone())
            .map_err(|e| format!("bad node address {uri}: {e}"))?
            .connect_timeout(Duration::from_secs(1))
            .connect_lazy();
        let client = Client::from_channel(channel, uri);
        clients.insert(addr, client.clone());
        Ok(client)
    }
}

/// A running load generator.
pub struct Load {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<LoadReport>,
    accepted_count: Arc<AtomicU64>,
}

impl Load {
    /// Starts submitting at `settings.rate` to `targets`.
    pub fn start(settings: LoadSettings, targets: Arc<Targets>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let accepted_count = Arc::new(AtomicU64::new(0));
        let handle = tokio::spawn(generate(
            settings,
            targets,
            stop.clone(),
            accepted_count.clone(),
        ));
        Load {
            stop,
            handle,
            accepted_count,
        }
    }

    /// Tasks accepted so far.
    pub fn accepted_so_far(&self) -> u64 {
        self.accepted_count.load(Ordering::Relaxed)
    }

    /// Stops submitting, waits for the submits in flight, and reports.
    pub async fn finish(self) -> anyhow::Result<LoadReport> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.handle.await?)
    }
}

enum Submit {
    Accepted(Accepted),
    GivenUp(GivenUp),
}

async fn generate(
    settings: LoadSettings,
    targets: Arc<Targets>,
    stop: Arc<AtomicBool>,
    accepted_count: Arc<AtomicU64>,
) -> LoadReport {
    let interval = Duration::from_secs_f64(1.0 / settings.rate.max(0.001));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let resent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let mut pending: Vec<JoinHandle<Submit>> = Vec::new();
    let started_at = now_micros();
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        ticker.tick().await;
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = format!("{}-{seq}", settings.key_prefix);
        let first = usize::try_from(seq).unwrap_or(0);
        pending.push(tokio::spawn(submit_one(
            settings.clone(),
            targets.clone(),
            (key, first),
            (resent.clone(), refused.clone()),
            (accepted_count.clone(), stop.clone()),
        )));
        seq += 1;
    }
    let stopped_at = now_micros();
    let mut report = LoadReport {
        started_at,
        stopped_at,
        ..LoadReport::default()
    };
    for handle in pending {
        match handle.await {
            Ok(Submit::Accepted(a)) => report.accepted.push(a),
            Ok(Submit::GivenUp(g)) => report.given_up.push(g),
            Err(err) => report.given_up.push(GivenUp {
                key: String::new(),
                last_error: format!("the submit task failed: {err}"),
            }),
        }
    }
    report.resent = resent.load(Ordering::Relaxed);
    report.refused = refused.load(Ordering::Relaxed);
    report
}

/// Errors that resending cannot fix.
fn is_permanent(err: &ClientError) -> bool {
    matches!(
        err.code(),
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::PermissionDenied
            | Code::Unauthenticated
            | Code::OutOfRange
            | Code::Unimplemented
    )
}

async fn submit_one(
    settings: LoadSettings,
    targets: Arc<Targets>,
    (key, first): (String, usize),
    (resent, refused): (Arc<AtomicU64>, Arc<AtomicU64>),
    (accepted_count, stop): (Arc<AtomicU64>, Arc<AtomicBool>),
) -> Submit {
    let request = SubmitTaskRequest {
        r#type: TaskType::CodeAnalysis as i32,
        prompt: format!("chaos load task {key}"),
        labels: vec!["chaos".into()],
        idempotency_key: key.clone(),
        max_attempts: settings.max_attempts,
        ..SubmitTaskRequest::default()
    };
    let first_try_at = now_micros();
    let deadline = tokio::time::Instant::now() + settings.give_up_after;
    let mut calls = 0u32;
    let mut last_error = String::new();
    let mut node = first;
    while tokio::time::Instant::now() < deadline {
        if calls > 0 && settings.stop_retrying_when_stopped && stop.load(Ordering::Relaxed) {
            return Submit::GivenUp(GivenUp {
                key,
                last_error: format!("the load stopped; last try: {last_error}"),
            });
        }
        calls += 1;
        let outcome = match targets.client(node) {
            Ok(client) => {
                match tokio::time::timeout(settings.call_timeout, client.submit(request.clone()))
                    .await
                {
                    Ok(Ok(task)) => Ok(task),
                    Ok(Err(err)) => Err(err),
                    Err(_) => Err(ClientError::Status {
                        code: Code::DeadlineExceeded,
                        message: format!("no answer within {:?}", settings.call_timeout),
                    }),
                }
            }
            Err(err) => Err(ClientError::Protocol(err)),
        };
        match outcome {
            Ok(task) => {
                accepted_count.fetch_add(1, Ordering::Relaxed);
                return Submit::Accepted(Accepted {
                    key,
                    id: task.id,
                    first_try_at,
                    calls,
                });
            }
            Err(err) if err.code() == Code::ResourceExhausted => {
                // Admission control: come back after the pause it asks for (1 s by
                // default), to the same node.
                last_error = err.to_string();
                refused.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) if is_permanent(&err) => {
                return Submit::GivenUp(GivenUp {
                    key,
                    last_error: err.to_string(),
                });
            }
            Err(err) => {
                last_error = err.to_string();
                resent.fetch_add(1, Ordering::Relaxed);
                node += 1;
                if node % targets.count().max(1) == first % targets.count().max(1) {
                    // Every node failed once: the store itself may be away; pause.
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
    Submit::GivenUp(GivenUp { key, last_error })
}
