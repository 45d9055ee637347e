//! `vaxtrace.v1.AlertService`.

use std::pin::Pin;

use tokio_stream::{Stream, StreamExt as _};
use tonic::{Request, Response, Status};
use vaxtrace_proto::v1 as pb;

use super::caller;
use super::convert::timestamp;
use crate::app::App;
use crate::domain::alert::{Alert, AlertEvent, Handling};
use crate::domain::webhook::Webhook;
use crate::error::Error;

/// The AlertService implementation.
#[derive(Debug, Clone)]
pub struct AlertApi(pub App);

fn handling_ack(h: Handling) -> pb::AlertAcknowledgement {
    pb::AlertAcknowledgement { by: h.by, time: Some(timestamp(h.time)), comment: h.comment }
}

fn handling_res(h: Handling) -> pb::AlertResolutionRecord {
    pb::AlertResolutionRecord { by: h.by, time: Some(timestamp(h.time)), resolution: h.resolution, comment: h.comment }
}

/// An alert on the wire.
pub fn alert(a: Alert) -> pb::Alert {
    let d = a.details;
    pb::Alert {
        id: a.id,
        kind: a.kind.as_i32(),
        severity: a.severity.as_i32(),
        state: a.state.as_i32(),
        subject: Some(pb::AlertSubject {
            facility_id: a.subject.facility_id,
            storage_unit_id: a.subject.storage_unit_id,
            lot_id: a.subject.lot_id,
            device_id: a.subject.device_id,
            product_id: a.subject.product_id,
            shipment_id: a.subject.shipment_id,
            probe: a.subject.probe,
        }),
        start_time: Some(timestamp(a.start)),
        end_time: a.end.map(timestamp),
        open_time: Some(timestamp(a.opened_at)),
        update_time: Some(timestamp(a.updated_at)),
        acknowledgement: a.acknowledgement.map(handling_ack),
        resolution: a.resolution.map(handling_res),
        details: Some(pb::AlertDetails {
            min_temp_c: d.min_temp_c,
            max_temp_c: d.max_temp_c,
            minutes_past_threshold: d.minutes_past_threshold,
            degree_hours_above_max: d.degree_hours_above_max,
            last_reading_time: d.last_reading_time.map(timestamp),
            stock_doses: d.stock_doses,
            min_doses: d.min_doses,
            max_doses: d.max_doses,
            quantity_to_max_doses: d.quantity_to_max_doses,
            days_to_expiry: d.days_to_expiry,
            wastage_rate_bp: d.wastage_rate_bp,
            acceptable_wastage_bp: d.acceptable_wastage_bp,
            days_overdue: d.days_overdue,
            quarantined_vials: d.quarantined_vials,
            summary: d.summary,
        }),
        condition_active: a.condition_active,
    }
}

/// An alert event on the wire.
pub(crate) fn event(e: AlertEvent) -> pb::AlertEvent {
    pb::AlertEvent {
        event_id: u64::try_from(e.event_id).unwrap_or(0),
        r#type: e.kind.as_i32(),
        alert: Some(alert(e.alert)),
        time: Some(timestamp(e.time)),
    }
}

/// A webhook on the wire (never its secret).
fn webhook(w: Webhook) -> pb::Webhook {
    pb::Webhook {
        id: w.id,
        scope_facility_id: w.scope_facility_id.unwrap_or_default(),
        url: w.url,
        kinds: w.kinds,
        min_severity: w.min_severity,
        description: w.description,
        created_by: w.created_by,
        create_time: Some(timestamp(w.created_at)),
        last_success_time: w.last_success_at.map(timestamp),
        last_failure_time: w.last_failure_at.map(timestamp),
        last_error: w.last_error,
        consecutive_failures: w.consecutive_failures,
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::AlertEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::alert_service_server::AlertService for AlertApi {
    type WatchAlertsStream = EventStream;

    async fn list_alerts(
        &self,
        req: Request<pb::ListAlertsRequest>,
    ) -> Result<Response<pb::ListAlertsResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let window =
            (super::convert::instant("start_time", r.start_time)?, super::convert::instant("end_time", r.end_time)?);
        let (page, latest) = self
            .0
            .list_alerts(
                &c,
                &r.ancestor_id,
                &r.storage_unit_id,
                r.kinds,
                r.states,
                r.min_severity,
                window,
                r.page_size,
                &r.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListAlertsResponse {
            alerts: page.items.into_iter().map(alert).collect(),
            next_page_token: page.next_page_token,
            latest_event_id: u64::try_from(latest).unwrap_or(0),
        }))
    }

    async fn get_alert(&self, req: Request<pb::GetAlertRequest>) -> Result<Response<pb::Alert>, Status> {
        let c = caller(&self.0, &req).await?;
        Ok(Response::new(alert(self.0.get_alert(&c, &req.get_ref().id).await?)))
    }

    async fn acknowledge_alert(
        &self,
        req: Request<pb::AcknowledgeAlertRequest>,
    ) -> Result<Response<pb::Alert>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        Ok(Response::new(alert(self.0.acknowledge_alert(&c, &r.request_id, &r.id, &r.comment).await?)))
    }

    async fn resolve_alert(&self, req: Request<pb::ResolveAlertRequest>) -> Result<Response<pb::Alert>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        Ok(Response::new(alert(self.0.resolve_alert(&c, &r.request_id, &r.id, r.resolution, &r.comment).await?)))
    }

    async fn watch_alerts(&self, req: Request<pb::WatchAlertsRequest>) -> Result<Response<EventStream>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let after = i64::try_from(r.after_event_id).map_err(|_| Error::invalid("after_event_id", "too large"))?;
        let rx = self.0.watch_alerts(&c, after, &r.ancestor_id, r.kinds, r.min_severity).await?;
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|r| r.map(event).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn create_webhook(
        &self,
        req: Request<pb::CreateWebhookRequest>,
    ) -> Result<Response<pb::CreateWebhookResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let input = super::convert::webhook_input(r.webhook.unwrap_or_default());
        let created = self.0.create_webhook(&c, &r.request_id, input, &r.secret).await?;
        Ok(Response::new(pb::CreateWebhookResponse {
            webhook: Some(webhook(created.webhook)),
            secret: created.secret.expose().to_owned(),
        }))
    }

    async fn list_webhooks(
        &self,
        req: Request<pb::ListWebhooksRequest>,
    ) -> Result<Response<pb::ListWebhooksResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        let page = self.0.list_webhooks(&c, r.page_size, &r.page_token).await?;
        Ok(Response::new(pb::ListWebhooksResponse {
            webhooks: page.items.into_iter().map(webhook).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn delete_webhook(
        &self,
        req: Request<pb::DeleteWebhookRequest>,
    ) -> Result<Response<pb::DeleteWebhookResponse>, Status> {
        let c = caller(&self.0, &req).await?;
        let r = req.into_inner();
        self.0.delete_webhook(&c, &r.request_id, &r.id).await?;
        Ok(Response::new(pb::DeleteWebhookResponse {}))
    }
}
