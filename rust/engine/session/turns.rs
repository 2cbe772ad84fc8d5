//! Turns: the VAD's turn events, the semantic hold of a turn that sounds
//! unfinished, speculation at the soft end, and committing a turn.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::config::ResponseOptions;
use super::error::SessionError;
use super::handle::Session;
use super::jobs::{PREFILL_QUIET, PrefillJob, SttJob, TurnJob};
use super::response::llm_request;
use super::state::{HeldTurn, Shared, Speculation, State, SttPurpose, lock};
use crate::engine::backend::Cancel;
use crate::engine::conversation::{Content, Item, ItemKind, ItemStatus, Role};
use crate::engine::events::{EngineEvent, StopReason, TurnTimings};
use crate::engine::input::{STT_RATE, TurnInput};
use crate::engine::models::Stage;

/// Whether a transcript sounds like the speaker will go on.
///
/// STT writes a period after almost anything, so the final punctuation only
/// half counts: an article, a possessive, a conjunction or a filler never
/// ends an English sentence (`"I want to go to the."`); a preposition or an
/// auxiliary ends one only as a question (`"Where are you from?"`); other
/// function words count only without final punctuation. A trailing comma,
/// dash, colon or ellipsis is unfinished; any other last word is finished.
///
/// A preposition strands at the end of a question only when a wh-word or a
/// relative moved its object away ("Where are you from?", "What is it
/// for?"): a yes/no question that ends on one (`"Can you set a timer
/// for?"`) lost its object, unless a wh-word or a relative elsewhere moved
/// it ("Do you know where he is from?"). Particles of phrasal verbs ("Can
/// you turn it on?") are not prepositions here; "between" needs its objects
/// whatever the sentence ("in between" is the exception).
pub fn sounds_unfinished(text: &str) -> bool {
    /// Unfinished whatever punctuation follows.
    const NEVER_LAST: &[&str] = &[
        "the", "a", "an", "my", "your", "our", "their", "his", "its", "and", "or", "but",
        "because", "um", "uh", "er", "erm", "uhm",
    ];
    /// Unfinished unless a question or exclamation.
    const LAST_ONLY_IN_QUESTIONS: &[&str] = &[
        "to", "of", "with", "for", "in", "on", "at", "from", "about", "than", "if", "i", "is",
        "are", "was", "were",
    ];
    /// Unfinished only without final punctuation.
    const RARELY_LAST: &[&str] = &["so", "then", "that", "which", "like"];
    /// Prepositions that are never a phrasal verb's particle.
    const NEED_AN_OBJECT: &[&str] = &[
        "to", "of", "with", "for", "from", "about", "than", "at", "into", "onto", "towards",
        "toward", "during", "without", "like",
    ];
    /// A wh-word or a relative anywhere may have moved the object away
    /// ("Do you know where he is from?").
    const MOVES_AN_OBJECT: &[&str] = &[
        "what", "where", "who", "whom", "which", "whose", "when", "why", "how", "that",
    ];
    /// How a yes/no question starts.
    const YES_NO: &[&str] = &[
        "can", "could", "will", "would", "shall", "should", "may", "might", "must", "do", "does",
        "did", "is", "are", "was", "were", "am", "have", "has", "had",
    ];
    let t = text.trim_end();
    if t.is_empty() {
        return false;
    }
    if t.ends_with([',', '-', ';', ':', '\u{2026}']) || t.ends_with("..") {
        return true;
    }
    let question = t.ends_with(['?', '!']);
    let stop = question || t.ends_with('.');
    let words: Vec<String> = t
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    let last = words.last().map_or("", String::as_str);
    let before_last = words.len().checked_sub(2).map(|i| words[i].as_str());
    let yes_no = words.first().is_some_and(|w| YES_NO.contains(&w.as_str()))
        && !words.iter().any(|w| MOVES_AN_OBJECT.contains(&w.as_str()));
    NEVER_LAST.contains(&last)
        || (!question && LAST_ONLY_IN_QUESTIONS.contains(&last))
        || (!stop && RARELY_LAST.contains(&last))
        || (question && yes_no && NEED_AN_OBJECT.contains(&last))
        // "between" needs its objects ("in between" is the exception).
        || (last == "between" && before_last != Some("in"))
}

