//! FLAC for `/v1/audio/speech` with `response_format: "flac"`, written as the PCM arrives:
//! mono 16-bit frames of 1024 samples, each subframe the best of a constant and the fixed
//! predictors of order 0 to 4 with Rice-coded residuals. The stream's length and MD5 are
//! unknown when it starts, which the format allows (zero in STREAMINFO).

/// Samples per frame (43 ms at 24 kHz): a clause's last partial frame waits at most this
/// long for the next clause, or for the end.
const BLOCK: usize = 1024;
/// The frame header's code for a 1024-sample block (256 * 2^(10-8)).
const BLOCK_CODE: u8 = 0b1010;
/// The code for "block size - 1 follows in 16 bits" (the last, shorter frame).
const BLOCK_CODE_16: u8 = 0b0111;

/// A FLAC stream of mono PCM16.
pub struct Flac {
    rate: u32,
    pending: Vec<i32>,
    frame: u64,
    residual: Vec<i64>,
}

impl Flac {
    /// A stream at `rate` Hz.
    pub fn new(rate: u32) -> Self {
        Self {
            rate,
            pending: Vec::with_capacity(BLOCK),
            frame: 0,
            residual: Vec::with_capacity(BLOCK),
        }
    }

    /// The "fLaC" marker and STREAMINFO, the only metadata block.
    pub fn header(&self) -> Vec<u8> {
        let mut w = Bits::default();
        w.bytes(b"fLaC");
        w.put(1, 1); // the last metadata block
        w.put(0, 7); // STREAMINFO
        w.put(34, 24);
        w.put(BLOCK as u64, 16); // min block size (the last block is not counted)
        w.put(BLOCK as u64, 16); // max block size
        w.put(0, 24); // min frame size: unknown
        w.put(0, 24); // max frame size: unknown
        w.put(u64::from(self.rate), 20);
        w.put(0, 3); // channels - 1
        w.put(15, 5); // bits per sample - 1
        w.put(0, 36); // total samples: unknown
        w.bytes(&[0; 16]); // MD5: unknown
        w.finish()
    }

    /// Frames of little-endian PCM16: every full block so far.
    pub fn push(&mut self, pcm: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in pcm.chunks_exact(2) {
            self.pending
                .push(i32::from(i16::from_le_bytes([s[0], s[1]])));
            if self.pending.len() == BLOCK {
                self.write_frame(&mut out);
            }
        }
        out
    }

    /// The last, shorter frame.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.pending.is_empty() {
            self.write_frame(&mut out);
        }
        out
    }

    fn write_frame(&mut self, out: &mut Vec<u8>) {
        let n = self.pending.len();
        let mut w = Bits::default();
        w.put(0x3FFE, 14); // sync
        w.put(0, 1); // reserved
        w.put(0, 1); // fixed block size
        w.put(
            u64::from(if n == BLOCK {
                BLOCK_CODE
            } else {
                BLOCK_CODE_16
            }),
            4,
        );
        w.put(0, 4); // sample rate: from STREAMINFO
        w.put(0, 4); // mono
        w.put(0b100, 3); // 16 bits per sample
        w.put(0, 1); // reserved
        utf8_number(&mut w, self.frame);
        if n != BLOCK {
            w.put((n - 1) as u64, 16);
        }
        let crc = crc8(w.aligned());
        w.put(u64::from(crc), 8);
        self.subframe(&mut w);
        w.pad();
        let crc = crc16(w.aligned());
        w.put(u64::from(crc), 16);
        out.extend_from_slice(&w.finish());
        self.pending.clear();
        self.frame += 1;
    }

    /// The smallest of a constant and the fixed predictors (RFC 9639 §9.2).
    fn subframe(&mut self, w: &mut Bits) {
        let x = &self.pending;
        if x.iter().all(|&s| s == x[0]) {
            w.put(0, 1);
            w.put(0b00_0000, 6); // CONSTANT
            w.put(0, 1);
            w.put(u64::from(x[0] as u16), 16);
            return;
        }
        let mut best: Option<(u64, usize, u32)> = None; // (bits, order, rice parameter)
        for order in 0..=4.min(x.len() - 1) {
            fixed_residual(x, order, &mut self.residual);
            let (k, bits) = best_rice(&self.residual);
            let bits = bits + 16 * order as u64;
            if best.is_none_or(|(b, _, _)| bits < b) {
                best = Some((bits, order, k));
            }
        }
        let (_, order, k) = best.unwrap_or((0, 0, 0));
        fixed_residual(x, order, &mut self.residual);
        w.put(0, 1);
        w.put(0b00_1000 | order as u64, 6); // FIXED, its order
        w.put(0, 1);
        for &s in &x[..order] {
            w.put(u64::from(s as u16), 16);
        }
        w.put(0b01, 2); // Rice coding with 5-bit parameters
        w.put(0, 4); // one partition
        w.put(u64::from(k), 5);
        for &r in &self.residual {
            let u = zigzag(r);
            w.unary(u >> k);
            w.put(u & ((1 << k) - 1), k);
        }
    }
}

