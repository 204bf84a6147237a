//! Providers in another process or language: the node calls a plugin's
//! `supervisor.plugin.v1.ProviderPlugin` service over gRPC (proto/supervisor/plugin/v1),
//! either one it starts and supervises ([`process`]) or one already running. Everything
//! the plugin sends is checked before it is used: sizes are bounded, a stream must end
//! with exactly one result or failure, unknown task types are refused.
//!
//! [`conformance`] is the suite a plugin can run against itself
//! (`supervisor plugin check`).

pub mod conformance;
mod process;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use supervisor_model::{TaskType, Usage};
use supervisor_proto::plugin::v1 as wire;
use supervisor_proto::plugin::v1::provider_plugin_client::ProviderPluginClient;
use tonic::transport::{Channel, Endpoint};

pub use process::LISTEN_VAR;

use crate::config::{BuildContext, PluginConfig};
use crate::pricing::PriceTable;
use crate::{
    Artifact, Capabilities, EventSink, Health, Provider, ProviderError, ProviderEvent,
    ProviderOutput, ProviderRequest,
};

/// Largest message the node accepts from a plugin (an event or a result).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most artifacts one result may carry.
const MAX_ARTIFACTS: usize = 64;

/// Most events one execution may send (output pieces, activity lines, usage updates).
const MAX_EVENTS: u64 = 200_000;

/// Largest token count or cost (in micro-dollars) taken from a plugin: a trillion. Larger
/// values are a broken or hostile plugin, not usage.
const MAX_REPORTED: u64 = 1_000_000_000_000;

/// Builds the plugin provider `name`.
pub fn build(
    name: &str,
    cfg: &PluginConfig,
    prices: Arc<PriceTable>,
    _ctx: &BuildContext,
) -> Result<Arc<dyn Provider>, String> {
    cfg.validate(name)?;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(format!(
            "provider {name}: a plugin provider is built from within the node's runtime"
        ));
    }
    let target = match &cfg.address {
        Some(address) => {
            let channel = endpoint(address, cfg.call_timeout)
                .map_err(|e| format!("providers.{name}.address {address:?}: {e}"))?
                .connect_lazy();
            Target::Remote {
                address: address.clone(),
                channel,
            }
        }
        None => Target::Started(process::PluginProcess::start(name, cfg)?),
    };
    let provider = PluginProvider {
        name: name.to_string(),
        cfg: cfg.clone(),
        prices,
        target,
        capabilities: RwLock::new(None),
        executions: AtomicU64::new(0),
    };
    provider.learn_capabilities_at_start();
    Ok(Arc::new(provider))
}

