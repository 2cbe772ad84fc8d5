//! The server's defaults for every session: the command line's settings,
//! seeded into the protocol's session object and applied to the engine's
//! config again after every client `session.update`.

use serde::Deserialize;
use serde_json::{Value, json};

use super::session_object::{
    AudioFormat, SessionState, TurnDetection, VadDefaults, parse_noise_reduction,
};
use super::wire::{Dialect, ProtocolError};
use crate::audio::ns::NsPreset;
use crate::engine::SessionConfig;
use crate::vad::{Eagerness, EndOfTurnConfig, TurnConfig};

/// Server-wide starting values of every session, from the command line.
/// A client may change the protocol's fields with `session.update`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionDefaults {
    /// System prompt (`instructions` until the client sets its own).
    pub instructions: String,
    /// Items of history the LLM sees (0: all).
    pub chat_size: usize,
    /// Start STT and the LLM at the soft end of speech.
    pub speculation: bool,
    /// Let the LLM read the history ahead while the user speaks.
    pub prefill: bool,
    /// Silence before that soft end, ms (`None`: derived from the turn's silence).
    pub soft_end_ms: Option<f64>,
    /// Input transcript deltas while the user speaks.
    pub live_transcription: bool,
    /// `server_vad.threshold`.
    pub threshold: f64,
    /// `server_vad.prefix_padding_ms`.
    pub prefix_padding_ms: u64,
    /// `server_vad.silence_duration_ms`.
    pub silence_duration_ms: u64,
    /// Shorter speech is not a turn, ms.
    pub min_speech_ms: f64,
    /// Longest turn, ms (`None`: unlimited).
    pub max_speech_ms: Option<f64>,
    /// PCM rate of a client that declares no input format. `OpenAI`'s is
    /// 24 kHz; clients of the original project send 16 kHz undeclared.
    pub input_rate: u32,
    /// Send input transcription events even when the client configured no
    /// transcription (the original project always does; `OpenAI` does not).
    pub always_transcribe: bool,
    /// Which sessions end turns with the learned end-of-turn model (when the
    /// engine has one).
    pub turn_detector: TurnDetector,
    /// `audio.input.noise_reduction` until the client sets its own
    /// (`None`: off).
    pub noise_reduction: Option<NsPreset>,
}

/// How the server ends users' turns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnDetector {
    /// `semantic_vad` sessions use the learned model; `server_vad` ones the
    /// silence rule, as `OpenAI` defines it.
    #[default]
    Auto,
    /// Every session with turn detection uses the learned model.
    SmartTurn,
    /// The silence rule only.
    Silence,
}

impl TurnDetector {
    /// The name in settings and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TurnDetector::Auto => "auto",
            TurnDetector::SmartTurn => "smart_turn",
            TurnDetector::Silence => "silence",
        }
    }
}

impl Default for SessionDefaults {
    fn default() -> Self {
        Self {
            instructions: String::new(),
            // Two turns of history: a small local model keeps its prompt short.
            chat_size: 2,
            speculation: true,
            prefill: true,
            soft_end_ms: TurnConfig::default().soft_end_ms,
            live_transcription: false,
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            min_speech_ms: 250.0,
            max_speech_ms: None,
            input_rate: 24_000,
            always_transcribe: false,
            turn_detector: TurnDetector::Auto,
            noise_reduction: None,
        }
    }
}

/// The server's own knobs, which the protocol has no field for; they sit
/// under `speech_to_speech` in the settings object.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Knobs {
    chat_size: usize,
    speculation: bool,
    prefill: bool,
    soft_end_ms: Option<f64>,
    live_transcription: bool,
    min_speech_ms: f64,
    max_speech_ms: Option<f64>,
    always_transcribe: bool,
    turn_detector: TurnDetector,
}

impl Default for Knobs {
    fn default() -> Self {
        let d = SessionDefaults::default();
        Self {
            chat_size: d.chat_size,
            speculation: d.speculation,
            prefill: d.prefill,
            soft_end_ms: d.soft_end_ms,
            live_transcription: d.live_transcription,
            min_speech_ms: d.min_speech_ms,
            max_speech_ms: d.max_speech_ms,
            always_transcribe: d.always_transcribe,
            turn_detector: d.turn_detector,
        }
    }
}

