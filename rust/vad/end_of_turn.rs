//! When a pause ends the user's turn: the silence rule, or a learned model's verdict with it.
//!
//! [`EndOfTurnPolicy`] is a pure state machine over times in milliseconds of
//! input audio. It knows no threads, models or sessions: the caller tells it
//! about speech and pauses (from the VAD's turn events), runs the model when
//! it asks ([`Action::Decide`]) and hands back the verdict. So it is tested
//! with plain numbers, and the engine can run the model wherever it likes
//! (in parallel with speculative STT and LLM work started at the same pause).
//!
//! Once a pause has lasted [`EndOfTurnConfig::decision_silence_ms`], the
//! model gives the probability that the turn is over (the VAD's soft end,
//! which starts the speculative STT and LLM, comes earlier: the model judges
//! better with a little more silence, and the speculation should not wait
//! for it):
//!
//! * **complete** (above [`EndOfTurnConfig::complete_threshold`]): the turn
//!   ends once the silence reaches [`EndOfTurnConfig::complete_silence_ms`]
//!   (or at once, if the verdict comes later than that);
//! * **incomplete** (at or below [`EndOfTurnConfig::hold_threshold`]): the
//!   turn waits for more speech, up to [`EndOfTurnConfig::max_wait_ms`] of
//!   silence (the eagerness ceiling), asking the model again every
//!   [`EndOfTurnConfig::recheck_ms`];
//! * **unsure** (in between), or **no verdict** (no model, the model failed,
//!   or its answer is late): the silence rule,
//!   [`EndOfTurnConfig::silence_ms`]. A turn never waits longer for a verdict
//!   than it would have without the model, and only a confident
//!   "incomplete" holds it past the silence rule.
//!
//! Speech that comes back before the turn ends continues the turn; a verdict
//! on audio from before that is stale and ignored.

use super::error::VadError;

/// Silence after which a turn the model calls complete ends, by default.
pub const DEFAULT_COMPLETE_SILENCE_MS: u64 = 200;
/// Silence after which the model is asked, by default (Pipecat runs Smart
/// Turn at its VAD's 200 ms stop). Asked at 150 ms instead
/// (`benches/turn_detection.py --decision-silence-ms 150`), two synthesised
/// sets disagreed: mid-sentence pauses committed 0.48 against 0.48 and 0.50
/// against 0.43, time saved 262 against 175 ms and 129 against 162 ms.
pub const DEFAULT_DECISION_SILENCE_MS: u64 = 200;
/// The silence rule: without a verdict, this much silence ends a turn.
pub const SILENCE_RULE_MS: u64 = 500;
/// How often a pause the model called incomplete is asked about again.
/// 300 ms (the first recheck at the silence rule's time) was tried: over
/// three synthesised sets it ended the complete turns the model wrongly held
/// sooner (mean end of turn 33-166 ms sooner, about as many mid-sentence
/// pauses committed), but it let the one recorded human cut go (jfk.wav cut
/// mid-sentence, served through `semantic_vad`): the model is less sure of a
/// pause after 500 ms of silence, and an unsure verdict hands the turn to the
/// rule.
pub const DEFAULT_RECHECK_MS: u64 = 600;
/// Probability above which the turn is complete (the model's own cut-off).
pub const DEFAULT_COMPLETE_THRESHOLD: f32 = 0.5;
/// Probability at or below which the turn is held for more speech.
pub const DEFAULT_HOLD_THRESHOLD: f32 = 0.1;

/// `semantic_vad` eagerness: how long a turn that sounds unfinished may wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Eagerness {
    /// Lets the user pause to think: up to 8 s.
    Low,
    /// Up to 4 s.
    Medium,
    /// Answers quickly: up to 2 s.
    High,
    /// The default: medium.
    #[default]
    Auto,
}

impl Eagerness {
    /// The longest silence an unfinished-sounding turn waits, in milliseconds
    /// (the Realtime protocol's 8 / 4 / 2 s for low / medium / high).
    pub const fn max_wait_ms(self) -> u64 {
        match self {
            Self::Low => 8_000,
            Self::Medium | Self::Auto => 4_000,
            Self::High => 2_000,
        }
    }

    /// The protocol's name for it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Auto => "auto",
        }
    }
}

impl std::str::FromStr for Eagerness {
    type Err = VadError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Self::Low),
            "medium" => Ok(Self::Medium),
            "high" => Ok(Self::High),
            "auto" => Ok(Self::Auto),
            other => Err(VadError::InvalidConfig(format!(
                "eagerness must be low, medium, high or auto, got {other:?}"
            ))),
        }
    }
}

