//! Echo cancellation and noise suppression on synthetic rooms and signals.
//!
//! The far end and the near end are speech-like: noise shaped by a few
//! formant resonances and switched on and off at a syllable rate, so the
//! echo canceller sees non-stationary, band-limited signals as in a call.
//! The echo path is a room impulse response (exponentially decaying noise,
//! RT60 about 250 ms) behind 40 ms of delay, at about -6 dB.

use speech_to_speech::audio::aec::EchoCanceller;
use speech_to_speech::audio::ns::{NoiseSuppressor, NsPreset};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// Speech-like noise: white noise through three resonators whose centre
/// frequencies move per syllable, gated at about 4 syllables a second.
#[expect(clippy::many_single_char_names, reason = "signal-processing notation")]
fn speech_like(rate: u32, seconds: f32, seed: u64) -> Vec<f32> {
    let n = (rate as f32 * seconds) as usize;
    let mut rng = Rng(seed);
    let syllable = rate as usize / 4;
    let mut out = vec![0.0f32; n];
    let mut state = [[0.0f32; 2]; 3];
    let mut formants = [500.0f32, 1500.0, 2500.0];
    for (i, o) in out.iter_mut().enumerate() {
        if i % syllable == 0 {
            for (k, f) in formants.iter_mut().enumerate() {
                *f = (300.0 + 900.0 * k as f32) * (1.0 + 0.3 * rng.next());
            }
        }
        let phase = (i % syllable) as f32 / syllable as f32;
        let gate = if phase < 0.7 {
            (phase * std::f32::consts::PI / 0.7).sin()
        } else {
            0.0
        };
        let x = rng.next();
        let mut y = 0.0;
        for (s, &f) in state.iter_mut().zip(&formants) {
            let r = 0.97f32;
            let w = 2.0 * std::f32::consts::PI * f / rate as f32;
            let v = x + 2.0 * r * w.cos() * s[0] - r * r * s[1];
            s[1] = s[0];
            s[0] = v;
            y += v;
        }
        *o = y * gate;
    }
    let peak = out.iter().fold(0.0f32, |m, s| m.max(s.abs()));
    for s in &mut out {
        *s *= 0.5 / peak;
    }
    out
}

/// A room: `delay_ms` of silence, then decaying noise (RT60 ~250 ms), scaled
/// to `gain` of energy.
fn room(rate: u32, delay_ms: u32, gain: f32, seed: u64) -> Vec<f32> {
    let delay = (rate * delay_ms / 1000) as usize;
    let len = rate as usize / 5;
    let mut rng = Rng(seed);
    let tau = 0.25 / 6.9 * rate as f32;
    let mut h = vec![0.0f32; delay + len];
    for k in 0..len {
        h[delay + k] = rng.next() * (-(k as f32) / tau).exp();
    }
    h[delay] = 1.0;
    let energy: f32 = h.iter().map(|x| x * x).sum();
    let scale = gain / energy.sqrt();
    for x in &mut h {
        *x *= scale;
    }
    h
}

/// Linear convolution, truncated to `x.len()`, by FFT.
#[expect(clippy::many_single_char_names, reason = "signal-processing notation")]
fn convolve(x: &[f32], h: &[f32]) -> Vec<f32> {
    use rustfft::FftPlanner;
    use rustfft::num_complex::Complex;
    let n = (x.len() + h.len()).next_power_of_two();
    let mut planner = FftPlanner::<f64>::new();
    let (fwd, inv) = (planner.plan_fft_forward(n), planner.plan_fft_inverse(n));
    let spectrum = |v: &[f32]| {
        let mut buf: Vec<Complex<f64>> =
            v.iter().map(|&s| Complex::new(f64::from(s), 0.0)).collect();
        buf.resize(n, Complex::new(0.0, 0.0));
        fwd.process(&mut buf);
        buf
    };
    let (mut a, b) = (spectrum(x), spectrum(h));
    a.iter_mut().zip(&b).for_each(|(p, q)| *p *= q);
    inv.process(&mut a);
    a[..x.len()]
        .iter()
        .map(|c| (c.re / n as f64) as f32)
        .collect()
}

fn energy(x: &[f32]) -> f64 {
    x.iter().map(|&s| f64::from(s) * f64::from(s)).sum::<f64>() + 1e-12
}

fn db(ratio: f64) -> f64 {
    10.0 * ratio.log10()
}

/// Run the AEC over (far, mic) in 10 ms frames, far end first.
fn cancel(rate: u32, far: &[f32], mic: &[f32]) -> Vec<f32> {
    let mut aec = EchoCanceller::new(rate).unwrap();
    let frame = aec.frame_len();
    let mut out = vec![0.0; mic.len()];
    for ((f, m), o) in far
        .chunks_exact(frame)
        .zip(mic.chunks_exact(frame))
        .zip(out.chunks_exact_mut(frame))
    {
        aec.push_far_end(f);
        aec.process_into(m, o).unwrap();
    }
    out
}

