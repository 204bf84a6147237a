//! Analytics calls: summaries, trends and predictions from the durable rollups
//! (`AnalyticsService`).

use supervisor_proto::v1::{
    GetPredictionRequest, GetSummaryRequest, GetSummaryResponse, GetTrendRequest, GetTrendResponse,
    HypotheticalTask, Prediction, get_prediction_request::Subject,
};

use crate::{Client, ClientError};

impl Client {
    /// Finished tasks of a window, grouped as the request asks (the caller's tenant, or
    /// every tenant for an admin of the default tenant who sets `scope.all_tenants`).
    pub async fn analytics_summary(
        &self,
        request: GetSummaryRequest,
    ) -> Result<GetSummaryResponse, ClientError> {
        Ok(self
            .analytics
            .clone()
            .get_summary(request)
            .await?
            .into_inner())
    }

    /// Finished tasks of a window, period by period.
    pub async fn analytics_trend(
        &self,
        request: GetTrendRequest,
    ) -> Result<GetTrendResponse, ClientError> {
        Ok(self
            .analytics
            .clone()
            .get_trend(request)
            .await?
            .into_inner())
    }

    /// What history says about the task `id` (`NOT_FOUND` when no task finished in the
    /// last 30 days, or no such task).
    pub async fn predict_task(&self, id: &str) -> Result<Prediction, ClientError> {
        let request = GetPredictionRequest {
            subject: Some(Subject::TaskId(id.into())),
        };
        Ok(self
            .analytics
            .clone()
            .get_prediction(request)
            .await?
            .into_inner())
    }

    /// What history says about a task that does not exist yet.
    pub async fn predict(&self, task: HypotheticalTask) -> Result<Prediction, ClientError> {
        let request = GetPredictionRequest {
            subject: Some(Subject::Task(task)),
        };
        Ok(self
            .analytics
            .clone()
            .get_prediction(request)
            .await?
            .into_inner())
    }
}
