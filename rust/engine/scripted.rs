//! Deterministic scripted backends for tests and load benchmarks.
//!
//! `ScriptedStt` returns a scripted transcript, `ScriptedLlm` scripted text (and a
//! tool call when asked about the weather), `ScriptedTts` a tone per word. They
//! honour cancellation between words like real backends do between tokens.

use std::sync::Mutex;
use std::time::Duration;

use super::backend::{
    Cancel, LlmBackend, LlmOutput, LlmRequest, StageError, SttBackend, SttOptions, SttOutput,
    TtsBackend, TtsChunk, TtsRequest,
};

/// A scripted STT: each call returns the next transcript of the script.
///
/// With an empty script it reads the audio instead: the transcript is
/// "level N", N the peak amplitude in hundredths, so tests can tell sessions
/// apart by the loudness of what they send.
#[derive(Debug)]
pub struct ScriptedStt {
    script: Vec<String>,
    next: Mutex<usize>,
    /// Time each call takes.
    pub latency: Duration,
}

impl ScriptedStt {
    /// Cycle through `script` (empty: transcribe the audio level).
    pub fn new(script: Vec<String>, latency: Duration) -> Self {
        Self {
            script,
            next: Mutex::new(0),
            latency,
        }
    }
}

impl SttBackend for ScriptedStt {
    fn transcribe(
        &self,
        audio: &[f32],
        _options: &SttOptions,
        cancel: &Cancel,
        emit: &mut dyn FnMut(SttOutput),
    ) -> Result<(), StageError> {
        if audio.iter().any(|x| x.is_nan()) {
            return Err(StageError::Backend {
                stage: "stt",
                message: "audio contains NaN".into(),
            });
        }
        std::thread::sleep(self.latency);
        let text = {
            let mut n = self
                .next
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let t = if self.script.is_empty() {
                let peak = audio.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                format!("level {}", (peak * 100.0).round())
            } else {
                self.script[*n % self.script.len()].clone()
            };
            *n += 1;
            t
        };
        let mut partial = String::new();
        for w in text.split_whitespace() {
            if cancel.is_cancelled() {
                return Ok(());
            }
            if !partial.is_empty() {
                partial.push(' ');
            }
            partial.push_str(w);
            emit(SttOutput::Partial(partial.clone()));
        }
        emit(SttOutput::Final {
            text,
            language: Some("en".into()),
        });
        Ok(())
    }
}

/// A scripted LLM: answers "You said: <last user text>." word by word.
#[derive(Debug, Default)]
pub struct ScriptedLlm {
    /// Time before the first token.
    pub first_token: Duration,
    /// Time between tokens.
    pub per_token: Duration,
    /// Fail every call with this message (to test error paths).
    pub fail: Option<String>,
    /// The messages of every prefill call, in order.
    pub prefills: Mutex<Vec<Vec<super::conversation::ChatMessage>>>,
}

impl LlmBackend for ScriptedLlm {
    fn prefill(&self, request: &LlmRequest, _cancel: &Cancel) -> Result<(), StageError> {
        self.prefills
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(request.messages.clone());
        Ok(())
    }

    fn generate(
        &self,
        request: &LlmRequest,
        cancel: &Cancel,
        emit: &mut dyn FnMut(LlmOutput),
    ) -> Result<(), StageError> {
        if let Some(m) = &self.fail {
            return Err(StageError::Backend {
                stage: "llm",
                message: m.clone(),
            });
        }
        std::thread::sleep(self.first_token);
        let last = request.messages.last();
        let last_user = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map_or("", |m| m.content.as_str());
        if let Some(m) = last
            && m.role == "tool"
        {
            let answer = format!("The tool said {}.", m.content);
            stream_words(&answer, self.per_token, cancel, emit);
            return Ok(());
        }
        let weather_tool = request.tools.iter().find(|t| t.name == "get_weather");
        if let Some(tool) = weather_tool
            && last_user.to_lowercase().contains("weather")
        {
            emit(LlmOutput::ToolCall {
                call_id: format!("call_{}", request.messages.len()),
                name: tool.name.clone(),
                arguments: r#"{"city":"Paris"}"#.into(),
            });
            emit(LlmOutput::Usage {
                input_tokens: 10,
                output_tokens: 5,
            });
            return Ok(());
        }
        let answer = format!("You said: {last_user}. That is all I know.");
        let budget = request.max_tokens.map_or(usize::MAX, |m| m as usize);
        let words: Vec<&str> = answer.split_whitespace().take(budget).collect();
        stream_words(&words.join(" "), self.per_token, cancel, emit);
        Ok(())
    }
}

fn stream_words(text: &str, per_token: Duration, cancel: &Cancel, emit: &mut dyn FnMut(LlmOutput)) {
    let mut n = 0u32;
    for (i, w) in text.split_whitespace().enumerate() {
        if cancel.is_cancelled() {
            return;
        }
        cancel.hold();
        std::thread::sleep(per_token);
        emit(LlmOutput::Text(if i == 0 {
            w.to_owned()
        } else {
            format!(" {w}")
        }));
        n += 1;
    }
    emit(LlmOutput::Usage {
        input_tokens: 10,
        output_tokens: n,
    });
}

/// A TTS that speaks each word as 100 ms of a tone, one chunk per word.
#[derive(Debug)]
pub struct ScriptedTts {
    /// Output rate.
    pub sample_rate: u32,
    /// Time each word takes to synthesise.
    pub per_word: Duration,
}

impl Default for ScriptedTts {
    fn default() -> Self {
        Self {
            sample_rate: 24_000,
            per_word: Duration::ZERO,
        }
    }
}

impl TtsBackend for ScriptedTts {
    fn synthesize(
        &self,
        request: &TtsRequest,
        cancel: &Cancel,
        emit: &mut dyn FnMut(TtsChunk),
    ) -> Result<(), StageError> {
        let n = (self.sample_rate / 10) as usize;
        for w in request.text.split_whitespace() {
            if cancel.is_cancelled() {
                return Ok(());
            }
            std::thread::sleep(self.per_word);
            // A deterministic pitch per word.
            let f = 200.0 + (w.bytes().map(u32::from).sum::<u32>() % 400) as f32;
            let rate = self.sample_rate as f32;
            let samples = (0..n)
                .map(|i| 0.3 * (2.0 * std::f32::consts::PI * f * i as f32 / rate).sin())
                .collect();
            emit(TtsChunk {
                samples,
                sample_rate: self.sample_rate,
                words: Some(vec![(w.to_owned(), 0.0, 100.0)]),
            });
        }
        Ok(())
    }
}