/// The endpoint of a plugin: HTTP/2 keep-alive pings, so that a plugin that vanished
/// ends its calls instead of leaving them to the attempt's timeout.
pub(crate) fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, String> {
    Ok(Endpoint::from_shared(address.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

enum Target {
    /// A plugin someone else runs.
    Remote { address: String, channel: Channel },
    /// A plugin this node runs.
    Started(process::PluginProcess),
}

/// A provider served by a plugin. Build it with [`build`].
pub struct PluginProvider {
    name: String,
    cfg: PluginConfig,
    prices: Arc<PriceTable>,
    target: Target,
    /// What the plugin said it can do when the node started (routing uses these for the
    /// node's lifetime), and its description.
    capabilities: RwLock<Option<(Capabilities, String)>>,
    executions: AtomicU64,
}

impl std::fmt::Debug for PluginProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginProvider")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Capabilities before the plugin has said: every task type, nothing else claimed.
fn assumed_capabilities() -> Capabilities {
    Capabilities {
        task_types: TaskType::ALL.to_vec(),
        models: Vec::new(),
        max_context_tokens: 0,
        streaming: true,
        tools: false,
        repository: false,
    }
}

/// Checks and converts what GetCapabilities answered.
fn capabilities_in(c: wire::Capabilities) -> Result<(Capabilities, String), String> {
    let mut task_types = Vec::new();
    for t in &c.task_types {
        match t.parse::<TaskType>() {
            Ok(parsed) if !task_types.contains(&parsed) => task_types.push(parsed),
            Ok(_) => {}
            // A newer plugin may know types this node does not: those are not routed to it.
            Err(_) => {
                tracing::warn!(task_type = %t, "the plugin names a task type this node does not know; ignored")
            }
        }
    }
    if c.task_types.is_empty() {
        task_types = TaskType::ALL.to_vec();
    } else if task_types.is_empty() {
        return Err(format!(
            "the plugin serves no task type this node knows ({:?}); the types are {}",
            c.task_types,
            TaskType::ALL
                .iter()
                .map(|t| t.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    task_types.sort_by_key(|t| t.as_str());
    if let Some(bad) = c.models.iter().find(|m| m.is_empty() || m.len() > 200) {
        return Err(format!(
            "the plugin names the model {bad:?}: model names are 1 to 200 bytes"
        ));
    }
    Ok((
        Capabilities {
            task_types,
            models: c.models,
            max_context_tokens: c.max_context_tokens,
            streaming: c.streaming,
            tools: c.tools,
            repository: false,
        },
        c.description.chars().take(200).collect(),
    ))
}

impl PluginProvider {
    /// A client on the current channel, or why there is none.
    async fn client(&self) -> Result<ProviderPluginClient<Channel>, String> {
        let channel = match &self.target {
            Target::Remote { channel, .. } => channel.clone(),
            Target::Started(process) => match process.channel(self.cfg.call_timeout).await {
                Some(channel) => channel,
                None => {
                    let r = process.running();
                    return Err(format!(
                        "the plugin's process is not running ({}); the node restarts it",
                        r.last_exit.as_deref().unwrap_or("not started yet")
                    ));
                }
            },
        };
        Ok(ProviderPluginClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// Asks the plugin for its capabilities, waiting up to `start_timeout` for it to come
    /// up, when the node's runtime allows waiting here (a multi-threaded one); else, or
    /// when it does not answer, routing assumes every task type until the node restarts,
    /// and health says so.
    fn learn_capabilities_at_start(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if runtime.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return;
        }
        let deadline = tokio::time::Instant::now() + self.cfg.start_timeout;
        let learned = tokio::task::block_in_place(|| {
            runtime.block_on(async {
                loop {
                    match self.fetch_capabilities().await {
                        Ok(c) => return Ok(c),
                        Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                        Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            })
        });
        match learned {
            Ok(c) => {
                tracing::info!(provider = %self.name, description = %c.1, "plugin capabilities");
                if let Ok(mut slot) = self.capabilities.write() {
                    *slot = Some(c);
                }
            }
            Err(e) => tracing::warn!(
                provider = %self.name,
                error = %e,
                "the plugin did not say what it can do within start_timeout: routing assumes every task type until the node restarts"
            ),
        }
    }

    async fn fetch_capabilities(&self) -> Result<(Capabilities, String), String> {
        let mut client = self.client().await?;
        let answer = tokio::time::timeout(
            self.cfg.call_timeout,
            client.get_capabilities(wire::GetCapabilitiesRequest {}),
        )
        .await
        .map_err(|_| {
            format!(
                "GetCapabilities took longer than {:?}",
                self.cfg.call_timeout
            )
        })?
        .map_err(|s| format!("GetCapabilities failed: {}: {}", s.code(), s.message()))?;
        capabilities_in(answer.into_inner())
    }

    fn where_(&self) -> String {
        match &self.target {
            Target::Remote { address, .. } => format!("at {address}"),
            Target::Started(p) => {
                let r = p.running();
                match r.pid {
                    Some(pid) => {
                        format!("pid {pid} at {}, started {} time(s)", r.address, r.starts)
                    }
                    None => format!(
                        "not running ({}), started {} time(s)",
                        r.last_exit.as_deref().unwrap_or("starting"),
                        r.starts
                    ),
                }
            }
        }
    }

    /// Stops an execution the node gave up on (best effort: the call ends anyway).
    fn cancel_in_background(&self, execution_id: String) {
        let client = match &self.target {
            Target::Remote { channel, .. } => Some(channel.clone()),
            Target::Started(p) => p.running().channel,
        };
        let Some(channel) = client else {
            return;
        };
        let timeout = self.cfg.call_timeout;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let mut client = ProviderPluginClient::new(channel);
            let _ =
                tokio::time::timeout(timeout, client.cancel(wire::CancelRequest { execution_id }))
                    .await;
        });
    }
}

/// Cancels an execution when the attempt is dropped before the plugin finished it.
struct CancelOnDrop<'a> {
    provider: &'a PluginProvider,
    execution_id: String,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.provider
                .cancel_in_background(std::mem::take(&mut self.execution_id));
        }
    }
}

/// Tokens and cost as the plugin reported them, refused past [`MAX_REPORTED`].
fn usage_in(u: &wire::Usage) -> Result<(Usage, u64), ProviderError> {
    let all = [
        u.input_tokens,
        u.output_tokens,
        u.cache_read_tokens,
        u.cache_write_tokens,
        u.cost_micros,
    ];
    if all.iter().any(|v| *v > MAX_REPORTED) {
        return Err(ProviderError::Permanent {
            kind: "plugin_protocol",
            message: format!(
                "the plugin reported usage past {MAX_REPORTED} tokens or micro-dollars: {u:?}"
            ),
        });
    }
    Ok((
        Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            cache_read_tokens: u.cache_read_tokens,
            cache_write_tokens: u.cache_write_tokens,
        },
        u.cost_micros,
    ))
}

fn broken(message: String) -> ProviderError {
    ProviderError::Retryable {
        kind: "plugin_protocol",
        message,
        retry_after: None,
    }
}

#[async_trait::async_trait]
impl Provider for PluginProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "plugin"
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
            .read()
            .ok()
            .and_then(|c| c.as_ref().map(|(c, _)| c.clone()))
            .unwrap_or_else(assumed_capabilities)
    }

    async fn execute(
        &self,
        request: ProviderRequest,
        sink: EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        let mut client = self
            .client()
            .await
            .map_err(|message| ProviderError::Retryable {
                kind: "unavailable",
                message,
                retry_after: None,
            })?;
        let execution_id = format!(
            "{}-{}-{}",
            request.task_id,
            request.attempt,
            self.executions.fetch_add(1, Ordering::Relaxed)
        );
        let wire_request = wire::ExecuteRequest {
            execution_id: execution_id.clone(),
            task_id: request.task_id.clone(),
            attempt: request.attempt,
            task_type: request.task_type.as_str().to_string(),
            prompt: request.prompt.clone(),
            context: request.context.clone().into_iter().collect(),
            timeout_ms: request.timeout.as_millis().try_into().unwrap_or(u64::MAX),
            specialty: request.specialty.as_str().to_string(),
            system_prompt: request.system_prompt.clone(),
            allowed_tools: request.tools.allowed_tools.clone(),
        };
        let mut guard = CancelOnDrop {
            provider: self,
            execution_id,
            armed: true,
        };
        let mut call = tonic::Request::new(wire_request);
        call.set_timeout(request.timeout);
        let mut stream = client
            .execute(call)
            .await
            .map_err(|s| status_error("Execute", &s))?
            .into_inner();
        let limit = self.cfg.max_output_bytes;
        // Output and activity together: what the node stores and shows of the attempt.
        let mut streamed: u64 = 0;
        let mut events: u64 = 0;
        let mut last_usage: Option<(Usage, u64)> = None;
        while let Some(item) = stream.next().await {
            let event = item.map_err(|s| status_error("Execute", &s))?;
            events += 1;
            if events > MAX_EVENTS {
                return Err(ProviderError::Permanent {
                    kind: "plugin_protocol",
                    message: format!(
                        "the plugin sent more than {MAX_EVENTS} events for one execution"
                    ),
                });
            }
            let too_much = || ProviderError::Permanent {
                kind: "output_too_large",
                message: format!(
                    "the plugin streamed more than {limit} bytes of output and activity (max_output_bytes)"
                ),
            };
            match event.event {
                Some(wire::execute_event::Event::Output(text)) => {
                    streamed += text.len() as u64;
                    if streamed > limit {
                        return Err(too_much());
                    }
                    sink.send(ProviderEvent::Output(text));
                }
                Some(wire::execute_event::Event::Activity(line)) => {
                    let line: String = line.chars().take(1000).collect();
                    streamed += line.len() as u64;
                    if streamed > limit {
                        return Err(too_much());
                    }
                    sink.send(ProviderEvent::Activity(line.replace('\n', " ")));
                }
                Some(wire::execute_event::Event::Usage(u)) => {
                    let (usage, cost) = usage_in(&u)?;
                    let cost_micros = self.priced(&usage, cost, "");
                    last_usage = Some((usage, cost_micros));
                    sink.send(ProviderEvent::Usage { usage, cost_micros });
                }
                Some(wire::execute_event::Event::Result(result)) => {
                    guard.armed = false;
                    return self.result_in(result, limit, last_usage);
                }
                Some(wire::execute_event::Event::Failure(f)) => {
                    guard.armed = false;
                    let kind = "plugin_failure";
                    let message = format!(
                        "{}: {}",
                        f.kind.chars().take(64).collect::<String>(),
                        f.message.chars().take(2000).collect::<String>()
                    );
                    return Err(if f.retryable {
                        ProviderError::Retryable {
                            kind,
                            message,
                            retry_after: (f.retry_after_ms > 0)
                                .then(|| Duration::from_millis(f.retry_after_ms.min(3_600_000))),
                        }
                    } else {
                        ProviderError::Permanent { kind, message }
                    });
                }
                None => return Err(broken("the plugin sent an empty event".into())),
            }
        }
        guard.armed = false;
        Err(broken(
            "the plugin ended the execution without a result or a failure".into(),
        ))
    }

    async fn health(&self) -> Health {
        let place = self.where_();
        let mut client = match self.client().await {
            Ok(c) => c,
            Err(detail) => {
                return Health {
                    healthy: false,
                    detail: format!("{detail}; {place}"),
                };
            }
        };
        let answer =
            tokio::time::timeout(self.cfg.call_timeout, client.health(wire::HealthRequest {}))
                .await;
        let mut health = match answer {
            Err(_) => Health {
                healthy: false,
                detail: format!(
                    "the plugin did not answer Health within {:?}; {place}",
                    self.cfg.call_timeout
                ),
            },
            Ok(Err(s)) => Health {
                healthy: false,
                detail: format!("Health failed: {}: {}; {place}", s.code(), s.message()),
            },
            Ok(Ok(h)) => {
                let h = h.into_inner();
                Health {
                    healthy: h.healthy,
                    detail: format!(
                        "{}; {place}",
                        h.detail.chars().take(500).collect::<String>()
                    ),
                }
            }
        };
        // Capabilities are learned once; a plugin that came up late or changed says so.
        let known = self.capabilities.read().ok().and_then(|c| c.clone());
        if health.healthy {
            match (known, self.fetch_capabilities().await) {
                (None, _) => {
                    // Routing would assume every task type: keep work away instead.
                    health.healthy = false;
                    health.detail.push_str(
                        "; it did not say what it can do within start_timeout when the node started: restart the node once the plugin answers GetCapabilities",
                    );
                }
                (Some((before, _)), Ok((now, _))) if now != before => {
                    health.healthy = !before
                        .task_types
                        .iter()
                        .any(|t| !now.task_types.contains(t));
                    health.detail.push_str("; its capabilities changed since the node started: restart the node to route by them");
                }
                (Some((_, description)), Ok(_)) => {
                    if !description.is_empty() {
                        health.detail = format!("{description}; {}", health.detail);
                    }
                }
                (Some(_), Err(e)) => {
                    health.healthy = false;
                    health.detail.push_str(&format!("; {e}"));
                }
            }
        }
        health
    }

    fn estimate_cost(&self, request: &ProviderRequest) -> u64 {
        let model = self
            .capabilities()
            .models
            .first()
            .cloned()
            .unwrap_or_default();
        let usage = Usage {
            input_tokens: (request.prompt.len() / 4) as u64,
            output_tokens: 1024,
            ..Usage::default()
        };
        self.prices.cost_micros(&model, &usage).unwrap_or(0)
    }

    fn sandbox(&self) -> Option<String> {
        match &self.target {
            Target::Remote { .. } => None,
            Target::Started(p) => Some(format!("the plugin's process: {}", p.describe())),
        }
    }
}

impl PluginProvider {
    /// The cost of `usage`: what the plugin reported, or, when it reported none, what the
    /// price table says for `model` (or the plugin's first model), so that budgets count
    /// it like any provider's.
    fn priced(&self, usage: &Usage, reported: u64, model: &str) -> u64 {
        if reported > 0 {
            return reported;
        }
        let model = if model.is_empty() {
            self.capabilities()
                .models
                .first()
                .cloned()
                .unwrap_or_default()
        } else {
            model.to_string()
        };
        self.prices.cost_micros(&model, usage).unwrap_or(0)
    }

    fn result_in(
        &self,
        result: wire::Result,
        limit: u64,
        last_usage: Option<(Usage, u64)>,
    ) -> Result<ProviderOutput, ProviderError> {
        let too_large = |what: String| ProviderError::Permanent {
            kind: "output_too_large",
            message: format!("{what} is larger than {limit} bytes (max_output_bytes)"),
        };
        if result.output.len() as u64 > limit {
            return Err(too_large("the plugin's output".into()));
        }
        let refused = |message: String| ProviderError::Permanent {
            kind: "plugin_protocol",
            message,
        };
        if result.artifacts.len() > MAX_ARTIFACTS {
            return Err(refused(format!(
                "the plugin returned {} artifacts; at most {MAX_ARTIFACTS}",
                result.artifacts.len()
            )));
        }
        let mut artifacts: Vec<Artifact> = Vec::with_capacity(result.artifacts.len());
        for a in result.artifacts {
            if a.name.is_empty() || a.name.len() > 200 || a.name.contains(['/', '\0']) {
                return Err(refused(format!(
                    "the plugin returned an artifact named {:?}: names are 1 to 200 bytes without '/'",
                    a.name
                )));
            }
            if artifacts.iter().any(|b| b.name == a.name) {
                return Err(refused(format!(
                    "the plugin returned two artifacts named {:?}: names are unique",
                    a.name
                )));
            }
            if a.content.len() as u64 > limit {
                return Err(too_large(format!("artifact {}", a.name)));
            }
            artifacts.push(Artifact {
                name: a.name,
                media_type: if a.media_type.is_empty() {
                    "text/plain".into()
                } else {
                    a.media_type.chars().take(100).collect()
                },
                content: a.content,
            });
        }
        let model = if result.model.is_empty() {
            self.capabilities()
                .models
                .first()
                .cloned()
                .unwrap_or_else(|| self.name.clone())
        } else {
            result.model.chars().take(200).collect()
        };
        let (usage, cost_micros) = match result.usage {
            Some(u) => {
                let (usage, cost) = usage_in(&u)?;
                (usage, self.priced(&usage, cost, &model))
            }
            None => last_usage.unwrap_or_default(),
        };
        Ok(ProviderOutput {
            output: result.output,
            usage,
            cost_micros,
            model,
            artifacts,
        })
    }
}

/// A gRPC error of a plugin call as a provider error: transport-level trouble may pass,
/// a plugin that refuses the request will refuse it again.
fn status_error(call: &str, s: &tonic::Status) -> ProviderError {
    use tonic::Code;
    let message = format!(
        "{call}: {}: {}",
        s.code(),
        s.message().chars().take(2000).collect::<String>()
    );
    match s.code() {
        // What the docs tell plugins to answer for a task they do not serve: another
        // provider may take it.
        Code::InvalidArgument => ProviderError::Permanent {
            kind: "unsupported",
            message,
        },
        Code::Unimplemented
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::FailedPrecondition
        | Code::OutOfRange => ProviderError::Permanent {
            kind: "plugin_refused",
            message,
        },
        _ => ProviderError::Retryable {
            kind: "unavailable",
            message,
            retry_after: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(max_output_bytes: u64) -> PluginProvider {
        let cfg = PluginConfig {
            address: Some("http://127.0.0.1:9".into()),
            max_output_bytes,
            ..PluginConfig::default()
        };
        let channel = Endpoint::from_static("http://127.0.0.1:9").connect_lazy();
        PluginProvider {
            name: "p".into(),
            cfg,
            prices: Arc::new(PriceTable::default()),
            target: Target::Remote {
                address: "http://127.0.0.1:9".into(),
                channel,
            },
            capabilities: RwLock::new(None),
            executions: AtomicU64::new(0),
        }
    }

    fn artifact(name: &str, content: &str) -> wire::Artifact {
        wire::Artifact {
            name: name.into(),
            media_type: String::new(),
            content: content.into(),
        }
    }

    #[test]
    fn capabilities_are_checked() {
        let ok = capabilities_in(wire::Capabilities {
            task_types: vec!["bug_fix".into()],
            models: vec!["m".into()],
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(ok.0.task_types, vec![TaskType::BugFix]);
        let every = capabilities_in(wire::Capabilities::default()).expect("valid");
        assert_eq!(every.0.task_types.len(), TaskType::ALL.len());
        let err = capabilities_in(wire::Capabilities {
            task_types: vec!["poetry".into()],
            ..Default::default()
        })
        .expect_err("not a type");
        assert!(err.contains("\"poetry\""), "{err}");
    }

    #[tokio::test]
    async fn results_are_bounded_and_named_plainly() {
        let p = provider(10);
        let big = wire::Result {
            output: "x".repeat(11),
            ..Default::default()
        };
        let err = p.result_in(big, 10, None).expect_err("too large");
        assert!(!err.is_retryable());
        assert!(err.to_string().contains("max_output_bytes"), "{err}");
        let sneaky = wire::Result {
            output: "ok".into(),
            artifacts: vec![artifact("../../etc/passwd", "x")],
            ..Default::default()
        };
        assert!(p.result_in(sneaky, 10, None).is_err());
        let many = wire::Result {
            output: "ok".into(),
            artifacts: (0..=MAX_ARTIFACTS)
                .map(|i| artifact(&format!("a{i}"), ""))
                .collect(),
            ..Default::default()
        };
        assert!(p.result_in(many, 10, None).is_err());
        // Usage from the last update when the result has none; the model defaults.
        let last = Usage {
            input_tokens: 3,
            output_tokens: 4,
            ..Usage::default()
        };
        let fine = wire::Result {
            output: "ok".into(),
            artifacts: vec![artifact("changes.diff", "+x")],
            ..Default::default()
        };
        let out = p.result_in(fine, 10, Some((last, 7))).expect("fine");
        assert_eq!((out.usage, out.cost_micros), (last, 7));
        assert_eq!(out.model, "p");
        assert_eq!(out.artifacts[0].media_type, "text/plain");
    }

    #[test]
    fn a_refusal_is_permanent_and_trouble_is_retryable() {
        let refused = status_error("Execute", &tonic::Status::invalid_argument("no"));
        assert!(!refused.is_retryable());
        let gone = status_error("Execute", &tonic::Status::unavailable("connection refused"));
        assert!(gone.is_retryable());
    }

    #[test]
    fn configuration_names_what_is_wrong() {
        let both = PluginConfig {
            address: Some("http://x:1".into()),
            command: vec!["p".into()],
            ..PluginConfig::default()
        };
        assert!(both.validate("p").unwrap_err().contains("not both"));
        let neither = PluginConfig::default();
        assert!(neither.validate("p").unwrap_err().contains("address"));
        let bad = PluginConfig {
            address: Some("10.0.0.1:7400".into()),
            ..PluginConfig::default()
        };
        assert!(bad.validate("p").unwrap_err().contains("not a URL"));
    }
}
