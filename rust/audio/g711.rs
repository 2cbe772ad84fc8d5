//! G.711 mu-law and A-law companding, bit-exact with the ITU-T reference.
//!
//! Input and output are 16-bit linear PCM. The conversions follow the ITU-T
//! G.191 software tools: mu-law works on 14 bits and A-law on 13 bits, with
//! negative inputs taken in one's complement, so `-1` encodes as negative zero.

const MULAW_BIAS: u32 = 33;
const MULAW_MAX: u32 = 0x1FFF;

/// Encode one 16-bit sample as a mu-law byte.
#[inline]
pub fn mulaw_encode_sample(x: i16) -> u8 {
    let (mag, mask) = if x < 0 {
        (u32::from((!x) as u16) >> 2, 0x7F)
    } else {
        (u32::from(x as u16) >> 2, 0xFF)
    };
    let v = (mag + MULAW_BIAS).min(MULAW_MAX);
    // v >= 33, so its top bit is at position 5..=12 and the segment is 0..=7.
    let seg = v.ilog2() - 5;
    let quant = (v >> (seg + 1)) & 0xF;
    ((seg << 4) | quant) as u8 ^ mask
}

/// Decode one mu-law byte to a 16-bit sample.
#[inline]
pub fn mulaw_decode_sample(code: u8) -> i16 {
    MULAW_DECODE[code as usize]
}

/// Encode one 16-bit sample as an A-law byte.
#[inline]
pub fn alaw_encode_sample(x: i16) -> u8 {
    let (ix, sign) = if x < 0 {
        (u32::from((!x) as u16) >> 4, 0x00)
    } else {
        (u32::from(x as u16) >> 4, 0x80)
    };
    let code = if ix > 15 {
        // ix is 16..=2047: top bit 4..=10 gives exponent 1..=7.
        let exp = ix.ilog2() - 3;
        let mant = (ix >> (exp - 1)) & 0xF;
        (exp << 4) | mant
    } else {
        ix
    };
    (code | sign) as u8 ^ 0x55
}

/// Decode one A-law byte to a 16-bit sample.
#[inline]
pub fn alaw_decode_sample(code: u8) -> i16 {
    ALAW_DECODE[code as usize]
}

const fn mulaw_decode_const(code: u8) -> i16 {
    let inv = !code;
    let exp = ((inv >> 4) & 7) as i32;
    let mant = (inv & 0xF) as i32;
    let step = 4 << (exp + 1);
    let mag = (0x80 << exp) + step * mant + step / 2 - 4 * MULAW_BIAS as i32;
    if code < 0x80 { -mag as i16 } else { mag as i16 }
}

const fn alaw_decode_const(code: u8) -> i16 {
    let ix = (code ^ 0x55) & 0x7F;
    let exp = (ix >> 4) as i32;
    let mut mant = (ix & 0xF) as i32;
    if exp > 0 {
        mant += 16;
    }
    mant = (mant << 4) + 8;
    if exp > 1 {
        mant <<= exp - 1;
    }
    if code > 127 {
        mant as i16
    } else {
        -mant as i16
    }
}

const fn build_table(alaw: bool) -> [i16; 256] {
    let mut t = [0i16; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = if alaw {
            alaw_decode_const(i as u8)
        } else {
            mulaw_decode_const(i as u8)
        };
        i += 1;
    }
    t
}

static MULAW_DECODE: [i16; 256] = build_table(false);
static ALAW_DECODE: [i16; 256] = build_table(true);

/// Encode 16-bit samples to mu-law into `out` (which must be as long).
pub fn mulaw_encode_into(samples: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = mulaw_encode_sample(s);
    }
}

/// Decode mu-law bytes into 16-bit samples in `out` (which must be as long).
pub fn mulaw_decode_into(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = MULAW_DECODE[c as usize];
    }
}

/// Encode 16-bit samples to A-law into `out` (which must be as long).
pub fn alaw_encode_into(samples: &[i16], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = alaw_encode_sample(s);
    }
}

/// Decode A-law bytes into 16-bit samples in `out` (which must be as long).
pub fn alaw_decode_into(codes: &[u8], out: &mut [i16]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = ALAW_DECODE[c as usize];
    }
}

/// Decode mu-law bytes straight to f32 in [-1, 1).
pub fn mulaw_decode_f32_into(codes: &[u8], out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = f32::from(MULAW_DECODE[c as usize]) / 32768.0;
    }
}

/// Decode A-law bytes straight to f32 in [-1, 1).
pub fn alaw_decode_f32_into(codes: &[u8], out: &mut [f32]) {
    for (o, &c) in out.iter_mut().zip(codes) {
        *o = f32::from(ALAW_DECODE[c as usize]) / 32768.0;
    }
}