impl Session {
    /// Handle a turn event from the VAD.
    pub fn turn_event(&self, input: TurnInput) {
        self.0.turn_input(input);
    }
}

impl Shared {
    /// Handle a turn event (from the VAD, or from an end-of-turn verdict).
    pub(super) fn turn_input(self: &Arc<Self>, input: TurnInput) {
        let sh = self;
        let mut st = lock(&sh.state);
        match input {
            TurnInput::SpeechStarted { audio_start_ms } => {
                if let Some(held) = st.held_turn.take() {
                    // The user went on: the same turn, the same item, and no
                    // new speech_started (the client never saw it stop).
                    sh.drop_speculation(&mut st);
                    st.speech_item = Some(held.item_id);
                    st.carry = held.audio;
                    return;
                }
                let interrupt = st.config.interrupt_response;
                if interrupt && st.response.as_ref().is_some_and(|r| r.held.is_none()) {
                    sh.cancel_response(&mut st, StopReason::TurnDetected);
                }
                sh.drop_speculation(&mut st);
                let item_id = sh.engine.new_id("item");
                st.speech_item = Some(item_id.clone());
                st.timings = TurnTimings::default();
                sh.out.emit(EngineEvent::SpeechStarted {
                    item_id,
                    audio_start_ms,
                });
                if st.config.prefill && st.config.create_response {
                    sh.prefill(&st);
                }
            }
            TurnInput::SoftEnd { audio, .. } => {
                if !st.config.speculation || st.speech_item.is_none() || audio.is_empty() {
                    return;
                }
                sh.drop_speculation(&mut st);
                let audio = if st.carry.is_empty() {
                    audio
                } else {
                    [st.carry.as_slice(), audio.as_slice()].concat()
                };
                let generation = sh.spec_gen.fetch_add(1, Ordering::AcqRel) + 1;
                let soft_end_ms = sh.engine.now_ms();
                st.timings.soft_end = Some(soft_end_ms);
                st.spec = Some(Speculation {
                    generation,
                    transcript: None,
                    committed_item: None,
                    decision: None,
                });
                let job = SttJob {
                    session: Arc::clone(sh),
                    audio,
                    options: st.config.stt.clone(),
                    purpose: SttPurpose::Speculative,
                    cancel: Cancel::new(Arc::clone(&sh.spec_gen), generation),
                };
                if sh.engine.submit(Stage::Stt, Box::new(job)).is_err() {
                    st.spec = None;
                }
            }
            TurnInput::SpeechResumed { .. } => sh.drop_speculation(&mut st),
            TurnInput::Decide { decision, audio } => {
                // While the pause's speculative STT runs, the decision waits
                // for it and then runs beside the LLM (one thread): on a
                // small CPU the two would slow each other, and the turn waits
                // for that transcript anyway (its words may hold it).
                if let Some(spec) = st.spec.as_mut().filter(|s| s.transcript.is_none()) {
                    spec.decision = Some((decision, audio));
                    return;
                }
                st.timings.decision = Some(sh.engine.now_ms());
                drop(st);
                sh.decide(decision, audio);
            }
            TurnInput::SpeechStopped {
                audio_end_ms,
                audio,
                hold_until_ms,
            } => {
                let audio = if st.carry.is_empty() {
                    audio
                } else {
                    let mut all = std::mem::take(&mut st.carry);
                    all.extend_from_slice(&audio);
                    all
                };
                // Hold the turn if its words sound unfinished, or while they
                // are still being transcribed (the transcript decides then).
                let hold = st
                    .spec
                    .as_ref()
                    .is_some_and(|s| s.transcript.as_deref().is_none_or(sounds_unfinished));
                // With a learned end of turn the model has decided already:
                // the transcript may still hold a turn it ended early (its
                // verdict misses a cut after "to the" about half the time),
                // but only up to `hold_until_ms`, a shorter wait.
                let learned = st.config.end_of_turn.is_some() && sh.engine.has_turn_model();
                let until = if learned {
                    hold_until_ms
                } else {
                    let silence = st.config.vad.min_silence_ms;
                    st.config
                        .semantic_max_wait_ms
                        .map(|w| audio_end_ms as f64 + (w - silence).max(0.0))
                };
                if let Some(until_ms) = until
                    && hold
                    && until_ms > audio_end_ms as f64
                {
                    let item_id = st
                        .speech_item
                        .clone()
                        .unwrap_or_else(|| sh.engine.new_id("item"));
                    st.speech_item = Some(item_id.clone());
                    st.held_turn = Some(HeldTurn {
                        item_id,
                        audio,
                        audio_end_ms,
                        until_ms,
                    });
                    return;
                }
                let item_id = st
                    .speech_item
                    .take()
                    .unwrap_or_else(|| sh.engine.new_id("item"));
                st.timings.speech_end = Some(audio_end_ms as f64);
                sh.out.emit(EngineEvent::SpeechStopped {
                    item_id: item_id.clone(),
                    audio_end_ms,
                });
                if let Err(e) = sh.commit(&mut st, item_id, audio, true) {
                    sh.out.emit_error(&e);
                }
            }
        }
    }

