//! The Anthropic Messages API provider: one streamed `POST /v1/messages` per attempt.
//!
//! It exists so tasks can run on Claude models directly over HTTP. The stream is read
//! with the shared SSE parser and turned into output events as text arrives; the answer
//! only counts once the API says `message_stop`, so a dropped connection is a retryable
//! error and never a truncated success. Failures are typed with the shared HTTP mapping
//! (statuses) or, for errors reported inside the stream, from Anthropic's error types.

use std::sync::Arc;

use serde_json::{Value, json};
use supervisor_model::{TaskType, Usage};

use crate::config::AnthropicConfig;
use crate::config::BuildContext;
use crate::http::{self, Flow};
use crate::pricing::PriceTable;
use crate::secret::ApiKey;
use crate::sse::SseEvent;
use crate::{
    Capabilities, EventSink, Health, Provider, ProviderError, ProviderEvent, ProviderOutput,
    ProviderRequest,
};

/// Largest context of current Claude models, in tokens.
pub const MAX_CONTEXT_TOKENS: u64 = 200_000;

/// A provider calling the Anthropic Messages API.
#[derive(Debug)]
pub struct AnthropicProvider {
    name: String,
    /// How errors name this provider.
    label: String,
    cfg: AnthropicConfig,
    base: String,
    prices: Arc<PriceTable>,
    key: ApiKey,
    /// `x-api-key`, marked sensitive.
    key_header: reqwest::header::HeaderValue,
    client: reqwest::Client,
}

/// Builds the anthropic provider named `name` from its config. The API key is required
/// and loaded now: a missing variable or file is an error naming it.
pub fn build(
    name: &str,
    cfg: &AnthropicConfig,
    prices: Arc<PriceTable>,
    _ctx: &BuildContext,
) -> Result<Arc<dyn Provider>, String> {
    let key = cfg
        .key_source()
        .load(name, true)?
        .ok_or_else(|| format!("provider {name} needs an API key"))?;
    Ok(Arc::new(AnthropicProvider::new(
        name,
        cfg.clone(),
        prices,
        key,
    )?))
}

impl AnthropicProvider {
    /// A provider named `name` using `key`. Fails on a base URL that is not a URL, a zero
    /// `max_tokens` or a key that cannot go in a header.
    pub fn new(
        name: &str,
        cfg: AnthropicConfig,
        prices: Arc<PriceTable>,
        key: ApiKey,
    ) -> Result<Self, String> {
        let base = http::trim_base(&cfg.base_url).to_string();
        reqwest::Url::parse(&base).map_err(|e| {
            format!(
                "provider {name}: base_url {:?} is not a URL: {e}",
                cfg.base_url
            )
        })?;
        if cfg.max_tokens == 0 {
            return Err(format!("provider {name}: max_tokens must be at least 1"));
        }
        let key_header = http::key_header(name, &key, "")?;
        let client =
            http::client(cfg.connect_timeout).map_err(|e| format!("provider {name}: {e}"))?;
        Ok(AnthropicProvider {
            name: name.to_string(),
            label: format!("provider {name}"),
            cfg,
            base,
            prices,
            key,
            key_header,
            client,
        })
    }

    /// The JSON body of the request for `request`.
    fn body(&self, request: &ProviderRequest) -> Value {
        let mut body = json!({
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_tokens,
            "messages": [{"role": "user", "content": request.prompt_with_context()}],
            "stream": true,
        });
        if !request.system_prompt.is_empty() {
            body["system"] = json!(request.system_prompt);
        }
        body
    }

