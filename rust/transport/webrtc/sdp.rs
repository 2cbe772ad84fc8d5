//! Checks on an SDP offer before str0m answers it, so that a refusal says what was wrong.

use str0m::change::SdpOffer;
use thiserror::Error;

/// Why an offer was not answered. Nothing was created; other calls go on.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OfferError {
    /// The body is not an SDP offer (empty, or not parseable). The client
    /// should send the `sdp` of its `createOffer()`.
    #[error("the SDP offer could not be parsed: {0}")]
    Malformed(String),
    /// The offer has no (enabled) audio section. Add an audio transceiver or
    /// a microphone track before `createOffer()`.
    #[error(
        "the SDP offer has no audio section: add an audio track (or an audio transceiver) before createOffer()"
    )]
    NoAudio,
    /// The audio sections offer no Opus at 48 kHz, the only codec served.
    #[error("the SDP offer's audio offers no Opus (opus/48000/2); it offers: {}", offered_list(.offered))]
    NoCommonCodec {
        /// The audio codecs the offer named (`PCMU/8000`, ...).
        offered: Vec<String>,
    },
    /// The server already has its maximum number of calls. Retry later.
    #[error("the server already has its maximum of {max} calls")]
    TooManyCalls {
        /// The limit.
        max: usize,
    },
    /// The WebRTC stack refused the offer (an inconsistent offer that parsed).
    #[error("the SDP offer was refused: {0}")]
    Rejected(String),
    /// The endpoint is shutting down.
    #[error("the WebRTC endpoint is shutting down")]
    Closed,
    /// An internal failure (no OS randomness); the server may be unwell.
    #[error("internal error: {0}")]
    Internal(String),
}

fn offered_list(offered: &[String]) -> String {
    if offered.is_empty() {
        "no codec".to_owned()
    } else {
        offered.join(", ")
    }
}

/// One `m=` section's kind, port and the codecs of its `a=rtpmap` lines.
struct Section<'a> {
    kind: &'a str,
    port: &'a str,
    codecs: Vec<(&'a str, &'a str)>,
}

fn sections(sdp: &str) -> Vec<Section<'_>> {
    let mut out: Vec<Section<'_>> = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_whitespace();
            out.push(Section {
                kind: parts.next().unwrap_or(""),
                port: parts.next().unwrap_or(""),
                codecs: Vec::new(),
            });
        } else if let Some(map) = line.strip_prefix("a=rtpmap:")
            && let Some(section) = out.last_mut()
        {
            // `a=rtpmap:<pt> <name>/<rate>[/<channels>]`
            let spec = map.split_whitespace().nth(1).unwrap_or("");
            let mut parts = spec.split('/');
            let name = parts.next().unwrap_or("");
            let rate = parts.next().unwrap_or("");
            section.codecs.push((name, rate));
        }
    }
    out
}

/// Parse an offer with str0m's parser, then refuse one without enabled
/// audio or without Opus, saying which (from the `m=` and `a=rtpmap`
/// lines, which str0m does not expose).
pub(crate) fn parse_offer(sdp: &str) -> Result<SdpOffer, OfferError> {
    if sdp.trim().is_empty() {
        return Err(OfferError::Malformed("the offer is empty".into()));
    }
    if !sdp.trim_start().starts_with("v=") {
        return Err(OfferError::Malformed(
            "an SDP offer starts with a 'v=0' line".into(),
        ));
    }
    let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| OfferError::Malformed(e.to_string()))?;
    check_media(sdp)?;
    Ok(offer)
}

fn check_media(sdp: &str) -> Result<(), OfferError> {
    let audio: Vec<Section<'_>> = sections(sdp)
        .into_iter()
        .filter(|s| s.kind == "audio" && s.port != "0")
        .collect();
    if audio.is_empty() {
        return Err(OfferError::NoAudio);
    }
    let opus = audio
        .iter()
        .flat_map(|s| &s.codecs)
        .any(|(name, rate)| name.eq_ignore_ascii_case("opus") && *rate == "48000");
    if !opus {
        let mut offered: Vec<String> = audio
            .iter()
            .flat_map(|s| &s.codecs)
            .map(|(name, rate)| format!("{name}/{rate}"))
            .collect();
        offered.dedup();
        return Err(OfferError::NoCommonCodec { offered });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

    #[test]
    fn accepts_opus_audio() {
        let sdp = format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
        );
        assert_eq!(check_media(&sdp), Ok(()));
    }

    #[test]
    fn refuses_empty_and_non_sdp() {
        for bad in ["  \r\n", "hello", "v=0\r\nm=audio nonsense\r\n"] {
            assert!(
                matches!(parse_offer(bad), Err(OfferError::Malformed(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_offers_without_enabled_audio() {
        let data = format!("{HEAD}m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n");
        assert_eq!(check_media(&data), Err(OfferError::NoAudio));
        let disabled =
            format!("{HEAD}m=audio 0 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n");
        assert_eq!(check_media(&disabled), Err(OfferError::NoAudio));
    }

    #[test]
    fn names_the_codecs_of_an_offer_without_opus() {
        let sdp = format!(
            "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 opus/48000/2\r\n"
        );
        let err = check_media(&sdp).unwrap_err();
        assert_eq!(
            err,
            OfferError::NoCommonCodec {
                offered: vec!["PCMU/8000".into(), "PCMA/8000".into()]
            }
        );
        assert!(err.to_string().contains("PCMU/8000, PCMA/8000"), "{err}");
    }
}