/// End-of-turn settings, in milliseconds of silence since speech stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct EndOfTurnConfig {
    /// Silence after which the model is asked (must be under `silence_ms`).
    pub decision_silence_ms: u64,
    /// Silence after which a turn the model calls complete ends.
    pub complete_silence_ms: u64,
    /// The silence rule: the silence that ends a turn with no verdict.
    pub silence_ms: u64,
    /// The longest silence a turn the model calls incomplete waits.
    pub max_wait_ms: u64,
    /// After an "incomplete", ask again once the silence has grown by this
    /// much: a pause that goes on is itself a sign that the turn is over.
    /// `None`: ask once per pause.
    pub recheck_ms: Option<u64>,
    /// Probability above which the turn is complete.
    pub complete_threshold: f32,
    /// Probability at or below which the turn is held for more speech; in
    /// between, the silence rule decides. Equal to `complete_threshold`:
    /// every "not complete" holds.
    pub hold_threshold: f32,
}

impl Default for EndOfTurnConfig {
    fn default() -> Self {
        Self::for_eagerness(Eagerness::Auto)
    }
}

impl EndOfTurnConfig {
    /// The defaults, with the ceiling of `eagerness`.
    pub const fn for_eagerness(eagerness: Eagerness) -> Self {
        Self {
            decision_silence_ms: DEFAULT_DECISION_SILENCE_MS,
            complete_silence_ms: DEFAULT_COMPLETE_SILENCE_MS,
            silence_ms: SILENCE_RULE_MS,
            max_wait_ms: eagerness.max_wait_ms(),
            recheck_ms: Some(DEFAULT_RECHECK_MS),
            complete_threshold: DEFAULT_COMPLETE_THRESHOLD,
            hold_threshold: DEFAULT_HOLD_THRESHOLD,
        }
    }

    /// Check the values; the error names the one that is wrong.
    pub fn validate(&self) -> Result<(), VadError> {
        if self.max_wait_ms < self.silence_ms {
            return Err(VadError::InvalidConfig(format!(
                "max_wait_ms ({}) must be >= silence_ms ({})",
                self.max_wait_ms, self.silence_ms
            )));
        }
        if self.decision_silence_ms >= self.silence_ms {
            return Err(VadError::InvalidConfig(format!(
                "decision_silence_ms ({}) must be < silence_ms ({}): the model answers \
                 before the silence rule ends the turn",
                self.decision_silence_ms, self.silence_ms
            )));
        }
        if self.recheck_ms == Some(0) {
            return Err(VadError::InvalidConfig(
                "recheck_ms must be at least 1 (or None)".to_owned(),
            ));
        }
        if !(self.complete_threshold > 0.0 && self.complete_threshold < 1.0) {
            return Err(VadError::InvalidConfig(format!(
                "complete_threshold must be in (0, 1), got {}",
                self.complete_threshold
            )));
        }
        if !(self.hold_threshold >= 0.0 && self.hold_threshold <= self.complete_threshold) {
            return Err(VadError::InvalidConfig(format!(
                "hold_threshold must be in [0, complete_threshold], got {}",
                self.hold_threshold
            )));
        }
        Ok(())
    }
}

/// Why a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitReason {
    /// The model said the turn is complete, and the short silence passed.
    Complete,
    /// No confident verdict (no model, a failure, a late or an unsure
    /// answer): the silence rule.
    SilenceRule,
    /// The model said incomplete, and nobody spoke for the whole ceiling.
    MaxWait,
}

impl CommitReason {
    /// A short name for logs and bindings.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::SilenceRule => "silence_rule",
            Self::MaxWait => "max_wait",
        }
    }
}

/// What the caller should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Nothing yet.
    Wait,
    /// Run the model on the turn's audio up to now, and pass its answer to
    /// [`EndOfTurnPolicy::verdict`] with this `decision` number.
    Decide {
        /// Identifies this request; an answer to an older one is ignored.
        decision: u64,
    },
    /// The turn is over.
    Commit(CommitReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The pause is too short yet for the model to be asked.
    NotAsked,
    /// The model was asked and has not answered.
    Pending,
    Complete,
    /// Incomplete (a recheck may be out: the answer stays until it comes).
    Incomplete,
    /// Neither: the silence rule applies.
    Unsure,
    /// No model, or it failed: the silence rule applies.
    Unavailable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No turn open.
    Idle,
    Speaking,
    Paused {
        /// Where the silence began.
        since: u64,
        verdict: Verdict,
        /// When the model was last asked.
        asked_at: u64,
    },
}

