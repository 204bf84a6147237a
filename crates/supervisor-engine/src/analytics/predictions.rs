//! Predictions of a task's duration, failure and cost from the rollups, kept in memory and
//! learnt again from the store every few minutes.
//!
//! Training reads the last 30 days of hour rows of every tenant (and the minutes not folded
//! yet): a few thousand rows, too many to read per request, so the engine keeps one
//! trained [`Predictor`] per tenant, learnt from that tenant's history only (a prediction
//! never tells one tenant about another's tasks), and only `GetTask` and `GetPrediction`
//! consult them (never submit or lease: the hot path pays nothing). The first call trains; a call that finds the
//! predictor older than five minutes (ten seconds while it has learnt nothing) gets it at
//! once while a new one is trained in the background.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use supervisor_model::{Prediction, PredictionQuery, Predictor, Task};

use crate::{Engine, EngineError};

/// How much history predictions learn from: 30 days.
const HISTORY_MS: i64 = 30 * 86_400_000;
/// How old a predictor may get before it is trained again: 5 minutes.
const RETRAIN_AFTER_MICROS: i64 = 5 * 60 * 1_000_000;
/// How old a predictor that learnt nothing (no task had finished) may get: 10 seconds,
/// so a new cluster predicts soon after its first tasks finish.
const RETRAIN_EMPTY_AFTER_MICROS: i64 = 10 * 1_000_000;

/// One predictor per tenant with history.
#[derive(Debug, Default)]
pub struct Predictors {
    by_tenant: BTreeMap<String, Predictor>,
    trained_on: u64,
}

impl Predictors {
    /// Finished tasks learnt from, over every tenant.
    pub fn trained_on(&self) -> u64 {
        self.trained_on
    }

    /// What `tenant`'s history says about tasks like `q`.
    pub fn predict(&self, tenant: &str, q: &PredictionQuery) -> Option<Prediction> {
        self.by_tenant.get(tenant)?.predict(q)
    }
}

/// The trained predictors and when they were trained.
#[derive(Default)]
pub(crate) struct PredictorCache {
    current: std::sync::Mutex<Option<(i64, Arc<Predictors>)>>,
    /// One training at a time.
    training: tokio::sync::Mutex<()>,
    /// A background retraining is under way.
    refreshing: AtomicBool,
}

impl PredictorCache {
    fn get(&self) -> Option<(i64, Arc<Predictors>)> {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn put(&self, at: i64, predictor: Arc<Predictors>) {
        *self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((at, predictor));
    }
}

/// What to predict for `task`: its dimensions as the rollups keep them, and the provider
/// of its last attempt once one ran (until then, history pooled over providers).
pub fn prediction_query(task: &Task) -> PredictionQuery {
    let specialty = supervisor_model::analyze(
        task.task_type,
        &task.labels,
        &task.prompt,
        task.routing.specialty,
    )
    .specialty;
    PredictionQuery {
        task_type: task.task_type,
        specialty,
        provider: task
            .attempts
            .last()
            .map(|a| a.provider.clone())
            .filter(|p| !p.is_empty()),
        size_class: supervisor_model::size_class(task.prompt.len()),
        repository: task
            .context
            .get(supervisor_model::REPO_CONTEXT_KEY)
            .is_some_and(|r| !r.trim().is_empty()),
    }
}

impl Engine {
    /// Trains the predictors from the last 30 days of rollups now and keeps them.
    pub async fn train_predictor(&self) -> Result<Arc<Predictors>, EngineError> {
        let cache = &self.inner.predictor;
        let _one = cache.training.lock().await;
        let now = self.now_micros();
        let now_ms = now.div_euclid(1000);
        let rows = self
            .rollups_by_dims(now_ms - HISTORY_MS, now_ms + 1)
            .await?;
        let mut by_tenant: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for (dims, stats) in rows.iter() {
            by_tenant
                .entry(dims.tenant.as_str())
                .or_default()
                .push((dims, stats));
        }
        let by_tenant: BTreeMap<String, Predictor> = by_tenant
            .into_iter()
            .map(|(tenant, rows)| (tenant.to_string(), Predictor::train(rows)))
            .collect();
        let trained_on = by_tenant.values().map(Predictor::trained_on).sum();
        let predictors = Arc::new(Predictors {
            by_tenant,
            trained_on,
        });
        cache.put(now, predictors.clone());
        Ok(predictors)
    }

    /// The kept predictor: trained on first use; when older than five minutes (ten seconds
    /// while it has learnt nothing), returned as it is while a new one is trained in the
    /// background.
    pub async fn predictor(&self) -> Result<Arc<Predictors>, EngineError> {
        let cache = &self.inner.predictor;
        let Some((at, predictor)) = cache.get() else {
            return self.train_predictor().await;
        };
        let max_age = if predictor.trained_on() == 0 {
            RETRAIN_EMPTY_AFTER_MICROS
        } else {
            RETRAIN_AFTER_MICROS
        };
        if self.now_micros().saturating_sub(at) >= max_age
            && !cache.refreshing.swap(true, Ordering::AcqRel)
        {
            let engine = self.clone();
            tokio::spawn(async move {
                if let Err(err) = engine.train_predictor().await {
                    tracing::warn!(error = %err, "retraining the predictions failed; the previous ones stay in use");
                }
                engine
                    .inner
                    .predictor
                    .refreshing
                    .store(false, Ordering::Release);
            });
        }
        Ok(predictor)
    }

    /// What `tenant`'s history says about tasks like `q`; `None` when none of its tasks
    /// finished in the last 30 days.
    pub async fn predict(
        &self,
        tenant: &str,
        q: &PredictionQuery,
    ) -> Result<Option<Prediction>, EngineError> {
        Ok(self.predictor().await?.predict(tenant, q))
    }

    /// What its tenant's history says about `task` ([`prediction_query`]).
    pub async fn predict_task(&self, task: &Task) -> Result<Option<Prediction>, EngineError> {
        self.predict(&task.tenant, &prediction_query(task)).await
    }
}
