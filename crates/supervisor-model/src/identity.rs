//! Who calls, and what they may do: roles, the permissions they grant, and the principal
//! a credential stands for. The table of which RPC needs which permission lives with the
//! API (the server); the meaning of each role lives here, in one place.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::FieldError;

/// What an RPC needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    /// Read and watch tasks, runs, schedules, providers, spend and the cluster.
    Read,
    /// Submit, cancel and retry tasks and workflow runs.
    Write,
    /// Schedules, provider and cluster operations, draining nodes.
    Operate,
    /// Keys, tenants, budgets, the audit log, and naming another tenant.
    Administer,
}

impl Permission {
    /// Lower-case name, as errors and the audit log show it.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Operate => "operate",
            Permission::Administer => "administer",
        }
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A principal's role. Each role has every permission of the roles before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Reads and watches.
    Viewer,
    /// A viewer that also submits, cancels and retries tasks and workflow runs.
    Developer,
    /// A developer that also manages schedules, providers and the cluster (drains).
    Operator,
    /// An operator that also manages keys, tenants, budgets and reads the audit log.
    Admin,
}

impl Role {
    /// Every role, least to most powerful.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Developer, Role::Operator, Role::Admin];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    /// The least role that has `permission`.
    pub fn least_with(permission: Permission) -> Role {
        match permission {
            Permission::Read => Role::Viewer,
            Permission::Write => Role::Developer,
            Permission::Operate => Role::Operator,
            Permission::Administer => Role::Admin,
        }
    }

    /// Whether this role grants `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        self >= Role::least_with(permission)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = FieldError;

    fn from_str(s: &str) -> Result<Role, FieldError> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                FieldError::new(
                    "role",
                    format!(
                        "unknown role {:?}; expected one of: viewer, developer, operator, admin",
                        shown(s)
                    ),
                )
            })
    }
}

/// Who a request comes from, as its credential says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// The tenant it acts in.
    pub tenant: String,
    /// Its role there.
    pub role: Role,
    /// A stable identifier: `key:<key id>`, `jwt:<issuer>/<subject>`, or `anonymous`
    /// when authentication is off.
    pub id: String,
    /// A name for people (the key's name, the token's subject).
    pub name: String,
    /// Whether it administers the whole cluster: an admin of the `default` tenant. Only
    /// such a principal makes tenants, and acts in or lists other tenants.
    pub cluster_admin: bool,
}

impl Principal {
    /// The principal of every request when authentication is off: an admin of the
    /// default tenant.
    pub fn anonymous() -> Principal {
        Principal {
            tenant: crate::DEFAULT_TENANT.to_string(),
            role: Role::Admin,
            id: "anonymous".into(),
            name: "anonymous".into(),
            cluster_admin: true,
        }
    }

    /// A principal of `tenant` with `role`; a cluster admin when it is an admin of
    /// `default`.
    pub fn new(tenant: String, role: Role, id: String, name: String) -> Principal {
        let cluster_admin = role == Role::Admin && tenant == crate::DEFAULT_TENANT;
        Principal {
            tenant,
            role,
            id,
            name,
            cluster_admin,
        }
    }
}

/// At most the first 64 characters of `s`, for quoting input back in an error.
fn shown(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((end, _)) => format!("{}...", &s[..end]),
        None => s.to_string(),
    }
}

/// Longest tenant name, in bytes.
pub const MAX_TENANT_BYTES: usize = 64;

/// Checks a tenant name: 1 to 64 characters of `a-z`, `0-9`, `-`, `_`, `.`, starting
/// with a letter or digit (it appears in keys, logs and URLs).
pub fn validate_tenant(name: &str) -> Result<(), FieldError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
    let valid = !name.is_empty()
        && name.len() <= MAX_TENANT_BYTES
        && name.chars().all(ok_char)
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(FieldError::new(
            "tenant",
            format!(
                "{:?} is not a tenant name: use 1 to {MAX_TENANT_BYTES} characters of a-z, 0-9, '-', '_' or '.', starting with a letter or digit",
                shown(name)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_has_the_permissions_of_the_ones_before_it() {
        use Permission::*;
        let table = [
            (Role::Viewer, [true, false, false, false]),
            (Role::Developer, [true, true, false, false]),
            (Role::Operator, [true, true, true, false]),
            (Role::Admin, [true, true, true, true]),
        ];
        for (role, allowed) in table {
            let got = [Read, Write, Operate, Administer].map(|p| role.allows(p));
            assert_eq!(got, allowed, "{role}");
        }
        assert_eq!("operator".parse::<Role>(), Ok(Role::Operator));
        let err = "root".parse::<Role>().unwrap_err();
        assert!(err.message.contains("viewer, developer"), "{}", err.message);
    }

    #[test]
    fn tenant_names_are_plain() {
        for good in ["default", "team-a", "a.b_c", "7up"] {
            assert_eq!(validate_tenant(good), Ok(()), "{good}");
        }
        for bad in ["", "Team", "-x", "a b", "a/b", "é", &"x".repeat(65)] {
            assert!(validate_tenant(bad).is_err(), "{bad:?}");
        }
    }
}
