//! The session object: defaults, `session.update` validation, wire shapes, engine mapping.

use serde_json::{Map, Value, json};

use super::wire::field::{self, get};
use super::wire::{Dialect, ProtocolError};
use crate::audio::g711;
use crate::audio::ns::NsPreset;
use crate::audio::pcm;
use crate::engine::SessionConfig;
use crate::engine::backend::{SttOptions, Tool, ToolChoice};
use crate::vad::DEFAULT_SOFT_END_MS;

/// An audio format of the input or output side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioFormat {
    /// 16-bit little-endian PCM at this rate (24 kHz is the protocol's).
    Pcm(u32),
    /// G.711 mu-law, 8 kHz.
    Pcmu,
    /// G.711 A-law, 8 kHz.
    Pcma,
}

impl AudioFormat {
    /// Its sample rate.
    pub fn rate(self) -> u32 {
        match self {
            AudioFormat::Pcm(r) => r,
            AudioFormat::Pcmu | AudioFormat::Pcma => 8_000,
        }
    }

    /// Decode wire bytes to float samples.
    pub fn decode(self, bytes: &[u8]) -> Result<Vec<f32>, ProtocolError> {
        match self {
            AudioFormat::Pcm(_) => pcm::pcm16_to_f32(bytes).map_err(|e| {
                ProtocolError::invalid(
                    "invalid_audio",
                    format!("Invalid audio: {e}"),
                    Some("audio"),
                )
            }),
            AudioFormat::Pcmu => {
                let mut out = vec![0.0; bytes.len()];
                g711::mulaw_decode_f32_into(bytes, &mut out);
                Ok(out)
            }
            AudioFormat::Pcma => {
                let mut out = vec![0.0; bytes.len()];
                g711::alaw_decode_f32_into(bytes, &mut out);
                Ok(out)
            }
        }
    }

    /// Encode float samples to wire bytes.
    pub fn encode(self, samples: &[f32]) -> Vec<u8> {
        match self {
            AudioFormat::Pcm(_) => pcm::f32_to_pcm16(samples),
            AudioFormat::Pcmu => {
                let mut out = vec![0; samples.len()];
                g711::mulaw_encode_f32_into(samples, &mut out);
                out
            }
            AudioFormat::Pcma => {
                let mut out = vec![0; samples.len()];
                g711::alaw_encode_f32_into(samples, &mut out);
                out
            }
        }
    }

    fn to_ga(self) -> Value {
        match self {
            AudioFormat::Pcm(rate) => json!({"type": "audio/pcm", "rate": rate}),
            AudioFormat::Pcmu => json!({"type": "audio/pcmu"}),
            AudioFormat::Pcma => json!({"type": "audio/pcma"}),
        }
    }

    fn to_beta(self) -> &'static str {
        match self {
            AudioFormat::Pcm(_) => "pcm16",
            AudioFormat::Pcmu => "g711_ulaw",
            AudioFormat::Pcma => "g711_alaw",
        }
    }

    fn parse_ga(v: &Value, param: &str) -> Result<Self, ProtocolError> {
        let obj = field::object(v, param)?;
        let kind = field::string(obj, "type", param)?;
        match kind.as_deref() {
            None | Some("audio/pcm") => {
                let rate = field::integer(obj, "rate", param, 192_000)?.unwrap_or(24_000);
                if !(8_000..=96_000).contains(&rate) {
                    return Err(ProtocolError::value(
                        &field::join(param, "rate"),
                        format!(
                            "Unsupported rate {rate}: use 24000 (other rates from 8000 to 96000 are an extension)."
                        ),
                    ));
                }
                Ok(AudioFormat::Pcm(rate as u32))
            }
            Some("audio/pcmu") => Ok(AudioFormat::Pcmu),
            Some("audio/pcma") => Ok(AudioFormat::Pcma),
            Some(other) => Err(ProtocolError::value(
                &field::join(param, "type"),
                format!(
                    "Invalid audio format '{other}': expected 'audio/pcm', 'audio/pcmu' or 'audio/pcma'."
                ),
            )),
        }
    }

    fn parse_beta(v: &Value, param: &str) -> Result<Self, ProtocolError> {
        match v.as_str() {
            Some("pcm16") => Ok(AudioFormat::Pcm(24_000)),
            Some("g711_ulaw") => Ok(AudioFormat::Pcmu),
            Some("g711_alaw") => Ok(AudioFormat::Pcma),
            _ => Err(ProtocolError::value(
                param,
                format!("Invalid '{param}': expected 'pcm16', 'g711_ulaw' or 'g711_alaw'."),
            )),
        }
    }
}

