//! WebRTC transport: calls over one UDP port, Opus audio both ways and the `oai-events` data channel.
//!
//! # Stack: str0m, not webrtc-rs
//!
//! Both are Rust WebRTC stacks with DTLS, SRTP and SCTP data channels. We use
//! [`str0m`] (0.24, crypto from aws-lc-rs) because:
//!
//! * **It is sans-IO.** An [`str0m::Rtc`] is a state machine: datagrams and
//!   timeouts go in, datagrams, events and the next deadline come out. It has
//!   no threads or tasks of its own, so each call here is exactly one tokio
//!   task on the server's runtime, owning its `Rtc`, its Opus codec state and
//!   its outgoing audio queue, with no locks between them. webrtc-rs (0.21,
//!   now an async wrapper over its own sans-IO `rtc` core; before 0.20 an
//!   `RTCPeerConnection` with callbacks) spawns its own tasks per connection
//!   and hands events back through callbacks and `Arc<Mutex<..>>` state.
//! * **One UDP port for every call is the natural shape.** str0m leaves the
//!   sockets to us: [`mux`] reads the port once and hands each datagram to
//!   its call by the ICE username (`ufrag`) of its STUN binding request, then
//!   by the source address that request proved. webrtc-rs needs its
//!   `UDPMuxDefault` for the same.
//! * **Weight and build time on 2 cores.** str0m 0.24 with aws-lc-rs builds
//!   83 crates (`cargo tree`, normal and build dependencies), most of them
//!   small (`RustCrypto` traits, `sctp-proto`, `dimpl` for DTLS); aws-lc-sys
//!   is the one long C build, done once. webrtc-rs builds 179 (0.21) or 207
//!   (0.14).
//! * **Maintenance.** str0m is actively maintained (its authors run it in
//!   production), fails fast on broken invariants and never panics on input;
//!   its changelog and releases are frequent. webrtc-rs is maintained too,
//!   but its API is in the middle of the sans-IO rewrite.
//!
//! What str0m does not do, we do here: interface enumeration (host
//! candidates), decoding and encoding (libopus through the `opus` crate; its
//! `opusic-sys` builds its bundled libopus (1.6.1) statically, with runtime SIMD
//! dispatch, so the wheel needs no system libopus and is not tuned to the
//! build host), resampling ([`crate::audio::resample::Resampler`]) and real-time
//! pacing of the outgoing track. str0m's frame API reorders incoming RTP
//! (a fixed depacketize buffer); gaps become Opus packet-loss concealment.
//!
//! # ICE
//!
//! The endpoint is ICE-lite (RFC 8445 2.5), as servers with a reachable
//! address usually are: it answers the client's connectivity checks and
//! sends none, so every STUN message it receives is a request naming its
//! call. Host candidates are every local interface address when the endpoint
//! binds a wildcard address (one socket per address, all on the same port),
//! else the bound address. A server behind a 1:1 NAT advertises
//! [`WebRtcConfig::public_ip`] as one more candidate on the same port; the
//! NAT must forward that UDP port. No STUN or TURN server is needed on a LAN
//! or on loopback; a client behind a NAT that only allows relayed traffic
//! needs a TURN server on its side.
//!
//! # Shape
//!
//! [`WebRtcEndpoint::accept_offer`] answers an SDP offer and returns a
//! [`Call`]: a [`CallHandle`] to send audio (any supported rate, resampled to
//! 48 kHz, Opus in 20 ms frames, paced in real time) and text, to clear the
//! outgoing audio at once, and to hang up; and [`CallEvents`] with decoded
//! 48 kHz mono audio, `oai-events` messages and connection events. [`http`]
//! parses `POST /v1/realtime/calls` and builds its answers; [`echo`] is an
//! echo server for tests and measurements. Nothing here calls into Python.

mod audio;
mod call;
pub mod echo;
pub mod http;
mod mux;
mod sdp;

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use str0m::config::{CryptoProvider, DtlsCert};
use str0m::{Candidate, RtcConfig};
use thiserror::Error;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use call::{
    AudioFrame, Call, CallError, CallEvent, CallEvents, CallHandle, CallStats, CloseReason,
};
pub use sdp::OfferError;

/// Label of the data channel that carries the Realtime events.
pub const EVENTS_CHANNEL: &str = "oai-events";
/// Sample rate of the audio in and out of a call (Opus's own rate).
pub const SAMPLE_RATE: u32 = 48_000;
/// Samples in one outgoing Opus frame: 20 ms at 48 kHz.
pub const FRAME_SAMPLES: usize = 960;