impl SessionDefaults {
    /// The settings object, in the protocol's names: a partial GA session
    /// object (`instructions`, `audio.input.format`, the `server_vad` fields
    /// of `audio.input.turn_detection`), plus the server's own knobs under
    /// `speech_to_speech`. What it leaves out keeps its default. This is
    /// the one way the command line's settings reach the core; it is
    /// validated as a client's `session.update` is.
    pub fn from_json(v: &Value) -> Result<Self, ProtocolError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ProtocolError::value("settings", "The settings must be an object."))?;
        // Only what a session's defaults can hold: anything else would be
        // dropped without a word.
        let unknown = |path: &str| {
            ProtocolError::value(
                path,
                format!(
                    "Unknown server setting '{path}': the settings hold instructions, \
                     audio.input.format, audio.input.turn_detection, \
                     audio.input.noise_reduction and speech_to_speech."
                ),
            )
        };
        if let Some(key) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "instructions" | "audio" | "speech_to_speech"))
        {
            return Err(unknown(key));
        }
        if let Some(audio) = obj.get("audio").and_then(Value::as_object) {
            if let Some(key) = audio.keys().find(|k| k.as_str() != "input") {
                return Err(unknown(&format!("audio.{key}")));
            }
            if let Some(input) = audio.get("input").and_then(Value::as_object)
                && let Some(key) = input.keys().find(|k| {
                    !matches!(k.as_str(), "format" | "turn_detection" | "noise_reduction")
                })
            {
                return Err(unknown(&format!("audio.input.{key}")));
            }
        }
        let mut session = obj.clone();
        let knobs = match session.remove("speech_to_speech") {
            None => Knobs::default(),
            Some(k) => serde_json::from_value::<Knobs>(k).map_err(|e| {
                ProtocolError::value("speech_to_speech", format!("Invalid server setting: {e}."))
            })?,
        };
        let mut state = SessionState::new("sess_defaults", "defaults");
        state.update(Dialect::Ga, &Value::Object(session))?;
        let vad = VadDefaults::default();
        let (threshold, prefix_padding_ms, silence_duration_ms) =
            if let TurnDetection::ServerVad {
                threshold,
                prefix_padding_ms,
                silence_duration_ms,
                ..
            } = &state.turn_detection
            {
                (*threshold, *prefix_padding_ms, *silence_duration_ms)
            } else {
                (
                    vad.threshold,
                    vad.prefix_padding_ms,
                    vad.silence_duration_ms,
                )
            };
        let AudioFormat::Pcm(input_rate) = state.input_format else {
            return Err(ProtocolError::value(
                "audio.input.format",
                "The server's default input format must be audio/pcm.",
            ));
        };
        if let Some(ms) = knobs.soft_end_ms
            && !(ms.is_finite() && ms > 0.0)
        {
            return Err(ProtocolError::value(
                "speech_to_speech.soft_end_ms",
                "soft_end_ms must be a positive number of milliseconds.",
            ));
        }
        Ok(Self {
            instructions: state.instructions,
            chat_size: knobs.chat_size,
            speculation: knobs.speculation,
            prefill: knobs.prefill,
            soft_end_ms: knobs.soft_end_ms,
            live_transcription: knobs.live_transcription,
            threshold,
            prefix_padding_ms,
            silence_duration_ms,
            min_speech_ms: knobs.min_speech_ms,
            max_speech_ms: knobs.max_speech_ms.filter(|m| m.is_finite()),
            input_rate,
            always_transcribe: knobs.always_transcribe,
            turn_detector: knobs.turn_detector,
            noise_reduction: parse_noise_reduction(&state.noise_reduction, "")?,
        })
    }

    /// The settings object [`from_json`](Self::from_json) reads: every
    /// default the server starts from, in the protocol's names.
    pub fn to_json(&self) -> Value {
        json!({
            "instructions": self.instructions,
            "audio": {"input": {
                "format": {"type": "audio/pcm", "rate": self.input_rate},
                "turn_detection": {
                    "type": "server_vad",
                    "threshold": self.threshold,
                    "prefix_padding_ms": self.prefix_padding_ms,
                    "silence_duration_ms": self.silence_duration_ms,
                },
                "noise_reduction": self.noise_reduction_json(),
            }},
            "speech_to_speech": {
                "chat_size": self.chat_size,
                "speculation": self.speculation,
                "prefill": self.prefill,
                "soft_end_ms": self.soft_end_ms,
                "live_transcription": self.live_transcription,
                "min_speech_ms": self.min_speech_ms,
                "max_speech_ms": self.max_speech_ms,
                "always_transcribe": self.always_transcribe,
                "turn_detector": self.turn_detector.as_str(),
            },
        })
    }

    /// A new session's protocol state: the server's instructions and VAD values.
    pub fn seed(&self, state: SessionState) -> SessionState {
        let mut state = state.with_vad_defaults(VadDefaults {
            threshold: self.threshold,
            prefix_padding_ms: self.prefix_padding_ms,
            silence_duration_ms: self.silence_duration_ms,
        });
        state.instructions.clone_from(&self.instructions);
        state.input_format = AudioFormat::Pcm(self.input_rate);
        state.noise_reduction = self.noise_reduction_json();
        state
    }

    fn noise_reduction_json(&self) -> Value {
        self.noise_reduction
            .map_or(Value::Null, |p| json!({"type": p.as_str()}))
    }

    /// The engine config of a session that speaks no protocol (the raw
    /// audio transports): these settings with `server_vad`.
    pub fn session_config(&self) -> SessionConfig {
        let state = self.seed(SessionState::new("sess_raw", "raw"));
        let mut config = SessionConfig::default();
        self.config_for(&state, &mut config);
        config
    }

    /// The engine config of `state`: its protocol fields, then the
    /// server-only settings the protocol has no field for. Runs on every
    /// `session.update`, so a client's update never loses a server flag.
    pub fn config_for(&self, state: &SessionState, config: &mut SessionConfig) {
        state.apply_to(config);
        config.chat_size = self.chat_size;
        config.speculation = self.speculation;
        config.prefill = self.prefill;
        config.live_transcription |= self.live_transcription;
        if self.always_transcribe && config.transcription.is_none() {
            config.transcription = Some(config.stt.clone());
        }
        // The learned end of turn: the engine of semantic_vad, an opt-in for
        // server_vad (the engine falls back to the silence rule without a model).
        config.end_of_turn = match (&state.turn_detection, self.turn_detector) {
            (_, TurnDetector::Silence)
            | (TurnDetection::Disabled, _)
            | (TurnDetection::ServerVad { .. }, TurnDetector::Auto) => None,
            (TurnDetection::SemanticVad { eagerness, .. }, _) => Some(
                EndOfTurnConfig::for_eagerness(eagerness.parse().unwrap_or(Eagerness::Auto)),
            ),
            (TurnDetection::ServerVad { .. }, TurnDetector::SmartTurn) => {
                Some(EndOfTurnConfig::for_eagerness(Eagerness::Auto))
            }
        };
        config.vad.min_speech_ms = self.min_speech_ms;
        config.vad.max_speech_ms = self.max_speech_ms;
        // The soft end must come before the end of the turn to be of use.
        if let Some(ms) = self.soft_end_ms
            && ms < config.vad.min_silence_ms
        {
            config.vad.soft_end_ms = Some(ms);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::SessionDefaults;
    use crate::audio::ns::NsPreset;
    use crate::engine::SessionConfig;
    use crate::protocol::session_object::{SessionState, TurnDetection, VadDefaults};
    use crate::protocol::wire::Dialect;

    /// Every server-wide flag set away from its default.
    fn flags() -> SessionDefaults {
        SessionDefaults {
            instructions: "Server prompt.".into(),
            chat_size: 3,
            speculation: false,
            prefill: false,
            soft_end_ms: Some(150.0),
            live_transcription: true,
            threshold: 0.3,
            prefix_padding_ms: 120,
            silence_duration_ms: 700,
            min_speech_ms: 90.0,
            max_speech_ms: Some(20_000.0),
            input_rate: 24_000,
            always_transcribe: false,
            turn_detector: super::TurnDetector::Auto,
            noise_reduction: Some(NsPreset::FarField),
        }
    }

    /// The engine config after the server's defaults and then the client's
    /// connect-time `session.update`, as the connection computes it.
    fn after_update(dialect: Dialect, update: &serde_json::Value) -> (SessionState, SessionConfig) {
        let d = flags();
        let mut state = d.seed(SessionState::new("sess_1", "gpt-realtime"));
        let mut config = SessionConfig::default();
        d.config_for(&state, &mut config);
        state.update(dialect, update).unwrap();
        d.config_for(&state, &mut config);
        (state, config)
    }

    fn assert_server_flags_kept(c: &SessionConfig) {
        assert_eq!(c.chat_size, 3);
        assert!(!c.speculation);
        assert!(!c.prefill);
        assert!(c.live_transcription, "--enable_live_transcription lost");
        assert_eq!(c.vad.soft_end_ms, Some(150.0), "--soft_end_ms lost");
        assert!((c.vad.min_speech_ms - 90.0).abs() < 1e-9);
        assert_eq!(c.vad.max_speech_ms, Some(20_000.0));
        assert!((c.vad.threshold - 0.3).abs() < 1e-6, "--thresh lost");
        assert!(
            (c.vad.speech_pad_ms - 120.0).abs() < 1e-9,
            "--speech_pad_ms lost"
        );
        assert_eq!(
            c.noise_reduction,
            Some(NsPreset::FarField),
            "--noise_reduction lost"
        );
    }

    #[test]
    fn sdk_connect_time_updates_keep_every_server_flag() {
        // The official SDK's minimal update, openai-agents' GA update (semantic
        // VAD, a transcription model) and a beta update.
        let ga_minimal = json!({"type": "realtime", "model": "gpt-realtime"});
        let (state, c) = after_update(Dialect::Ga, &ga_minimal);
        assert_server_flags_kept(&c);
        assert!(
            (c.vad.min_silence_ms - 700.0).abs() < 1e-9,
            "--min_silence_ms lost"
        );
        assert_eq!(state.instructions, "Server prompt.");
        assert_eq!(c.instructions, "Server prompt.");

        let agents = json!({
            "type": "realtime", "model": "gpt-realtime-2.1", "output_modalities": ["audio"],
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": 24000},
                    "transcription": {"model": "gpt-4o-mini-transcribe"},
                    "turn_detection": {"type": "semantic_vad", "interrupt_response": true},
                },
                "output": {"format": {"type": "audio/pcm", "rate": 24000}, "voice": "ash"},
            },
            "tools": [], "tool_choice": "auto",
        });
        let (_, c) = after_update(Dialect::Ga, &agents);
        assert_server_flags_kept(&c);

        let server_vad = json!({"type": "realtime",
            "audio": {"input": {"turn_detection": {"type": "server_vad"}}}});
        let (state, c) = after_update(Dialect::Ga, &server_vad);
        assert_server_flags_kept(&c);
        assert!((c.vad.min_silence_ms - 700.0).abs() < 1e-9);
        assert_eq!(
            state.turn_detection,
            TurnDetection::server_vad(&VadDefaults {
                threshold: 0.3,
                prefix_padding_ms: 120,
                silence_duration_ms: 700,
            })
        );

        let beta = json!({"modalities": ["audio", "text"], "voice": "alloy",
            "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": {"type": "server_vad", "create_response": true}});
        let (_, c) = after_update(Dialect::Beta, &beta);
        assert_server_flags_kept(&c);
    }

    #[test]
    fn settings_round_trip_in_the_protocols_names() {
        let d = flags();
        assert_eq!(SessionDefaults::from_json(&d.to_json()).unwrap(), d);
        assert_eq!(
            SessionDefaults::from_json(&json!({})).unwrap(),
            SessionDefaults::default()
        );
        let partial = json!({"audio": {"input": {"turn_detection": {"threshold": 0.7}}},
            "speech_to_speech": {"chat_size": 4}});
        let p = SessionDefaults::from_json(&partial).unwrap();
        assert!((p.threshold - 0.7).abs() < 1e-9);
        assert_eq!(p.chat_size, 4);
        assert_eq!(p.silence_duration_ms, 500);
        // Validated as a client's update is, with the parameter named.
        let bad = json!({"audio": {"input": {"turn_detection": {"threshold": 2}}}});
        let e = SessionDefaults::from_json(&bad).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("session.audio.input.turn_detection.threshold")
        );
        let unknown = json!({"speech_to_speech": {"chat_sise": 4}});
        assert!(SessionDefaults::from_json(&unknown).is_err());
        for unknown in [
            json!({"input_rate": 16000}),
            json!({"audio": {"output": {}}}),
            json!({"audio": {"input": {"transcription": null}}}),
        ] {
            let e = SessionDefaults::from_json(&unknown).unwrap_err();
            assert!(e.message.contains("Unknown server setting"), "{e}");
        }
    }

    #[test]
    fn a_client_may_still_change_the_protocol_fields() {
        let update = json!({"type": "realtime", "instructions": "Client prompt.",
            "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 0.8,
                "prefix_padding_ms": 50, "silence_duration_ms": 300}}}});
        let (_, c) = after_update(Dialect::Ga, &update);
        assert_eq!(c.instructions, "Client prompt.");
        assert!((c.vad.threshold - 0.8).abs() < 1e-6);
        assert!((c.vad.speech_pad_ms - 50.0).abs() < 1e-9);
        assert!((c.vad.min_silence_ms - 300.0).abs() < 1e-9);
        // The server's soft end still comes before the end of the turn.
        assert_eq!(c.vad.soft_end_ms, Some(150.0));
        let short = json!({"type": "realtime", "audio": {"input": {"turn_detection":
            {"type": "server_vad", "silence_duration_ms": 100}}}});
        let (_, c) = after_update(Dialect::Ga, &short);
        assert!(c.vad.soft_end_ms.is_some_and(|ms| ms < 100.0));
    }

    #[test]
    fn noise_reduction_follows_the_server_flag_then_the_client_in_both_dialects() {
        let (state, c) = after_update(Dialect::Ga, &json!({"type": "realtime"}));
        assert_eq!(state.noise_reduction, json!({"type": "far_field"}));
        assert_eq!(c.noise_reduction, Some(NsPreset::FarField));
        let near = json!({"type": "realtime",
            "audio": {"input": {"noise_reduction": {"type": "near_field"}}}});
        assert_eq!(
            after_update(Dialect::Ga, &near).1.noise_reduction,
            Some(NsPreset::NearField)
        );
        let off = json!({"type": "realtime", "audio": {"input": {"noise_reduction": null}}});
        assert_eq!(after_update(Dialect::Ga, &off).1.noise_reduction, None);
        let beta = json!({"input_audio_noise_reduction": {"type": "near_field"}});
        assert_eq!(
            after_update(Dialect::Beta, &beta).1.noise_reduction,
            Some(NsPreset::NearField)
        );
        // A wrong type is refused and changes nothing.
        let d = flags();
        let mut state = d.seed(SessionState::new("sess_1", "gpt-realtime"));
        for (dialect, bad) in [
            (
                Dialect::Ga,
                json!({"audio": {"input": {"noise_reduction": {"type": "loud"}}}}),
            ),
            (
                Dialect::Ga,
                json!({"audio": {"input": {"noise_reduction": "near_field"}}}),
            ),
            (Dialect::Beta, json!({"input_audio_noise_reduction": {}})),
        ] {
            let e = state.update(dialect, &bad).unwrap_err();
            assert!(
                e.param
                    .as_deref()
                    .is_some_and(|p| p.ends_with("noise_reduction.type")),
                "{e}"
            );
            assert!(e.message.contains("near_field"), "{e}");
        }
        assert_eq!(state.noise_reduction, json!({"type": "far_field"}));
        // The raw transports' config carries it too.
        assert_eq!(d.session_config().noise_reduction, Some(NsPreset::FarField));
        assert_eq!(d.session_config().instructions, "Server prompt.");
    }
}