/// Turn detection as the client configured it.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnDetection {
    /// Push-to-talk: the client commits and asks for responses.
    Disabled,
    /// Silence-based turns.
    ServerVad {
        /// Speech probability threshold.
        threshold: f64,
        /// Audio kept before speech start, ms.
        prefix_padding_ms: u64,
        /// Silence that ends a turn, ms.
        silence_duration_ms: u64,
        /// Respond when a turn ends.
        create_response: bool,
        /// Barge-in cancels the response.
        interrupt_response: bool,
        /// Silence after a response before `timeout_triggered`, ms.
        idle_timeout_ms: Option<u64>,
    },
    /// Eagerness-based turns.
    SemanticVad {
        /// `low`, `medium`, `high` or `auto`.
        eagerness: String,
        /// Respond when a turn ends.
        create_response: bool,
        /// Barge-in cancels the response.
        interrupt_response: bool,
    },
}

/// The server's `server_vad` values: what a client that switches to
/// `server_vad` without naming them gets (the command line's `--thresh`,
/// `--speech_pad_ms`, `--min_silence_ms`, or the protocol's defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadDefaults {
    /// Speech probability threshold.
    pub threshold: f64,
    /// Audio kept before speech start, ms.
    pub prefix_padding_ms: u64,
    /// Silence that ends a turn, ms.
    pub silence_duration_ms: u64,
}

impl Default for VadDefaults {
    fn default() -> Self {
        Self {
            threshold: 0.5,
            prefix_padding_ms: 300,
            silence_duration_ms: 500,
        }
    }
}

impl TurnDetection {
    /// `server_vad` with these values and the protocol's other defaults.
    pub fn server_vad(d: &VadDefaults) -> Self {
        TurnDetection::ServerVad {
            threshold: d.threshold,
            prefix_padding_ms: d.prefix_padding_ms,
            silence_duration_ms: d.silence_duration_ms,
            create_response: true,
            interrupt_response: true,
            idle_timeout_ms: None,
        }
    }

    fn to_json(&self) -> Value {
        match self {
            TurnDetection::Disabled => Value::Null,
            TurnDetection::ServerVad {
                threshold,
                prefix_padding_ms,
                silence_duration_ms,
                create_response,
                interrupt_response,
                idle_timeout_ms,
            } => json!({
                "type": "server_vad",
                "threshold": threshold,
                "prefix_padding_ms": prefix_padding_ms,
                "silence_duration_ms": silence_duration_ms,
                "create_response": create_response,
                "interrupt_response": interrupt_response,
                "idle_timeout_ms": idle_timeout_ms,
            }),
            TurnDetection::SemanticVad {
                eagerness,
                create_response,
                interrupt_response,
            } => json!({
                "type": "semantic_vad",
                "eagerness": eagerness,
                "create_response": create_response,
                "interrupt_response": interrupt_response,
            }),
        }
    }

    /// The beta shape: no `idle_timeout_ms` (a GA field).
    fn to_json_beta(&self) -> Value {
        let mut v = self.to_json();
        if let Some(o) = v.as_object_mut() {
            o.remove("idle_timeout_ms");
        }
        v
    }

    /// Only these fields (the beta transcription session's shape).
    fn to_json_keeping(&self, keep: &[&str]) -> Value {
        let mut v = self.to_json();
        if let Some(o) = v.as_object_mut() {
            o.retain(|k, _| keep.contains(&k.as_str()));
        }
        v
    }