/// The residual of the fixed predictor of `order` (0 to 4) over `x[order..]`.
fn fixed_residual(x: &[i32], order: usize, out: &mut Vec<i64>) {
    out.clear();
    let s = |i: usize| i64::from(x[i]);
    out.extend((order..x.len()).map(|i| match order {
        0 => s(i),
        1 => s(i) - s(i - 1),
        2 => s(i) - 2 * s(i - 1) + s(i - 2),
        3 => s(i) - 3 * s(i - 1) + 3 * s(i - 2) - s(i - 3),
        _ => s(i) - 4 * s(i - 1) + 6 * s(i - 2) - 4 * s(i - 3) + s(i - 4),
    }));
}

fn zigzag(r: i64) -> u64 {
    ((r << 1) ^ (r >> 63)) as u64
}

/// The Rice parameter (0 to 30) that codes `residual` in the fewest bits, and those bits.
///
/// The bits are a convex function of the parameter (the quotients' sum falls by less
/// at each step while the remainders' cost rises by one bit a sample), so a descent
/// from the estimate the mean gives finds the same minimum as trying all 31, in
/// two or three tries.
fn best_rice(residual: &[i64]) -> (u32, u64) {
    let n = residual.len() as u64;
    let bits = |k: u32| -> u64 {
        residual.iter().map(|&r| zigzag(r) >> k).sum::<u64>() + n * (u64::from(k) + 1)
    };
    let sum: u64 = residual.iter().map(|&r| zigzag(r)).sum();
    let mean = sum / n.max(1);
    let mut k = if mean == 0 { 0 } else { mean.ilog2().min(30) };
    let mut best = bits(k);
    while k > 0 {
        let down = bits(k - 1);
        if down > best {
            break;
        }
        (k, best) = (k - 1, down);
    }
    while k < 30 {
        let up = bits(k + 1);
        if up >= best {
            break;
        }
        (k, best) = (k + 1, up);
    }
    (k, best)
}

/// A frame number in FLAC's UTF-8-like coding.
fn utf8_number(w: &mut Bits, v: u64) {
    if v < 0x80 {
        w.put(v, 8);
        return;
    }
    // Bytes after the first, and the first byte's payload bits.
    let extra = match v {
        0..0x800 => 1,
        0x800..0x1_0000 => 2,
        0x1_0000..0x20_0000 => 3,
        0x20_0000..0x400_0000 => 4,
        _ => 5,
    };
    let marker = (0xFF00u64 >> (extra + 1)) & 0xFF;
    w.put(marker | (v >> (6 * extra)), 8);
    for i in (0..extra).rev() {
        w.put(0x80 | ((v >> (6 * i)) & 0x3F), 8);
    }
}

/// CRC-8 of frame headers: polynomial 0x07, initial value 0 (CRC-8/SMBUS).
fn crc8(data: &[u8]) -> u8 {
    const CRC: crc::Crc<u8> = crc::Crc::<u8>::new(&crc::CRC_8_SMBUS);
    CRC.checksum(data)
}

