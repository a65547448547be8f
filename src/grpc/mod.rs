//! The gRPC door: `BridgeService` behind an API-key check, plus gRPC health and
//! reflection v1 and v1alpha (open, so grpcurl and ghz work with no .proto file and no key).

mod authorize;
mod batch;
pub mod codec;
mod convert;
mod events;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};
use tonic::{Request, Status};

use crate::config::Config;
use crate::hub::Hub;
use crate::hub::auth::ApiKeys;
use crate::proto;
use crate::proto::bridge_service_server::BridgeServiceServer;
use crate::shutdown::Shutdown;

/// The API-key check as a tonic interceptor.
#[derive(Clone)]
struct KeyCheck(ApiKeys);

impl KeyCheck {
    fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let header = req.metadata().get("authorization").and_then(|v| v.to_str().ok());
        if self.0.accepts(header) {
            Ok(req)
        } else {
            tracing::info!(has_header = header.is_some(), "gRPC call refused: missing or unknown API key");
            Err(Status::unauthenticated("missing or invalid API key: send `authorization: Bearer <key>`"))
        }
    }
}

/// The TLS settings, read and checked at start (None: plaintext).
pub fn tls_config(config: &Config) -> Result<Option<ServerTlsConfig>, crate::config::SettingError> {
    let g = &config.grpc;
    let (Some(cert), Some(key)) = (&g.tls_cert_file, &g.tls_key_file) else { return Ok(None) };
    let read = |setting: &'static str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| crate::config::SettingError::file(setting, path, e))
    };
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read("grpc.tls_cert_file", cert)?, read("grpc.tls_key_file", key)?));
    if let Some(ca) = &g.tls_client_ca_file {
        tls = tls.client_ca_root(Certificate::from_pem(read("grpc.tls_client_ca_file", ca)?));
    }
    Ok(Some(tls))
}

/// Serves gRPC until shutdown, then lets in-flight calls finish.
pub async fn serve(
    config: &Config,
    tls: Option<ServerTlsConfig>,
    hub: Arc<Hub>,
    acceptor: crate::conn::Acceptor,
    shutdown: Shutdown,
) -> Result<(), tonic::transport::Error> {
    let keys = KeyCheck(ApiKeys::new(&config.grpc.api_keys));
    let max = config.grpc.max_message_bytes;
    let service = BridgeServiceServer::new(service::Bridge::new(hub))
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let bridge = tonic::service::interceptor::InterceptedService::new(service, move |req| keys.check(req));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter.set_serving::<BridgeServiceServer<service::Bridge>>().await;
    // Reflection v1 and v1alpha side by side: grpcurl speaks v1, while older ghz releases
    // and several GUI clients speak only v1alpha (against v1 alone they report "server does
    // not support the reflection API"). Each lists the other, so `list` shows both.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_failed = |e: tonic_reflection::server::Error| {
        tracing::error!(error = %e, "reflection service could not be built");
        e
    };
    let reflection = reflection_builder()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(reflection_failed);
    let reflection_v1alpha = reflection_builder()
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(reflection_failed);

    // Each call marks its connection busy, so the connection deadlines (`conn`) apply
    // only to connections with nothing in flight.
    let mut server = tonic::transport::Server::builder().layer(crate::conn::TrackLayer);
    if let Some(tls) = tls {
        server = server.tls_config(tls)?;
    }
    let mut router = server
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(bridge);
    if let Ok(reflection) = reflection {
        router = router.add_service(reflection);
    }
    if let Ok(reflection) = reflection_v1alpha {
        router = router.add_service(reflection);
    }
    // The acceptor sets TCP_NODELAY on accepted connections (the builder's tcp_nodelay
    // only applies to listeners tonic binds itself; without it small Events/Push frames
    // waited for delayed ACKs: event round-trip p99 at 10k/s 27.7 ms → 1.8 ms,
    // BENCHMARKS.md), puts them under the connection deadlines, and never hands tonic an
    // accept error (tonic retries those at once, spinning while descriptors are short).
    let incoming = crate::conn::incoming(acceptor);
    let draining = shutdown.clone();
    router
        .serve_with_incoming_shutdown(incoming, async move {
            draining.wait().await;
            health_reporter.set_not_serving::<BridgeServiceServer<service::Bridge>>().await;
        })
        .await
}

pub fn local_addr(listener: &tokio::net::TcpListener) -> Option<SocketAddr> {
    listener.local_addr().ok()
}