    /// Parse `turn_detection`; fields left out keep the current values when
    /// the type is unchanged, the defaults otherwise.
    fn parse(
        v: &Value,
        current: &Self,
        defaults: &VadDefaults,
        param: &str,
    ) -> Result<Self, ProtocolError> {
        if v.is_null() {
            return Ok(TurnDetection::Disabled);
        }
        let obj = field::object(v, param)?;
        let kind = field::string(obj, "type", param)?;
        let kind = kind.as_deref().unwrap_or(match current {
            TurnDetection::SemanticVad { .. } => "semantic_vad",
            _ => "server_vad",
        });
        match kind {
            "server_vad" => {
                let base = match current {
                    TurnDetection::ServerVad { .. } => current.clone(),
                    _ => Self::server_vad(defaults),
                };
                let TurnDetection::ServerVad {
                    threshold,
                    prefix_padding_ms,
                    silence_duration_ms,
                    create_response,
                    interrupt_response,
                    idle_timeout_ms,
                } = base
                else {
                    return Err(ProtocolError::value(param, "unreachable turn detection"));
                };
                let threshold =
                    field::number(obj, "threshold", param, 0.0, 1.0)?.unwrap_or(threshold);
                if threshold <= 0.0 || threshold >= 1.0 {
                    let p = field::join(param, "threshold");
                    return Err(ProtocolError::value(
                        &p,
                        format!("'{p}' must be between 0 and 1 (exclusive)."),
                    ));
                }
                let idle = match get(obj, "idle_timeout_ms") {
                    None if obj.contains_key("idle_timeout_ms") => None,
                    None => idle_timeout_ms,
                    Some(_) => {
                        let t = field::integer(obj, "idle_timeout_ms", param, 30 * 60 * 1000)?;
                        if t.is_some_and(|t| t < 1000) {
                            let p = field::join(param, "idle_timeout_ms");
                            return Err(ProtocolError::value(
                                &p,
                                format!("'{p}' must be at least 1000."),
                            ));
                        }
                        t
                    }
                };
                Ok(TurnDetection::ServerVad {
                    threshold,
                    prefix_padding_ms: field::integer(obj, "prefix_padding_ms", param, 10_000)?
                        .unwrap_or(prefix_padding_ms),
                    silence_duration_ms: field::integer(obj, "silence_duration_ms", param, 10_000)?
                        .unwrap_or(silence_duration_ms),
                    create_response: field::boolean(obj, "create_response", param)?
                        .unwrap_or(create_response),
                    interrupt_response: field::boolean(obj, "interrupt_response", param)?
                        .unwrap_or(interrupt_response),
                    idle_timeout_ms: idle,
                })
            }
            "semantic_vad" => {
                let (e0, c0, i0) = match current {
                    TurnDetection::SemanticVad {
                        eagerness,
                        create_response,
                        interrupt_response,
                    } => (eagerness.clone(), *create_response, *interrupt_response),
                    _ => ("auto".to_owned(), true, true),
                };
                let eagerness = field::string(obj, "eagerness", param)?.unwrap_or(e0);
                if !matches!(eagerness.as_str(), "low" | "medium" | "high" | "auto") {
                    let p = field::join(param, "eagerness");
                    return Err(ProtocolError::value(
                        &p,
                        format!("Invalid '{p}': expected 'low', 'medium', 'high' or 'auto'."),
                    ));
                }
                Ok(TurnDetection::SemanticVad {
                    eagerness,
                    create_response: field::boolean(obj, "create_response", param)?.unwrap_or(c0),
                    interrupt_response: field::boolean(obj, "interrupt_response", param)?
                        .unwrap_or(i0),
                })
            }
            other => Err(ProtocolError::value(
                &field::join(param, "type"),
                format!(
                    "Invalid turn detection type '{other}': expected 'server_vad' or 'semantic_vad'."
                ),
            )),
        }
    }

    /// The idle timeout, if any.
    pub fn idle_timeout_ms(&self) -> Option<u64> {
        match self {
            TurnDetection::ServerVad {
                idle_timeout_ms, ..
            } => *idle_timeout_ms,
            _ => None,
        }
    }
}

/// Input transcription settings (`audio.input.transcription`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transcription {
    /// The model name the client asked for (reported back; the engine's STT runs).
    pub model: String,
    /// Language hint.
    pub language: Option<String>,
    /// Prompt.
    pub prompt: Option<String>,
    /// `delay` as given (`minimal` .. `xhigh`).
    pub delay: Option<String>,
}

impl Transcription {
    /// Live deltas during speech: a live model (`gpt-live-transcribe`) or a
    /// `minimal`/`low` delay asks for them.
    pub fn live(&self) -> bool {
        self.model.contains("live") || matches!(self.delay.as_deref(), Some("minimal" | "low"))
    }
}