/// Encode f32 samples to mu-law (through 16-bit, rounded and clipped).
pub fn mulaw_encode_f32_into(samples: &[f32], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = mulaw_encode_sample(super::pcm::f32_to_i16_sample(s));
    }
}

/// Encode f32 samples to A-law (through 16-bit, rounded and clipped).
pub fn alaw_encode_f32_into(samples: &[f32], out: &mut [u8]) {
    for (o, &s) in out.iter_mut().zip(samples) {
        *o = alaw_encode_sample(super::pcm::f32_to_i16_sample(s));
    }
}

#[cfg(test)]
mod tests {
    //! Reference tables computed here from the G.711 formulas as the ITU-T
    //! G.191 tools state them (segment search loops, not bit tricks), so the
    //! fast code above is checked against an independent derivation.
    use super::*;

    fn ref_mulaw_encode(x: i16) -> u8 {
        let x = i32::from(x);
        let mut absno = if x < 0 {
            ((!x) >> 2) + 33
        } else {
            (x >> 2) + 33
        };
        if absno > 0x1FFF {
            absno = 0x1FFF;
        }
        let mut i = absno >> 6;
        let mut segno = 1;
        while i != 0 {
            segno += 1;
            i >>= 1;
        }
        let high = 0x8 - segno;
        let low = 0xF - ((absno >> segno) & 0xF);
        let mut out = (high << 4) | low;
        if x >= 0 {
            out |= 0x80;
        }
        out as u8
    }

    fn ref_mulaw_decode(code: u8) -> i16 {
        let sign: i32 = if code < 0x80 { -1 } else { 1 };
        let mant = !i32::from(code);
        let exp = (mant >> 4) & 7;
        let segment = exp + 1;
        let mant = mant & 0xF;
        let step = 4 << segment;
        (sign * ((0x80 << exp) + step * mant + step / 2 - 4 * 33)) as i16
    }

    fn ref_alaw_encode(x: i16) -> u8 {
        let x = i32::from(x);
        let mut ix = if x < 0 { (!x) >> 4 } else { x >> 4 };
        if ix > 15 {
            let mut iexp = 1;
            while ix > 16 + 15 {
                ix >>= 1;
                iexp += 1;
            }
            ix -= 16;
            ix += iexp << 4;
        }
        if x >= 0 {
            ix |= 0x80;
        }
        (ix ^ 0x55) as u8
    }

    fn ref_alaw_decode(code: u8) -> i16 {
        let ix = i32::from(code ^ 0x55) & 0x7F;
        let iexp = ix >> 4;
        let mut mant = ix & 0xF;
        if iexp > 0 {
            mant += 16;
        }
        mant = (mant << 4) + 8;
        if iexp > 1 {
            mant <<= iexp - 1;
        }
        (if code > 127 { mant } else { -mant }) as i16
    }

    #[test]
    fn mulaw_encode_all_65536_values() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(mulaw_encode_sample(x), ref_mulaw_encode(x), "x={x}");
        }
    }

    #[test]
    fn alaw_encode_all_65536_values() {
        for x in i16::MIN..=i16::MAX {
            assert_eq!(alaw_encode_sample(x), ref_alaw_encode(x), "x={x}");
        }
    }

    #[test]
    fn decode_all_256_codes() {
        for c in 0..=255u8 {
            assert_eq!(mulaw_decode_sample(c), ref_mulaw_decode(c), "mu code={c}");
            assert_eq!(alaw_decode_sample(c), ref_alaw_decode(c), "A code={c}");
        }
    }

    #[test]
    fn known_points_of_the_standard() {
        // Zero and full scale, as listed in G.711's tables.
        assert_eq!(mulaw_encode_sample(0), 0xFF);
        assert_eq!(mulaw_encode_sample(-1), 0x7F);
        assert_eq!(mulaw_decode_sample(0x80), 32124);
        assert_eq!(mulaw_decode_sample(0x00), -32124);
        assert_eq!(alaw_encode_sample(0), 0xD5);
        assert_eq!(alaw_decode_sample(0xAA), 32256);
        assert_eq!(alaw_decode_sample(0x2A), -32256);
        // Re-encoding a decoded value gives the same code.
        for c in 0..=255u8 {
            assert_eq!(alaw_encode_sample(alaw_decode_sample(c)), c);
            let d = mulaw_decode_sample(c);
            let again = mulaw_encode_sample(d);
            // Negative zero (0x7F) and positive zero (0xFF) both decode to 0.
            assert!(again == c || (d == 0 && again == 0xFF), "code {c}");
        }
    }
}
