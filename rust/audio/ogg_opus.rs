//! Ogg Opus (RFC 7845, RFC 3533) for `/v1/audio/speech` with `response_format: "opus"`,
//! what `OpenAI` answers for that format, written as the PCM arrives: 20 ms Opus packets of
//! the endpoint's mono PCM16, the pages of each chunk sent with it.

use opus::{Application, Bitrate, Channels, Encoder};

/// Samples of one 20 ms packet at `rate`.
const fn frame_len(rate: u32) -> usize {
    rate as usize / 50
}
/// Opus's granule positions count 48 kHz samples whatever the input rate.
const GRANULE_RATE: u64 = 48_000;
/// Speech at 24 kHz mono: clear at 32 kb/s (about 4 KB a second).
const BITRATE: i32 = 32_000;
/// An Opus packet is at most 1275 bytes per frame (RFC 6716).
const MAX_PACKET: usize = 1275;
/// Segments in one Ogg page at most.
const MAX_SEGMENTS: usize = 255;

const HEADER_BOS: u8 = 0x02;
const HEADER_EOS: u8 = 0x04;

/// An Ogg Opus stream of mono PCM16 at one of Opus's rates (8, 12, 16, 24, 48 kHz).
pub struct OggOpus {
    encoder: Encoder,
    rate: u32,
    serial: u32,
    sequence: u32,
    pre_skip: u16,
    /// Samples not yet in a packet (fewer than one frame).
    pending: Vec<i16>,
    /// Input samples so far, and packets encoded so far.
    samples: u64,
    packets: u64,
    /// The packets of the page being filled, and their lacing values.
    body: Vec<u8>,
    lacing: Vec<u8>,
    packet: Box<[u8]>,
}

impl OggOpus {
    /// A stream at `rate` Hz whose pages carry the serial number `serial`.
    pub fn new(rate: u32, serial: u32) -> Result<Self, opus::Error> {
        let mut encoder = Encoder::new(rate, Channels::Mono, Application::Voip)?;
        encoder.set_bitrate(Bitrate::Bits(BITRATE))?;
        let lookahead = u64::try_from(encoder.get_lookahead()?).unwrap_or(0);
        Ok(Self {
            encoder,
            rate,
            serial,
            sequence: 0,
            pre_skip: u16::try_from(lookahead * GRANULE_RATE / u64::from(rate)).unwrap_or(0),
            pending: Vec::with_capacity(frame_len(rate)),
            samples: 0,
            packets: 0,
            body: Vec::new(),
            lacing: Vec::new(),
            packet: vec![0; MAX_PACKET].into_boxed_slice(),
        })
    }

    /// The identification and comment headers, each on its own page (RFC 7845 §3).
    pub fn headers(&mut self) -> Vec<u8> {
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&self.pre_skip.to_le_bytes());
        head.extend_from_slice(&self.rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // mapping family: mono/stereo
        let vendor = concat!("speech-to-speech ", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::with_capacity(16 + vendor.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor.as_bytes());
        tags.extend_from_slice(&0u32.to_le_bytes()); // no user comments
        let mut out = Vec::new();
        for (packet, flags) in [(head, HEADER_BOS), (tags, 0)] {
            lace(&mut self.lacing, packet.len());
            self.body.extend_from_slice(&packet);
            self.page(flags, 0, &mut out);
        }
        out
    }

    /// Encode little-endian PCM16; returns the pages of the packets it completed.
    pub fn push(&mut self, pcm: &[u8]) -> Result<Vec<u8>, opus::Error> {
        let mut out = Vec::new();
        let frame = frame_len(self.rate);
        for s in pcm.chunks_exact(2) {
            self.pending.push(i16::from_le_bytes([s[0], s[1]]));
            self.samples += 1;
            if self.pending.len() == frame {
                self.encode_pending(&mut out)?;
            }
        }
        self.flush(0, &mut out);
        Ok(out)
    }

    /// The last packets on the last page: the rest of the input padded with silence,
    /// then silence until the encoder's delay has let the input's end out. The page's
    /// granule position tells decoders where the audio ends (RFC 7845 §4.5).
    pub fn finish(&mut self) -> Result<Vec<u8>, opus::Error> {
        let mut out = Vec::new();
        let end = u64::from(self.pre_skip) + self.samples * GRANULE_RATE / u64::from(self.rate);
        while !self.pending.is_empty() || self.packets * GRANULE_RATE / 50 < end {
            self.pending.resize(frame_len(self.rate), 0);
            self.encode_pending(&mut out)?;
        }
        self.page(HEADER_EOS, end, &mut out);
        Ok(out)
    }

    fn encode_pending(&mut self, out: &mut Vec<u8>) -> Result<(), opus::Error> {
        let n = self.encoder.encode(&self.pending, &mut self.packet)?;
        self.pending.clear();
        if self.lacing.len() + n / 255 + 1 > MAX_SEGMENTS {
            self.flush(0, out);
        }
        lace(&mut self.lacing, n);
        self.body.extend_from_slice(&self.packet[..n]);
        self.packets += 1;
        Ok(())
    }

    /// The page of the packets gathered so far, if any.
    fn flush(&mut self, flags: u8, out: &mut Vec<u8>) {
        if !self.lacing.is_empty() {
            let granule = self.packets * GRANULE_RATE / 50;
            self.page(flags, granule, out);
        }
    }

    /// Write one page of the gathered packets (RFC 3533 §6).
    fn page(&mut self, flags: u8, granule: u64, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(b"OggS");
        out.push(0); // version
        out.push(flags);
        out.extend_from_slice(&granule.to_le_bytes());
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&self.sequence.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // the checksum, below
        out.push(self.lacing.len() as u8);
        out.extend_from_slice(&self.lacing);
        out.extend_from_slice(&self.body);
        let crc = crc32(&out[start..]);
        out[start + 22..start + 26].copy_from_slice(&crc.to_le_bytes());
        self.sequence += 1;
        self.lacing.clear();
        self.body.clear();
    }
}

/// Lacing values of a packet of `len` bytes: 255s, then the rest (0 for a multiple of 255).
fn lace(lacing: &mut Vec<u8>, len: usize) {
    lacing.extend(std::iter::repeat_n(255u8, len / 255));
    lacing.push((len % 255) as u8);
}

/// Ogg's CRC-32: polynomial 0x04c11db7, not reflected, initial value and final XOR 0.
const OGG_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::Algorithm {
    width: 32,
    poly: 0x04c1_1db7,
    init: 0,
    refin: false,
    refout: false,
    xorout: 0,
    check: 0x89a1_897f,
    residue: 0,
});

