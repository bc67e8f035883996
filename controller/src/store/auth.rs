//! etcd's access control for cats (`catsd etcd-init`): users, roles and their key ranges,
//! following [`Keys`]. etcd started with `--client-cert-auth` takes a client's user from the
//! CN of its certificate, so the users have no password.
//!
//! ```text
//! user root             role root (etcd's administrator)
//! user cats-controller  role cats-controller: readwrite <prefix>/ (the whole prefix range)
//! user cats-node-N      role cats-node-N: read <prefix>/desired/N,
//!                                         readwrite <prefix>/report/N and <prefix>/alive/N
//! ```
//!
//! [`setup`] makes the roles and users of cats exactly so and then turns auth on; it is
//! idempotent and runs as root, before or after auth is on. Users and roles of nodes no
//! longer listed are left alone.

use anyhow::{Context, Result, bail};
use etcd_client::{
    AuthClient, Client, Permission, PermissionType, RoleRevokePermissionOptions, UserAddOptions,
};

use super::keys::{CONTROLLER_USER, Keys, ROOT_USER, node_user};

/// etcd's built-in administrator role.
pub const ROOT_ROLE: &str = "root";

/// One permission of a role: `kind` on `key` alone (`range_end` empty) or on
/// `[key, range_end)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    pub kind: PermissionType,
    pub key: Vec<u8>,
    pub range_end: Vec<u8>,
}

impl Grant {
    /// `kind` on exactly `key`.
    pub fn key(kind: PermissionType, key: &str) -> Self {
        Grant { kind, key: key.as_bytes().to_vec(), range_end: Vec::new() }
    }

    /// `kind` on every key that starts with `prefix`.
    pub fn prefix(kind: PermissionType, prefix: &str) -> Self {
        Grant { kind, key: prefix.as_bytes().to_vec(), range_end: prefix_end(prefix.as_bytes()) }
    }

    fn permission(&self) -> Permission {
        let p = Permission::new(self.kind, self.key.clone());
        if self.range_end.is_empty() { p } else { p.with_range_end(self.range_end.clone()) }
    }

    fn of(p: &Permission) -> Option<Self> {
        Some(Grant {
            kind: PermissionType::try_from(p.get_type()).ok()?,
            key: p.key().to_vec(),
            range_end: p.range_end().to_vec(),
        })
    }
}

impl std::fmt::Display for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.kind {
            PermissionType::Read => "read",
            PermissionType::Write => "write",
            PermissionType::Readwrite => "readwrite",
        };
        let key = String::from_utf8_lossy(&self.key);
        if self.range_end.is_empty() {
            write!(f, "{kind} {key}")
        } else if self.range_end == prefix_end(&self.key) {
            write!(f, "{kind} {key}*")
        } else {
            write!(f, "{kind} [{key}, {})", String::from_utf8_lossy(&self.range_end))
        }
    }
}

/// The end of the range of keys that start with `prefix` (as etcd's `--prefix`).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// The role of the controllers (named like their user).
pub fn controller_grants(keys: &Keys) -> Vec<Grant> {
    vec![Grant::prefix(PermissionType::Readwrite, &keys.all())]
}

/// The role of node `node`'s agent (named like its user).
pub fn node_grants(keys: &Keys, node: &str) -> Vec<Grant> {
    vec![
        Grant::key(PermissionType::Read, &keys.desired(node)),
        Grant::key(PermissionType::Readwrite, &keys.report(node)),
        Grant::key(PermissionType::Readwrite, &keys.alive(node)),
    ]
}

/// Is this etcd's "permission denied" (an authenticated user without the permission)?
///
/// etcd answers it with gRPC's PERMISSION_DENIED, except from its election and lock
/// services (3.4), which pass on the error of their inner request as UNKNOWN with etcd's
/// message.
pub fn is_permission_denied(e: &etcd_client::Error) -> bool {
    /// gRPC's PERMISSION_DENIED and UNKNOWN (google.rpc.Code).
    const PERMISSION_DENIED: i32 = 7;
    const UNKNOWN: i32 = 2;
    const MESSAGE: &str = "etcdserver: permission denied";
    match e {
        etcd_client::Error::GRpcStatus(s) => match i32::from(s.code()) {
            PERMISSION_DENIED => true,
            UNKNOWN => s.message() == MESSAGE,
            _ => false,
        },
        _ => false,
    }
}