#[test]
fn aec_removes_a_room_echo_by_at_least_25_db() {
    for rate in [16000, 48000] {
        let far = speech_like(rate, 12.0, 1);
        let echo = convolve(&far, &room(rate, 40, 0.5, 2));
        let out = cancel(rate, &far, &echo);
        // After 4 s of convergence.
        let from = rate as usize * 4;
        let erle = db(energy(&echo[from..]) / energy(&out[from..]));
        eprintln!("{rate} Hz: ERLE {erle:.1} dB");
        // 16 kHz is the rate of the benchmark's 25 dB target; the 48 kHz
        // band split costs a little (measured 25.4 dB here).
        let bound = if rate == 16000 { 25.0 } else { 22.0 };
        assert!(erle >= bound, "{rate} Hz: ERLE {erle:.1} dB");
    }
}

#[test]
fn aec_keeps_near_end_speech_in_double_talk() {
    let rate = 16000;
    let n = rate as usize * 12;
    let far = speech_like(rate, 12.0, 3);
    let echo = convolve(&far, &room(rate, 40, 0.5, 4));
    // The near-end talker speaks from 6 s to 10 s, over the far end.
    let near_full = speech_like(rate, 12.0, 5);
    let (ds, de) = (rate as usize * 6, rate as usize * 10);
    let mut near = vec![0.0f32; n];
    near[ds..de].copy_from_slice(&near_full[ds..de]);
    let mic: Vec<f32> = echo.iter().zip(&near).map(|(e, s)| e + s).collect();
    let out = cancel(rate, &far, &mic);
    let lag = EchoCanceller::new(rate).unwrap().latency();

    // Echo alone before the double talk: removed.
    let erle = db(energy(&echo[rate as usize * 4..ds]) / energy(&out[rate as usize * 4..ds]));
    // During double talk the output is mostly the near end: its error
    // against the near-end speech is well below the near end itself, and
    // most of the near end's energy survives.
    let err: Vec<f32> = (ds..de).map(|i| out[i + lag] - near[i]).collect();
    let snr = db(energy(&near[ds..de]) / energy(&err));
    let kept = db(energy(&out[ds + lag..de + lag]) / energy(&near[ds..de]));
    let echo_in_mic = db(energy(&near[ds..de]) / energy(&echo[ds..de]));
    eprintln!(
        "ERLE {erle:.1} dB, double talk: near/echo in mic {echo_in_mic:.1} dB, near/error out {snr:.1} dB, kept {kept:.1} dB"
    );
    assert!(erle >= 20.0, "ERLE before double talk {erle:.1} dB");
    assert!(kept > -6.0, "near end lost in double talk: {kept:.1} dB");
    assert!(
        snr > echo_in_mic + 4.0,
        "double talk not improved: {snr:.1} dB vs {echo_in_mic:.1} dB in the mic"
    );
}

#[test]
fn aec_passes_near_end_alone_unchanged_in_level() {
    let rate = 16000;
    let far = vec![0.0f32; rate as usize * 4];
    let near = speech_like(rate, 4.0, 9);
    let out = cancel(rate, &far, &near);
    let kept = db(energy(&out[rate as usize..]) / energy(&near[rate as usize..]));
    assert!(kept.abs() < 1.5, "near end alone changed by {kept:.1} dB");
}

#[test]
fn ns_lowers_noise_and_keeps_speech() {
    let rate = 16000;
    let speech = speech_like(rate, 6.0, 21);
    let mut rng = Rng(77);
    let noise: Vec<f32> = (0..speech.len()).map(|_| rng.next() * 0.03).collect();
    let mut ns = NoiseSuppressor::new(rate, NsPreset::NearField).unwrap();
    let noisy: Vec<f32> = speech.iter().zip(&noise).map(|(s, n)| s + n).collect();
    let mut out = vec![0.0; noisy.len()];
    ns.process_into(&noisy, &mut out).unwrap();
    // The output lags by latency + one RNNoise frame (10 ms).
    let lag = ns.latency() + rate as usize / 100;
    let aligned = &out[lag..];
    let from = rate as usize;
    let to = aligned.len();
    // Noise alone (the syllable gaps): where the clean speech is silent.
    let gaps: Vec<usize> = (from..to).filter(|&i| speech[i] == 0.0).collect();
    let noise_in: f64 = gaps.iter().map(|&i| f64::from(noisy[i]).powi(2)).sum();
    let noise_out: f64 = gaps.iter().map(|&i| f64::from(aligned[i]).powi(2)).sum();
    let reduction = db(noise_in / noise_out);
    let kept = db(energy(&aligned[from..to]) / energy(&speech[from..to]));
    eprintln!("noise reduced by {reduction:.1} dB, speech level kept {kept:.1} dB");
    assert!(reduction > 10.0, "noise reduced by only {reduction:.1} dB");
    assert!(kept > -6.0, "speech lost: {kept:.1} dB");
}

#[test]
fn aec_output_lags_the_capture_by_its_latency() {
    for rate in [16000u32, 32000, 48000] {
        let far = vec![0.0f32; rate as usize * 3];
        let near = speech_like(rate, 3.0, 9);
        let lag = EchoCanceller::new(rate).unwrap().latency();
        let out = cancel(rate, &far, &near);
        let span = rate as usize..2 * rate as usize;
        let err: Vec<f32> = span.clone().map(|i| out[i + lag] - near[i]).collect();
        let rel = db(energy(&err) / energy(&near[span]));
        assert!(
            rel < -15.0,
            "{rate} Hz: output vs capture {lag} samples earlier: {rel:.1} dB"
        );
    }
}
