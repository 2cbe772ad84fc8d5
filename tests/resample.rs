//! Streaming resampler: chunking invariance, exact lengths, quality and errors.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use speech_to_speech::audio::resample::{ResampleError, Resampler, SUPPORTED_RATES};

fn pairs() -> impl Iterator<Item = (u32, u32)> {
    SUPPORTED_RATES
        .iter()
        .flat_map(|&i| SUPPORTED_RATES.iter().map(move |&o| (i, o)))
}

/// Resample a whole signal in one call plus the flush.
fn one_shot(input_rate: u32, output_rate: u32, x: &[f32]) -> Vec<f32> {
    let mut r = Resampler::new(input_rate, output_rate).unwrap();
    let mut out = vec![0.0; r.output_len_max(x.len())];
    let n = r.process_into(x, &mut out).unwrap();
    out.truncate(n);
    let mut tail = vec![0.0; r.flush_len()];
    let m = r.flush_into(&mut tail).unwrap();
    assert_eq!(m, tail.len());
    out.extend_from_slice(&tail);
    out
}

/// Resample in random chunks (0 included), each into a buffer sized by
/// `output_len_max`.
fn chunked(
    input_rate: u32,
    output_rate: u32,
    x: &[f32],
    rng: &mut SmallRng,
    max: usize,
) -> Vec<f32> {
    let mut r = Resampler::new(input_rate, output_rate).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0.0; r.output_len_max(max)];
    let mut rest = x;
    while !rest.is_empty() {
        let n = rng.random_range(0..=max).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        let expected = r.output_len(n);
        let w = r
            .process_into(chunk, &mut buf[..r.output_len_max(n)])
            .unwrap();
        assert_eq!(w, expected);
        out.extend_from_slice(&buf[..w]);
        rest = tail;
    }
    let mut tail = vec![0.0; r.flush_len()];
    r.flush_into(&mut tail).unwrap();
    out.extend_from_slice(&tail);
    out
}

fn expected_total(n: usize, input_rate: u32, output_rate: u32) -> usize {
    (n as u64 * u64::from(output_rate)).div_ceil(u64::from(input_rate)) as usize
}

fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = SmallRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-0.9f32..0.9)).collect()
}

fn tone(freq: f64, rate: u32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|k| (0.5 * (std::f64::consts::TAU * freq * k as f64 / f64::from(rate)).sin()) as f32)
        .collect()
}

/// The steady part of an output: without the filter's start and end
/// transients (where the window reaches past the signal).
fn steady(r: &Resampler, out_len: usize) -> std::ops::Range<usize> {
    let skip = 2 * r.delay().ceil() as usize + 4;
    skip..out_len - skip
}

fn snr_db(y: &[f32], reference: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&v| f64::from(v).powi(2)).sum();
    let noise: f64 = y
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    10.0 * (signal / noise).log10()
}

fn rms(y: &[f32]) -> f64 {
    (y.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / y.len() as f64).sqrt()
}

#[test]
fn random_chunkings_match_one_shot_for_every_pair() {
    let mut rng = SmallRng::seed_from_u64(7);
    for (i, o) in pairs() {
        let x = noise(i as usize / 4 + 13, u64::from(i ^ o));
        let whole = one_shot(i, o, &x);
        for max in [1, 7, 480, 5000] {
            let parts = chunked(i, o, &x, &mut rng, max);
            assert_eq!(parts.len(), whole.len(), "{i}->{o} max chunk {max}");
            let diff = parts
                .iter()
                .zip(&whole)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(diff <= 1e-6, "{i}->{o} max chunk {max}: diff {diff}");
        }
    }
}

#[test]
fn total_length_is_ceil_of_input_times_ratio() {
    let mut rng = SmallRng::seed_from_u64(11);
    for (i, o) in pairs() {
        for n in [0, 1, 2, 3, 5, 17, 146, 147, 148, 479, 480, 481, 4097, 10007] {
            let x = noise(n, 3);
            let want = expected_total(n, i, o);
            assert_eq!(one_shot(i, o, &x).len(), want, "{i}->{o} n={n}");
            assert_eq!(
                chunked(i, o, &x, &mut rng, 300).len(),
                want,
                "{i}->{o} n={n}"
            );
        }
    }
}

#[test]
fn streams_can_follow_each_other_after_flush_or_reset() {
    let x = noise(3000, 5);
    let whole = one_shot(24000, 16000, &x);
    let mut r = Resampler::new(24000, 16000).unwrap();
    let mut out = vec![0.0; 4000];
    // A stream abandoned halfway, then reset.
    r.process_into(&x[..1234], &mut out).unwrap();
    r.reset();
    for _ in 0..2 {
        let n = r.process_into(&x, &mut out).unwrap();
        let m = r.flush_into(&mut out[n..]).unwrap();
        assert_eq!(&out[..n + m], &whole[..]);
    }
}