impl Transcription {
    fn parse(v: &Value, param: &str) -> Result<Option<Self>, ProtocolError> {
        if v.is_null() {
            return Ok(None);
        }
        let obj = field::object(v, param)?;
        Ok(Some(Transcription {
            model: field::string(obj, "model", param)?.unwrap_or_else(|| "whisper-1".to_owned()),
            language: field::string(obj, "language", param)?,
            prompt: field::string(obj, "prompt", param)?,
            delay: field::string(obj, "delay", param)?,
        }))
    }

    fn to_json(&self) -> Value {
        json!({"model": self.model, "language": self.language, "prompt": self.prompt,
            "delay": self.delay})
    }

    /// The beta shape: no `delay` (a GA field).
    fn to_json_beta(&self) -> Value {
        json!({"model": self.model, "language": self.language, "prompt": self.prompt})
    }
}

/// The session as the client sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionState {
    /// `sess_...`.
    pub id: String,
    /// The model name the client connected with (reported back).
    pub model: String,
    /// System prompt.
    pub instructions: String,
    /// Speak (true) or write (false) responses.
    pub audio_output: bool,
    /// Voice name.
    pub voice: String,
    /// Speaking rate.
    pub speed: f64,
    /// Input audio format.
    pub input_format: AudioFormat,
    /// Output audio format.
    pub output_format: AudioFormat,
    /// Turn detection.
    pub turn_detection: TurnDetection,
    /// Input transcription events, when set.
    pub transcription: Option<Transcription>,
    /// Noise reduction as given (`null` or `{type: near_field | far_field}`),
    /// run on the input before the VAD.
    pub noise_reduction: Value,
    /// Function tools as given (`type`, `name`, `description`, `parameters`).
    pub tools: Vec<Value>,
    /// Tool choice as given.
    pub tool_choice: Value,
    /// Token budget (`None`: `inf`).
    pub max_output_tokens: Option<u32>,
    /// Sampling temperature (beta field).
    pub temperature: Option<f64>,
    /// The server's `server_vad` values (not on the wire).
    pub vad_defaults: VadDefaults,
}

impl SessionState {
    /// A session with the protocol's defaults.
    pub fn new(id: &str, model: &str) -> Self {
        Self {
            id: id.to_owned(),
            model: model.to_owned(),
            instructions: String::new(),
            audio_output: true,
            voice: "alloy".to_owned(),
            speed: 1.0,
            input_format: AudioFormat::Pcm(24_000),
            output_format: AudioFormat::Pcm(24_000),
            turn_detection: TurnDetection::server_vad(&VadDefaults::default()),
            transcription: None,
            noise_reduction: Value::Null,
            tools: Vec::new(),
            tool_choice: json!("auto"),
            max_output_tokens: None,
            temperature: None,
            vad_defaults: VadDefaults::default(),
        }
    }

    /// A session with the server's `server_vad` values.
    #[must_use]
    pub fn with_vad_defaults(mut self, d: VadDefaults) -> Self {
        if matches!(self.turn_detection, TurnDetection::ServerVad { .. }) {
            self.turn_detection = TurnDetection::server_vad(&d);
        }
        self.vad_defaults = d;
        self
    }

    /// Apply a `session.update` payload. All or nothing: on error nothing changes.
    pub fn update(&mut self, dialect: Dialect, v: &Value) -> Result<(), ProtocolError> {
        let obj = field::object(v, "session")?;
        let mut next = self.clone();
        match dialect {
            Dialect::Ga => next.update_ga(obj)?,
            Dialect::Beta => next.update_beta(obj)?,
        }
        *self = next;
        Ok(())
    }

    fn update_common(&mut self, obj: &Map<String, Value>) -> Result<(), ProtocolError> {
        let p = "session";
        if let Some(m) = field::string(obj, "model", p)? {
            self.model = m;
        }
        if let Some(i) = field::string(obj, "instructions", p)? {
            self.instructions = i;
        }
        if let Some(t) = get(obj, "tools") {
            self.tools = parse_tools(t, "session.tools")?;
        }
        if let Some(c) = get(obj, "tool_choice") {
            parse_tool_choice(c, "session.tool_choice")?;
            self.tool_choice = c.clone();
        }
        Ok(())
    }

