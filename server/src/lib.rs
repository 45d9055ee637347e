//! vaxtrace server: the gRPC and HTTP API over the facility tree, the catalogue, the stock ledger
//! and the cold chain. [`serve`] takes an already-bound listener and a shutdown future, so tests run
//! it on ephemeral ports.

pub mod app;
pub mod broker;
pub mod demo;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod ingest;
pub mod limits;
pub mod metrics;
pub mod notify;
pub mod onboard;
pub mod store;
pub mod tls;
pub mod web;

use std::future::Future;

use tokio::net::TcpListener;

pub use app::App;
pub use metrics::Metrics;

/// Opens the database named by `database_url` (migrating it) and wraps it in an [`App`].
pub async fn open(database_url: &str) -> error::Result<App> {
    Ok(App::new(store::connect(database_url).await?))
}

/// Serves gRPC (with health, reflection and grpc-web) and HTTP on `listener` until `shutdown`
/// completes; in-flight requests are allowed to finish.
pub async fn serve(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = app.clone();
    let router = router(app, false).await?;
    tracing::info!(addr = ?listener.local_addr().ok(), "serving gRPC, grpc-web and HTTP");
    let shutdown = async move {
        shutdown.await;
        closing.close_streams();
    };
    // Without TCP_NODELAY every small gRPC answer waits ~40 ms for the client's delayed ACK
    // (measured: 164 → 815 stock transactions/s; BENCHMARKS.md).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

/// Serves as [`serve`] does, over TLS with `config` (see [`tls::server_config`]); session
/// cookies of the pages are then `Secure`.
pub async fn serve_tls(
    app: App,
    listener: TcpListener,
    config: std::sync::Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = app.clone();
    let router = router(app, true).await?;
    tracing::info!(addr = ?listener.local_addr().ok(), "serving gRPC, grpc-web and HTTP over TLS");
    let shutdown = async move {
        shutdown.await;
        closing.close_streams();
    };
    axum::serve(tls::TlsListener::new(listener, config)?, router).with_graceful_shutdown(shutdown).await
}

/// Everything the port answers: gRPC services, grpc-web, and the HTTP routes.
async fn router(app: App, tls: bool) -> std::io::Result<axum::Router> {
    let metrics = app.metrics().clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_service_status("", tonic_health::ServingStatus::Serving).await;
    for name in [
        "vaxtrace.v1.FacilityService",
        "vaxtrace.v1.CatalogService",
        "vaxtrace.v1.AdminService",
        "vaxtrace.v1.StockService",
    ] {
        health.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(vaxtrace_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(std::io::Error::other)?;
    let grpc = grpc::services(&app).add_service(health_service).add_service(reflection);
    let count = metrics.clone();
    let calls = limits::CallLimit::new(app.limits());
    let router = grpc
        .into_axum_router()
        // Inside the counting layer, so refused calls are counted as failed calls.
        .layer(axum::middleware::from_fn(move |req, next| calls.clone().run(req, next)))
        .layer(axum::middleware::from_fn(move |req, next: axum::middleware::Next| {
            let count = count.clone();
            async move {
                let is_grpc = req_is_grpc(&req);
                let resp = next.run(req).await;
                if is_grpc {
                    // A trailers-only error answer carries grpc-status in the headers.
                    let failed = resp.headers().get("grpc-status").is_some_and(|v| v != "0");
                    count.grpc_call(failed);
                }
                resp
            }
        }))
        // grpc-web only on the gRPC routes: the layer answers 400 to any other HTTP/1.1 request.
        .layer(tonic_web::GrpcWebLayer::new())
        .merge(web::router(app, metrics, tls));
    Ok(router)
}

fn req_is_grpc(req: &axum::extract::Request) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Resolves when the process gets SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
