//! `vaxtrace.v1.TelemetryService`.

use tonic::{Request, Response, Status};
use vaxtrace_proto::v1 as pb;

use super::caller;
use super::convert::{device_input, instant};
use crate::app::App;

/// The TelemetryService implementation.
#[derive(Debug, Clone)]
pub struct TelemetryApi(pub App);

#[tonic::async_trait]
impl pb::telemetry_service_server::TelemetryService for TelemetryApi {
    async fn register_device(
        &self,
        req: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let input = device_input(r.device.unwrap_or_default());
        let (dev, key) = self.0.register_device(&c, &r.request_id, input).await?;
        let key_version = u32::try_from(dev.key_version).unwrap_or(0);
        Ok(Response::new(pb::RegisterDeviceResponse { device: Some(dev.into()), key, key_version }))
    }

    async fn get_device(&self, req: Request<pb::GetDeviceRequest>) -> Result<Response<pb::Device>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(self.0.get_device(&c, &req.get_ref().id).await?.into()))
    }

    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page = self
            .0
            .list_devices(
                &c,
                &r.facility_id,
                &r.ancestor_id,
                &r.storage_unit_id,
                r.include_inactive,
                r.page_size,
                &r.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_device(&self, req: Request<pb::UpdateDeviceRequest>) -> Result<Response<pb::Device>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let d = r.device.unwrap_or_default();
        let id = d.id.clone();
        let dev = self.0.update_device(&c, &r.request_id, &id, device_input(d), &r.update_mask).await?;
        Ok(Response::new(dev.into()))
    }

    async fn rotate_device_key(
        &self,
        req: Request<pb::RotateDeviceKeyRequest>,
    ) -> Result<Response<pb::RotateDeviceKeyResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let (dev, key) = self.0.rotate_device_key(&c, &r.request_id, &r.id, r.reset_sequence).await?;
        let key_version = u32::try_from(dev.key_version).unwrap_or(0);
        Ok(Response::new(pb::RotateDeviceKeyResponse { device: Some(dev.into()), key, key_version }))
    }

    async fn list_readings(
        &self,
        req: Request<pb::ListReadingsRequest>,
    ) -> Result<Response<pb::ListReadingsResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let start = instant("start_time", r.start_time)?;
        let end = instant("end_time", r.end_time)?;
        let page =
            self.0.list_readings(&c, &r.device_id, &r.storage_unit_id, start, end, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListReadingsResponse {
            readings: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn query_readings(
        &self,
        req: Request<pb::QueryReadingsRequest>,
    ) -> Result<Response<pb::QueryReadingsResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let start = instant("start_time", r.start_time)?;
        let end = instant("end_time", r.end_time)?;
        let (secs, nanos) = r.bucket.map_or((0, 0), |b| (b.seconds, b.nanos));
        let buckets = self.0.query_readings(&c, &r.storage_unit_id, start, end, secs, nanos).await?;
        Ok(Response::new(pb::QueryReadingsResponse { buckets: buckets.into_iter().map(Into::into).collect() }))
    }

    async fn get_latest_readings(
        &self,
        req: Request<pb::GetLatestReadingsRequest>,
    ) -> Result<Response<pb::GetLatestReadingsResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page = self.0.latest_readings(&c, &r.ancestor_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::GetLatestReadingsResponse {
            latest: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next_page_token,
        }))
    }
}
