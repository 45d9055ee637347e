//! `vaxtrace.v1.TelemetryService`.

use tonic::{Request, Response, Status};
use vaxtrace_proto::v1 as pb;

use super::caller;
use super::convert::timestamp;
use crate::app::App;
use crate::domain::telemetry::{Device, DeviceInput};
use crate::error::Error;

/// The TelemetryService implementation.
#[derive(Debug, Clone)]
pub struct TelemetryApi(pub App);

fn device(d: Device) -> pb::Device {
    pb::Device {
        id: d.id,
        serial: d.serial,
        name: d.name,
        model: d.model,
        facility_id: d.facility_id,
        probes: d
            .probes
            .into_iter()
            .map(|p| pb::Probe { index: p.index, storage_unit_id: p.storage_unit_id, label: p.label })
            .collect(),
        expected_interval: Some(prost_types::Duration { seconds: d.expected_interval_secs, nanos: 0 }),
        unsigned_allowed: d.unsigned_allowed,
        key_version: u32::try_from(d.key_version).unwrap_or(0),
        key_rotate_time: Some(timestamp(d.key_rotated_at)),
        last_seen_time: d.last_seen_at.map(timestamp),
        last_seq: u64::try_from(d.last_seq).unwrap_or(0),
        online: d.online,
        active: d.active,
        create_time: Some(timestamp(d.created_at)),
        update_time: Some(timestamp(d.updated_at)),
    }
}

fn unimplemented(what: &str) -> Status {
    Error::Unimplemented(format!("{what} arrives with the rest of cold-chain ingest")).into()
}

#[tonic::async_trait]
impl pb::telemetry_service_server::TelemetryService for TelemetryApi {
    async fn register_device(
        &self,
        req: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let d = r.device.unwrap_or_default();
        let input = DeviceInput {
            serial: d.serial,
            name: d.name,
            model: d.model,
            facility_id: d.facility_id,
            probes: d.probes.into_iter().map(|p| (p.index, p.storage_unit_id, p.label)).collect(),
            expected_interval_secs: d.expected_interval.map_or(0, |i| i.seconds),
            unsigned_allowed: d.unsigned_allowed,
        };
        let (dev, key) = self.0.register_device(&c, &r.request_id, input).await?;
        let key_version = u32::try_from(dev.key_version).unwrap_or(0);
        Ok(Response::new(pb::RegisterDeviceResponse { device: Some(device(dev)), key, key_version }))
    }

    async fn get_device(&self, req: Request<pb::GetDeviceRequest>) -> Result<Response<pb::Device>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(device(self.0.get_device(&c, &req.get_ref().id).await?)))
    }

    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        if !r.ancestor_id.is_empty() || !r.storage_unit_id.is_empty() {
            return Err(unimplemented("filtering devices by subtree or storage unit"));
        }
        let page = self.0.list_devices(&c, &r.facility_id, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices: page.items.into_iter().map(device).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_device(&self, _req: Request<pb::UpdateDeviceRequest>) -> Result<Response<pb::Device>, Status> {
        Err(unimplemented("UpdateDevice"))
    }

    async fn rotate_device_key(
        &self,
        _req: Request<pb::RotateDeviceKeyRequest>,
    ) -> Result<Response<pb::RotateDeviceKeyResponse>, Status> {
        Err(unimplemented("RotateDeviceKey"))
    }

    async fn list_readings(
        &self,
        _req: Request<pb::ListReadingsRequest>,
    ) -> Result<Response<pb::ListReadingsResponse>, Status> {
        Err(unimplemented("ListReadings"))
    }

    async fn query_readings(
        &self,
        _req: Request<pb::QueryReadingsRequest>,
    ) -> Result<Response<pb::QueryReadingsResponse>, Status> {
        Err(unimplemented("QueryReadings"))
    }

    async fn get_latest_readings(
        &self,
        _req: Request<pb::GetLatestReadingsRequest>,
    ) -> Result<Response<pb::GetLatestReadingsResponse>, Status> {
        Err(unimplemented("GetLatestReadings"))
    }
}
