//! The mock provider: deterministic output derived from the prompt, with configurable
//! latency, failure rate, token counts and streaming. It serves the quick start, the tests
//! and the benchmarks; it never pretends to be a model (its output says it is the mock).

use supervisor_model::{TaskType, Usage};

pub use crate::config::MockConfig;
use crate::{
    Capabilities, EventSink, Health, Provider, ProviderError, ProviderEvent, ProviderOutput,
    ProviderRequest,
};

/// The mock provider.
#[derive(Debug, Clone)]
pub struct MockProvider {
    name: String,
    cfg: MockConfig,
}

/// FNV-1a: a stable hash (unlike std's, guaranteed the same across Rust releases), so the
/// mock's output for a prompt never changes.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A number in [0, 1) derived from the inputs.
fn unit(parts: &[&[u8]]) -> f64 {
    (fnv1a(parts) >> 11) as f64 / (1u64 << 53) as f64
}

fn focus(task_type: TaskType) -> &'static str {
    match task_type {
        TaskType::PrReview => "review the change for correctness, clarity and risk",
        TaskType::IssueSummary => "summarise the issue and what it asks for",
        TaskType::CodeAnalysis => "map the code's structure and its weak points",
        TaskType::Refactor => "restructure without changing behaviour",
        TaskType::BugFix => "reproduce, locate and fix the defect",
        TaskType::Feature => "design and build the feature",
        TaskType::Documentation => "explain the code for its readers",
        TaskType::Testing => "cover the behaviour with tests",
        TaskType::Deployment => "check the rollout and its rollback",
        TaskType::SecurityAudit => "look for vulnerabilities and unsafe patterns",
    }
}

impl MockProvider {
    /// A mock provider named `name`.
    pub fn new(name: impl Into<String>, cfg: MockConfig) -> Self {
        MockProvider {
            name: name.into(),
            cfg,
        }
    }

    /// The output the mock gives for a prompt: a pure function of task type and prompt.
    pub fn output_for(task_type: TaskType, prompt: &str) -> String {
        let digest = fnv1a(&[task_type.as_str().as_bytes(), prompt.as_bytes()]);
        let words: Vec<&str> = prompt.split_whitespace().collect();
        let head: String = words.iter().take(12).copied().collect::<Vec<_>>().join(" ");
        format!(
            "[mock provider] {task}: {focus}.\nPrompt ({n} words): {head}{ellipsis}\nDigest: {digest:016x}\nSteps: 1) read the context 2) {focus} 3) report findings.\n",
            task = task_type.as_str(),
            focus = focus(task_type),
            n = words.len(),
            ellipsis = if words.len() > 12 { " ..." } else { "" },
        )
    }

    /// The configuration.
    pub fn config(&self) -> &MockConfig {
        &self.cfg
    }
}

#[async_trait::async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mock"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            task_types: TaskType::ALL.to_vec(),
            models: vec!["mock-1".into()],
            max_context_tokens: 1_000_000,
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
        let id = request.task_id.as_bytes();
        let attempt = request.attempt.to_le_bytes();
        let jitter = self.cfg.latency_jitter.mul_f64(unit(&[id, b"jitter"]));
        let total = self.cfg.latency + jitter;
        if unit(&[id, &attempt, b"panic"]) < self.cfg.panic_rate {
            panic!(
                "mock provider: injected panic for task {} attempt {}",
                request.task_id, request.attempt
            );
        }
        let mut output = Self::output_for(request.task_type, &request.prompt);
        let mut line = 0u64;
        while (output.len() as u64) < self.cfg.output_bytes {
            line += 1;
            output.push_str(&format!("filler line {line} of the padded mock output\n"));
        }
        let chunks = self.cfg.stream_chunks.max(1) as usize;
        let pieces = split_in(&output, chunks);
        let pause = total / pieces.len().max(1) as u32;
        for piece in pieces {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if self.cfg.stream_chunks > 0 {
                sink.send(ProviderEvent::Output(piece.to_string()));
            }
        }
        if unit(&[id, &attempt, b"fail"]) < self.cfg.failure_rate {
            return Err(ProviderError::Retryable {
                kind: "unavailable",
                message: format!(
                    "mock provider: injected failure (failure_rate {})",
                    self.cfg.failure_rate
                ),
                retry_after: None,
            });
        }
        let usage = Usage {
            cache_read_tokens: 0,
            cache_write_tokens: 0,
            input_tokens: if self.cfg.input_tokens > 0 {
                self.cfg.input_tokens
            } else {
                (request.prompt.len() as u64).div_ceil(4)
            },
            output_tokens: if self.cfg.output_tokens > 0 {
                self.cfg.output_tokens
            } else {
                (output.len() as u64).div_ceil(4)
            },
        };
        let cost_micros = (usage.input_tokens + usage.output_tokens)
            .saturating_mul(self.cfg.price_micros_per_mtok)
            / 1_000_000;
        Ok(ProviderOutput {
            output,
            usage,
            cost_micros,
            model: "mock-1".into(),
            artifacts: Vec::new(),
        })
    }

    async fn health(&self) -> Health {
        // The mock has no remote end: it is healthy whenever it can run, which a trial
        // execution of an empty prompt demonstrates.
        let sample = Self::output_for(TaskType::CodeAnalysis, "health probe");
        Health {
            healthy: !sample.is_empty(),
            detail: format!("in-process mock; latency {:?}", self.cfg.latency),
        }
    }

    fn estimate_cost(&self, request: &ProviderRequest) -> u64 {
        let tokens = (request.prompt.len() as u64).div_ceil(4) * 2;
        tokens.saturating_mul(self.cfg.price_micros_per_mtok) / 1_000_000
    }
}

