//! `supervisor.v1.AnalyticsService`: summaries, trends and predictions from the durable
//! analytics rollups. A thin adapter: it decodes the window, dimensions and filter, scopes
//! the query to the caller's tenant (every tenant only for a cluster admin who asks), calls
//! the engine and encodes the rows.

use supervisor_engine::{AnalyticsQuery, Engine};
use supervisor_model::{
    Dimension, Granularity, MAX_LABELS, MAX_PROMPT_BYTES, MAX_PROVIDER_NAME_BYTES, Prediction,
    PredictionQuery, Principal, RollupGroup, RollupStats, SIZE_CLASS_NAMES, Specialty, quote,
};
use supervisor_proto::convert::{micros_from_timestamp, timestamp_from_micros};
use supervisor_proto::v1;
use supervisor_proto::v1::analytics_service_server::AnalyticsService;
use tonic::{Request, Response, Status};

use crate::auth::principal_in;
use crate::convert::{invalid, status_from, task_id_in, task_type_in, task_type_out};

/// `supervisor.v1.AnalyticsService` over an engine.
#[derive(Clone)]
pub struct AnalyticsApi {
    engine: Engine,
}

impl AnalyticsApi {
    /// The service over `engine`.
    pub fn new(engine: Engine) -> AnalyticsApi {
        AnalyticsApi { engine }
    }
}

/// The window a request leaves open: the last 24 hours.
const DEFAULT_WINDOW_MICROS: i64 = 24 * 3_600_000_000;

/// The window of a request (`to` defaults to now, `from` to a day before `to`).
fn window_in(w: Option<&v1::Window>, now: i64) -> Result<(i64, i64), Status> {
    let to = w
        .and_then(|w| w.to.as_ref())
        .map_or(now, micros_from_timestamp);
    let from = w.and_then(|w| w.from.as_ref()).map_or(
        to.saturating_sub(DEFAULT_WINDOW_MICROS),
        micros_from_timestamp,
    );
    if from >= to {
        return Err(invalid(
            "window",
            "the window's start (from) must come before its end (to)",
        ));
    }
    Ok((from, to))
}

/// The tenant whose rows a caller reads: its own, or every tenant's for a cluster admin
/// who asks for them.
fn tenant_in(scope: Option<&v1::Scope>, p: &Principal) -> Result<Option<String>, Status> {
    if !scope.is_some_and(|s| s.all_tenants) {
        return Ok(Some(p.tenant.clone()));
    }
    if !p.cluster_admin {
        return Err(Status::permission_denied(format!(
            "every tenant's analytics (scope.all_tenants) take an admin of the default tenant; {} reads tenant {} only",
            p.id, p.tenant
        )));
    }
    Ok(None)
}

fn specialty_in(field: &str, text: &str) -> Result<Specialty, Status> {
    text.parse()
        .map_err(|e: supervisor_model::ParseError| invalid(field, e))
}