/// The end-of-turn decision for one stream.
#[derive(Debug, Clone)]
pub struct EndOfTurnPolicy {
    config: EndOfTurnConfig,
    model: bool,
    state: State,
    decision: u64,
}

impl EndOfTurnPolicy {
    /// A policy that asks the model when `model` is true, and otherwise
    /// applies the silence rule alone.
    pub fn new(config: EndOfTurnConfig, model: bool) -> Result<Self, VadError> {
        config.validate()?;
        Ok(Self {
            config,
            model,
            state: State::Idle,
            decision: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &EndOfTurnConfig {
        &self.config
    }

    /// Whether the model is asked.
    pub fn uses_model(&self) -> bool {
        self.model
    }

    /// The model became unavailable (it failed to load, or keeps failing):
    /// from now on the silence rule decides. A pending decision counts as
    /// failed.
    pub fn disable_model(&mut self) {
        self.model = false;
        if let State::Paused { verdict, .. } = &mut self.state {
            *verdict = Verdict::Unavailable;
        }
    }

    /// True while a turn is open (speaking or paused).
    pub fn in_turn(&self) -> bool {
        self.state != State::Idle
    }

    /// True while paused inside a turn.
    pub fn paused(&self) -> bool {
        matches!(self.state, State::Paused { .. })
    }

    /// Speech is going on (a turn starts, or continues). Returns true when
    /// this resumes a paused turn: work started for the pause is stale.
    pub fn speech(&mut self) -> bool {
        let resumed = self.paused();
        if resumed {
            // Any answer still in flight is about the audio before this speech.
            self.decision += 1;
        }
        self.state = State::Speaking;
        resumed
    }

    /// A pause has lasted the VAD's soft end: silence since `silence_start`,
    /// and it is now `now`. The model is asked once the silence reaches
    /// `decision_silence_ms` (now, or at a later [`tick`](Self::tick)).
    pub fn pause(&mut self, silence_start: u64, now: u64) -> Action {
        self.state = State::Paused {
            since: silence_start.min(now),
            verdict: if self.model {
                Verdict::NotAsked
            } else {
                Verdict::Unavailable
            },
            asked_at: now,
        };
        self.tick(now)
    }

    /// The model's answer to [`Action::Decide`] `decision`: the probability
    /// that the turn is over, or `None` if the model failed. A stale answer
    /// (speech came back, or a newer decision was asked for) changes nothing.
    pub fn verdict(&mut self, decision: u64, probability: Option<f32>, now: u64) -> Action {
        if decision != self.decision {
            return self.tick(now);
        }
        let c = &self.config;
        if let State::Paused { verdict, .. } = &mut self.state
            && matches!(*verdict, Verdict::Pending | Verdict::Incomplete)
        {
            *verdict = match probability {
                Some(p) if p > c.complete_threshold => Verdict::Complete,
                Some(p) if p <= c.hold_threshold => Verdict::Incomplete,
                Some(p) if p.is_finite() => Verdict::Unsure,
                _ => Verdict::Unavailable,
            };
        }
        self.tick(now)
    }

    /// Time has passed in silence; call it for every chunk of a pause.
    pub fn tick(&mut self, now: u64) -> Action {
        let State::Paused {
            since,
            verdict,
            asked_at,
        } = self.state
        else {
            return Action::Wait;
        };
        let silence = now.saturating_sub(since);
        let c = &self.config;
        let commit = match verdict {
            Verdict::Complete => silence >= c.complete_silence_ms,
            Verdict::Incomplete => silence >= c.max_wait_ms,
            Verdict::NotAsked | Verdict::Pending | Verdict::Unsure | Verdict::Unavailable => {
                silence >= c.silence_ms
            }
        };
        if commit {
            self.state = State::Idle;
            self.decision += 1;
            return Action::Commit(match verdict {
                Verdict::Complete => CommitReason::Complete,
                Verdict::Incomplete => CommitReason::MaxWait,
                Verdict::NotAsked | Verdict::Pending | Verdict::Unsure | Verdict::Unavailable => {
                    CommitReason::SilenceRule
                }
            });
        }
        if verdict == Verdict::NotAsked && self.model && silence >= c.decision_silence_ms {
            self.decision += 1;
            self.state = State::Paused {
                since,
                verdict: Verdict::Pending,
                asked_at: now,
            };
            return Action::Decide {
                decision: self.decision,
            };
        }
        if verdict == Verdict::Incomplete
            && self.model
            && let Some(every) = c.recheck_ms
            && now.saturating_sub(asked_at) >= every
        {
            // The verdict stays "incomplete" until the new one comes: a
            // recheck never brings the silence rule back.
            self.decision += 1;
            self.state = State::Paused {
                since,
                verdict,
                asked_at: now,
            };
            return Action::Decide {
                decision: self.decision,
            };
        }
        Action::Wait
    }

    /// Close any open turn (the caller committed it some other way, or the
    /// stream was reset).
    pub fn reset(&mut self) {
        self.state = State::Idle;
        self.decision += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: u64 = 32;

    fn policy(model: bool) -> EndOfTurnPolicy {
        EndOfTurnPolicy::new(EndOfTurnConfig::default(), model).unwrap()
    }

    /// Tick every chunk from `from` (exclusive) to `to`; the first action
    /// that is not `Wait`, with its time.
    fn run_until(p: &mut EndOfTurnPolicy, from: u64, to: u64) -> Option<(u64, Action)> {
        let mut now = from;
        while now < to {
            now += CHUNK;
            match p.tick(now) {
                Action::Wait => {}
                a => return Some((now, a)),
            }
        }
        None
    }

    #[test]
    fn complete_utterance_commits_before_the_silence_rule() {
        // Speech until 2000 ms; the soft end comes 200 ms into the silence.
        let mut with_model = policy(true);
        with_model.speech();
        let Action::Decide { decision } = with_model.pause(2000, 2200) else {
            panic!("the model is asked at the soft end");
        };
        // The model answers "complete" 56 ms later.
        assert_eq!(
            with_model.verdict(decision, Some(0.9), 2256),
            Action::Commit(CommitReason::Complete)
        );

        let mut silence_only = policy(false);
        silence_only.speech();
        assert_eq!(silence_only.pause(2000, 2200), Action::Wait);
        let (at, action) = run_until(&mut silence_only, 2200, 5000).unwrap();
        assert_eq!(action, Action::Commit(CommitReason::SilenceRule));
        assert_eq!(at, 2520);
        assert!(2256 + 200 <= at, "the model saves at least 200 ms here");
    }

    #[test]
    fn an_early_soft_end_asks_the_model_at_the_decision_silence() {
        // A soft end at 80 ms of silence (as here) starts the speculation; the
        // model is asked only at 200 ms.
        let mut p = policy(true);
        p.speech();
        assert_eq!(p.pause(1000, 1080), Action::Wait);
        let (at, Action::Decide { decision }) = run_until(&mut p, 1080, 3000).unwrap() else {
            panic!("the model is asked once the pause is long enough")
        };
        assert!((1200..1200 + CHUNK).contains(&at), "{at}");
        assert_eq!(
            p.verdict(decision, Some(0.9), at + 56),
            Action::Commit(CommitReason::Complete)
        );

        // Speech comes back before 200 ms: nobody asked, nothing to undo.
        let mut p = policy(true);
        p.speech();
        assert_eq!(p.pause(1000, 1080), Action::Wait);
        assert_eq!(p.tick(1150), Action::Wait);
        assert!(p.speech(), "the pause was open");
        assert_eq!(p.tick(1300), Action::Wait, "no decision while speaking");

        // Without the model the early soft end changes nothing.
        let mut p = policy(false);
        p.speech();
        assert_eq!(p.pause(1000, 1080), Action::Wait);
        let (at, action) = run_until(&mut p, 1080, 3000).unwrap();
        assert_eq!(action, Action::Commit(CommitReason::SilenceRule));
        assert!((1500..1500 + CHUNK).contains(&at), "{at}");
    }

    #[test]
    fn a_fast_complete_verdict_still_waits_the_short_silence() {
        let mut p = EndOfTurnPolicy::new(
            EndOfTurnConfig {
                complete_silence_ms: 300,
                ..EndOfTurnConfig::default()
            },
            true,
        )
        .unwrap();
        p.speech();
        let Action::Decide { decision } = p.pause(1000, 1200) else {
            panic!()
        };
        assert_eq!(p.verdict(decision, Some(0.9), 1210), Action::Wait);
        let (at, action) = run_until(&mut p, 1210, 3000).unwrap();
        assert_eq!(action, Action::Commit(CommitReason::Complete));
        assert!((1300..1300 + CHUNK).contains(&at), "{at}");
    }

    #[test]
    fn mid_sentence_pause_holds_and_the_turn_continues() {
        let mut p = policy(true);
        assert!(!p.speech());
        let Action::Decide { decision } = p.pause(1500, 1700) else {
            panic!()
        };
        assert_eq!(p.verdict(decision, Some(0.02), 1760), Action::Wait);
        // 750 ms of pause: the silence rule would have ended the turn at 2000.
        assert_eq!(run_until(&mut p, 1760, 2250), None);
        assert!(p.paused() && p.in_turn());
        // Speech resumes: the same turn goes on.
        assert!(p.speech());
        assert!(p.in_turn() && !p.paused());
        // The end of the sentence: complete this time.
        let Action::Decide { decision } = p.pause(4000, 4200) else {
            panic!()
        };
        assert_eq!(
            p.verdict(decision, Some(0.9), 4250),
            Action::Commit(CommitReason::Complete)
        );
        assert!(!p.in_turn());
    }

    #[test]
    fn an_incomplete_turn_ends_at_the_eagerness_ceiling() {
        for eagerness in [
            Eagerness::Low,
            Eagerness::Medium,
            Eagerness::High,
            Eagerness::Auto,
        ] {
            let mut p = EndOfTurnPolicy::new(
                EndOfTurnConfig {
                    recheck_ms: None,
                    ..EndOfTurnConfig::for_eagerness(eagerness)
                },
                true,
            )
            .unwrap();
            p.speech();
            let Action::Decide { decision } = p.pause(0, 200) else {
                panic!()
            };
            p.verdict(decision, Some(0.02), 250);
            let (at, action) = run_until(&mut p, 250, 20_000).unwrap();
            assert_eq!(action, Action::Commit(CommitReason::MaxWait));
            let ceiling = eagerness.max_wait_ms();
            assert!(
                (ceiling..ceiling + CHUNK).contains(&at),
                "{eagerness:?}: {at}"
            );
        }
        assert_eq!(Eagerness::Low.max_wait_ms(), 8_000);
        assert_eq!(Eagerness::Medium.max_wait_ms(), 4_000);
        assert_eq!(Eagerness::High.max_wait_ms(), 2_000);
        assert_eq!(Eagerness::Auto.max_wait_ms(), 4_000);
        assert_eq!("high".parse::<Eagerness>().unwrap(), Eagerness::High);
        assert!("eager".parse::<Eagerness>().is_err());
    }

    #[test]
    fn an_incomplete_turn_is_asked_again_as_the_pause_grows() {
        let mut p = policy(true);
        p.speech();
        let Action::Decide { decision } = p.pause(0, 200) else {
            panic!()
        };
        p.verdict(decision, Some(0.02), 260);
        // A recheck once the pause has grown by another 600 ms.
        let (at, Action::Decide { decision: again }) = run_until(&mut p, 260, 5000).unwrap() else {
            panic!("expected a recheck")
        };
        assert!((800..800 + CHUNK).contains(&at), "{at}");
        // Until it answers, the turn still waits (no silence rule).
        assert_eq!(run_until(&mut p, at, at + 200), None);
        assert_eq!(
            p.verdict(again, Some(0.9), at + 200),
            Action::Commit(CommitReason::Complete)
        );
    }

    #[test]
    fn no_verdict_falls_back_to_the_silence_rule() {
        // The model failed.
        let mut p = policy(true);
        p.speech();
        let Action::Decide { decision } = p.pause(1000, 1200) else {
            panic!()
        };
        assert_eq!(p.verdict(decision, None, 1250), Action::Wait);
        let (at, action) = run_until(&mut p, 1250, 3000).unwrap();
        assert_eq!(action, Action::Commit(CommitReason::SilenceRule));
        assert!((1500..1500 + CHUNK).contains(&at));

        // The model is too slow: the silence rule does not wait for it, and
        // the late answer changes nothing.
        let mut p = policy(true);
        p.speech();
        let Action::Decide { decision } = p.pause(1000, 1200) else {
            panic!()
        };
        let (at, action) = run_until(&mut p, 1200, 3000).unwrap();
        assert_eq!(action, Action::Commit(CommitReason::SilenceRule));
        assert!((1500..1500 + CHUNK).contains(&at));
        assert_eq!(p.verdict(decision, Some(0.02), at + 10), Action::Wait);
        assert!(!p.in_turn());

        // The model goes away while a decision is pending.
        let mut p = policy(true);
        p.speech();
        p.pause(1000, 1200);
        p.disable_model();
        assert!(!p.uses_model());
        let (_, action) = run_until(&mut p, 1200, 3000).unwrap();
        assert_eq!(action, Action::Commit(CommitReason::SilenceRule));
    }

    #[test]
    fn an_unsure_verdict_gets_the_silence_rule() {
        // Between the hold and complete thresholds: neither held to the
        // ceiling nor committed early.
        let mut p = policy(true);
        p.speech();
        let Action::Decide { decision } = p.pause(1000, 1200) else {
            panic!()
        };
        assert_eq!(p.verdict(decision, Some(0.3), 1260), Action::Wait);
        let (at, action) = run_until(&mut p, 1260, 5000).unwrap();
        assert_eq!(action, Action::Commit(CommitReason::SilenceRule));
        assert!((1500..1500 + CHUNK).contains(&at), "{at}");

        // A recheck that comes back unsure after the silence rule's time
        // ends the turn at once.
        let mut p = policy(true);
        p.speech();
        let Action::Decide { decision } = p.pause(0, 200) else {
            panic!()
        };
        p.verdict(decision, Some(0.05), 260);
        let (at, Action::Decide { decision }) = run_until(&mut p, 260, 5000).unwrap() else {
            panic!("expected a recheck")
        };
        assert_eq!(
            p.verdict(decision, Some(0.4), at + 60),
            Action::Commit(CommitReason::SilenceRule)
        );

        // With no unsure band every "not complete" holds.
        let mut p = EndOfTurnPolicy::new(
            EndOfTurnConfig {
                hold_threshold: 0.5,
                recheck_ms: None,
                ..EndOfTurnConfig::default()
            },
            true,
        )
        .unwrap();
        p.speech();
        let Action::Decide { decision } = p.pause(0, 200) else {
            panic!()
        };
        p.verdict(decision, Some(0.45), 260);
        assert_eq!(run_until(&mut p, 260, 3900), None);
        // A NaN is no verdict.
        let mut p = policy(true);
        p.speech();
        let Action::Decide { decision } = p.pause(0, 200) else {
            panic!()
        };
        p.verdict(decision, Some(f32::NAN), 260);
        let (_, action) = run_until(&mut p, 260, 3900).unwrap();
        assert_eq!(action, Action::Commit(CommitReason::SilenceRule));
    }

    #[test]
    fn a_verdict_from_before_resumed_speech_is_ignored() {
        let mut p = policy(true);
        p.speech();
        let Action::Decide { decision } = p.pause(1000, 1200) else {
            panic!()
        };
        // Speech resumes before the answer arrives.
        assert!(p.speech());
        assert_eq!(p.verdict(decision, Some(0.9), 1300), Action::Wait);
        assert!(p.in_turn() && !p.paused());
        // The next pause gets a new decision.
        let Action::Decide { decision: next } = p.pause(2000, 2200) else {
            panic!()
        };
        assert_ne!(next, decision);
        assert_eq!(
            p.verdict(next, Some(0.02), 2250),
            Action::Wait,
            "the fresh verdict counts"
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let named = [
            (
                EndOfTurnConfig {
                    max_wait_ms: 100,
                    ..EndOfTurnConfig::default()
                },
                "max_wait_ms",
            ),
            (
                EndOfTurnConfig {
                    decision_silence_ms: 500,
                    ..EndOfTurnConfig::default()
                },
                "decision_silence_ms",
            ),
        ];
        for (bad, name) in named {
            assert!(
                matches!(
                    EndOfTurnPolicy::new(bad, true),
                    Err(VadError::InvalidConfig(m)) if m.contains(name)
                ),
                "{name}"
            );
        }
        let bad = EndOfTurnConfig {
            recheck_ms: Some(0),
            ..EndOfTurnConfig::default()
        };
        assert!(EndOfTurnPolicy::new(bad, true).is_err());
        for (complete, hold) in [(0.0, 0.0), (1.0, 0.1), (0.5, 0.6), (0.5, -0.1)] {
            let bad = EndOfTurnConfig {
                complete_threshold: complete,
                hold_threshold: hold,
                ..EndOfTurnConfig::default()
            };
            assert!(
                EndOfTurnPolicy::new(bad, true).is_err(),
                "{complete} {hold}"
            );
        }
    }
}
