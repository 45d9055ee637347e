//! `vaxtrace.v1.AdminService`.

use tonic::{Request, Response, Status};
use vaxtrace_proto::v1 as pb;

use super::caller;
use crate::app::App;
use crate::domain::PageRequest;

/// The AdminService implementation.
#[derive(Debug, Clone)]
pub struct AdminApi(pub App);

#[tonic::async_trait]
impl pb::admin_service_server::AdminService for AdminApi {
    async fn create_token(
        &self,
        req: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let issued =
            self.0.create_token(&c, &r.request_id, r.role, &r.scope_facility_id, &r.device_id, &r.description).await?;
        Ok(Response::new(issued.into()))
    }

    async fn list_tokens(
        &self,
        req: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page = PageRequest::parse(r.page_size, &r.page_token, &r.include_revoked)?;
        let page = self.0.list_tokens(&c, r.include_revoked, page).await?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn revoke_token(&self, req: Request<pb::RevokeTokenRequest>) -> Result<Response<pb::Token>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        Ok(Response::new(self.0.revoke_token(&c, &r.request_id, &r.id).await?.into()))
    }

    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Result<Response<pb::Token>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(self.0.who_am_i(&c).await?.into()))
    }
}
