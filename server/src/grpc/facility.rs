//! `vaxtrace.v1.FacilityService`.

use tonic::{Request, Response, Status};
use vaxtrace_proto::v1 as pb;

use super::caller;
use super::convert::{facility_input, storage_unit_input};
use crate::app::App;

/// The FacilityService implementation.
#[derive(Debug, Clone)]
pub struct FacilityApi(pub App);

#[tonic::async_trait]
impl pb::facility_service_server::FacilityService for FacilityApi {
    async fn create_facility(&self, req: Request<pb::CreateFacilityRequest>) -> Result<Response<pb::Facility>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let input = facility_input(r.facility.unwrap_or_default());
        Ok(Response::new(self.0.create_facility(&c, &r.request_id, input).await?.into()))
    }

    async fn get_facility(&self, req: Request<pb::GetFacilityRequest>) -> Result<Response<pb::Facility>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(self.0.get_facility(&c, &req.get_ref().id).await?.into()))
    }

    async fn list_facilities(
        &self,
        req: Request<pb::ListFacilitiesRequest>,
    ) -> Result<Response<pb::ListFacilitiesResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let query = crate::domain::facility::FacilityQuery {
            ancestor_id: r.ancestor_id,
            parent_id: r.parent_id,
            kind: r.kind,
            name_contains: r.name_contains,
            include_inactive: r.include_inactive,
        };
        let page = self.0.list_facilities(&c, query, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListFacilitiesResponse {
            facilities: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_facility(&self, req: Request<pb::UpdateFacilityRequest>) -> Result<Response<pb::Facility>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let f = r.facility.unwrap_or_default();
        let id = f.id.clone();
        let input = facility_input(f);
        Ok(Response::new(self.0.update_facility(&c, &r.request_id, &id, &input, &r.update_mask).await?.into()))
    }

    async fn create_storage_unit(
        &self,
        req: Request<pb::CreateStorageUnitRequest>,
    ) -> Result<Response<pb::StorageUnit>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let input = storage_unit_input(r.storage_unit.unwrap_or_default())?;
        Ok(Response::new(self.0.create_storage_unit(&c, &r.request_id, input).await?.into()))
    }

    async fn get_storage_unit(
        &self,
        req: Request<pb::GetStorageUnitRequest>,
    ) -> Result<Response<pb::StorageUnit>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(self.0.get_storage_unit(&c, &req.get_ref().id).await?.into()))
    }

    async fn list_storage_units(
        &self,
        req: Request<pb::ListStorageUnitsRequest>,
    ) -> Result<Response<pb::ListStorageUnitsResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page = self
            .0
            .list_storage_units(&c, &r.facility_id, &r.ancestor_id, r.include_inactive, r.page_size, &r.page_token)
            .await?;
        Ok(Response::new(pb::ListStorageUnitsResponse {
            storage_units: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_storage_unit(
        &self,
        req: Request<pb::UpdateStorageUnitRequest>,
    ) -> Result<Response<pb::StorageUnit>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let u = r.storage_unit.unwrap_or_default();
        let id = u.id.clone();
        let input = storage_unit_input(u)?;
        Ok(Response::new(self.0.update_storage_unit(&c, &r.request_id, &id, &input, &r.update_mask).await?.into()))
    }
}
