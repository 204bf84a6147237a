//! `supervisor whoami`, `tenant ...`, `key ...` and `audit ...`: who the credentials
//! stand for, tenants, API keys and the audit log of a node with authentication on.

mod json;
mod text;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Subcommand;
use supervisor_proto::v1::{CreateKeyRequest, ListAuditRequest};

use crate::commands::{
    GlobalArgs, connect,
    output::{OutputFormat, print_json, print_line, print_stderr_line, print_stdout},
    parse::parse_timeout,
};

use json::{AuditJson, KeyJson, TenantJson, WhoAmIJson};
use text::{audit_table, keys_table, tenants_table, whoami_text};

/// Tenants (admins of the default tenant).
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Make a tenant.
    Create {
        /// 1 to 64 characters of a-z, 0-9, '-', '_', '.', starting with a letter or digit.
        name: String,
    },
    /// Every tenant.
    List,
}

/// API keys (admins).
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Make a key and print it, this once (with --output json: {"id", "key", ...}).
    /// It acts in your tenant, or in the one `--tenant` names.
    Create {
        /// viewer, developer, operator or admin.
        #[arg(long)]
        role: String,
        /// A name for people.
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, such as 30d or 12h (default: never expires).
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
        expires: Option<Duration>,
    },
    /// The keys of your tenant (never their secrets).
    List {
        /// Every tenant's keys (an admin of the default tenant).
        #[arg(long)]
        all_tenants: bool,
    },
    /// Revoke a key: every node refuses it within a second.
    Revoke {
        /// The key's id (`key list` shows it; the part after svk_ of the key).
        id: String,
    },
}

/// The audit log (admins).
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Entries newest first: every call that may change something and every refused one.
    List {
        /// Only entries of the last DURATION, such as 1h or 7d.
        #[arg(long, value_name = "DURATION", value_parser = parse_timeout)]
        since: Option<Duration>,
        /// Only entries of this principal, such as key:0123456789abcdef.
        #[arg(long)]
        principal: Option<String>,
        /// Every tenant's entries, and refused calls without credentials (an admin of
        /// the default tenant).
        #[arg(long)]
        all_tenants: bool,
        /// Most entries printed.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

/// Runs `whoami`.
pub async fn run_whoami(global: &GlobalArgs) -> anyhow::Result<()> {
    let me = connect(global).await?.whoami().await?;
    match global.output {
        OutputFormat::Json => print_json(&WhoAmIJson::from(&me)),
        OutputFormat::Text => Ok(print_stdout(&whoami_text(&me))?),
    }
}

/// Runs a `tenant` subcommand.
pub async fn run_tenant(cmd: TenantCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = connect(global).await?;
    match cmd {
        TenantCommand::Create { name } => {
            let tenant = client.create_tenant(&name).await?;
            match global.output {
                OutputFormat::Json => print_json(&TenantJson::from(&tenant)),
                OutputFormat::Text => Ok(print_line(&format!("made tenant {}", tenant.name))?),
            }
        }
        TenantCommand::List => {
            let tenants = client.list_tenants().await?;
            match global.output {
                OutputFormat::Json => {
                    print_json(&tenants.iter().map(TenantJson::from).collect::<Vec<_>>())
                }
                OutputFormat::Text => Ok(print_stdout(&tenants_table(&tenants))?),
            }
        }
    }
}

/// Runs a `key` subcommand.
pub async fn run_key(cmd: KeyCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let client = connect(global).await?;
    match cmd {
        KeyCommand::Create {
            role,
            name,
            expires,
        } => {
            let made = client
                .create_key(CreateKeyRequest {
                    tenant: String::new(),
                    role,
                    name,
                    expires_in_seconds: expires.map_or(0, |d| d.as_secs().max(1)),
                })
                .await?;
            let info = made.info.unwrap_or_default();
            match global.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "id": info.id,
                    "key": made.key,
                    "info": KeyJson::from(&info),
                })),
                OutputFormat::Text => {
                    // The key alone on standard output, so `> ci.key` keeps just the key.
                    print_stdout(&format!("{}\n", made.key))?;
                    print_stderr_line(&format!(
                        "# key {} for tenant {} as {}: store it now, it is not shown again",
                        info.id, info.tenant, info.role
                    ));
                    Ok(())
                }
            }
        }
        KeyCommand::List { all_tenants } => {
            let keys = client.list_keys(all_tenants).await?;
            match global.output {
                OutputFormat::Json => {
                    print_json(&keys.iter().map(KeyJson::from).collect::<Vec<_>>())
                }
                OutputFormat::Text => Ok(print_stdout(&keys_table(&keys, SystemTime::now()))?),
            }
        }
        KeyCommand::Revoke { id } => {
            let key = client.revoke_key(&id).await?;
            match global.output {
                OutputFormat::Json => print_json(&KeyJson::from(&key)),
                OutputFormat::Text => Ok(print_line(&format!(
                    "revoked key {} ({}); every node refuses it within a second",
                    key.id, key.name
                ))?),
            }
        }
    }
}

/// Runs an `audit` subcommand.
pub async fn run_audit(cmd: AuditCommand, global: &GlobalArgs) -> anyhow::Result<()> {
    let AuditCommand::List {
        since,
        principal,
        all_tenants,
        limit,
    } = cmd;
    let since = since.map(|d| {
        let at = SystemTime::now()
            .checked_sub(d)
            .unwrap_or(UNIX_EPOCH)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        prost_types::Timestamp {
            seconds: at.as_secs() as i64,
            nanos: at.subsec_nanos() as i32,
        }
    });
    let entries = connect(global)
        .await?
        .audit_up_to(
            ListAuditRequest {
                since,
                principal: principal.unwrap_or_default(),
                page_size: limit.min(1000) as u32,
                page_token: String::new(),
                all_tenants,
            },
            limit,
        )
        .await?;
    match global.output {
        OutputFormat::Json => print_json(&entries.iter().map(AuditJson::from).collect::<Vec<_>>()),
        OutputFormat::Text => Ok(print_stdout(&audit_table(&entries))?),
    }
}
