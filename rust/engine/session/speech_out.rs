//! Speech output of one response: clauses in, transcript and audio deltas out.
//!
//! A plain struct, no threads and no locks: TTS chunks of each clause arrive
//! in any order (clauses are synthesised concurrently), and [`SpeechOut::pump`]
//! turns what is ready into output in clause order: a clause's transcript
//! delta when its first audio goes out, then its audio resampled to the
//! session's output rate in deltas of 20 to 200 ms. It also keeps the record
//! of what was spoken when ([`SpokenClause`]), which truncation uses to find
//! the words the user heard.

use crate::audio::resample::Resampler;
use crate::engine::backend::TtsChunk;
use crate::engine::conversation::SpokenClause;

/// One piece of speech output, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Speech {
    /// The text of a clause whose audio starts now (with a leading space
    /// after the first clause).
    Transcript(String),
    /// Output audio at the output rate, 20 to 200 ms (shorter only at the end).
    Audio(Vec<f32>),
    /// A TTS chunk at a rate the resampler cannot convert; it is skipped.
    UnsupportedRate(String),
}

/// A clause on its way through TTS.
#[derive(Debug, Default)]
struct ClauseSlot {
    text: String,
    chunks: Vec<TtsChunk>,
    done: bool,
    started: bool,
}

/// Speech output of one response.
#[derive(Debug)]
pub(crate) struct SpeechOut {
    out_rate: u32,
    clauses: Vec<ClauseSlot>,
    next: usize,
    resampler: Option<Resampler>,
    out_buf: Vec<f32>,
    /// Resampled audio not yet sent (less than a 20 ms delta).
    pending: Vec<f32>,
    /// Audio queued for output so far, ms.
    audio_ms: f64,
    spoken: Vec<SpokenClause>,
}

impl SpeechOut {
    /// Output at `out_rate` Hz.
    pub(crate) fn new(out_rate: u32) -> Self {
        Self {
            out_rate,
            clauses: Vec::new(),
            next: 0,
            resampler: None,
            out_buf: Vec::new(),
            pending: Vec::new(),
            audio_ms: 0.0,
            spoken: Vec::new(),
        }
    }

    /// A new clause to speak; returns its index.
    pub(crate) fn add_clause(&mut self, text: String) -> usize {
        self.clauses.push(ClauseSlot {
            text,
            ..ClauseSlot::default()
        });
        self.clauses.len() - 1
    }

    /// A chunk of clause `index`'s audio (ignored for an unknown index).
    pub(crate) fn push_chunk(&mut self, index: usize, chunk: TtsChunk) {
        if let Some(slot) = self.clauses.get_mut(index) {
            slot.chunks.push(chunk);
        }
    }

    /// Clause `index` has all its audio (or failed: what it has is played).
    pub(crate) fn clause_done(&mut self, index: usize) {
        if let Some(slot) = self.clauses.get_mut(index) {
            slot.done = true;
        }
    }

    /// Send what is ready, in clause order; returns true once every clause
    /// added so far is out.
    pub(crate) fn pump(&mut self, out: &mut Vec<Speech>) -> bool {
        while self.next < self.clauses.len() {
            let slot = &mut self.clauses[self.next];
            let chunks = std::mem::take(&mut slot.chunks);
            let done = slot.done;
            for chunk in chunks {
                self.start_clause(out);
                self.note_words(&chunk);
                self.resample(&chunk, out);
            }
            if !done {
                return false;
            }
            if self.clauses[self.next].started
                && let Some(last) = self.spoken.last_mut()
            {
                last.end_ms = self.audio_ms;
            }
            self.next += 1;
        }
        true
    }

    /// The end of a completed response: the resampler's tail and the last
    /// short piece go out.
    pub(crate) fn finish(&mut self, out: &mut Vec<Speech>) {
        let mut tail = Vec::new();
        if let Some(rs) = self.resampler.as_mut() {
            tail = vec![0.0; rs.flush_len()];
            let n = rs.flush_into(&mut tail).unwrap_or(0);
            tail.truncate(n);
        }
        self.queue(&tail, out, true);
    }

