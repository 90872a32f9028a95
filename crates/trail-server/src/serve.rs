//! Serving: binding the listener, the background tasks that run beside the router (checkpointer,
//! activity and key-read flusher, export worker, retention, the audit.log sink, streaming), connections with a
//! bounded request-head time, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;

use crate::{AppState, exports, integrity, retention, router, sink};

/// A bound, not yet running server.
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: AppState,
}

impl Server {
    pub async fn bind(mut state: AppState) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(state.settings.listen).await?;
        // With port 0 the real address is known only now; links (public_url) must use it.
        let mut settings = (*state.settings).clone();
        settings.listen = listener.local_addr()?;
        state.settings = Arc::new(settings);
        state.alerts.notifier.set_base(&state.public_url());
        Ok(Self { listener, state })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and finishes in-flight requests. The
    /// checkpointer runs alongside; a last pass after shutdown signs what the final requests appended.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let sink = match sink::SinkConfig::from_settings(&self.state.settings.sinks.file)
            .map_err(std::io::Error::other)?
        {
            Some(cfg) => {
                let (status, task) = sink::start(self.state.store.clone(), cfg, sink::system_clock())?;
                self.state.sink = Some(status.clone());
                Some((task, tokio::spawn(reopen_on_sighup(status))))
            }
            None => None,
        };
        let (store, signer, name) =
            (self.state.store.clone(), self.state.signer.clone(), self.state.settings.server_name.clone());
        let checkpointer = tokio::spawn(integrity::run_checkpointer(
            store.clone(),
            signer.clone(),
            name.clone(),
            self.state.metrics.clone(),
        ));
        let activity = self.state.activity.clone();
        let key_reads = self.state.key_reads.clone();
        let flusher = tokio::spawn({
            let (activity, key_reads, store) = (activity.clone(), key_reads.clone(), store.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    if let Err(e) = activity.flush(store.as_ref()).await {
                        tracing::warn!(error = %e, "cannot record session and key activity; will retry");
                    }
                    if let Err(e) = key_reads.flush(store.as_ref(), trail_model::time::now(), false).await {
                        tracing::warn!(error = %e, "cannot record API keys' reads; will retry");
                    }
                }
            }
        });
        let exporter = tokio::spawn(exports::run_exporter(self.state.clone()));
        let streams = tokio::spawn(self.state.streams.clone().run());
        let alerting = tokio::spawn(self.state.alerts.clone().run());
        let retention = self.state.archive.clone().map(|archive| {
            let settings = &self.state.settings;
            let r = retention::Retention::new(
                store.clone(),
                archive,
                signer.clone(),
                &settings.server_name,
                settings.retention.clone(),
            );
            tokio::spawn(retention::run_job(r, settings.retention.interval_secs, self.state.metrics.clone()))
        });
        let header_timeout = Duration::from_secs(self.state.settings.limits.request_timeout_secs.max(1));
        let served = serve_connections(self.listener, router(self.state), header_timeout, shutdown).await;
        checkpointer.abort();
        flusher.abort();
        exporter.abort();
        streams.abort();
        alerting.abort();
        if let Some((task, hup)) = sink {
            task.abort();
            hup.abort();
        }
        if let Some(r) = retention {
            r.abort();
        }
        if let Err(e) = activity.flush(store.as_ref()).await {
            tracing::warn!(error = %e, "cannot record session and key activity at shutdown");
        }
        if let Err(e) = key_reads.flush(store.as_ref(), trail_model::time::now(), true).await {
            tracing::warn!(error = %e, "cannot record API keys' reads at shutdown");
        }
        if let Err(e) = integrity::checkpoint_once(store.as_ref(), &signer, &name).await {
            tracing::warn!(error = %e, "final checkpoint failed");
        }
        served
    }
}

/// Accepts connections and serves HTTP/1.1 on each until `shutdown`, then lets in-flight requests
/// finish. Unlike `axum::serve` it bounds the time a client may take to send its request head
/// (`header_timeout`), so slow or silent clients (slow-loris) cannot hold connections forever.
async fn serve_connections(
    listener: tokio::net::TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use tower::{Service, ServiceExt};
    let mut make = app.into_make_service_with_connect_info::<SocketAddr>();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                // Out of descriptors and the like: wait a little rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(svc) = make.call(remote).await;
        let svc = hyper_util::service::TowerToHyperService::new(
            svc.map_request(|req: axum::http::Request<hyper::body::Incoming>| req.map(Body::new)),
        );
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Reopens `audit.log` on SIGHUP, so an external logrotate can move it away.
async fn reopen_on_sighup(status: Arc<sink::SinkStatus>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reopening audit.log");
            status.request_reopen();
        }
    }
    #[cfg(not(unix))]
    drop(status);
}
