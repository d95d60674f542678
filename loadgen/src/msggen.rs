//! Test message generation: RFC 5322 headers with a unique id, filler body
//! lines of 76 characters, exact sizes, dot-stuffing and the size mix.

use std::time::{SystemTime, UNIX_EPOCH};

/// Name of the first header every generated message starts with. Verification
/// strips whatever a server put in front of the first line starting with it.
pub const ID_HEADER: &str = "X-Loadgen-Id";

const LINE_CHARS: usize = 76;
const LINE_BYTES: usize = LINE_CHARS + 2;
/// Every DOT_EVERY-th filler line starts with a '.', so dot-stuffing is
/// exercised on every message larger than ~5 KB.
const DOT_EVERY: usize = 64;
const ALPHABET: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 -_+=/:;,()";

/// Message size: fixed or the built-in realistic mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeSpec {
    Fixed(usize),
    Mix,
}

impl std::str::FromStr for SizeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("mix") {
            return Ok(SizeSpec::Mix);
        }
        let (num, mul) = match s.as_bytes().last() {
            Some(b'k' | b'K') => (&s[..s.len() - 1], 1024),
            Some(b'm' | b'M') => (&s[..s.len() - 1], 1024 * 1024),
            _ => (s, 1),
        };
        let n: usize = num
            .parse()
            .map_err(|_| format!("bad size {s:?}: bytes, NNk, NNm or 'mix'"))?;
        let n = n * mul;
        if n == 0 || n > 256 * 1024 * 1024 {
            return Err(format!("size {n} out of range (1 .. 256 MiB)"));
        }
        Ok(SizeSpec::Fixed(n))
    }
}

pub const MIX_MIN: usize = 2 * 1024;
pub const MIX_MAX: usize = 1024 * 1024;

impl SizeSpec {
    pub fn max(&self) -> usize {
        match self {
            SizeSpec::Fixed(n) => *n,
            SizeSpec::Mix => MIX_MAX,
        }
    }

    /// Size of message `n` (deterministic given the seed).
    pub fn size_for(&self, seed: u64, n: u64) -> usize {
        match self {
            SizeSpec::Fixed(s) => *s,
            SizeSpec::Mix => mix_size(seed, n),
        }
    }
}

/// SplitMix64: small, fast, good enough to derive per-message random values
/// from (seed, message number) so runs are reproducible.
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = x;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn unit_f64(x: u64) -> f64 {
    (x >> 11) as f64 / (1u64 << 53) as f64
}

/// Buckets of the "mix" distribution: (upper bound in bytes, cumulative
/// probability). Within a bucket the size is log-uniform. Mean is ~36 KiB,
/// median ~6 KiB: mostly small mail with a tail of attachments.
const MIX_BUCKETS: &[(usize, f64)] = &[
    (4 * 1024, 0.40),
    (16 * 1024, 0.72),
    (64 * 1024, 0.90),
    (256 * 1024, 0.97),
    (1024 * 1024, 1.00),
];

pub fn mix_size(seed: u64, n: u64) -> usize {
    let r1 = splitmix64(seed ^ n.wrapping_mul(0xA24B_AED4_963E_E407));
    let r2 = splitmix64(r1);
    let p = unit_f64(r1);
    let mut lo = MIX_MIN;
    for &(hi, cum) in MIX_BUCKETS {
        if p < cum || hi == MIX_MAX {
            let (lf, hf) = ((lo as f64).ln(), (hi as f64).ln());
            let v = (lf + unit_f64(r2) * (hf - lf)).exp() as usize;
            return v.clamp(MIX_MIN, MIX_MAX);
        }
        lo = hi;
    }
    MIX_MAX
}

/// Pre-rendered filler lines; message bodies are slices of it.
pub struct Filler {
    block: Vec<u8>,
}

impl Filler {
    /// Enough filler for messages up to `max_size` bytes.
    pub fn new(max_size: usize) -> Filler {
        let lines = max_size / LINE_BYTES + 2;
        let mut block = Vec::with_capacity(lines * LINE_BYTES);
        for i in 0..lines {
            for j in 0..LINE_CHARS {
                block.push(ALPHABET[(i + j) % ALPHABET.len()]);
            }
            if i % DOT_EVERY == DOT_EVERY - 1 {
                block[i * LINE_BYTES] = b'.';
            }
            block.extend_from_slice(b"\r\n");
        }
        Filler { block }
    }

