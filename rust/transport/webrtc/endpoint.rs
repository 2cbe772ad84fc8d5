//! The endpoint: one UDP port, its routers, and answering offers into calls.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use str0m::config::{CryptoProvider, DtlsCert};
use str0m::{Candidate, RtcConfig};
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::call::{self, Call};
use super::config::{CallId, WebRtcConfig, WebRtcError};
use super::mux;
use super::sdp::{self, OfferError};

/// State shared by the endpoint and its call tasks.
struct Shared {
    config: WebRtcConfig,
    runtime: Handle,
    cancel: CancellationToken,
    crypto: Arc<CryptoProvider>,
    cert: DtlsCert,
    sockets: Arc<[Arc<mux::Socket>]>,
    routes: Vec<mpsc::UnboundedSender<mux::RouteCmd>>,
    /// Candidates every answer carries.
    candidates: Vec<Candidate>,
    calls: AtomicUsize,
    unrouted: Arc<mux::Counters>,
}

/// One UDP port serving every WebRTC call. Cloning shares it.
#[derive(Clone)]
pub struct WebRtcEndpoint {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WebRtcEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebRtcEndpoint")
            .field("addrs", &self.local_addrs())
            .field("calls", &self.calls())
            .finish_non_exhaustive()
    }
}

impl WebRtcEndpoint {
    /// Bind the UDP port and start reading it on `runtime`. Every task stops
    /// when `cancel` is cancelled (calls end with [`CloseReason::Shutdown`](super::CloseReason::Shutdown)).
    pub fn bind(
        config: WebRtcConfig,
        runtime: &Handle,
        cancel: CancellationToken,
    ) -> Result<Self, WebRtcError> {
        config.validate()?;
        let crypto = Arc::new(str0m::crypto::from_feature_flags());
        let cert = crypto
            .dtls_provider
            .generate_certificate()
            .ok_or_else(|| WebRtcError::Certificate("the crypto backend made none".into()))?;
        let sockets = {
            let _guard = runtime.enter();
            mux::bind_sockets(config.host, config.port)?
        };
        let mut candidates = Vec::new();
        for s in &sockets {
            let c = Candidate::host(s.local, "udp")
                .map_err(|e| WebRtcError::InvalidConfig(format!("candidate {}: {e}", s.local)))?;
            candidates.push(c);
        }
        if let Some(ip) = config.public_ip {
            let port = sockets.first().map_or(config.port, |s| s.local.port());
            let public = SocketAddr::new(ip, port);
            if !sockets.iter().any(|s| s.local == public) {
                let c = Candidate::host(public, "udp")
                    .map_err(|e| WebRtcError::InvalidConfig(format!("public_ip {ip}: {e}")))?;
                candidates.push(c);
            }
        }
        let counters = Arc::new(mux::Counters::default());
        let sockets: Arc<[Arc<mux::Socket>]> = sockets.into_iter().map(Arc::new).collect();
        let mut routes = Vec::with_capacity(sockets.len());
        for socket in sockets.iter() {
            let (tx, rx) = mpsc::unbounded_channel();
            routes.push(tx);
            let router = mux::Router::new(Arc::clone(socket), rx, Arc::clone(&counters));
            runtime.spawn(router.run(cancel.clone()));
        }
        tracing::info!(addrs = ?sockets.iter().map(|s| s.local).collect::<Vec<_>>(),
            public_ip = ?config.public_ip, "WebRTC endpoint listening");
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                runtime: runtime.clone(),
                cancel,
                crypto,
                cert,
                sockets,
                routes,
                candidates,
                calls: AtomicUsize::new(0),
                unrouted: counters,
            }),
        })
    }

    /// The bound socket addresses (one per interface for a wildcard host).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.shared.sockets.iter().map(|s| s.local).collect()
    }

    /// The UDP port every call uses.
    pub fn port(&self) -> u16 {
        self.shared.sockets.first().map_or(0, |s| s.local.port())
    }

    /// The ICE candidates every answer carries, as `ip:port`.
    pub fn candidate_addrs(&self) -> Vec<SocketAddr> {
        self.shared.candidates.iter().map(Candidate::addr).collect()
    }

    /// Calls now open.
    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::Acquire)
    }

    /// Datagrams that named no open call (stray or late packets), dropped.
    pub fn unrouted_datagrams(&self) -> u64 {
        self.shared.unrouted.unrouted.load(Ordering::Relaxed)
    }

    /// Answer an SDP offer: returns the call's id, the SDP answer and the call.
    ///
    /// The offer must be valid SDP with an audio section offering Opus; the
    /// `oai-events` data channel is optional. The call starts at once (on the
    /// endpoint's runtime) and waits for the client's connectivity checks.
    pub fn accept_offer(&self, offer_sdp: &str) -> Result<(CallId, String, Call), OfferError> {
        let shared = &self.shared;
        if shared.cancel.is_cancelled() {
            return Err(OfferError::Closed);
        }
        let offer = sdp::parse_offer(offer_sdp)?;
        // Count the call before building it, so that concurrent offers
        // cannot pass the limit together.
        let reserved = shared
            .calls
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < shared.config.max_calls).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            return Err(OfferError::TooManyCalls {
                max: shared.config.max_calls,
            });
        }
        let release = CallSlot(Arc::clone(&self.shared));
        let mut rtc = RtcConfig::new()
            .set_crypto_provider(Arc::clone(&shared.crypto))
            .set_dtls_cert(shared.cert.clone())
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .build(std::time::Instant::now());
        for c in &shared.candidates {
            rtc.add_local_candidate(c.clone());
        }
        let answer = rtc
            .sdp_api()
            .accept_offer(offer)
            .map_err(|e| OfferError::Rejected(e.to_string()))?;
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        let id = CallId::random()?;
        let key = mux::CallKey::next();
        let (datagram_tx, datagram_rx) = mpsc::channel(mux::CALL_QUEUE);
        for route in &shared.routes {
            // A router that stopped has been cancelled; the call will see that too.
            let _ = route.send(mux::RouteCmd::Add {
                ufrag: ufrag.clone(),
                key,
                tx: datagram_tx.clone(),
            });
        }
        drop(datagram_tx);
        let routes = shared.routes.clone();
        let (call, task) = call::start(call::Setup {
            id: id.clone(),
            rtc,
            datagrams: datagram_rx,
            sockets: Arc::clone(&shared.sockets),
            config: shared.config.clone(),
            cancel: shared.cancel.child_token(),
            on_end: Box::new(move || {
                for route in &routes {
                    let _ = route.send(mux::RouteCmd::Remove { key });
                }
                drop(release);
            }),
        });
        shared.runtime.spawn(task);
        tracing::info!(call = %id, "WebRTC call answered");
        Ok((id, answer.to_sdp_string(), call))
    }
}

/// One reserved call slot; released when the call ends (or its setup fails).
struct CallSlot(Arc<Shared>);

impl Drop for CallSlot {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::AcqRel);
    }
}
