//! Uploaded audio files to 16 kHz mono samples (symphonia: WAV, MP3, FLAC, Ogg Vorbis),
//! and any rate to another for the endpoints' output.

use std::io::Cursor;

use symphonia::core::audio::SampleBuffer;
use symphonia::core::codecs::{CODEC_TYPE_NULL, DecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::FormatOptions;
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;
use symphonia::core::probe::Hint;

use crate::audio::resample::{Resampler, SUPPORTED_RATES};

/// Why an upload could not be turned into audio: the client's file, so a 400.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DecodeError(pub(super) String);

/// The longest upload decoded, in seconds of audio (a guard against a small
/// file that claims hours of samples).
const MAX_SECONDS: f64 = 2.0 * 3600.0;

/// Decode `bytes` (its file name, if any, is a hint to the format) to mono
/// samples at `rate`; also returns the duration in seconds.
pub(super) fn decode_to(
    bytes: Vec<u8>,
    filename: Option<&str>,
    rate: u32,
) -> Result<(Vec<f32>, f64), DecodeError> {
    let (samples, source_rate) = decode_mono(bytes, filename)?;
    let duration = samples.len() as f64 / f64::from(source_rate);
    Ok((convert_rate(&samples, source_rate, rate), duration))
}

fn decode_mono(bytes: Vec<u8>, filename: Option<&str>) -> Result<(Vec<f32>, u32), DecodeError> {
    let unreadable = |e: SymphoniaError| {
        DecodeError(format!(
            "could not decode the file as audio ({e}); send WAV, MP3, FLAC or Ogg Vorbis"
        ))
    };
    let mut hint = Hint::new();
    if let Some(ext) = filename.and_then(|f| f.rsplit_once('.')).map(|(_, e)| e) {
        hint.with_extension(ext);
    }
    let stream = MediaSourceStream::new(
        Box::new(Cursor::new(bytes)),
        MediaSourceStreamOptions::default(),
    );
    let probed = symphonia::default::get_probe()
        .format(
            &hint,
            stream,
            &FormatOptions::default(),
            &MetadataOptions::default(),
        )
        .map_err(unreadable)?;
    let mut format = probed.format;
    let track = format
        .tracks()
        .iter()
        .find(|t| t.codec_params.codec != CODEC_TYPE_NULL)
        .ok_or_else(|| DecodeError("the file has no audio track".into()))?;
    let track_id = track.id;
    let mut decoder = symphonia::default::get_codecs()
        .make(&track.codec_params, &DecoderOptions::default())
        .map_err(unreadable)?;
    let mut rate = track.codec_params.sample_rate.unwrap_or(0);
    let mut mono: Vec<f32> = Vec::new();
    let mut buffer: Option<SampleBuffer<f32>> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(p) => p,
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                break;
            }
            Err(e) if mono.is_empty() => return Err(unreadable(e)),
            // A damaged tail: keep what decoded.
            Err(_) => break,
        };
        if packet.track_id() != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(d) => d,
            // A corrupt packet is skipped, as players do.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(unreadable(e)),
        };
        let spec = *decoded.spec();
        rate = spec.rate;
        let channels = spec.channels.count().max(1);
        let buf = match &mut buffer {
            Some(b) if b.capacity() >= decoded.capacity() * channels => b,
            slot => slot.insert(SampleBuffer::new(decoded.capacity() as u64, spec)),
        };
        buf.copy_interleaved_ref(decoded);
        let scale = 1.0 / channels as f32;
        mono.extend(
            buf.samples()
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() * scale),
        );
        if rate > 0 && mono.len() as f64 / f64::from(rate) > MAX_SECONDS {
            return Err(DecodeError(format!(
                "the audio is longer than {} hours",
                MAX_SECONDS / 3600.0
            )));
        }
    }
    if rate == 0 {
        return Err(DecodeError("the file gives no sample rate".into()));
    }
    if mono.is_empty() {
        return Err(DecodeError("the file holds no audio samples".into()));
    }
    Ok((mono, rate))
}