    fn update_ga(&mut self, obj: &Map<String, Value>) -> Result<(), ProtocolError> {
        let p = "session";
        if let Some(t) = field::string(obj, "type", p)?
            && t != "realtime"
        {
            return Err(ProtocolError::value(
                "session.type",
                format!("Invalid session type '{t}': this server serves 'realtime' sessions."),
            ));
        }
        self.update_common(obj)?;
        if let Some(m) = get(obj, "output_modalities") {
            self.audio_output = parse_modalities(m, "session.output_modalities")?;
        }
        if obj.contains_key("max_output_tokens") {
            self.max_output_tokens =
                parse_max_tokens(obj.get("max_output_tokens"), "session.max_output_tokens")?;
        }
        if let Some(audio) = get(obj, "audio") {
            let audio = field::object(audio, "session.audio")?;
            if let Some(input) = get(audio, "input") {
                let ip = "session.audio.input";
                let input = field::object(input, ip)?;
                if let Some(f) = get(input, "format") {
                    self.input_format = AudioFormat::parse_ga(f, "session.audio.input.format")?;
                }
                if let Some(td) = input.get("turn_detection") {
                    self.turn_detection = TurnDetection::parse(
                        td,
                        &self.turn_detection,
                        &self.vad_defaults,
                        "session.audio.input.turn_detection",
                    )?;
                }
                if let Some(t) = input.get("transcription") {
                    self.transcription =
                        Transcription::parse(t, "session.audio.input.transcription")?;
                }
                if let Some(n) = input.get("noise_reduction") {
                    parse_noise_reduction(n, "session.audio.input.noise_reduction")?;
                    self.noise_reduction = n.clone();
                }
            }
            if let Some(output) = get(audio, "output") {
                let op = "session.audio.output";
                let output = field::object(output, op)?;
                if let Some(f) = get(output, "format") {
                    self.output_format = AudioFormat::parse_ga(f, "session.audio.output.format")?;
                }
                if let Some(v) = get(output, "voice") {
                    self.voice = parse_voice(v, "session.audio.output.voice")?;
                }
                if let Some(s) = field::number(output, "speed", op, 0.25, 4.0)? {
                    self.speed = s;
                }
            }
        }
        Ok(())
    }

    fn update_beta(&mut self, obj: &Map<String, Value>) -> Result<(), ProtocolError> {
        let p = "session";
        self.update_common(obj)?;
        if let Some(m) = get(obj, "modalities") {
            self.audio_output = parse_modalities(m, "session.modalities")?;
        }
        if obj.contains_key("max_response_output_tokens") {
            self.max_output_tokens = parse_max_tokens(
                obj.get("max_response_output_tokens"),
                "session.max_response_output_tokens",
            )?;
        }
        if let Some(f) = get(obj, "input_audio_format") {
            self.input_format = AudioFormat::parse_beta(f, "session.input_audio_format")?;
        }
        if let Some(f) = get(obj, "output_audio_format") {
            self.output_format = AudioFormat::parse_beta(f, "session.output_audio_format")?;
        }
        if let Some(td) = obj.get("turn_detection") {
            if td.get("idle_timeout_ms").is_some() {
                return Err(ProtocolError::value(
                    "session.turn_detection.idle_timeout_ms",
                    "Unknown parameter 'session.turn_detection.idle_timeout_ms': the idle timeout is a GA feature (connect without the 'OpenAI-Beta: realtime=v1' header).",
                ));
            }
            self.turn_detection = TurnDetection::parse(
                td,
                &self.turn_detection,
                &self.vad_defaults,
                "session.turn_detection",
            )?;
        }
        if let Some(t) = obj.get("input_audio_transcription") {
            self.transcription = Transcription::parse(t, "session.input_audio_transcription")?;
        }
        if let Some(n) = obj.get("input_audio_noise_reduction") {
            parse_noise_reduction(n, "session.input_audio_noise_reduction")?;
            self.noise_reduction = n.clone();
        }
        if let Some(v) = get(obj, "voice") {
            self.voice = parse_voice(v, "session.voice")?;
        }
        if let Some(s) = field::number(obj, "speed", p, 0.25, 4.0)? {
            self.speed = s;
        }
        if let Some(t) = field::number(obj, "temperature", p, 0.0, 2.0)? {
            self.temperature = Some(t);
        }
        Ok(())
    }

