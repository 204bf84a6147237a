//! Providers on other nodes, seen from this one.
//!
//! Every provider actor joins the process group `provider:<name>`; ractor_cluster mirrors
//! the groups of every connected node, so this node sees the other nodes' provider actors
//! as remote members. The [`RemoteDirectory`] asks each one once what it can do
//! ([`ProviderMsg::Describe`]) and wraps it as a [`RemoteProvider`] behind an ordinary
//! [`ProviderHandle`], so the router and the agent treat it like a local provider: same
//! admission, slots, reports, events and finish.
//!
//! A remote call carries the attempt's time limit plus [`CALL_MARGIN`]. When the other
//! node vanishes mid-call (session closed, actor gone, no answer in time) the attempt
//! fails with a retryable `unavailable` error that names the node, and the engine retries
//! it, on another provider when one can serve it. Output is not streamed across nodes:
//! it arrives whole with the outcome, and is then written to the task's events as one
//! piece.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorCell, ActorId, ActorRef, ActorStatus};
use supervisor_providers::config::Limits;
use supervisor_providers::{
    Capabilities, EventSink, Health, Provider, ProviderError, ProviderEvent, ProviderOutput,
    ProviderRequest,
};
use tokio::sync::watch;

use super::links::NodeName;
use crate::clock::Clock;
use crate::provider_actor::ProviderMsg;
use crate::routing::{ProviderHandle, RemoteProviders, SeenProvider};
use crate::wire::{self, WireDescription};

/// Added to an attempt's time limit for a remote call: the network, and the other node's
/// own timeout firing first.
pub const CALL_MARGIN: Duration = Duration::from_secs(5);

/// Longest wait for a provider's description.
pub const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A provider actor on another node, as a [`Provider`].
pub struct RemoteProvider {
    name: String,
    node: NodeName,
    remote_kind: String,
    capabilities: Capabilities,
    actor: ActorRef<ProviderMsg>,
}

impl RemoteProvider {
    fn unavailable(&self, what: String) -> ProviderError {
        ProviderError::Retryable {
            kind: "unavailable",
            message: format!(
                "provider {} on node {} (epoch {}): {what}",
                self.name, self.node.id, self.node.epoch
            ),
            retry_after: None,
        }
    }
}

#[async_trait::async_trait]
impl Provider for RemoteProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "remote"
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }

    async fn execute(
        &self,
        request: ProviderRequest,
        sink: EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        let limit = request.timeout + CALL_MARGIN;
        let bytes = wire::encode_request(&request);
        sink.send(ProviderEvent::Activity(format!(
            "running on node {} (provider {} there is {})",
            self.node.id, self.name, self.remote_kind
        )));
        let answer = self
            .actor
            .call(|reply| ProviderMsg::Execute(bytes, reply), Some(limit))
            .await;
        match answer {
            Ok(CallResult::Success(bytes)) => match wire::decode_outcome(&bytes) {
                Ok((Ok(out), _)) => {
                    if !out.output.is_empty() {
                        sink.send(ProviderEvent::Output(out.output.clone()));
                    }
                    Ok(out)
                }
                Ok((Err(err), spent)) => {
                    // The other node's provider spent this before failing: charge it here.
                    sink.send(ProviderEvent::Usage {
                        usage: spent.usage,
                        cost_micros: spent.cost_micros,
                    });
                    Err(err)
                }
                Err(err) => Err(self.unavailable(err.to_string())),
            },
            Ok(CallResult::Timeout) => Err(self.unavailable(format!(
                "no answer within {limit:?} (the attempt's limit plus {CALL_MARGIN:?})"
            ))),
            Ok(CallResult::SenderError) => Err(self.unavailable(
                "the node went away mid-call (its session closed before it answered)".into(),
            )),
            Err(err) => Err(self.unavailable(format!(
                "its actor cannot be reached ({err}); the node left or restarted"
            ))),
        }
    }

    async fn health(&self) -> Health {
        let up = !matches!(
            self.actor.get_status(),
            ActorStatus::Stopping | ActorStatus::Stopped
        );
        Health {
            healthy: up,
            detail: if up {
                format!("reachable on node {}", self.node.id)
            } else {
                format!("node {} is not connected", self.node.id)
            },
        }
    }

    fn estimate_cost(&self, _request: &ProviderRequest) -> u64 {
        // The price table lives on the node that runs the provider; the real cost comes
        // back with the outcome and is charged then.
        0
    }
}

/// A provider on another node, as the crate's cluster tests inspect it.
#[cfg(any(test, feature = "internals"))]
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteProviderInfo {
    /// The provider's name.
    pub name: String,
    /// The node it runs on.
    pub node_id: String,
    /// That node's epoch.
    pub epoch: u64,
    /// Its implementation there.
    pub kind: String,
}

struct Entry {
    cell: ActorCell,
    provider: Arc<RemoteProvider>,
    handle: Arc<ProviderHandle>,
}