fn crc32(data: &[u8]) -> u32 {
    OGG_CRC.checksum(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages of `stream`: (flags, granule, sequence, packets), checksums verified.
    fn pages(mut stream: &[u8]) -> Vec<(u8, u64, u32, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        while !stream.is_empty() {
            assert_eq!(&stream[..4], b"OggS");
            let n = stream[26] as usize;
            let lacing = &stream[27..27 + n];
            let body_len: usize = lacing.iter().map(|&l| l as usize).sum();
            let len = 27 + n + body_len;
            let mut page = stream[..len].to_vec();
            let crc = u32::from_le_bytes(page[22..26].try_into().unwrap());
            page[22..26].fill(0);
            assert_eq!(crc32(&page), crc, "page checksum");
            let granule = u64::from_le_bytes(stream[6..14].try_into().unwrap());
            let seq = u32::from_le_bytes(stream[18..22].try_into().unwrap());
            let mut packets = vec![];
            let mut at = 27 + n;
            let mut current = vec![];
            for &l in lacing {
                current.extend_from_slice(&stream[at..at + l as usize]);
                at += l as usize;
                if l < 255 {
                    packets.push(std::mem::take(&mut current));
                }
            }
            out.push((stream[5], granule, seq, packets));
            stream = &stream[len..];
        }
        out
    }

    #[test]
    fn an_empty_stream_still_ends() {
        let mut ogg = OggOpus::new(24_000, 1).unwrap();
        let mut bytes = ogg.headers();
        bytes.extend(ogg.finish().unwrap());
        let pages = pages(&bytes);
        assert_eq!(pages.len(), 3);
        assert_eq!(pages[2].0, HEADER_EOS);
        assert!(!pages[2].3.is_empty());
    }

    #[test]
    fn the_checksum_is_oggs() {
        // CRC-32/POSIX's check value (0x765e7680) without its final XOR: Ogg's CRC is
        // the same register with no XOR at the end.
        assert_eq!(crc32(b"123456789"), 0x89a1_897f);
    }

    #[test]
    fn a_stream_has_its_headers_its_packets_and_its_end() {
        let mut ogg = OggOpus::new(24_000, 7).unwrap();
        let mut bytes = ogg.headers();
        // 1.01 s of a tone in two pushes, not on frame boundaries.
        let pcm: Vec<u8> = (0..24_240)
            .map(|i: i32| ((f64::from(i) * 0.05).sin() * 8000.0) as i16)
            .flat_map(i16::to_le_bytes)
            .collect();
        bytes.extend(ogg.push(&pcm[..10_001 * 2]).unwrap());
        bytes.extend(ogg.push(&pcm[10_001 * 2..]).unwrap());
        bytes.extend(ogg.finish().unwrap());
        let pages = pages(&bytes);
        assert_eq!(pages[0].0, HEADER_BOS);
        assert_eq!(&pages[0].3[0][..8], b"OpusHead");
        assert_eq!(&pages[1].3[0][..8], b"OpusTags");
        let last = pages.last().unwrap();
        assert_eq!(last.0, HEADER_EOS);
        for (i, p) in pages.iter().enumerate() {
            assert_eq!(p.2, i as u32, "page sequence");
        }
        // The end: the pre-skip plus 1.01 s at 48 kHz, inside the last packet.
        let pre_skip = u64::from(u16::from_le_bytes([pages[0].3[0][10], pages[0].3[0][11]]));
        assert!(pre_skip > 0, "the encoder's delay");
        assert_eq!(last.1, pre_skip + 48_480);
        let packets = pages[2..].iter().map(|p| p.3.len() as u64).sum::<u64>();
        assert!(
            packets * 960 >= last.1 && (packets - 1) * 960 < last.1,
            "{packets}"
        );
        let mut granules: Vec<u64> = pages[2..].iter().map(|p| p.1).collect();
        granules.dedup();
        assert!(granules.windows(2).all(|w| w[0] < w[1]), "{granules:?}");
    }
}