    /// The full session object for `session.created` / `session.updated`.
    /// The beta `transcription_session` object: the input side only.
    pub fn transcription_json(&self) -> Value {
        json!({
            // Only REST-created sessions carry a real secret; the SDK's type
            // requires the field, so it is empty over the WebSocket.
            "client_secret": {"value": "", "expires_at": 0},
            "modalities": ["text"],
            "input_audio_format": self.input_format.to_beta(),
            "input_audio_transcription": self.transcription.as_ref().map(Transcription::to_json_beta),
            "turn_detection": self.turn_detection.to_json_keeping(&["type", "threshold", "prefix_padding_ms", "silence_duration_ms"]),
            "include": null,
        })
    }

    /// Apply a beta `transcription_session.update`: its input fields, and no
    /// responses (a transcription session only transcribes).
    pub fn update_transcription(&mut self, v: &Value) -> Result<(), ProtocolError> {
        let obj = field::object(v, "session")?;
        let mut sub = Map::new();
        for k in [
            "input_audio_format",
            "input_audio_transcription",
            "turn_detection",
        ] {
            if let Some(x) = obj.get(k) {
                sub.insert(k.to_owned(), x.clone());
            }
        }
        let mut next = self.clone();
        next.update_beta(&sub)?;
        match &mut next.turn_detection {
            TurnDetection::ServerVad {
                create_response, ..
            }
            | TurnDetection::SemanticVad {
                create_response, ..
            } => *create_response = false,
            TurnDetection::Disabled => {}
        }
        *self = next;
        Ok(())
    }

    pub fn to_json(&self, dialect: Dialect) -> Value {
        let modalities = if self.audio_output {
            json!(["audio"])
        } else {
            json!(["text"])
        };
        let max_tokens = self
            .max_output_tokens
            .map_or_else(|| json!("inf"), |n| json!(n));
        match dialect {
            // The SDK's GA session type has no `id`, `object` or
            // `expires_at`: strict clients refuse them.
            Dialect::Ga => json!({
                "type": "realtime",
                "model": self.model,
                "output_modalities": modalities,
                "instructions": self.instructions,
                "audio": {
                    "input": {
                        "format": self.input_format.to_ga(),
                        "transcription": self.transcription.as_ref().map(Transcription::to_json),
                        "noise_reduction": self.noise_reduction,
                        "turn_detection": self.turn_detection.to_json(),
                    },
                    "output": {
                        "format": self.output_format.to_ga(),
                        "voice": self.voice,
                        "speed": self.speed,
                    },
                },
                "tools": self.tools,
                "tool_choice": self.tool_choice,
                "max_output_tokens": max_tokens,
                "tracing": null,
                "truncation": "auto",
                "prompt": null,
                "include": null,
            }),
            Dialect::Beta => json!({
                "id": self.id,
                "model": self.model,
                "modalities": if self.audio_output { json!(["audio", "text"]) } else { json!(["text"]) },
                "instructions": self.instructions,
                "voice": self.voice,
                "input_audio_format": self.input_format.to_beta(),
                "output_audio_format": self.output_format.to_beta(),
                "input_audio_transcription": self.transcription.as_ref().map(Transcription::to_json_beta),
                "input_audio_noise_reduction": self.noise_reduction,
                "turn_detection": self.turn_detection.to_json_beta(),
                "tools": self.tools,
                "tool_choice": self.tool_choice,
                "temperature": self.temperature.unwrap_or(0.8),
                "max_response_output_tokens": max_tokens,
                "speed": self.speed,
                "tracing": null,
            }),
        }
    }