/// Splits `text` into at most `n` pieces on character boundaries.
fn split_in(text: &str, n: usize) -> Vec<&str> {
    let len = text.len();
    let n = n.clamp(1, len.max(1));
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for i in 1..=n {
        let mut end = if i == n { len } else { len * i / n };
        while !text.is_char_boundary(end) {
            end += 1;
        }
        if end > start {
            out.push(&text[start..end]);
            start = end;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn request(prompt: &str) -> ProviderRequest {
        ProviderRequest::simple(
            "0192f5e4-7c2a-7b3e-9f00-1a2b3c4d5e6f",
            TaskType::BugFix,
            prompt,
            Duration::from_secs(5),
        )
    }

    #[tokio::test]
    async fn output_is_deterministic_and_streamed_in_pieces() {
        let mock = MockProvider::new("mock", MockConfig::default());
        let (sink, mut rx) = EventSink::channel();
        let out = mock
            .execute(request("fix the flaky test in ci"), sink)
            .await
            .unwrap();
        let again = MockProvider::output_for(TaskType::BugFix, "fix the flaky test in ci");
        assert_eq!(out.output, again);
        let mut streamed = String::new();
        let mut pieces = 0;
        while let Ok(ProviderEvent::Output(p)) = rx.try_recv() {
            streamed.push_str(&p);
            pieces += 1;
        }
        assert_eq!(streamed, out.output);
        assert_eq!(pieces, 4);
        assert_ne!(
            out.output,
            MockProvider::output_for(TaskType::BugFix, "another prompt")
        );
    }

    #[tokio::test]
    async fn failure_rate_one_always_fails_retryably() {
        let mock = MockProvider::new(
            "mock",
            MockConfig {
                failure_rate: 1.0,
                ..Default::default()
            },
        );
        let (sink, _rx) = EventSink::channel();
        let err = mock.execute(request("x"), sink).await.unwrap_err();
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn token_counts_follow_config_and_price() {
        let mock = MockProvider::new(
            "mock",
            MockConfig {
                input_tokens: 1000,
                output_tokens: 3000,
                price_micros_per_mtok: 2_000_000,
                ..Default::default()
            },
        );
        let (sink, _rx) = EventSink::channel();
        let out = mock.execute(request("x"), sink).await.unwrap();
        assert_eq!(
            out.usage,
            Usage {
                input_tokens: 1000,
                output_tokens: 3000,
                ..Usage::default()
            }
        );
        assert_eq!(out.cost_micros, 8_000); // 4000 tokens at $2 per million
    }

    #[test]
    fn split_respects_char_boundaries() {
        let text = "héllo wörld ✓";
        let parts = split_in(text, 5);
        assert_eq!(parts.concat(), text);
        assert!(parts.len() <= 5);
    }

    #[test]
    fn rates_outside_unit_interval_are_rejected() {
        let cfg = MockConfig {
            failure_rate: 1.5,
            ..Default::default()
        };
        assert!(cfg.validate().unwrap_err().contains("failure_rate"));
    }
}
