//! The OpenAI-compatible chat completions provider: one streamed
//! `POST {base_url}/chat/completions` per attempt.
//!
//! It exists so tasks can run on OpenAI itself and on anything speaking its API (vLLM,
//! Ollama, llama.cpp, gateways). Local servers need no key, so the key is optional and no
//! `authorization` header is sent without one. Servers differ in what they report: the
//! answer counts once `data: [DONE]` arrives; token usage comes from the final usage chunk
//! (`stream_options.include_usage`) or, from servers that ignore it, is estimated from
//! text length and said so.

use std::sync::Arc;

use serde_json::{Value, json};
use supervisor_model::{TaskType, Usage};

use crate::config::BuildContext;
use crate::config::OpenAiConfig;
use crate::http::{self, Flow};
use crate::pricing::PriceTable;
use crate::secret::ApiKey;
use crate::sse::SseEvent;
use crate::{
    Capabilities, EventSink, Health, Provider, ProviderError, ProviderEvent, ProviderOutput,
    ProviderRequest,
};

/// Context assumed for the configured model, in tokens (compatible servers do not say;
/// this is the common size of current OpenAI models).
pub const MAX_CONTEXT_TOKENS: u64 = 128_000;

/// A provider calling an OpenAI-compatible chat completions API.
#[derive(Debug)]
pub struct OpenAiProvider {
    name: String,
    /// How errors name this provider.
    label: String,
    cfg: OpenAiConfig,
    base: String,
    prices: Arc<PriceTable>,
    key: Option<ApiKey>,
    /// `authorization: Bearer ...`, marked sensitive, when a key is configured.
    auth_header: Option<reqwest::header::HeaderValue>,
    client: reqwest::Client,
}

/// Builds the openai provider named `name` from its config. The key is optional, but a
/// configured source that cannot be read (an unset variable, a missing file) is an error
/// naming it.
pub fn build(
    name: &str,
    cfg: &OpenAiConfig,
    prices: Arc<PriceTable>,
    _ctx: &BuildContext,
) -> Result<Arc<dyn Provider>, String> {
    let key = cfg.key_source().load(name, false)?;
    Ok(Arc::new(OpenAiProvider::new(
        name,
        cfg.clone(),
        prices,
        key,
    )?))
}

impl OpenAiProvider {
    /// A provider named `name`, sending `key` if there is one. Fails on a base URL that is
    /// not a URL, a zero `max_tokens` or a key that cannot go in a header.
    pub fn new(
        name: &str,
        cfg: OpenAiConfig,
        prices: Arc<PriceTable>,
        key: Option<ApiKey>,
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
        let auth_header = key
            .as_ref()
            .map(|k| http::key_header(name, k, "Bearer "))
            .transpose()?;
        let client =
            http::client(cfg.connect_timeout).map_err(|e| format!("provider {name}: {e}"))?;
        Ok(OpenAiProvider {
            name: name.to_string(),
            label: format!("provider {name}"),
            cfg,
            base,
            prices,
            key,
            auth_header,
            client,
        })
    }

    /// The JSON body of the request for `request`.
    fn body(&self, request: &ProviderRequest) -> Value {
        let mut messages = Vec::new();
        if !request.system_prompt.is_empty() {
            messages.push(json!({"role": "system", "content": request.system_prompt}));
        }
        messages.push(json!({"role": "user", "content": request.prompt_with_context()}));
        json!({
            "model": self.cfg.model,
            "max_tokens": self.cfg.max_tokens,
            "messages": messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        })
    }

    /// Adds the key, if any.
    fn authorize(&self, call: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth_header {
            Some(value) => call.header(reqwest::header::AUTHORIZATION, value.clone()),
            None => call,
        }
    }