    /// Map the client-visible settings onto the engine's session config.
    pub fn apply_to(&self, c: &mut SessionConfig) {
        c.instructions.clone_from(&self.instructions);
        c.tools = self.tools.iter().filter_map(tool_from_json).collect();
        c.tool_choice = parse_tool_choice(&self.tool_choice, "tool_choice").unwrap_or_default();
        c.max_output_tokens = self.max_output_tokens;
        c.temperature = self.temperature;
        c.audio_output = self.audio_output;
        c.voice = Some(self.voice.clone());
        c.speed = self.speed;
        c.input_rate = self.input_format.rate();
        c.output_rate = self.output_format.rate();
        // Validated when it was set.
        c.noise_reduction = parse_noise_reduction(&self.noise_reduction, "").unwrap_or(None);
        c.transcription = self.transcription.as_ref().map(|t| SttOptions {
            language: t.language.clone(),
            prompt: t.prompt.clone(),
        });
        c.live_transcription = self.transcription.as_ref().is_some_and(Transcription::live);
        c.semantic_max_wait_ms = match &self.turn_detection {
            TurnDetection::SemanticVad { eagerness, .. } => Some(semantic_max_wait_ms(eagerness)),
            _ => None,
        };
        if let Some(t) = &self.transcription {
            c.stt.language.clone_from(&t.language);
            c.stt.prompt.clone_from(&t.prompt);
        }
        match &self.turn_detection {
            TurnDetection::Disabled => {
                c.turn_detection = false;
                c.create_response = false;
                c.interrupt_response = false;
            }
            TurnDetection::ServerVad {
                threshold,
                prefix_padding_ms,
                silence_duration_ms,
                create_response,
                interrupt_response,
                ..
            } => {
                c.turn_detection = true;
                c.create_response = *create_response;
                c.interrupt_response = *interrupt_response;
                c.vad.threshold = *threshold as f32;
                c.vad.neg_threshold = None;
                c.vad.speech_pad_ms = *prefix_padding_ms as f64;
                set_silence(c, *silence_duration_ms as f64);
            }
            TurnDetection::SemanticVad {
                eagerness,
                create_response,
                interrupt_response,
            } => {
                c.turn_detection = true;
                c.create_response = *create_response;
                c.interrupt_response = *interrupt_response;
                // Eagerness sets the silence; the speech threshold and
                // padding are the server's.
                c.vad.threshold = self.vad_defaults.threshold as f32;
                c.vad.neg_threshold = None;
                c.vad.speech_pad_ms = self.vad_defaults.prefix_padding_ms as f64;
                set_silence(c, semantic_silence_ms(eagerness));
            }
        }
    }
}

/// `audio.input.noise_reduction`: `null` (off) or `{type: near_field | far_field}`.
pub fn parse_noise_reduction(v: &Value, param: &str) -> Result<Option<NsPreset>, ProtocolError> {
    if v.is_null() {
        return Ok(None);
    }
    let kind = v
        .as_object()
        .and_then(|o| o.get("type"))
        .and_then(Value::as_str);
    match kind.map(str::parse::<NsPreset>) {
        Some(Ok(preset)) => Ok(Some(preset)),
        _ => Err(ProtocolError::value(
            &format!("{param}.type"),
            format!(
                "Invalid value for '{param}': expected null or {{\"type\": \"near_field\"}} \
                 or {{\"type\": \"far_field\"}}, got {v}."
            ),
        )),
    }
}

/// The silence that ends a turn under `semantic_vad`, by eagerness.
///
/// Eagerness picks the silence after which the VAD proposes an end of turn
/// (`high` answers quickly, `low` lets the user pause to think). The engine
/// then looks at the transcript of the turn so far: when it sounds
/// unfinished (a trailing comma, "and", "the", "um", ...) it waits for more
/// speech up to [`semantic_max_wait_ms`] from the end of speech.
pub fn semantic_silence_ms(eagerness: &str) -> f64 {
    match eagerness {
        "low" => 1_200.0,
        "high" => 300.0,
        _ => 600.0,
    }
}

/// The longest a `semantic_vad` turn that sounds unfinished waits for the
/// user to go on: the protocol's 8 s / 4 s / 2 s for low / medium / high.
pub fn semantic_max_wait_ms(eagerness: &str) -> f64 {
    match eagerness {
        "low" => 8_000.0,
        "high" => 2_000.0,
        _ => 4_000.0,
    }
}

fn set_silence(c: &mut SessionConfig, silence_ms: f64) {
    c.vad.min_silence_ms = silence_ms;
    // The speculative soft end must come before the real end of turn.
    c.vad.soft_end_ms = Some((silence_ms * 0.4).min(DEFAULT_SOFT_END_MS));
}