    async fn run(
        &self,
        request: &ProviderRequest,
        sink: &EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        let call = self
            .client
            .post(format!("{}/v1/messages", self.base))
            .header("x-api-key", self.key_header.clone())
            .header("anthropic-version", &self.cfg.anthropic_version)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&self.body(request));
        let response = http::send(&self.label, call).await?;
        let mut stream = MessageStream::new(&self.label, sink, &self.prices, &self.cfg.model);
        http::read_events(&self.label, response, |event| stream.on_event(event)).await?;
        Ok(stream.finish(&self.cfg, &self.prices))
    }
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            task_types: TaskType::ALL.to_vec(),
            models: vec![self.cfg.model.clone()],
            max_context_tokens: MAX_CONTEXT_TOKENS,
            streaming: true,
            tools: false,
            repository: false,
        }
    }

    async fn execute(
        &self,
        request: ProviderRequest,
        sink: EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        let limit = request.timeout;
        let result = match tokio::time::timeout(limit, self.run(&request, &sink)).await {
            Ok(result) => result,
            Err(_) => Err(http::timeout_error(&self.label, limit)),
        };
        result.map_err(|e| http::redact_error(e, Some(&self.key)))
    }

    async fn health(&self) -> Health {
        let call = self
            .client
            .get(format!("{}/v1/models", self.base))
            .header("x-api-key", self.key_header.clone())
            .header("anthropic-version", &self.cfg.anthropic_version);
        http::probe(call, "GET /v1/models", Some(&self.key)).await
    }

    fn estimate_cost(&self, request: &ProviderRequest) -> u64 {
        let sent = request.system_prompt.len() + request.prompt_with_context().len();
        let usage = Usage {
            input_tokens: (sent as u64).div_ceil(4),
            output_tokens: u64::from(self.cfg.max_tokens) / 4,
            ..Usage::default()
        };
        self.prices
            .cost_micros(&self.cfg.model, &usage)
            .unwrap_or(0)
    }
}

/// What the stream has said so far.
struct MessageStream<'a> {
    label: &'a str,
    sink: &'a EventSink,
    prices: &'a PriceTable,
    /// The configured model, until `message_start` names the one answering.
    configured_model: &'a str,
    model: Option<String>,
    usage: Usage,
    /// The usage last sent as a [`ProviderEvent::Usage`].
    reported: Option<Usage>,
    output: String,
    stop_reason: Option<String>,
}

impl<'a> MessageStream<'a> {
    fn new(
        label: &'a str,
        sink: &'a EventSink,
        prices: &'a PriceTable,
        configured_model: &'a str,
    ) -> Self {
        MessageStream {
            label,
            sink,
            prices,
            configured_model,
            model: None,
            usage: Usage::default(),
            reported: None,
            output: String::new(),
            stop_reason: None,
        }
    }

    fn on_event(&mut self, event: SseEvent) -> Result<Flow, ProviderError> {
        let data: Value = serde_json::from_str(&event.data).map_err(|_| {
            http::bad_stream(self.label, "an event's data is not JSON", &event.data)
        })?;
        let kind = data
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(event.event.as_str());
        match kind {
            "message_start" => {
                let message = &data["message"];
                if let Some(model) = message["model"].as_str().filter(|m| !m.is_empty()) {
                    self.model = Some(model.to_string());
                }
                self.read_usage(&message["usage"]);
                self.report_usage();
            }
            "content_block_start" => {
                let block = &data["content_block"];
                if block["type"] == "text"
                    && let Some(text) = block["text"].as_str()
                {
                    self.text(text);
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                // Other deltas (thinking, tool input, citations) carry no output text.
                if delta["type"] == "text_delta"
                    && let Some(text) = delta["text"].as_str()
                {
                    self.text(text);
                }
            }
            "message_delta" => {
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    self.stop_reason = Some(reason.to_string());
                }
                self.read_usage(&data["usage"]);
                self.report_usage();
            }
            "message_stop" => return Ok(Flow::Done),
            "error" => return Err(stream_error(self.label, &data["error"])),
            // `ping`, `content_block_stop`, and event types added after this was written.
            _ => {}
        }
        Ok(Flow::Continue)
    }

    fn text(&mut self, text: &str) {
        if !text.is_empty() {
            self.output.push_str(text);
            self.sink.send(ProviderEvent::Output(text.to_string()));
        }
    }

    /// Takes the counts a `usage` object has (they are cumulative: later ones win).
    fn read_usage(&mut self, usage: &Value) {
        let count = |field: &str| usage.get(field).and_then(Value::as_u64);
        if let Some(n) = count("input_tokens") {
            self.usage.input_tokens = n;
        }
        if let Some(n) = count("output_tokens") {
            self.usage.output_tokens = n;
        }
        if let Some(n) = count("cache_read_input_tokens") {
            self.usage.cache_read_tokens = n;
        }
        if let Some(n) = count("cache_creation_input_tokens") {
            self.usage.cache_write_tokens = n;
        }
    }

