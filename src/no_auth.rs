//! etcd's `Auth` service as Reinado answers it before it has authentication: every call is UNIMPLEMENTED
//! with a message saying so, rather than tonic's bare "unknown service" answer. Nodes and proxies serve it.

use crate::etcd::etcdserverpb::{self as pb, auth_server::Auth};
use tonic::{Request, Response, Status};

/// etcd's Auth service, refusing every call with a message.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoAuth;

impl NoAuth {
    /// The service, to add to a tonic server.
    pub fn service() -> pb::auth_server::AuthServer<NoAuth> {
        pb::auth_server::AuthServer::new(NoAuth)
    }
}

/// The answer to every Auth call.
fn refused(call: &str) -> Status {
    Status::unimplemented(format!(
        "etcdserver: {call}: Reinado has no users, roles or authentication yet; every client is trusted \
         (see README, Limitations)"
    ))
}

macro_rules! refuse {
    ($($method:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl Auth for NoAuth {
            $(
                async fn $method(&self, _: Request<pb::$req>) -> Result<Response<pb::$resp>, Status> {
                    Err(refused(stringify!($method)))
                }
            )*
        }
    };
}

refuse! {
    auth_enable(AuthEnableRequest) -> AuthEnableResponse;
    auth_disable(AuthDisableRequest) -> AuthDisableResponse;
    auth_status(AuthStatusRequest) -> AuthStatusResponse;
    authenticate(AuthenticateRequest) -> AuthenticateResponse;
    user_add(AuthUserAddRequest) -> AuthUserAddResponse;
    user_get(AuthUserGetRequest) -> AuthUserGetResponse;
    user_list(AuthUserListRequest) -> AuthUserListResponse;
    user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse;
    user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse;
    user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse;
    user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse;
    role_add(AuthRoleAddRequest) -> AuthRoleAddResponse;
    role_get(AuthRoleGetRequest) -> AuthRoleGetResponse;
    role_list(AuthRoleListRequest) -> AuthRoleListResponse;
    role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse;
    role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse;
    role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse;
}