fn parse_voice(v: &Value, param: &str) -> Result<String, ProtocolError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Object(o) => match o.get("id").and_then(Value::as_str) {
            Some(id) => Ok(id.to_owned()),
            None => Err(ProtocolError::value(
                param,
                format!("'{param}' must be a voice name."),
            )),
        },
        _ => Err(ProtocolError::value(
            param,
            format!("'{param}' must be a voice name."),
        )),
    }
}

/// `["audio"]` (with or without `"text"`) or `["text"]` -> whether audio is on.
pub(crate) fn parse_modalities(v: &Value, param: &str) -> Result<bool, ProtocolError> {
    let bad = || {
        ProtocolError::value(
            param,
            format!("Invalid '{param}': expected [\"audio\"] or [\"text\"]."),
        )
    };
    let list = v.as_array().ok_or_else(bad)?;
    let mut audio = false;
    let mut text = false;
    for m in list {
        match m.as_str() {
            Some("audio") => audio = true,
            Some("text") => text = true,
            _ => return Err(bad()),
        }
    }
    if !audio && !text {
        return Err(bad());
    }
    Ok(audio)
}

/// An integer, `"inf"` or null.
pub(crate) fn parse_max_tokens(
    v: Option<&Value>,
    param: &str,
) -> Result<Option<u32>, ProtocolError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s == "inf" => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (1..=4096).contains(&n) => Ok(Some(n as u32)),
            _ => Err(ProtocolError::value(
                param,
                format!("'{param}' must be an integer from 1 to 4096 or \"inf\"."),
            )),
        },
    }
}

/// Validate a tools list; returns it as given.
pub(crate) fn parse_tools(v: &Value, param: &str) -> Result<Vec<Value>, ProtocolError> {
    let list = v
        .as_array()
        .ok_or_else(|| ProtocolError::value(param, format!("'{param}' must be an array.")))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, t) in list.iter().enumerate() {
        let p = format!("{param}[{i}]");
        let obj = field::object(t, &p)?;
        let kind = field::string(obj, "type", &p)?;
        if kind.as_deref().is_some_and(|k| k != "function") {
            return Err(ProtocolError::value(
                &field::join(&p, "type"),
                "Only 'function' tools are supported.",
            ));
        }
        field::required_string(obj, "name", &p)?;
        field::string(obj, "description", &p)?;
        if let Some(params) = get(obj, "parameters")
            && !params.is_object()
        {
            let pp = field::join(&p, "parameters");
            return Err(ProtocolError::value(
                &pp,
                format!("'{pp}' must be a JSON schema object."),
            ));
        }
        let mut t = t.clone();
        if let Some(o) = t.as_object_mut() {
            o.insert("type".into(), json!("function"));
        }
        out.push(t);
    }
    Ok(out)
}

/// The engine's view of a validated tool.
pub(crate) fn tool_from_json(t: &Value) -> Option<Tool> {
    let o = t.as_object()?;
    Some(Tool {
        name: o.get("name")?.as_str()?.to_owned(),
        description: o
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        parameters: o.get("parameters").filter(|p| p.is_object()).map_or_else(
            || "{\"type\":\"object\",\"properties\":{}}".to_owned(),
            Value::to_string,
        ),
    })
}

/// `auto | none | required | {type: function, name}`.
pub(crate) fn parse_tool_choice(v: &Value, param: &str) -> Result<ToolChoice, ProtocolError> {
    match v {
        Value::String(s) => match s.as_str() {
            "auto" => Ok(ToolChoice::Auto),
            "none" => Ok(ToolChoice::None),
            "required" => Ok(ToolChoice::Required),
            _ => Err(ProtocolError::value(
                param,
                format!("Invalid '{param}': expected 'auto', 'none', 'required' or a function."),
            )),
        },
        Value::Object(o) => {
            let name = o.get("name").and_then(Value::as_str);
            match (o.get("type").and_then(Value::as_str), name) {
                (Some("function"), Some(name)) => Ok(ToolChoice::Function(name.to_owned())),
                _ => Err(ProtocolError::value(
                    param,
                    format!(
                        "Invalid '{param}': expected {{\"type\": \"function\", \"name\": ...}}."
                    ),
                )),
            }
        }
        _ => Err(ProtocolError::value(
            param,
            format!("Invalid '{param}': expected a string or an object."),
        )),
    }
}