    /// Sends the usage so far if it changed, so an error later in the stream still leaves
    /// what the API already counted (the input tokens of `message_start`) on record.
    fn report_usage(&mut self) {
        if self.reported == Some(self.usage) {
            return;
        }
        self.reported = Some(self.usage);
        let model = self.model.as_deref().unwrap_or(self.configured_model);
        self.sink.send(ProviderEvent::Usage {
            usage: self.usage,
            cost_micros: self.prices.cost_micros(model, &self.usage).unwrap_or(0),
        });
    }

    /// The result of a stream that reached `message_stop`.
    fn finish(self, cfg: &AnthropicConfig, prices: &PriceTable) -> ProviderOutput {
        match self.stop_reason.as_deref() {
            Some("max_tokens") => self.sink.send(ProviderEvent::Activity(format!(
                "output was cut at max_tokens ({}): the answer may be incomplete",
                cfg.max_tokens
            ))),
            Some("refusal") => self.sink.send(ProviderEvent::Activity(
                "the model declined to answer (stop_reason refusal)".into(),
            )),
            _ => {}
        }
        let model = self.model.unwrap_or_else(|| cfg.model.clone());
        let cost_micros = match prices.cost_micros(&model, &self.usage) {
            Some(cost) => cost,
            None => {
                self.sink.send(ProviderEvent::Activity(format!(
                    "no price known for model {model}: cost recorded as 0"
                )));
                0
            }
        };
        ProviderOutput {
            output: self.output,
            usage: self.usage,
            cost_micros,
            model,
            artifacts: Vec::new(),
        }
    }
}

/// The typed error for an `error` event (`{"type": "overloaded_error", "message": ...}`).
fn stream_error(label: &str, error: &Value) -> ProviderError {
    let kind = error["type"].as_str().unwrap_or("unknown_error");
    let text = error["message"].as_str().unwrap_or("(no message)");
    let message = format!(
        "{label} reported {kind} in the stream: {}",
        http::excerpt(text, 500)
    );
    let retryable = |kind| ProviderError::Retryable {
        kind,
        message: message.clone(),
        retry_after: None,
    };
    let permanent = |kind| ProviderError::Permanent {
        kind,
        message: message.clone(),
    };
    match kind {
        "overloaded_error" => retryable("overloaded"),
        "rate_limit_error" => retryable("rate_limited"),
        "api_error" => retryable("unavailable"),
        "timeout_error" => retryable("timeout"),
        "request_too_large" => permanent("context_too_long"),
        "invalid_request_error" if http::looks_like_context_overflow(text) => {
            permanent("context_too_long")
        }
        "invalid_request_error" | "not_found_error" => permanent("bad_request"),
        "authentication_error" | "permission_error" => permanent("auth"),
        "billing_error" => permanent("budget"),
        // An error type this code does not know: the request was accepted, so another
        // attempt may well succeed.
        _ => retryable("unavailable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(error_type: &str, message: &str) -> (bool, &'static str) {
        match stream_error("p", &json!({"type": error_type, "message": message})) {
            ProviderError::Retryable { kind, .. } => (true, kind),
            ProviderError::Permanent { kind, .. } => (false, kind),
        }
    }

    #[test]
    fn stream_error_types_map_to_routing_classes() {
        assert_eq!(
            kind_of("overloaded_error", "Overloaded"),
            (true, "overloaded")
        );
        assert_eq!(kind_of("rate_limit_error", "slow"), (true, "rate_limited"));
        assert_eq!(kind_of("api_error", "oops"), (true, "unavailable"));
        assert_eq!(
            kind_of("invalid_request_error", "bad"),
            (false, "bad_request")
        );
        assert_eq!(
            kind_of("invalid_request_error", "prompt is too long: 210000 tokens"),
            (false, "context_too_long")
        );
        assert_eq!(kind_of("authentication_error", "no"), (false, "auth"));
        assert_eq!(kind_of("something_new", "?"), (true, "unavailable"));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let p = AnthropicProvider::new(
            "claude",
            AnthropicConfig::default(),
            Arc::new(PriceTable::default()),
            ApiKey::from_value("sk-ant-very-secret", "test"),
        )
        .unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("sk-ant-very-secret"), "{shown}");
    }
}
