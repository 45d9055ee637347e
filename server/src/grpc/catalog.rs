//! `vaxtrace.v1.CatalogService`.

use tonic::{Request, Response, Status};
use vaxtrace_proto::v1 as pb;

use super::caller;
use super::convert::{date_parts, lot_input, product_input};
use crate::app::App;

/// The CatalogService implementation.
#[derive(Debug, Clone)]
pub struct CatalogApi(pub App);

#[tonic::async_trait]
impl pb::catalog_service_server::CatalogService for CatalogApi {
    async fn create_product(&self, req: Request<pb::CreateProductRequest>) -> Result<Response<pb::Product>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let input = product_input(r.product.unwrap_or_default());
        Ok(Response::new(self.0.create_product(&c, &r.request_id, input).await?.into()))
    }

    async fn get_product(&self, req: Request<pb::GetProductRequest>) -> Result<Response<pb::Product>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(self.0.get_product(&c, &req.get_ref().id).await?.into()))
    }

    async fn list_products(
        &self,
        req: Request<pb::ListProductsRequest>,
    ) -> Result<Response<pb::ListProductsResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page = self.0.list_products(&c, r.include_inactive, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListProductsResponse {
            products: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_product(&self, req: Request<pb::UpdateProductRequest>) -> Result<Response<pb::Product>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let p = r.product.unwrap_or_default();
        let id = p.id.clone();
        let input = product_input(p);
        Ok(Response::new(self.0.update_product(&c, &r.request_id, &id, &input, &r.update_mask).await?.into()))
    }

    async fn create_lot(&self, req: Request<pb::CreateLotRequest>) -> Result<Response<pb::Lot>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let input = lot_input(r.lot.unwrap_or_default());
        Ok(Response::new(self.0.create_lot(&c, &r.request_id, input).await?.into()))
    }

    async fn get_lot(&self, req: Request<pb::GetLotRequest>) -> Result<Response<pb::Lot>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(self.0.get_lot(&c, &req.get_ref().id).await?.into()))
    }

    async fn list_lots(&self, req: Request<pb::ListLotsRequest>) -> Result<Response<pb::ListLotsResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page = self
            .0
            .list_lots(&c, &r.product_id, date_parts(r.expires_before.as_ref()), r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListLotsResponse {
            lots: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