fn filter_in(f: Option<&v1::Filter>) -> Result<RollupGroup, Status> {
    let Some(f) = f else {
        return Ok(RollupGroup::default());
    };
    let size_class = match f.size_class {
        Some(c) if c as usize >= SIZE_CLASS_NAMES.len() => {
            return Err(invalid(
                "filter.size_class",
                format!(
                    "{c} is not a size class; expected 0 to {}",
                    SIZE_CLASS_NAMES.len() - 1
                ),
            ));
        }
        Some(c) => u8::try_from(c).ok(),
        None => None,
    };
    Ok(RollupGroup {
        tenant: None,
        task_type: task_type_in("filter.type", f.r#type)?,
        specialty: f
            .specialty
            .as_deref()
            .map(|s| specialty_in("filter.specialty", s))
            .transpose()?,
        provider: f.provider.clone(),
        size_class,
        repository: f.repository,
    })
}

fn dimensions_in(raw: &[i32]) -> Result<Vec<Dimension>, Status> {
    let mut out = Vec::with_capacity(raw.len());
    for &r in raw {
        let d = match v1::Dimension::try_from(r) {
            Ok(v1::Dimension::Tenant) => Dimension::Tenant,
            Ok(v1::Dimension::Type) => Dimension::TaskType,
            Ok(v1::Dimension::Specialty) => Dimension::Specialty,
            Ok(v1::Dimension::Provider) => Dimension::Provider,
            Ok(v1::Dimension::SizeClass) => Dimension::SizeClass,
            Ok(v1::Dimension::Repository) => Dimension::Repository,
            Ok(v1::Dimension::Unspecified) | Err(_) => {
                return Err(invalid(
                    "group_by",
                    format!(
                        "{r} is not a dimension; expected TENANT, TYPE, SPECIALTY, PROVIDER, SIZE_CLASS or REPOSITORY"
                    ),
                ));
            }
        };
        if out.contains(&d) {
            return Err(invalid(
                "group_by",
                format!("{} is named twice", d.as_str()),
            ));
        }
        out.push(d);
    }
    Ok(out)
}

fn granularity_in(raw: i32) -> Result<Granularity, Status> {
    match v1::Granularity::try_from(raw) {
        Ok(v1::Granularity::Unspecified | v1::Granularity::Hour) => Ok(Granularity::Hour),
        Ok(v1::Granularity::Minute) => Ok(Granularity::Minute),
        Ok(v1::Granularity::Day) => Ok(Granularity::Day),
        Err(_) => Err(invalid(
            "granularity",
            format!("{raw} is not a granularity; expected MINUTE, HOUR or DAY"),
        )),
    }
}

fn granularity_out(g: Granularity) -> v1::Granularity {
    match g {
        Granularity::Minute => v1::Granularity::Minute,
        Granularity::Hour => v1::Granularity::Hour,
        Granularity::Day => v1::Granularity::Day,
    }
}

fn stats_out(s: &RollupStats) -> v1::Stats {
    let q = |p| s.latency.quantile(p).unwrap_or(0);
    v1::Stats {
        finished: s.finished,
        succeeded: s.succeeded,
        failed: s.failed,
        cancelled: s.cancelled,
        success_rate: s.success_rate(),
        attempts: s.attempts,
        input_tokens: s.input_tokens,
        output_tokens: s.output_tokens,
        cost_micros: s.cost_micros,
        cost_usd: s.cost_micros as f64 / 1e6,
        latency_p50_ms: q(0.5),
        latency_p90_ms: q(0.9),
        latency_p99_ms: q(0.99),
    }
}

fn group_out(g: &RollupGroup) -> v1::Group {
    v1::Group {
        tenant: g.tenant.clone().unwrap_or_default(),
        r#type: g.task_type.map_or(v1::TaskType::Unspecified, task_type_out) as i32,
        specialty: g.specialty.map(|s| s.to_string()).unwrap_or_default(),
        provider: g.provider.clone(),
        size_class: g
            .size_class
            .and_then(|c| SIZE_CLASS_NAMES.get(usize::from(c)))
            .map(|n| n.to_string())
            .unwrap_or_default(),
        repository: g.repository,
    }
}

/// A prediction as its protobuf message.
pub(crate) fn prediction_out(p: &Prediction) -> v1::Prediction {
    v1::Prediction {
        duration_p50_ms: p.duration_p50_ms,
        duration_p10_ms: p.duration_p10_ms,
        duration_p90_ms: p.duration_p90_ms,
        failure_probability: p.failure_probability,
        cost_micros: p.cost_micros,
        cost_usd: p.cost_micros as f64 / 1e6,
        based_on: p.based_on,
        basis: p.basis.clone(),
    }
}

/// What to predict for a task that does not exist.
fn hypothetical_in(t: &v1::HypotheticalTask) -> Result<PredictionQuery, Status> {
    let task_type = task_type_in("task.type", t.r#type)?
        .ok_or_else(|| invalid("task.type", "a task type is required"))?;
    if t.prompt_bytes > MAX_PROMPT_BYTES as u64 {
        return Err(invalid(
            "task.prompt_bytes",
            format!(
                "{} bytes is over the prompt limit of {MAX_PROMPT_BYTES} bytes",
                t.prompt_bytes
            ),
        ));
    }
    if t.labels.len() > MAX_LABELS {
        return Err(invalid(
            "task.labels",
            format!("at most {MAX_LABELS} labels, not {}", t.labels.len()),
        ));
    }
    if t.provider.len() > MAX_PROVIDER_NAME_BYTES {
        return Err(invalid(
            "task.provider",
            format!("at most {MAX_PROVIDER_NAME_BYTES} bytes"),
        ));
    }
    let explicit = match t.specialty.as_str() {
        "" => None,
        s => Some(specialty_in("task.specialty", s)?),
    };
    Ok(PredictionQuery {
        task_type,
        specialty: supervisor_model::analyze(task_type, &t.labels, "", explicit).specialty,
        provider: (!t.provider.is_empty()).then(|| t.provider.clone()),
        size_class: supervisor_model::size_class(t.prompt_bytes as usize),
        repository: t.repository,
    })
}

impl AnalyticsApi {
    /// The query a summary or trend request asks, in the caller's tenant (or the one its
    /// scope names, for a cluster admin).
    fn query_in(
        &self,
        p: &Principal,
        scope: Option<&v1::Scope>,
        window: Option<&v1::Window>,
        filter: Option<&v1::Filter>,
    ) -> Result<AnalyticsQuery, Status> {
        let (from_micros, to_micros) = window_in(window, self.engine.now_micros())?;
        Ok(AnalyticsQuery {
            tenant: tenant_in(scope, p)?,
            from_micros,
            to_micros,
            filter: filter_in(filter)?,
        })
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn get_summary(
        &self,
        req: Request<v1::GetSummaryRequest>,
    ) -> Result<Response<v1::GetSummaryResponse>, Status> {
        let p = principal_in(req.extensions());
        let r = req.get_ref();
        let query = self.query_in(&p, r.scope.as_ref(), r.window.as_ref(), r.filter.as_ref())?;
        let group_by = dimensions_in(&r.group_by)?;
        let summary = self
            .engine
            .analytics_summary(&query, &group_by)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::GetSummaryResponse {
            window: Some(v1::Window {
                from: Some(timestamp_from_micros(summary.from_micros)),
                to: Some(timestamp_from_micros(summary.to_micros)),
            }),
            rows: summary
                .groups
                .iter()
                .map(|(g, s)| v1::SummaryRow {
                    group: Some(group_out(g)),
                    stats: Some(stats_out(s)),
                })
                .collect(),
            total: Some(stats_out(&summary.total)),
            truncated: summary.truncated,
        }))
    }

    async fn get_trend(
        &self,
        req: Request<v1::GetTrendRequest>,
    ) -> Result<Response<v1::GetTrendResponse>, Status> {
        let p = principal_in(req.extensions());
        let r = req.get_ref();
        let query = self.query_in(&p, r.scope.as_ref(), r.window.as_ref(), r.filter.as_ref())?;
        let granularity = granularity_in(r.granularity)?;
        let trend = self
            .engine
            .analytics_trend(&query, granularity)
            .await
            .map_err(status_from)?;
        Ok(Response::new(v1::GetTrendResponse {
            granularity: granularity_out(trend.granularity) as i32,
            points: trend
                .points
                .iter()
                .map(|(start, s)| v1::TrendPoint {
                    start: Some(timestamp_from_micros(*start)),
                    stats: Some(stats_out(s)),
                })
                .collect(),
        }))
    }

    async fn get_prediction(
        &self,
        req: Request<v1::GetPredictionRequest>,
    ) -> Result<Response<v1::Prediction>, Status> {
        let p = principal_in(req.extensions());
        let prediction = match &req.get_ref().subject {
            Some(v1::get_prediction_request::Subject::TaskId(id)) => {
                let id = task_id_in("task_id", id)?;
                let task = self.engine.get(&p.tenant, id).await.map_err(status_from)?;
                self.engine.predict_task(&task).await
            }
            Some(v1::get_prediction_request::Subject::Task(t)) => {
                self.engine.predict(&p.tenant, &hypothetical_in(t)?).await
            }
            None => {
                return Err(invalid(
                    "subject",
                    "name a task (task_id) or describe one (task)",
                ));
            }
        }
        .map_err(status_from)?;
        let prediction = prediction.ok_or_else(|| {
            Status::not_found(format!(
                "no task finished in the last 30 days, so there is nothing to predict from; {} shows what finished",
                quote("supervisor analytics summary")
            ))
        })?;
        Ok(Response::new(prediction_out(&prediction)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_defaults_to_the_last_day_and_must_not_run_backwards() {
        let now = 1_700_000_000_000_000;
        assert_eq!(
            window_in(None, now).unwrap(),
            (now - DEFAULT_WINDOW_MICROS, now)
        );
        let backwards = v1::Window {
            from: Some(timestamp_from_micros(now)),
            to: Some(timestamp_from_micros(now - 1)),
        };
        let err = window_in(Some(&backwards), now).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn only_a_cluster_admin_reads_every_tenant() {
        let all = v1::Scope { all_tenants: true };
        let mut p = Principal::anonymous();
        assert_eq!(tenant_in(Some(&all), &p).unwrap(), None);
        p.cluster_admin = false;
        p.tenant = "team-a".into();
        let err = tenant_in(Some(&all), &p).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(tenant_in(None, &p).unwrap().as_deref(), Some("team-a"));
    }

    #[test]
    fn dimensions_are_named_once() {
        let twice = [
            v1::Dimension::Provider as i32,
            v1::Dimension::Provider as i32,
        ];
        assert!(dimensions_in(&twice).is_err());
        assert!(dimensions_in(&[0]).is_err());
        assert_eq!(
            dimensions_in(&[v1::Dimension::Type as i32]).unwrap(),
            vec![Dimension::TaskType]
        );
    }
}
