//! One actor per configured provider: it owns the provider's periodic health probe (a real
//! request, or `claude --version`) and records the result in the provider's
//! [`ProviderHandle`], which routing reads. Agents use the handle directly for admission,
//! slots and reports, so a slow call never waits on this actor's mailbox.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use supervisor_providers::Health;

use crate::routing::ProviderHandle;

/// The registry name of the actor for provider `name`.
pub fn actor_name(provider: &str) -> String {
    format!("provider:{provider}")
}

/// Messages of the provider actor.
pub enum ProviderMsg {
    /// Run the health probe.
    Probe,
    /// The probe finished.
    ProbeDone(Health),
}

impl ractor::Message for ProviderMsg {}

/// Arguments of the provider actor.
pub struct ProviderArgs {
    /// The provider's live state.
    pub handle: Arc<ProviderHandle>,
    /// How often the health probe runs.
    pub probe_interval: Duration,
}

/// The provider actor.
pub struct ProviderActor;

/// Its state.
pub struct ProviderState {
    handle: Arc<ProviderHandle>,
    probing: bool,
}

/// Longest a health probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

impl Actor for ProviderActor {
    type Msg = ProviderMsg;
    type State = ProviderState;
    type Arguments = ProviderArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: ProviderArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(args.probe_interval, || ProviderMsg::Probe);
        myself.cast(ProviderMsg::Probe)?;
        Ok(ProviderState {
            handle: args.handle,
            probing: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ProviderMsg::Probe => {
                if state.probing {
                    return Ok(());
                }
                state.probing = true;
                let provider = state.handle.provider.clone();
                tokio::spawn(async move {
                    let health = match tokio::time::timeout(PROBE_TIMEOUT, provider.health()).await
                    {
                        Ok(h) => h,
                        Err(_) => Health {
                            healthy: false,
                            detail: format!("health probe timed out after {PROBE_TIMEOUT:?}"),
                        },
                    };
                    let _ = myself.cast(ProviderMsg::ProbeDone(health));
                });
            }
            ProviderMsg::ProbeDone(health) => {
                state.probing = false;
                let before = state.handle.snapshot().healthy;
                if before != health.healthy {
                    tracing::info!(provider = %state.handle.name, healthy = health.healthy, detail = %health.detail, "provider health changed");
                }
                state.handle.set_health(health);
            }
        }
        Ok(())
    }
}