    /// Run the end-of-turn model on the turn's audio (its worker answers
    /// through [`Self::on_turn_verdict`]).
    pub(super) fn decide(self: &Arc<Self>, decision: u64, audio: Vec<f32>) {
        let job = TurnJob {
            session: Arc::clone(self),
            decision,
            audio,
        };
        if let Err(e) = self.engine.submit(Stage::Turn, Box::new(job)) {
            tracing::warn!(session = %self.id, "end-of-turn decision refused: {e}");
            self.on_turn_verdict(decision, None);
        }
    }

    /// The end-of-turn model's answer (`None`: it failed): the policy may
    /// end the turn now or ask again.
    pub(super) fn on_turn_verdict(self: &Arc<Self>, decision: u64, probability: Option<f32>) {
        let mut turns = Vec::new();
        self.input
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .verdict(decision, probability, &mut turns);
        for t in turns {
            self.turn_input(t);
        }
    }
}

impl Session {
    /// Commit audio as a user turn (push-to-talk, or a client commit).
    pub fn commit_input(&self, audio_16k: Vec<f32>) -> Result<String, SessionError> {
        let sh = &self.0;
        let mut st = lock(&sh.state);
        let ms = audio_16k.len() as f64 * 1000.0 / f64::from(STT_RATE);
        if ms < 100.0 {
            return Err(SessionError::EmptyBuffer(ms));
        }
        sh.drop_speculation(&mut st);
        let item_id = st
            .speech_item
            .take()
            .unwrap_or_else(|| sh.engine.new_id("item"));
        sh.commit(&mut st, item_id.clone(), audio_16k, false)?;
        Ok(item_id)
    }

    /// Commit a held turn once its wait is over (or at once with `now`);
    /// returns its item id if it was committed.
    pub(super) fn release_held_turn(&self, now: bool) -> Option<String> {
        let sh = &self.0;
        let position = self.input_position_ms();
        let mut st = lock(&sh.state);
        let until = st.held_turn.as_ref()?.until_ms;
        if !now && position < until {
            return None;
        }
        sh.release_held(&mut st)
    }
}

impl Shared {
    /// Let the LLM read the history ahead while the user speaks. Best
    /// effort: a full queue skips it, and the next response (which bumps the
    /// response generation) makes a queued or running prefill stop.
    pub(super) fn prefill(self: &Arc<Self>, st: &State) {
        // The LLM has one cache: with other conversations using it, what is
        // read ahead now is evicted before the answer, and the CPU it took
        // was taken from their turns (measured: 4 conversations on 2 cores
        // answered later with prefill than without).
        if self.engine.llm_busy_with_another(self.key(), PREFILL_QUIET) {
            tracing::debug!("LLM prefill skipped: another session used the LLM recently");
            return;
        }
        let cfg = &st.config;
        // What a response of the turn will be asked, but its messages.
        let request = llm_request(
            cfg,
            &ResponseOptions::default(),
            st.conversation
                .chat_prefix(&cfg.instructions, cfg.chat_size),
        );
        let job = PrefillJob {
            session: Arc::clone(self),
            request,
            cancel: Cancel::new(
                Arc::clone(&self.resp_gen),
                self.resp_gen.load(Ordering::Acquire),
            ),
        };
        if let Err(e) = self.engine.submit(Stage::Llm, Box::new(job)) {
            tracing::debug!(error = %e, "LLM prefill skipped");
        }
    }