#[test]
fn in_band_tones_keep_80_db_snr_for_every_pair() {
    for (i, o) in pairs() {
        let nyquist = f64::from(i.min(o)) / 2.0;
        for freq in [1000.0, 0.85 * nyquist] {
            let x = tone(freq, i, i as usize / 2);
            let y = one_shot(i, o, &x);
            let r = Resampler::new(i, o).unwrap();
            let reference = tone(freq, o, y.len());
            let range = steady(&r, y.len());
            let snr = snr_db(&y[range.clone()], &reference[range]);
            assert!(snr >= 80.0, "{i}->{o} tone {freq} Hz: SNR {snr:.1} dB");
        }
    }
}

#[test]
fn tones_above_the_output_nyquist_are_attenuated_80_db() {
    for (i, o) in pairs().filter(|(i, o)| o < i) {
        let out_nyquist = f64::from(o) / 2.0;
        let in_nyquist = f64::from(i) / 2.0;
        // Just above the output Nyquist, in the middle, and near the top
        // (11 kHz for 24 kHz -> 16 kHz).
        for frac in [0.02, 0.5, 0.75] {
            let freq = out_nyquist + frac * (in_nyquist - out_nyquist);
            let x = tone(freq, i, i as usize / 2);
            let y = one_shot(i, o, &x);
            let r = Resampler::new(i, o).unwrap();
            let range = steady(&r, y.len());
            let gain_db = 20.0 * (rms(&y[range]) / rms(&x)).log10();
            assert!(gain_db <= -80.0, "{i}->{o} tone {freq} Hz: {gain_db:.1} dB");
        }
    }
}

#[test]
fn images_above_the_input_nyquist_are_attenuated_80_db() {
    // Upsampling a tone near the input Nyquist must not leave its mirror
    // image above it: everything but the tone itself counts as error.
    for (i, o) in pairs().filter(|(i, o)| o > i) {
        let freq = 0.85 * f64::from(i) / 2.0;
        let x = tone(freq, i, i as usize / 2);
        let y = one_shot(i, o, &x);
        let r = Resampler::new(i, o).unwrap();
        let reference = tone(freq, o, y.len());
        let range = steady(&r, y.len());
        let snr = snr_db(&y[range.clone()], &reference[range]);
        assert!(snr >= 80.0, "{i}->{o}: SNR {snr:.1} dB");
    }
}

#[test]
fn same_rate_is_an_exact_pass_through() {
    for &rate in &SUPPORTED_RATES {
        let x = noise(1001, 9);
        let mut r = Resampler::new(rate, rate).unwrap();
        assert!(r.delay().abs() < f64::EPSILON && r.delay_seconds().abs() < f64::EPSILON);
        assert_eq!(r.output_len_max(1001), 1001);
        let mut out = vec![0.0; 1001];
        assert_eq!(r.process_into(&x, &mut out), Ok(1001));
        assert_eq!(out, x);
        assert_eq!(r.flush_into(&mut []), Ok(0));
    }
}

#[test]
fn unsupported_rates_are_refused() {
    assert_eq!(
        Resampler::new(11025, 16000).unwrap_err(),
        ResampleError::UnsupportedRate { rate: 11025 }
    );
    assert_eq!(
        Resampler::new(16000, 0).unwrap_err(),
        ResampleError::UnsupportedRate { rate: 0 }
    );
    let msg = Resampler::new(16000, 96000).unwrap_err().to_string();
    assert!(msg.contains("96000"), "{msg}");
}

#[test]
fn too_small_buffers_are_refused_and_the_call_can_be_repeated() {
    let mut r = Resampler::new(24000, 16000).unwrap();
    let x = noise(4800, 1);
    let mut small = vec![0.0; 10];
    assert!(matches!(
        r.process_into(&x, &mut small),
        Err(ResampleError::OutputTooSmall { got: 10, .. })
    ));
    let mut out = vec![0.0; r.output_len_max(x.len())];
    let n = r.process_into(&x, &mut out).unwrap();
    let need = r.flush_len();
    assert!(need > 0);
    let mut short = vec![0.0; need - 1];
    assert_eq!(
        r.flush_into(&mut short),
        Err(ResampleError::OutputTooSmall {
            needed: need,
            got: need - 1
        })
    );
    let mut tail = vec![0.0; need];
    assert_eq!(r.flush_into(&mut tail), Ok(need));
    let mut all = out[..n].to_vec();
    all.extend_from_slice(&tail);
    assert_eq!(all, one_shot(24000, 16000, &x));
}

#[test]
fn delay_is_reported_in_output_samples_and_seconds() {
    let r = Resampler::new(24000, 16000).unwrap();
    assert!(r.delay() > 0.0);
    assert!((r.delay_seconds() * 16000.0 - r.delay()).abs() < 1e-9);
    // The stream holds back about `delay` outputs until the flush.
    let mut s = Resampler::new(24000, 16000).unwrap();
    let x = noise(48000, 2);
    let mut out = vec![0.0; s.output_len_max(x.len())];
    let n = s.process_into(&x, &mut out).unwrap();
    let held = s.flush_len() as f64;
    assert!(
        (held - r.delay()).abs() <= 1.0,
        "held {held}, delay {}",
        r.delay()
    );
    assert_eq!(n + s.flush_len(), 32000);
}
