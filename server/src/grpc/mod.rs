//! Thin tonic services: authenticate, convert the request, call [`App`], convert the response.

mod admin;
mod alert;
mod catalog;
pub mod convert;
mod facility;
pub mod json;
pub mod report;
pub mod status;
pub mod stock;
mod telemetry;

use tonic::Status;
use vaxtrace_proto::v1 as pb;

use crate::app::App;
use crate::domain::Caller;

/// Largest accepted request message; larger ones are refused before decoding.
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// Resolves the request's bearer token to a caller.
pub(crate) async fn caller<T>(app: &App, req: &tonic::Request<T>) -> Result<Caller, Status> {
    let header = req
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Status::from(crate::error::Error::Unauthenticated))?;
    let bearer = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).unwrap_or("");
    Ok(app.authenticate(bearer.trim()).await?)
}

/// Every vaxtrace gRPC service, ready to be mounted.
pub fn services(app: &App) -> tonic::service::Routes {
    let mut b = tonic::service::Routes::builder();
    b.add_service(
        pb::facility_service_server::FacilityServiceServer::new(facility::FacilityApi(app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        pb::catalog_service_server::CatalogServiceServer::new(catalog::CatalogApi(app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
    .add_service(
        pb::admin_service_server::AdminServiceServer::new(admin::AdminApi(app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    );
    b.add_service(
        pb::stock_service_server::StockServiceServer::new(stock::StockApi(app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    );
    b.add_service(
        pb::report_service_server::ReportServiceServer::new(report::ReportApi(app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    );
    b.add_service(
        pb::alert_service_server::AlertServiceServer::new(alert::AlertApi(app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    );
    b.add_service(
        pb::telemetry_service_server::TelemetryServiceServer::new(telemetry::TelemetryApi(app.clone()))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    );
    b.routes()
}