/// Sets up users, roles and their permissions for the controllers and `nodes`, then turns
/// auth on. `client` must be root (its certificate's CN) once auth is on. Returns one line
/// per change made; nothing that is already right is touched.
pub async fn setup(client: &Client, keys: &Keys, nodes: &[String]) -> Result<Vec<String>> {
    for n in nodes {
        if n.is_empty() || n.contains('/') {
            bail!("invalid node name {n:?}");
        }
    }
    let mut auth = client.auth_client();
    let mut changes = Vec::new();
    let roles = auth.role_list().await.context("listing etcd roles")?.roles().to_vec();
    let users = auth.user_list().await.context("listing etcd users")?.users().to_vec();

    ensure_user(&mut auth, &users, ROOT_USER, ROOT_ROLE, &mut changes).await?;
    let mut wanted = vec![(CONTROLLER_USER.to_string(), controller_grants(keys))];
    wanted.extend(nodes.iter().map(|n| (node_user(n), node_grants(keys, n))));
    for (name, grants) in &wanted {
        ensure_role(&mut auth, &roles, name, grants, &mut changes).await?;
        ensure_user(&mut auth, &users, name, name, &mut changes).await?;
    }
    // Already on: etcd ignores the request.
    auth.auth_enable().await.context("enabling etcd auth")?;
    Ok(changes)
}

/// Role `name` with exactly `grants`.
async fn ensure_role(
    auth: &mut AuthClient,
    roles: &[String],
    name: &str,
    grants: &[Grant],
    changes: &mut Vec<String>,
) -> Result<()> {
    let held: Vec<Grant> = if roles.iter().any(|r| r == name) {
        let got = auth.role_get(name).await.with_context(|| format!("reading role {name}"))?;
        got.permissions().iter().filter_map(Grant::of).collect()
    } else {
        auth.role_add(name).await.with_context(|| format!("adding role {name}"))?;
        changes.push(format!("added role {name}"));
        Vec::new()
    };
    for g in grants.iter().filter(|g| !held.contains(g)) {
        auth.role_grant_permission(name, g.permission())
            .await
            .with_context(|| format!("granting {g} to role {name}"))?;
        changes.push(format!("role {name}: granted {g}"));
    }
    for g in held.iter().filter(|g| !grants.contains(g)) {
        let mut range = RoleRevokePermissionOptions::new();
        if !g.range_end.is_empty() {
            range = range.with_range_end(g.range_end.clone());
        }
        auth.role_revoke_permission(name, g.key.clone(), Some(range))
            .await
            .with_context(|| format!("revoking {g} from role {name}"))?;
        changes.push(format!("role {name}: revoked {g}"));
    }
    Ok(())
}

/// User `name` (no password: its certificate's CN is who it is) with role `role`; cats' own
/// users have no other role.
async fn ensure_user(
    auth: &mut AuthClient,
    users: &[String],
    name: &str,
    role: &str,
    changes: &mut Vec<String>,
) -> Result<()> {
    let roles: Vec<String> = if users.iter().any(|u| u == name) {
        auth.user_get(name).await.with_context(|| format!("reading user {name}"))?.roles().to_vec()
    } else {
        auth.user_add(name, "", Some(UserAddOptions::new().with_no_pwd()))
            .await
            .with_context(|| format!("adding user {name}"))?;
        changes.push(format!("added user {name}"));
        Vec::new()
    };
    if !roles.iter().any(|r| r == role) {
        auth.user_grant_role(name, role)
            .await
            .with_context(|| format!("granting role {role} to user {name}"))?;
        changes.push(format!("user {name}: granted role {role}"));
    }
    if name != ROOT_USER {
        for other in roles.iter().filter(|r| *r != role) {
            auth.user_revoke_role(name, other.as_str())
                .await
                .with_context(|| format!("revoking role {other} from user {name}"))?;
            changes.push(format!("user {name}: revoked role {other}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_follow_the_layout() {
        let keys = Keys::new("/cats/v1");
        let c = controller_grants(&keys);
        assert_eq!(c[0].to_string(), "readwrite /cats/v1/*");
        assert_eq!(c[0].range_end, b"/cats/v10");
        let n: Vec<String> = node_grants(&keys, "gw").iter().map(|g| g.to_string()).collect();
        assert_eq!(
            n,
            [
                "read /cats/v1/desired/gw",
                "readwrite /cats/v1/report/gw",
                "readwrite /cats/v1/alive/gw"
            ]
        );
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }
}