    /// Append exactly `r` bytes of CRLF-terminated lines of at most 76
    /// characters (r == 1 or 2 cannot be met and yields 3 bytes).
    pub fn append(&self, out: &mut Vec<u8>, r: usize) {
        let full = r / LINE_BYTES;
        let rem = r % LINE_BYTES;
        let short_line = |out: &mut Vec<u8>, chars: usize| {
            // first line of the block never starts with '.'
            out.extend_from_slice(&self.block[..chars]);
            out.extend_from_slice(b"\r\n");
        };
        if rem == 0 {
            out.extend_from_slice(&self.block[..full * LINE_BYTES]);
        } else if rem >= 3 {
            out.extend_from_slice(&self.block[..full * LINE_BYTES]);
            short_line(out, rem - 2);
        } else if full >= 1 {
            // split the last full line plus the remainder into two lines
            out.extend_from_slice(&self.block[..(full - 1) * LINE_BYTES]);
            let both = LINE_BYTES + rem;
            short_line(out, 38);
            short_line(out, both - 40 - 2);
        } else {
            short_line(out, 1);
        }
    }
}

/// Everything that identifies one generated message.
pub struct MsgSpec<'a> {
    pub run_id: &'a str,
    pub n: u64,
    pub from: &'a str,
    pub to: &'a [&'a str],
    pub date: &'a str,
    pub size: usize,
}

/// The id carried in the X-Loadgen-Id header and the Subject.
pub fn message_id(run_id: &str, n: u64) -> String {
    format!("{run_id}-{n}")
}

/// Build the RFC 5322 message (not dot-stuffed, CRLF line endings) into `out`.
/// The result is exactly `spec.size` bytes unless the headers alone are
/// larger.
pub fn build_message(spec: &MsgSpec<'_>, filler: &Filler, out: &mut Vec<u8>) {
    use std::io::Write;
    out.clear();
    let id = message_id(spec.run_id, spec.n);
    let _ = write!(out, "{ID_HEADER}: {id}\r\n");
    let _ = write!(out, "Message-ID: <{id}@loadgen.invalid>\r\n");
    let _ = write!(out, "Date: {}\r\n", spec.date);
    let _ = write!(out, "From: <{}>\r\n", spec.from);
    out.extend_from_slice(b"To: ");
    for (i, t) in spec.to.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b",\r\n ");
        }
        let _ = write!(out, "<{t}>");
    }
    out.extend_from_slice(b"\r\n");
    let _ = write!(out, "Subject: loadgen message {id}\r\n");
    out.extend_from_slice(
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n",
    );
    let r = spec.size.saturating_sub(out.len());
    filler.append(out, r);
}

/// Append the dot-stuffed form of `msg` plus the terminating `.\r\n` to
/// `out` (RFC 5321 section 4.5.2). `msg` must end with CRLF.
pub fn dot_stuff(msg: &[u8], out: &mut Vec<u8>) {
    out.reserve(msg.len() + msg.len() / 64 + 8);
    let mut from = 0;
    if msg.first() == Some(&b'.') {
        out.push(b'.');
    }
    for nl in memchr::memchr_iter(b'\n', msg) {
        if msg.get(nl + 1) == Some(&b'.') {
            out.extend_from_slice(&msg[from..=nl]);
            out.push(b'.');
            from = nl + 1;
        }
    }
    out.extend_from_slice(&msg[from..]);
    if !msg.is_empty() && !msg.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

/// Fast 64-bit content hash (not cryptographic) used to check that a
/// retrieved message is byte-identical to the one sent.
pub fn content_hash(data: &[u8]) -> u64 {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ data.len() as u64;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let w = u64::from_le_bytes(c.try_into().unwrap());
        h = (h.rotate_left(5) ^ w).wrapping_mul(K);
    }
    for &b in chunks.remainder() {
        h = (h.rotate_left(5) ^ b as u64).wrapping_mul(K);
    }
    splitmix64(h)
}