/// `samples` at `from` Hz, converted to `to` Hz: the streaming resampler
/// (flushed) when both rates are ones it knows, else linear interpolation
/// over a moving-average pre-filter when reducing the rate.
pub(super) fn convert_rate(samples: &[f32], from: u32, to: u32) -> Vec<f32> {
    if from == to || samples.is_empty() {
        return samples.to_vec();
    }
    if SUPPORTED_RATES.contains(&from)
        && SUPPORTED_RATES.contains(&to)
        && let Ok(mut r) = Resampler::new(from, to)
    {
        let mut out = vec![0.0; r.output_len(samples.len()) + r.flush_len()];
        if let Ok(n) = r.process_into(samples, &mut out)
            && let Ok(m) = r.flush_into(&mut out[n..])
        {
            out.truncate(n + m);
            return out;
        }
    }
    let filtered;
    let source = if from > to {
        // A box filter as wide as the step keeps most of what would alias.
        let width = (from / to).max(1) as usize;
        let mut acc = 0.0f32;
        filtered = samples
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                acc += x;
                if i >= width {
                    acc -= samples[i - width];
                }
                acc / width.min(i + 1) as f32
            })
            .collect::<Vec<_>>();
        &filtered[..]
    } else {
        samples
    };
    let step = f64::from(from) / f64::from(to);
    let n = ((samples.len() as f64) / step).floor() as usize;
    (0..n)
        .map(|i| {
            let pos = i as f64 * step;
            let k = pos as usize;
            let frac = (pos - k as f64) as f32;
            let a = source[k];
            let b = source.get(k + 1).copied().unwrap_or(a);
            a + (b - a) * frac
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 16-bit PCM WAV file of `samples` at `rate`, `channels` interleaved copies.
    fn wav(samples: &[f32], rate: u32, channels: u16) -> Vec<u8> {
        let data: Vec<u8> = samples
            .iter()
            .flat_map(|&x| {
                let v = crate::audio::pcm::f32_to_i16_sample(x).to_le_bytes();
                std::iter::repeat_n(v, usize::from(channels)).flatten()
            })
            .collect();
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&(rate * 2 * u32::from(channels)).to_le_bytes());
        out.extend_from_slice(&(2 * channels).to_le_bytes());
        out.extend_from_slice(&16u16.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(&data);
        out
    }

    fn tone(rate: u32, seconds: f32, hz: f32) -> Vec<f32> {
        (0..(rate as f32 * seconds) as usize)
            .map(|i| 0.5 * (std::f32::consts::TAU * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    #[test]
    fn stereo_wav_at_44k_becomes_16k_mono_of_the_same_length() {
        let (out, duration) = decode_to(
            wav(&tone(44100, 1.0, 440.0), 44100, 2),
            Some("a.wav"),
            16000,
        )
        .unwrap();
        assert!((duration - 1.0).abs() < 1e-3, "{duration}");
        assert!((out.len() as i64 - 16000).abs() < 64, "{}", out.len());
        let peak = out.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((peak - 0.5).abs() < 0.02, "{peak}");
    }

    #[test]
    fn a_rate_the_resampler_lacks_is_interpolated() {
        let out = convert_rate(&tone(32000, 1.0, 300.0), 32000, 16000);
        assert_eq!(out.len(), 16000);
        let peak = out.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        assert!((peak - 0.5).abs() < 0.03, "{peak}");
    }

    #[test]
    fn garbage_and_empty_files_are_refused_with_a_reason() {
        let e = decode_to(b"this is not audio at all".to_vec(), Some("x.wav"), 16000).unwrap_err();
        assert!(e.0.contains("could not decode"), "{e:?}");
        let e = decode_to(wav(&[], 16000, 1), None, 16000).unwrap_err();
        assert!(e.0.contains("no audio"), "{e:?}");
    }
}
