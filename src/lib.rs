//! socket-bridge: a real-time gateway between Socket.IO browsers and Go backends.
//!
//! # Layout
//!
//! - [`hub`] is the core and the only place with business rules, one path per operation:
//!   the connection registry, pushes and rooms, the event router that hands client events
//!   to backend subscriptions and carries their acks back, offline delivery, status.
//! - [`hub::backplane`] is the one interface for what differs between one instance and
//!   many; [`hub::embedded`] implements it in memory, [`cluster`] over Redis. The hub
//!   never asks which one it has.
//! - [`names`] says what a room, event, user id or namespace may be, for every door.
//! - [`socketio`], [`grpc`] and [`http`] are thin doors: they decode and validate at the
//!   edge, call the hub, and map results and errors back to their protocol.
//! - [`telemetry`] sets up logging and metrics; [`config`] is plain settings;
//!   [`shutdown`] is the one small type every task waits on.
//! - [`conn`] puts every accepted connection, on both listeners, under deadlines and
//!   keeps the listeners accepting when file descriptors run out.
//! - [`run`] wires it together: the backplane the configuration asks for, two listeners
//!   (HTTP with Socket.IO, and gRPC), the hub's tasks, and an orderly shutdown.

pub mod cluster;
pub mod config;
pub mod conn;
pub mod grpc;
pub mod http;
pub mod hub;
pub mod names;
pub mod shutdown;
pub mod socketio;
pub mod telemetry;

/// Generated gRPC types and stubs for `socketbridge.v1`.
#[allow(clippy::all, missing_docs)]
pub mod proto {
    tonic::include_proto!("socketbridge.v1");

    /// Descriptor set served by the reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("socketbridge_descriptor");
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use config::Config;
use hub::{Hub, HubSettings};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("authentication setup failed: {0}")]
    Auth(config::SettingError),
    #[error("TLS setup failed: {0}")]
    Tls(config::SettingError),
    #[error("cluster setup failed: {0}")]
    Cluster(String),
}

/// A started bridge. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub hub: Arc<Hub>,
    io: hub::Io,
    grace: Duration,
    trigger_grpc: shutdown::ShutdownTrigger,
    trigger_http: shutdown::ShutdownTrigger,
    trigger_tasks: shutdown::ShutdownTrigger,
    grpc_task: JoinHandle<()>,
    http_task: JoinHandle<()>,
}