/// RFC 5322 date-time in UTC for the given time.
pub fn rfc5322_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // civil-from-days (proleptic Gregorian)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    let wd = (days + 4).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
    const WD: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MO: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} +0000",
        WD[wd],
        d,
        MO[(m - 1) as usize],
        y,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unstuff(wire: &[u8]) -> Vec<u8> {
        assert!(wire.ends_with(b"\r\n.\r\n") || wire == b".\r\n");
        let body = &wire[..wire.len() - 3];
        let mut out = Vec::new();
        for line in body.split_inclusive(|&b| b == b'\n') {
            let l = if line.first() == Some(&b'.') {
                &line[1..]
            } else {
                line
            };
            assert_ne!(l, b".\r\n", "unstuffed lone dot line on the wire");
            out.extend_from_slice(l);
        }
        out
    }

    fn spec(n: u64, size: usize) -> (String, Vec<u8>) {
        let filler = Filler::new(size);
        let mut out = Vec::new();
        let to = ["1u@example.test", "2u@example.test"];
        let s = MsgSpec {
            run_id: "r1",
            n,
            from: "s@example.test",
            to: &to,
            date: "Thu, 01 Jan 1970 00:00:00 +0000",
            size,
        };
        build_message(&s, &filler, &mut out);
        (message_id("r1", n), out)
    }

    #[test]
    fn exact_sizes_and_line_lengths() {
        for size in (500..3000).chain([4096, 65_536, 100_001, 1 << 20]) {
            let (_, m) = spec(7, size);
            assert_eq!(m.len(), size, "size {size}");
            assert!(m.ends_with(b"\r\n"));
            for line in m.split(|&b| b == b'\n') {
                assert!(line.len() <= 78, "line too long");
            }
            // every LF is preceded by CR
            for i in memchr::memchr_iter(b'\n', &m) {
                assert_eq!(m[i - 1], b'\r');
            }
        }
    }

    #[test]
    fn headers_and_unique_ids() {
        let (id, m) = spec(42, 4096);
        let text = String::from_utf8(m).unwrap();
        assert!(text.starts_with(&format!("X-Loadgen-Id: {id}\r\n")));
        assert!(text.contains(&format!("Subject: loadgen message {id}\r\n")));
        assert!(text.contains("Message-ID: <r1-42@loadgen.invalid>\r\n"));
        assert!(text.contains("From: <s@example.test>\r\n"));
        assert!(text.contains("To: <1u@example.test>,\r\n <2u@example.test>\r\n"));
        assert!(text.contains("\r\n\r\n"));
        let (id2, m2) = spec(43, 4096);
        assert_ne!(id, id2);
        assert_ne!(content_hash(text.as_bytes()), content_hash(&m2));
    }

    #[test]
    fn dot_stuffing_roundtrip() {
        let (_, m) = spec(1, 20_000);
        assert!(
            m.windows(3).any(|w| w == b"\n.A" || w[..2] == *b"\n."),
            "filler has dot lines"
        );
        let mut wire = Vec::new();
        dot_stuff(&m, &mut wire);
        assert!(wire.len() > m.len() + 3);
        assert_eq!(unstuff(&wire), m);
        // explicit cases
        let mut w = Vec::new();
        dot_stuff(b".a\r\n..b\r\nc.\r\n.\r\n", &mut w);
        assert_eq!(w, b"..a\r\n...b\r\nc.\r\n..\r\n.\r\n");
        let mut w = Vec::new();
        dot_stuff(b"", &mut w);
        assert_eq!(w, b".\r\n");
    }

    #[test]
    fn mix_distribution() {
        let sizes: Vec<usize> = (0..20_000).map(|n| mix_size(1, n)).collect();
        assert!(sizes.iter().all(|&s| (MIX_MIN..=MIX_MAX).contains(&s)));
        let small = sizes.iter().filter(|&&s| s <= 16 * 1024).count() as f64 / sizes.len() as f64;
        let large = sizes.iter().filter(|&&s| s > 256 * 1024).count();
        assert!(small > 0.65 && small < 0.80, "small fraction {small}");
        assert!(large > 200 && large < 1000, "large {large}");
        // deterministic for a seed, different across seeds
        assert_eq!(mix_size(1, 5), mix_size(1, 5));
        assert!((0..100).any(|n| mix_size(1, n) != mix_size(2, n)));
    }

    #[test]
    fn size_parse() {
        assert_eq!("4096".parse::<SizeSpec>().unwrap(), SizeSpec::Fixed(4096));
        assert_eq!("4k".parse::<SizeSpec>().unwrap(), SizeSpec::Fixed(4096));
        assert_eq!("1M".parse::<SizeSpec>().unwrap(), SizeSpec::Fixed(1 << 20));
        assert_eq!("mix".parse::<SizeSpec>().unwrap(), SizeSpec::Mix);
        assert!("0".parse::<SizeSpec>().is_err());
        assert!("x".parse::<SizeSpec>().is_err());
    }

    #[test]
    fn date_format() {
        assert_eq!(rfc5322_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 +0000");
        let t = UNIX_EPOCH + std::time::Duration::from_secs(1_709_210_096); // 2024-02-29 12:34:56
        assert_eq!(rfc5322_date(t), "Thu, 29 Feb 2024 12:34:56 +0000");
    }
}
