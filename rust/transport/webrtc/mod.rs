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
//!   sockets to us: `mux.rs` reads the port once and hands each datagram to
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
mod config;
pub mod echo;
mod endpoint;
pub mod http;
mod mux;
mod sdp;

pub use call::{
    AudioFrame, Call, CallError, CallEvent, CallEvents, CallHandle, CallStats, CloseReason,
};
pub use config::{CallId, EVENTS_CHANNEL, FRAME_SAMPLES, SAMPLE_RATE, WebRtcConfig, WebRtcError};
pub use endpoint::WebRtcEndpoint;
pub use sdp::OfferError;