    /// The end of a stopped response: audio not sent was not heard, so it is
    /// not part of what was spoken.
    pub(crate) fn drop_unsent(&mut self) {
        let unsent = std::mem::take(&mut self.pending);
        self.audio_ms -= unsent.len() as f64 * 1000.0 / f64::from(self.out_rate);
    }

    /// Milliseconds of audio sent.
    pub(crate) fn audio_ms(&self) -> f64 {
        self.audio_ms
    }

    /// The clauses whose audio started, with their times.
    pub(crate) fn spoken(&self) -> &[SpokenClause] {
        &self.spoken
    }

    /// What was said: the spoken clauses' text.
    pub(crate) fn transcript(&self) -> String {
        self.spoken
            .iter()
            .map(|c| c.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The current clause's transcript goes out with its first audio.
    fn start_clause(&mut self, out: &mut Vec<Speech>) {
        let slot = &mut self.clauses[self.next];
        if slot.started {
            return;
        }
        slot.started = true;
        let text = slot.text.clone();
        out.push(Speech::Transcript(if self.spoken.is_empty() {
            text.clone()
        } else {
            format!(" {text}")
        }));
        self.spoken.push(SpokenClause {
            text,
            start_ms: self.audio_ms,
            end_ms: self.audio_ms,
            words: None,
        });
    }

    /// Word timings of a chunk, moved onto the response's audio clock.
    fn note_words(&mut self, chunk: &TtsChunk) {
        if let Some(words) = chunk.words.clone()
            && let Some(last) = self.spoken.last_mut()
        {
            let base = self.audio_ms - last.start_ms;
            let w = last.words.get_or_insert_with(Vec::new);
            w.extend(words.into_iter().map(|(t, s, e)| (t, s + base, e + base)));
        }
    }

    fn resample(&mut self, chunk: &TtsChunk, out: &mut Vec<Speech>) {
        let rate_ok = self
            .resampler
            .as_ref()
            .is_some_and(|r| r.input_rate() == chunk.sample_rate);
        if !rate_ok {
            match Resampler::new(chunk.sample_rate, self.out_rate) {
                Ok(r) => self.resampler = Some(r),
                Err(e) => {
                    out.push(Speech::UnsupportedRate(e.to_string()));
                    return;
                }
            }
        }
        let Some(rs) = self.resampler.as_mut() else {
            return;
        };
        let need = rs.output_len_max(chunk.samples.len());
        self.out_buf.resize(need, 0.0);
        let n = rs
            .process_into(&chunk.samples, &mut self.out_buf)
            .unwrap_or(0);
        let samples = std::mem::take(&mut self.out_buf);
        self.queue(&samples[..n], out, false);
        self.out_buf = samples;
    }

    /// Queue output audio and send it in deltas of 20 to 200 ms: at most
    /// 200 ms keeps every frame under client size limits, at least 20 ms
    /// keeps the event rate sane. `flush` sends a shorter tail at the end.
    fn queue(&mut self, samples: &[f32], out: &mut Vec<Speech>, flush: bool) {
        self.audio_ms += samples.len() as f64 * 1000.0 / f64::from(self.out_rate);
        self.pending.extend_from_slice(samples);
        let max = (self.out_rate / 5).max(1) as usize;
        let min = (self.out_rate / 50).max(1) as usize;
        while self.pending.len() >= min || (flush && !self.pending.is_empty()) {
            let n = self.pending.len().min(max);
            out.push(Speech::Audio(self.pending.drain(..n).collect()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Speech, SpeechOut};
    use crate::engine::backend::TtsChunk;

    fn tone(ms: usize, rate: u32) -> TtsChunk {
        TtsChunk {
            samples: vec![0.25; ms * rate as usize / 1000],
            sample_rate: rate,
            words: None,
        }
    }

    fn audio_samples(out: &[Speech]) -> usize {
        out.iter()
            .map(|s| match s {
                Speech::Audio(a) => a.len(),
                _ => 0,
            })
            .sum()
    }

    #[test]
    fn clauses_go_out_in_order_whatever_order_they_arrive_in() {
        let mut s = SpeechOut::new(24_000);
        let a = s.add_clause("Hello there.".into());
        let b = s.add_clause("How are you?".into());
        let mut out = Vec::new();
        // The second clause is ready first: nothing may go out yet.
        s.push_chunk(b, tone(300, 24_000));
        s.clause_done(b);
        assert!(!s.pump(&mut out));
        assert!(out.is_empty());
        s.push_chunk(a, tone(100, 24_000));
        s.clause_done(a);
        assert!(s.pump(&mut out));
        s.finish(&mut out);
        let texts: Vec<&str> = out
            .iter()
            .filter_map(|x| match x {
                Speech::Transcript(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, ["Hello there.", " How are you?"]);
        // Each clause's transcript precedes its audio.
        assert!(matches!(out[0], Speech::Transcript(_)));
        assert_eq!(audio_samples(&out), 400 * 24);
        assert_eq!(s.transcript(), "Hello there. How are you?");
        let spoken = s.spoken();
        assert!((spoken[0].end_ms - 100.0).abs() < 1e-6);
        assert!((spoken[1].start_ms - 100.0).abs() < 1e-6);
        assert!((s.audio_ms() - 400.0).abs() < 1e-6);
    }

    #[test]
    fn audio_deltas_are_20_to_200_ms() {
        let mut s = SpeechOut::new(24_000);
        let a = s.add_clause("A long clause.".into());
        let mut out = Vec::new();
        for ms in [7, 13, 450, 1, 29] {
            s.push_chunk(a, tone(ms, 24_000));
            s.pump(&mut out);
        }
        s.clause_done(a);
        s.pump(&mut out);
        let before_finish = out.len();
        s.finish(&mut out);
        for (i, x) in out.iter().enumerate() {
            if let Speech::Audio(piece) = x {
                assert!(piece.len() <= 4_800, "over 200 ms");
                if i < before_finish {
                    assert!(piece.len() >= 480, "under 20 ms before the end");
                }
            }
        }
        assert_eq!(audio_samples(&out), 500 * 24);
    }

    #[test]
    fn resamples_to_the_output_rate() {
        let mut s = SpeechOut::new(24_000);
        let a = s.add_clause("Piper speaks at 22.05 kHz.".into());
        s.push_chunk(a, tone(1000, 22_050));
        s.clause_done(a);
        let mut out = Vec::new();
        s.pump(&mut out);
        s.finish(&mut out);
        let n = audio_samples(&out);
        assert!((23_990..=24_010).contains(&n), "{n}");
    }

    #[test]
    fn a_stopped_response_keeps_only_what_was_sent() {
        let mut s = SpeechOut::new(24_000);
        let a = s.add_clause("Cut short.".into());
        s.push_chunk(a, tone(210, 24_000));
        let mut out = Vec::new();
        s.pump(&mut out);
        // 200 ms went out; 10 ms wait for more and are dropped unheard.
        assert_eq!(audio_samples(&out), 200 * 24);
        s.drop_unsent();
        assert!((s.audio_ms() - 200.0).abs() < 1e-6);
    }

    #[test]
    fn word_times_move_onto_the_response_clock() {
        let mut s = SpeechOut::new(16_000);
        let a = s.add_clause("One.".into());
        let b = s.add_clause("Two words.".into());
        s.push_chunk(a, tone(500, 16_000));
        s.clause_done(a);
        let mut chunk = tone(300, 16_000);
        chunk.words = Some(vec![
            ("Two".into(), 0.0, 120.0),
            ("words.".into(), 130.0, 290.0),
        ]);
        s.push_chunk(b, chunk);
        s.clause_done(b);
        s.pump(&mut Vec::new());
        let words = s.spoken()[1].words.clone().unwrap();
        assert_eq!(words[0], ("Two".into(), 0.0, 120.0));
        assert!((s.spoken()[1].start_ms - 500.0).abs() < 1e-6);
    }

    #[test]
    fn an_unsupported_rate_is_reported_and_skipped() {
        let mut s = SpeechOut::new(24_000);
        let a = s.add_clause("Odd.".into());
        s.push_chunk(a, tone(100, 1));
        s.clause_done(a);
        let mut out = Vec::new();
        assert!(s.pump(&mut out));
        assert!(out.iter().any(|x| matches!(x, Speech::UnsupportedRate(_))));
        assert_eq!(audio_samples(&out), 0);
    }
}