    async fn run(
        &self,
        request: &ProviderRequest,
        sink: &EventSink,
    ) -> Result<ProviderOutput, ProviderError> {
        let call = self
            .client
            .post(format!("{}/chat/completions", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .json(&self.body(request));
        let response = http::send(&self.label, self.authorize(call)).await?;
        let mut stream = ChatStream::new(&self.label, sink, &self.prices, &self.cfg.model);
        http::read_events(&self.label, response, |event| stream.on_event(event)).await?;
        let sent = request.system_prompt.len() + request.prompt_with_context().len();
        Ok(stream.finish(&self.cfg, &self.prices, sent))
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "openai"
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
        result.map_err(|e| http::redact_error(e, self.key.as_ref()))
    }

    async fn health(&self) -> Health {
        let call = self.authorize(self.client.get(format!("{}/models", self.base)));
        http::probe(call, "GET /models", self.key.as_ref()).await
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
struct ChatStream<'a> {
    label: &'a str,
    sink: &'a EventSink,
    prices: &'a PriceTable,
    /// The configured model, until a chunk names the one answering.
    configured_model: &'a str,
    model: Option<String>,
    usage: Option<Usage>,
    output: String,
    finish_reason: Option<String>,
}

impl<'a> ChatStream<'a> {
    fn new(
        label: &'a str,
        sink: &'a EventSink,
        prices: &'a PriceTable,
        configured_model: &'a str,
    ) -> Self {
        ChatStream {
            label,
            sink,
            prices,
            configured_model,
            model: None,
            usage: None,
            output: String::new(),
            finish_reason: None,
        }
    }

    fn on_event(&mut self, event: SseEvent) -> Result<Flow, ProviderError> {
        if event.data.trim() == "[DONE]" {
            return Ok(Flow::Done);
        }
        let chunk: Value = serde_json::from_str(&event.data)
            .map_err(|_| http::bad_stream(self.label, "a chunk is not JSON", &event.data))?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(stream_error(self.label, error));
        }
        if let Some(model) = chunk["model"].as_str().filter(|m| !m.is_empty()) {
            self.model = Some(model.to_string());
        }
        if let Some(choice) = chunk["choices"].get(0) {
            if let Some(text) = choice["delta"]["content"].as_str()
                && !text.is_empty()
            {
                self.output.push_str(text);
                self.sink.send(ProviderEvent::Output(text.to_string()));
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_string());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            // `prompt_tokens` includes the cached ones, which are priced apart.
            let count = |v: &Value| v.as_u64().unwrap_or(0);
            let prompt = count(&usage["prompt_tokens"]);
            let cached = count(&usage["prompt_tokens_details"]["cached_tokens"]).min(prompt);
            let usage = Usage {
                input_tokens: prompt - cached,
                output_tokens: count(&usage["completion_tokens"]),
                cache_read_tokens: cached,
                cache_write_tokens: 0,
            };
            self.usage = Some(usage);
            // Reported at once: an error chunk may still follow.
            let model = self.model.as_deref().unwrap_or(self.configured_model);
            self.sink.send(ProviderEvent::Usage {
                usage,
                cost_micros: self.prices.cost_micros(model, &usage).unwrap_or(0),
            });
        }
        Ok(Flow::Continue)
    }

    /// The result of a stream that reached `[DONE]`; `sent` is the bytes of prompt sent.
    fn finish(self, cfg: &OpenAiConfig, prices: &PriceTable, sent: usize) -> ProviderOutput {
        match self.finish_reason.as_deref() {
            Some("length") => self.sink.send(ProviderEvent::Activity(format!(
                "output was cut at max_tokens ({}): the answer may be incomplete",
                cfg.max_tokens
            ))),
            Some("content_filter") => self.sink.send(ProviderEvent::Activity(
                "the server's content filter stopped the answer (finish_reason content_filter)"
                    .into(),
            )),
            _ => {}
        }
        let usage = match self.usage {
            Some(usage) => usage,
            None => {
                self.sink.send(ProviderEvent::Activity(
                    "the server reported no token usage: tokens estimated from text length (4 bytes per token)"
                        .into(),
                ));
                Usage {
                    input_tokens: (sent as u64).div_ceil(4),
                    output_tokens: (self.output.len() as u64).div_ceil(4),
                    ..Usage::default()
                }
            }
        };
        let model = self.model.unwrap_or_else(|| cfg.model.clone());
        let cost_micros = match prices.cost_micros(&model, &usage) {
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
            usage,
            cost_micros,
            model,
            artifacts: Vec::new(),
        }
    }
}

/// The typed error for an `error` object in the stream
/// (`{"message": ..., "type": ..., "code": ...}`; vLLM puts the HTTP status in `code`).
fn stream_error(label: &str, error: &Value) -> ProviderError {
    let text = error["message"]
        .as_str()
        .or_else(|| error.as_str())
        .unwrap_or("(no message)");
    let error_type = error["type"].as_str().unwrap_or("");
    let code = error["code"].as_str().unwrap_or("");
    let name = [error_type, code]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("/");
    let message = format!(
        "{label} reported an error in the stream ({}): {}",
        if name.is_empty() { "untyped" } else { &name },
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
    let tags = format!("{error_type} {code}").to_ascii_lowercase();
    if tags.contains("context_length") || http::looks_like_context_overflow(text) {
        return permanent("context_too_long");
    }
    if tags.contains("rate_limit") {
        return retryable("rate_limited");
    }
    if tags.contains("overload") {
        return retryable("overloaded");
    }
    if tags.contains("insufficient_quota") {
        return permanent("budget");
    }
    if tags.contains("invalid_api_key")
        || tags.contains("authentication")
        || tags.contains("permission")
    {
        return permanent("auth");
    }
    if tags.contains("server_error") || tags.contains("internal") || tags.contains("api_error") {
        return retryable("unavailable");
    }
    if let Some(status) = error["code"].as_u64().and_then(|c| u16::try_from(c).ok())
        && (400..600).contains(&status)
    {
        return match http::error_for_status(label, status, None, text) {
            ProviderError::Retryable {
                kind, retry_after, ..
            } => ProviderError::Retryable {
                kind,
                message,
                retry_after,
            },
            ProviderError::Permanent { kind, .. } => ProviderError::Permanent { kind, message },
        };
    }
    if tags.contains("invalid_request") {
        return permanent("bad_request");
    }
    // An error this code does not know: the request was accepted, so another attempt may
    // well succeed.
    retryable("unavailable")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of(error: Value) -> (bool, &'static str) {
        match stream_error("p", &error) {
            ProviderError::Retryable { kind, .. } => (true, kind),
            ProviderError::Permanent { kind, .. } => (false, kind),
        }
    }

    #[test]
    fn stream_errors_map_to_routing_classes() {
        assert_eq!(
            kind_of(json!({"message": "slow", "type": "requests", "code": "rate_limit_exceeded"})),
            (true, "rate_limited")
        );
        assert_eq!(
            kind_of(
                json!({"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"})
            ),
            (false, "context_too_long")
        );
        assert_eq!(
            kind_of(json!({"message": "bad", "type": "invalid_request_error", "code": null})),
            (false, "bad_request")
        );
        assert_eq!(
            kind_of(json!({"message": "boom", "type": "server_error"})),
            (true, "unavailable")
        );
        assert_eq!(
            kind_of(json!({"message": "no", "type": "invalid_api_key"})),
            (false, "auth")
        );
        // vLLM: the HTTP status in `code`.
        assert_eq!(
            kind_of(
                json!({"object": "error", "message": "x", "type": "BadRequestError", "code": 400})
            ),
            (false, "bad_request")
        );
        assert_eq!(
            kind_of(json!({"message": "x", "type": "ServiceUnavailableError", "code": 503})),
            (true, "overloaded")
        );
        assert_eq!(kind_of(json!("plain text")), (true, "unavailable"));
    }

    #[test]
    fn debug_output_hides_the_key() {
        let p = OpenAiProvider::new(
            "gpt",
            OpenAiConfig::default(),
            Arc::new(PriceTable::default()),
            Some(ApiKey::from_value("sk-very-secret", "test")),
        )
        .unwrap();
        let shown = format!("{p:?}");
        assert!(!shown.contains("sk-very-secret"), "{shown}");
    }
}