/// Binds both listeners and starts serving.
pub async fn start(config: Config) -> Result<Server, RunError> {
    let authenticator = hub::auth::Authenticator::from_config(&config.auth).map_err(RunError::Auth)?;
    if authenticator.is_dev() {
        tracing::warn!("dev auth mode: clients choose their own user id; never expose this to untrusted networks");
    }
    let grpc_tls = grpc::tls_config(&config).map_err(RunError::Tls)?;
    // The one place the mode is chosen: everything else talks to the backplane.
    let backplane: Arc<dyn hub::backplane::Backplane> = match &config.redis.url {
        Some(url) => {
            tracing::info!(
                prefix = config.redis.prefix,
                "cluster mode: sharing rooms, presence and events through redis"
            );
            cluster::RedisBackplane::new(url.expose(), cluster::ClusterSettings::from_config(&config))
                .map_err(|e| RunError::Cluster(e.to_string()))?
        }
        None => Arc::new(hub::embedded::EmbeddedBackplane::new(hub::offline::OfflineLimits {
            max_messages_per_user: config.offline.max_messages_per_user,
            max_bytes_per_user: config.offline.max_bytes_per_user,
            max_bytes: config.offline.max_bytes,
        })),
    };
    let (socketio_layer, io) = socketio::build(&config);
    let hub = Hub::new(HubSettings::from_config(&config), authenticator, backplane, io.clone());
    let (trigger_tasks, tasks_shutdown) = shutdown::channel();
    hub.start_tasks(tasks_shutdown);
    socketio::register_namespaces(&io, &hub, &config.socketio.namespaces, config.summary_interval());

    let http_addr = config.http_addr();
    let http_listener =
        TcpListener::bind(http_addr).await.map_err(|source| RunError::Bind { addr: http_addr, source })?;
    let grpc_addr = config.grpc_addr();
    let grpc_listener =
        TcpListener::bind(grpc_addr).await.map_err(|source| RunError::Bind { addr: grpc_addr, source })?;
    let http_addr = http_listener.local_addr().unwrap_or(http_addr);
    let grpc_addr = grpc_listener.local_addr().unwrap_or(grpc_addr);

    let count: conn::Counter = {
        let hub = hub.clone();
        Arc::new(move |kind, n| hub.metrics().errors.with_label_values(&[kind.as_str()]).inc_by(n))
    };
    let acceptor = |listener, first_request, idle, door| {
        let deadlines = conn::Deadlines { first_request, idle };
        conn::Acceptor::new(listener, deadlines, door, count.clone(), config.summary_interval())
    };
    let http_acceptor = acceptor(
        http_listener,
        config.header_read_timeout(),
        Duration::from_millis(config.http.idle_timeout_ms),
        "http",
    );
    let grpc_acceptor = acceptor(
        grpc_listener,
        Duration::from_millis(config.grpc.first_request_timeout_ms),
        Duration::from_millis(config.grpc.idle_timeout_ms),
        "grpc",
    );

    let (trigger_grpc, grpc_shutdown) = shutdown::channel();
    let grpc_task = {
        let (config, hub) = (config.clone(), hub.clone());
        tokio::spawn(async move {
            if let Err(e) = grpc::serve(&config, grpc_tls, hub, grpc_acceptor, grpc_shutdown).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
        })
    };

    let (trigger_http, http_shutdown) = shutdown::channel();
    let app = http::app(&config, hub.clone(), socketio_layer);
    let grace = config.grace_period();
    let http_task = tokio::spawn(http::serve(http_acceptor, app, http_shutdown, grace));

    Ok(Server {
        http_addr,
        grpc_addr,
        hub,
        io,
        grace: config.grace_period(),
        trigger_grpc,
        trigger_http,
        trigger_tasks,
        grpc_task,
        http_task,
    })
}

impl Server {
    /// Orderly stop within the grace period: refuse new work, let in-flight pushes and
    /// their acks finish while clients are still connected, then close client transports
    /// (clients reconnect elsewhere) and the listeners.
    pub async fn shutdown(self) {
        let deadline = Instant::now() + self.grace;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        tracing::info!(grace_ms = self.grace.as_millis() as u64, "draining");
        self.hub.start_draining();
        self.hub.router().close_all();
        self.trigger_grpc.fire();
        if tokio::time::timeout(remaining(), self.grpc_task).await.is_err() {
            tracing::warn!("gRPC calls still running at the end of the grace period");
        }
        // Pushes from either door may still wait for client acks: clients stay connected
        // until those are in.
        if tokio::time::timeout(remaining(), self.hub.pushes_finished()).await.is_err() {
            tracing::warn!("pushes still waiting for acks at the end of the grace period");
        }
        if tokio::time::timeout(remaining(), self.io.close()).await.is_err() {
            tracing::warn!("client transports still open at the end of the grace period");
        }
        // socketioxide drops its namespaces before the closed transports come back to it,
        // so no disconnect handler runs on shutdown: the hub unregisters what is left
        // itself, and in cluster mode the backends and other instances hear of it through
        // Redis before this instance leaves.
        self.hub.unregister_all("server shutting down");
        if tokio::time::timeout(remaining(), self.hub.leave_peers()).await.is_err() {
            tracing::warn!("cluster writes still queued at the end of the grace period");
        }
        self.trigger_http.fire();
        if tokio::time::timeout(remaining(), self.http_task).await.is_err() {
            tracing::warn!("HTTP connections still open at the end of the grace period");
        }
        self.trigger_tasks.fire();
        tracing::info!("stopped");
    }
}

/// Runs until `stop` resolves, then shuts down in order.
pub async fn run(config: Config, stop: impl std::future::Future<Output = ()>) -> Result<(), RunError> {
    let server = start(config).await?;
    tracing::info!(http = %server.http_addr, grpc = %server.grpc_addr, "socket-bridge ready");
    stop.await;
    server.shutdown().await;
    Ok(())
}
