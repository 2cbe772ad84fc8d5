//! What a session is set up with: its settings and the overrides of one response.

use crate::audio::ns::NsPreset;
use crate::engine::backend::{SttOptions, Tool, ToolChoice};
use crate::engine::conversation::Item;
use crate::vad::EndOfTurnConfig;

/// Per-session settings; the realtime transport maps `session.update` here.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    /// System prompt.
    pub instructions: String,
    /// Tools the model may call.
    pub tools: Vec<Tool>,
    /// How it may call them.
    pub tool_choice: ToolChoice,
    /// Sampling temperature (backend default when `None`).
    pub temperature: Option<f64>,
    /// Token budget of a response.
    pub max_output_tokens: Option<u32>,
    /// Speak the answer (true) or only write it.
    pub audio_output: bool,
    /// TTS voice.
    pub voice: Option<String>,
    /// TTS speed.
    pub speed: f64,
    /// Rate of the audio the session emits.
    pub output_rate: u32,
    /// Whether the VAD drives turns (false: push-to-talk).
    pub turn_detection: bool,
    /// Start a response when a turn is committed.
    pub create_response: bool,
    /// Cancel the active response when the user starts speaking.
    pub interrupt_response: bool,
    /// Emit input transcription events, with these options.
    pub transcription: Option<SttOptions>,
    /// Semantic turn ends (`semantic_vad`): when the VAD ends a turn whose
    /// transcript sounds unfinished, wait up to this long (input audio ms,
    /// from the end of speech) for the user to go on. `None`: never wait.
    pub semantic_max_wait_ms: Option<f64>,
    /// End turns with the engine's learned end-of-turn model (when it has
    /// one), with these settings; `None`: the VAD's silence rule.
    pub end_of_turn: Option<EndOfTurnConfig>,
    /// Options of the STT the pipeline runs anyway.
    pub stt: SttOptions,
    /// Items of history the LLM sees (0: all).
    pub chat_size: usize,
    /// Start STT and the LLM on the VAD's soft end, before the commit.
    pub speculation: bool,
    /// When the user starts speaking, let the LLM read the history ahead
    /// (see [`LlmBackend::prefill`](super::backend::LlmBackend::prefill)).
    pub prefill: bool,
    /// Send input transcript deltas while the user speaks: from a live
    /// transcription every `live_interval_ms`, and from the speculative
    /// transcript at each pause (append-only; the final transcript follows).
    pub live_transcription: bool,
    /// How often a live transcription runs during speech, ms.
    pub live_interval_ms: f64,
    /// Rate of the audio fed to the session.
    pub input_rate: u32,
    /// Turn detection settings of the VAD.
    pub vad: crate::vad::TurnConfig,
    /// RNNoise on the input before the VAD (`audio.input.noise_reduction`);
    /// `None`: the audio goes to the VAD as it came.
    pub noise_reduction: Option<NsPreset>,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            instructions: String::new(),
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
            temperature: None,
            max_output_tokens: None,
            audio_output: true,
            voice: None,
            speed: 1.0,
            output_rate: 24_000,
            turn_detection: true,
            create_response: true,
            interrupt_response: true,
            transcription: None,
            semantic_max_wait_ms: None,
            end_of_turn: None,
            stt: SttOptions::default(),
            chat_size: 0,
            speculation: true,
            prefill: true,
            live_transcription: false,
            live_interval_ms: 1000.0,
            input_rate: 24_000,
            vad: crate::vad::TurnConfig::default(),
            noise_reduction: None,
        }
    }
}

/// Per-response overrides (`response.create`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseOptions {
    /// Replaces the session instructions.
    pub instructions: Option<String>,
    /// Replaces the session tools.
    pub tools: Option<Vec<Tool>>,
    /// Replaces the session tool choice.
    pub tool_choice: Option<ToolChoice>,
    /// Replaces audio output (true) or text only (false).
    pub audio_output: Option<bool>,
    /// Replaces the token budget.
    pub max_output_tokens: Option<u32>,
    /// Replaces the voice.
    pub voice: Option<String>,
    /// Out-of-band: the response is not added to the conversation.
    pub out_of_band: bool,
    /// Items the model sees instead of the conversation (out-of-band input).
    pub input: Option<Vec<Item>>,
}
