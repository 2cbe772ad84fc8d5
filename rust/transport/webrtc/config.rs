//! The endpoint's settings and errors, a call's id, and the constants every part of a call shares.

use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use thiserror::Error;

use super::sdp::OfferError;

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
    /// its answer ends with [`CloseReason::IceFailed`](super::CloseReason::IceFailed).
    pub connect_timeout: Duration,
    /// A connected call that has heard no connectivity check for this long
    /// (the ICE agent reports it disconnected) ends with
    /// [`CloseReason::IceFailed`](super::CloseReason::IceFailed). Clients check every 5 s or so.
    pub disconnect_timeout: Duration,
    /// Most outgoing audio a call holds ahead of real time, in seconds;
    /// more is dropped and counted ([`CallStats::output_dropped_samples`](super::CallStats::output_dropped_samples)).
    pub max_output_seconds: f64,
    /// Decoded incoming frames that may wait for the application; more are
    /// dropped and counted ([`CallStats::input_dropped_frames`](super::CallStats::input_dropped_frames)).
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
    pub(crate) fn validate(&self) -> Result<(), WebRtcError> {
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
pub struct CallId(pub(crate) String);

impl CallId {
    /// A new id with 96 random bits: the id names the call in URLs, so it
    /// must not be guessable.
    pub(crate) fn random() -> Result<Self, OfferError> {
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