/// CRC-16 of frames: polynomial 0x8005, initial value 0 (CRC-16/UMTS).
fn crc16(data: &[u8]) -> u16 {
    const CRC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_UMTS);
    CRC.checksum(data)
}

/// A big-endian bit writer.
#[derive(Default)]
struct Bits {
    bytes: Vec<u8>,
    acc: u64,
    used: u32,
}

impl Bits {
    /// The low `n` bits of `v` (n at most 56).
    fn put(&mut self, v: u64, n: u32) {
        if n == 0 {
            return;
        }
        let mut n = n;
        let mut v = v;
        while n > 32 {
            self.put(v >> 32, n - 32);
            v &= 0xFFFF_FFFF;
            n = 32;
        }
        self.acc = (self.acc << n) | (v & ((1u64 << n) - 1));
        self.used += n;
        while self.used >= 8 {
            self.used -= 8;
            self.bytes.push((self.acc >> self.used) as u8);
        }
        self.acc &= (1u64 << self.used) - 1;
    }

    /// `q` zeros, then a one.
    fn unary(&mut self, mut q: u64) {
        while q >= 32 {
            self.put(0, 32);
            q -= 32;
        }
        self.put(1, q as u32 + 1);
    }

    fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.put(u64::from(x), 8);
        }
    }

    /// Zeros up to the next byte boundary.
    fn pad(&mut self) {
        if self.used > 0 {
            self.put(0, 8 - self.used);
        }
    }

    /// The whole bytes so far (call at a byte boundary).
    fn aligned(&self) -> &[u8] {
        debug_assert_eq!(self.used, 0);
        &self.bytes
    }

    fn finish(mut self) -> Vec<u8> {
        self.pad();
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_flacs() {
        // CRC-8/SMBUS and CRC-16/UMTS (the same polynomials and initial values).
        assert_eq!(crc8(b"123456789"), 0xF4);
        assert_eq!(crc16(b"123456789"), 0xFEE8);
    }

    #[test]
    fn frame_numbers_are_coded_like_utf8() {
        let coded = |v: u64| {
            let mut w = Bits::default();
            utf8_number(&mut w, v);
            w.finish()
        };
        assert_eq!(coded(0x41), vec![0x41]);
        assert_eq!(coded(0xE9), "\u{e9}".as_bytes());
        assert_eq!(coded(0x20AC), "\u{20ac}".as_bytes());
        assert_eq!(coded(0x1F600), "\u{1f600}".as_bytes());
    }

    #[test]
    fn a_tone_is_smaller_than_its_pcm_and_silence_is_tiny() {
        let mut flac = Flac::new(24_000);
        let pcm: Vec<u8> = (0..24_000)
            .map(|i: i32| ((f64::from(i) * 0.05).sin() * 8000.0) as i16)
            .flat_map(i16::to_le_bytes)
            .collect();
        let mut out = flac.header();
        assert_eq!(out.len(), 42);
        out.extend(flac.push(&pcm));
        out.extend(flac.finish());
        assert!(out.len() < pcm.len() / 2, "{} of {}", out.len(), pcm.len());
        let mut quiet = Flac::new(24_000);
        let bytes = quiet.push(&[0; 2 * BLOCK]).len();
        assert!(bytes < 20, "{bytes}");
    }

    #[test]
    fn the_rice_descent_finds_what_trying_every_parameter_finds() {
        let brute = |r: &[i64]| {
            let n = r.len() as u64;
            (0..=30u32)
                .map(|k| {
                    (
                        k,
                        r.iter().map(|&x| zigzag(x) >> k).sum::<u64>() + n * (u64::from(k) + 1),
                    )
                })
                .min_by_key(|&(_, b)| b)
                .map(|(_, b)| b)
                .unwrap()
        };
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for scale in [0i64, 1, 3, 40, 1000, 30_000, 1 << 20] {
            for len in [1usize, 5, 1024] {
                let r: Vec<i64> = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        (seed % (2 * scale as u64 + 1)) as i64 - scale
                    })
                    .collect();
                assert_eq!(best_rice(&r).1, brute(&r), "scale {scale}, {len} samples");
            }
        }
    }
}