/// Every provider this node can reach on other nodes, keyed by the remote actor, and
/// every provider it has seen there since it started (so a task whose only provider is
/// on a node that is restarting waits and retries instead of failing for good).
pub struct RemoteDirectory {
    entries: Mutex<BTreeMap<ActorId, Entry>>,
    seen: Mutex<BTreeMap<String, SeenProvider>>,
    changes: watch::Sender<u64>,
    clock: Clock,
}

impl RemoteDirectory {
    /// An empty directory whose providers' limits are timed on `clock`.
    pub fn new(clock: Clock) -> RemoteDirectory {
        RemoteDirectory {
            entries: Mutex::new(BTreeMap::new()),
            seen: Mutex::new(BTreeMap::new()),
            changes: watch::channel(0).0,
            clock,
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<ActorId, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles of the remote providers that are reachable now, in a stable order
    /// (provider name, then node).
    pub fn handles(&self) -> Vec<Arc<ProviderHandle>> {
        let mut v: Vec<(String, String, Arc<ProviderHandle>)> = self
            .entries()
            .values()
            .filter(|e| {
                !matches!(
                    e.cell.get_status(),
                    ActorStatus::Stopping | ActorStatus::Stopped
                )
            })
            .map(|e| {
                (
                    e.provider.name.clone(),
                    e.provider.node.id.clone(),
                    e.handle.clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        v.into_iter().map(|(_, _, h)| h).collect()
    }

    /// What is reachable.
    #[cfg(any(test, feature = "internals"))]
    pub fn list(&self) -> Vec<RemoteProviderInfo> {
        let mut v: Vec<RemoteProviderInfo> = self
            .entries()
            .values()
            .map(|e| RemoteProviderInfo {
                name: e.provider.name.clone(),
                node_id: e.provider.node.id.clone(),
                epoch: e.provider.node.epoch,
                kind: e.provider.remote_kind.clone(),
            })
            .collect();
        v.sort_by(|a, b| (&a.name, &a.node_id).cmp(&(&b.name, &b.node_id)));
        v
    }

    /// Providers seen on other nodes that are not reachable now.
    pub fn unreachable(&self) -> Vec<SeenProvider> {
        let live: std::collections::BTreeSet<String> =
            self.handles().into_iter().map(|h| h.name.clone()).collect();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|s| !live.contains(&s.name))
            .cloned()
            .collect()
    }

    pub(crate) fn knows(&self, id: &ActorId) -> bool {
        self.entries().contains_key(id)
    }

    pub(crate) fn insert(&self, cell: ActorCell, node: NodeName, d: WireDescription) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(
            d.name.clone(),
            SeenProvider {
                name: d.name.clone(),
                node_id: node.id.clone(),
                task_types: d.task_types.clone(),
                repository: d.repository,
            },
        );
        let capabilities = Capabilities {
            task_types: d.task_types,
            models: d.models,
            max_context_tokens: d.max_context_tokens,
            streaming: false,
            tools: d.tools,
            repository: d.repository,
        };
        let provider = Arc::new(RemoteProvider {
            name: d.name,
            node: node.clone(),
            remote_kind: d.kind,
            capabilities,
            actor: ActorRef::from(cell.clone()),
        });
        let handle = Arc::new(ProviderHandle::new_remote(
            provider.clone(),
            d.max_concurrency,
            Limits::default(),
            self.changes.clone(),
            node.id,
            self.clock.clone(),
        ));
        tracing::info!(provider = %provider.name, node = %provider.node.id, kind = %provider.remote_kind, "provider on another node is reachable");
        self.entries().insert(
            cell.get_id(),
            Entry {
                cell,
                provider,
                handle,
            },
        );
    }

    /// Keeps only the entries `keep` says yes to.
    pub(crate) fn retain(&self, mut keep: impl FnMut(&ActorId, &NodeName) -> bool) {
        self.entries().retain(|id, e| {
            let kept = keep(id, &e.provider.node);
            if !kept {
                tracing::info!(provider = %e.provider.name, node = %e.provider.node.id, "provider on another node is no longer reachable");
            }
            kept
        });
    }

    pub(crate) fn clear(&self) {
        self.entries().clear();
    }
}

impl RemoteProviders for RemoteDirectory {
    fn handles(&self) -> Vec<Arc<ProviderHandle>> {
        RemoteDirectory::handles(self)
    }

    fn unreachable(&self) -> Vec<SeenProvider> {
        RemoteDirectory::unreachable(self)
    }
}

/// Asks a remote provider actor to describe itself.
pub(crate) async fn describe(cell: &ActorCell) -> Result<WireDescription, String> {
    let actor: ActorRef<ProviderMsg> = ActorRef::from(cell.clone());
    match actor
        .call(ProviderMsg::Describe, Some(DESCRIBE_TIMEOUT))
        .await
    {
        Ok(CallResult::Success(bytes)) => {
            wire::decode_description(&bytes).map_err(|e| e.to_string())
        }
        Ok(CallResult::Timeout) => Err(format!("no description within {DESCRIBE_TIMEOUT:?}")),
        Ok(CallResult::SenderError) => Err("the session closed before it answered".into()),
        Err(e) => Err(format!("could not ask: {e}")),
    }
}