    /// This session's identity for the engine's bookkeeping.
    pub(super) fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    pub(super) fn drop_speculation(&self, st: &mut State) {
        if st.spec.take().is_some() {
            self.spec_gen.fetch_add(1, Ordering::AcqRel);
        }
        if st.response.as_ref().is_some_and(|r| r.held.is_some()) {
            // Never emitted, so nothing to tell the client; its items never
            // joined the conversation.
            self.resp_gen.fetch_add(1, Ordering::AcqRel);
            st.response = None;
        }
        st.finished_spec = None;
    }

    pub(super) fn commit(
        self: &Arc<Self>,
        st: &mut State,
        item_id: String,
        audio: Vec<f32>,
        respond: bool,
    ) -> Result<(), SessionError> {
        let duration_ms = audio.len() as f64 * 1000.0 / f64::from(STT_RATE);
        st.timings.commit = Some(self.engine.now_ms());
        let item = Item {
            id: item_id.clone(),
            kind: ItemKind::Message {
                role: Role::User,
                content: vec![Content::InputAudio {
                    transcript: None,
                    duration_ms,
                }],
            },
            status: ItemStatus::Completed,
        };
        let prev = st.conversation.insert(item.clone(), None)?;
        self.out.emit(EngineEvent::InputCommitted {
            item_id: item_id.clone(),
            previous_item_id: prev.clone(),
        });
        self.out.emit(EngineEvent::ItemAdded {
            item: item.clone(),
            previous_item_id: prev.clone(),
        });
        self.out.emit(EngineEvent::ItemDone {
            item,
            previous_item_id: prev,
        });
        // Speculative work on the same speech is the transcript of this turn.
        if let Some(spec) = &mut st.spec {
            spec.committed_item = Some(item_id.clone());
            st.timings.speculative = true;
            if let Some(text) = spec.transcript.clone() {
                st.spec = None;
                self.transcript_ready(st, &item_id, Ok(text), duration_ms, respond);
            }
            return Ok(());
        }
        let job = SttJob {
            session: Arc::clone(self),
            audio,
            options: st.config.stt.clone(),
            purpose: SttPurpose::Committed {
                item_id,
                duration_ms,
                respond,
            },
            // A committed turn is transcribed even if a response is cancelled.
            cancel: Cancel::never(),
        };
        self.engine.submit(Stage::Stt, Box::new(job))?;
        st.pending_stt += 1;
        Ok(())
    }

    /// Commit the held turn now; returns its item id.
    pub(super) fn release_held(self: &Arc<Self>, st: &mut State) -> Option<String> {
        let held = st.held_turn.take()?;
        st.speech_item = None;
        self.out.emit(EngineEvent::SpeechStopped {
            item_id: held.item_id.clone(),
            audio_end_ms: held.audio_end_ms,
        });
        if let Err(e) = self.commit(st, held.item_id.clone(), held.audio, true) {
            self.out.emit_error(&e);
            return None;
        }
        Some(held.item_id)
    }
}

#[cfg(test)]
mod semantic_tests {
    use super::sounds_unfinished;

    #[test]
    fn unfinished_transcripts_are_recognised() {
        for t in [
            "I want to go to",
            "coffee and",
            "Well, um",
            "first,",
            "the weather in",
            "I want to go to the.",
            "Book a table for.",
            "I was thinking...",
            "coffee and tea and.",
            "Well, um.",
            "Can you set a timer for?",
            "Is it going to be colder than?",
            "What's the difference between?",
            "Is this the road to?",
        ] {
            assert!(sounds_unfinished(t), "{t}");
        }
        for t in [
            "What is the capital of France?",
            "Thanks.",
            "level 42",
            "",
            "Paris",
            "I think so.",
            "Where are you from?",
            "What are you looking at?",
            "I like that.",
            "Is it?",
            "What is this for?",
            "Who did you go with?",
            "Can you turn it on?",
            "Is he coming in?",
            "Is it worth it?",
            "Can you help me?",
            "It is somewhere in between.",
            "Do you feel like it?",
            "Do you know where he is from?",
            "Is this the one that you asked for?",
        ] {
            assert!(!sounds_unfinished(t), "{t}");
        }
    }
}
