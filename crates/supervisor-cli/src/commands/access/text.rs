//! Tenants, keys, the caller and audit entries as text.

use std::time::SystemTime;

use supervisor_proto::v1::{ApiKey, AuditEntry, Tenant, WhoAmIResponse};

use crate::commands::output::{Table, age, field_lines, or_dash, rfc3339_seconds};

/// `whoami` as fields.
pub fn whoami_text(me: &WhoAmIResponse) -> String {
    let auth = if me.auth_enabled {
        "on".to_string()
    } else {
        "off (every call acts as the anonymous admin of the default tenant)".to_string()
    };
    field_lines(&[
        ("principal", me.principal.clone()),
        ("name", or_dash(&me.name)),
        ("tenant", me.tenant.clone()),
        ("role", me.role.clone()),
        ("authentication", auth),
    ])
}

/// `tenant list` as a table.
pub fn tenants_table(tenants: &[Tenant]) -> String {
    let mut table = Table::new(&["TENANT", "CREATED", "BY"]);
    for t in tenants {
        table.row(vec![
            t.name.clone(),
            t.created_at.as_ref().map_or("-".into(), rfc3339_seconds),
            t.created_by.clone(),
        ]);
    }
    table.render()
}

/// `key list` as a table.
pub fn keys_table(keys: &[ApiKey], now: SystemTime) -> String {
    let mut table = Table::new(&[
        "ID",
        "TENANT",
        "ROLE",
        "NAME",
        "CREATED",
        "EXPIRES",
        "STATE",
        "LAST USED",
    ]);
    for k in keys {
        let state = if k.revoked_at.is_some() {
            "revoked"
        } else if k
            .expires_at
            .as_ref()
            .and_then(crate::commands::output::system_time)
            .is_some_and(|e| e <= now)
        {
            "expired"
        } else {
            "active"
        };
        table.row(vec![
            k.id.clone(),
            k.tenant.clone(),
            k.role.clone(),
            or_dash(&k.name),
            age(k.created_at.as_ref(), now),
            k.expires_at
                .as_ref()
                .map_or("never".into(), rfc3339_seconds),
            state.into(),
            k.last_used_at
                .as_ref()
                .map_or("never".into(), |t| age(Some(t), now)),
        ]);
    }
    table.render()
}

/// `audit list` as a table.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let mut table = Table::new(&[
        "AT",
        "PRINCIPAL",
        "TENANT",
        "RPC",
        "TARGETS",
        "OUTCOME",
        "PEER",
    ]);
    for e in entries {
        table.row(vec![
            e.at.as_ref().map_or("-".into(), rfc3339_seconds),
            e.principal.clone(),
            or_dash(&e.tenant),
            e.rpc.trim_start_matches("supervisor.v1.").to_string(),
            or_dash(&e.targets.join(",")),
            e.outcome.clone(),
            or_dash(&e.peer),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_key_name_stays_on_its_row() {
        let key = ApiKey {
            id: "0123456789abcdef".into(),
            tenant: "team-a".into(),
            role: "viewer".into(),
            name: "ci\u{1b}[31m\nbot".into(),
            ..Default::default()
        };
        let text = keys_table(&[key], SystemTime::now());
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            text.contains("ci\\e[31m\\nbot") && text.contains("active"),
            "{text}"
        );
    }
}
