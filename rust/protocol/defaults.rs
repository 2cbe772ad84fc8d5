//! The server's defaults for every session: the command line's settings,
//! seeded into the protocol's session object and applied to the engine's
//! config again after every client `session.update`.

use super::session_object::{AudioFormat, SessionState, VadDefaults};
use crate::engine::SessionConfig;

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
}

impl Default for SessionDefaults {
    fn default() -> Self {
        Self {
            instructions: String::new(),
            chat_size: 0,
            speculation: true,
            prefill: true,
            soft_end_ms: None,
            live_transcription: false,
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
            min_speech_ms: 250.0,
            max_speech_ms: None,
            input_rate: 24_000,
            always_transcribe: false,
        }
    }
}

impl SessionDefaults {
    /// A new session's protocol state: the server's instructions and VAD values.
    pub fn seed(&self, state: SessionState) -> SessionState {
        let mut state = state.with_vad_defaults(VadDefaults {
            threshold: self.threshold,
            prefix_padding_ms: self.prefix_padding_ms,
            silence_duration_ms: self.silence_duration_ms,
        });
        state.instructions.clone_from(&self.instructions);
        state.input_format = AudioFormat::Pcm(self.input_rate);
        state
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
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::SessionDefaults;
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
}