/// Errors from binding an endpoint.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum WebRtcError {
    /// The UDP port could not be bound on an address. Pick another port
    /// (`--webrtc_port`) or stop whatever holds it.
    #[error("could not bind UDP {addr}: {source}")]
    Bind {
        /// `ip:port`.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The local interfaces could not be listed (a wildcard host needs them
    /// for its candidates). Bind a specific address instead.
    #[error("could not list the network interfaces: {0}")]
    Interfaces(std::io::Error),
    /// A wildcard host found no usable interface address. Bind a specific address.
    #[error("no usable network interface address to offer as an ICE candidate")]
    NoInterface,
    /// A setting is out of range; the message names it.
    #[error("invalid WebRTC setting: {0}")]
    InvalidConfig(String),
    /// The DTLS certificate could not be generated (crypto backend failure).
    #[error("could not create the DTLS certificate: {0}")]
    Certificate(String),
}

/// Endpoint settings.
#[derive(Debug, Clone, PartialEq)]
pub struct WebRtcConfig {
    /// Address to bind. A wildcard (`0.0.0.0` or `::`) binds every local
    /// interface address of that family, each on [`Self::port`].
    pub host: IpAddr,
    /// UDP port shared by every call (`--webrtc_port`; 0: any free port).
    pub port: u16,
    /// Address a client should reach this server at, for a server behind a
    /// 1:1 NAT (`--webrtc_public_ip`); advertised as one more candidate.
    pub public_ip: Option<IpAddr>,
    /// Calls at once; one more offer gets [`OfferError::TooManyCalls`].
    pub max_calls: usize,
    /// A call whose connectivity checks have not succeeded this long after
    /// its answer ends with [`CloseReason::IceFailed`].
    pub connect_timeout: Duration,
    /// A connected call that has heard no connectivity check for this long
    /// (the ICE agent reports it disconnected) ends with
    /// [`CloseReason::IceFailed`]. Clients check every 5 s or so.
    pub disconnect_timeout: Duration,
    /// Most outgoing audio a call holds ahead of real time, in seconds;
    /// more is dropped and counted ([`CallStats::output_dropped_samples`]).
    pub max_output_seconds: f64,
    /// Decoded incoming frames that may wait for the application; more are
    /// dropped and counted ([`CallStats::input_dropped_frames`]).
    pub max_pending_input_frames: usize,
    /// Bytes of `oai-events` text that may wait for the data channel to open
    /// or drain; a call that needs more has stopped reading and is closed.
    pub max_pending_text_bytes: usize,
}

impl Default for WebRtcConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::from([127, 0, 0, 1]),
            port: 0,
            public_ip: None,
            max_calls: 64,
            connect_timeout: Duration::from_secs(30),
            disconnect_timeout: Duration::from_secs(10),
            max_output_seconds: 300.0,
            max_pending_input_frames: 500,
            max_pending_text_bytes: 16 * 1024 * 1024,
        }
    }
}

impl WebRtcConfig {
    fn validate(&self) -> Result<(), WebRtcError> {
        let bad = |m: &str| Err(WebRtcError::InvalidConfig(m.to_owned()));
        if self.max_calls == 0 {
            return bad("max_calls must be at least 1");
        }
        if !(self.max_output_seconds.is_finite() && self.max_output_seconds >= 1.0) {
            return bad("max_output_seconds must be at least 1");
        }
        if self.max_pending_input_frames == 0 {
            return bad("max_pending_input_frames must be at least 1");
        }
        if self.max_pending_text_bytes < 64 * 1024 {
            return bad("max_pending_text_bytes must be at least 65536");
        }
        if self.connect_timeout.is_zero() || self.disconnect_timeout.is_zero() {
            return bad("connect_timeout and disconnect_timeout must be positive");
        }
        if let Some(ip) = self.public_ip
            && (ip.is_unspecified() || ip.is_multicast())
        {
            return bad("public_ip must be a unicast address");
        }
        Ok(())
    }
}

/// A call's id (`rtc_...`), as named by the `Location` of its answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(String);

impl CallId {
    /// A new id with 96 random bits: the id names the call in URLs, so it
    /// must not be guessable.
    fn random() -> Result<Self, OfferError> {
        let mut bytes = [0u8; 12];
        getrandom::fill(&mut bytes)
            .map_err(|e| OfferError::Internal(format!("no OS randomness for the call id: {e}")))?;
        let mut id = String::with_capacity(4 + 2 * bytes.len());
        id.push_str("rtc_");
        for b in bytes {
            let _ = write!(id, "{b:02x}");
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

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
    /// when `cancel` is cancelled (calls end with [`CloseReason::Shutdown`]).
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
