//! Strict base64 decoding (RFC 4648 section 4, standard alphabet, padded),
//! for SASL responses (RFC 5034 section 4). Only decoding is needed: PLAIN
//! sends no challenge data.
//!
//! Strict means: length a multiple of 4, `=` only as the final one or two
//! characters, no whitespace, and the unused bits of the last group zero
//! (RFC 4648 section 3.5 lets decoders reject non-canonical input).

use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("invalid base64")]
pub struct Base64Error;

fn value(c: u8) -> Option<u32> {
    crate::util::base64_value(c).map(u32::from)
}

/// Decode `input`. The empty string decodes to no bytes.
pub fn decode(input: &[u8]) -> Result<Vec<u8>, Base64Error> {
    let quads = input.chunks_exact(4);
    if !quads.remainder().is_empty() {
        return Err(Base64Error);
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let groups = input.len() / 4;
    for (g, quad) in quads.enumerate() {
        let last = g + 1 == groups;
        let pad = match quad {
            [_, _, b'=', b'='] if last => 2,
            [_, _, _, b'='] if last => 1,
            _ => 0,
        };
        let mut n = 0u32;
        for &c in &quad[..4 - pad] {
            n = (n << 6) | value(c).ok_or(Base64Error)?;
        }
        n <<= 6 * pad as u32;
        let bytes = n.to_be_bytes();
        match pad {
            0 => out.extend_from_slice(&bytes[1..4]),
            1 if n & 0xff == 0 => out.extend_from_slice(&bytes[1..3]),
            2 if n & 0xffff == 0 => out.push(bytes[1]),
            _ => return Err(Base64Error),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference encoder for the round-trip property.
    fn encode(data: &[u8]) -> Vec<u8> {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        for chunk in data.chunks(3) {
            let mut b = [0u8; 3];
            b[..chunk.len()].copy_from_slice(chunk);
            let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(A[(n >> (18 - 6 * i) & 63) as usize]);
                } else {
                    out.push(b'=');
                }
            }
        }
        out
    }

    #[test]
    fn rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(decode(enc.as_bytes()).unwrap(), plain.as_bytes());
            assert_eq!(encode(plain.as_bytes()), enc.as_bytes());
        }
        // RFC 4616 section 4 example.
        assert_eq!(
            decode(b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm").unwrap(),
            b"\0tim\0tanstaaftanstaaf"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            &b"Zg"[..],
            b"Zg=",
            b"Z===",
            b"Zg==Zg==",
            b"=Zg=",
            b"Zm9v\r\n",
            b"Zm 9",
            b"Zh==", // non-zero unused bits
            b"Zm9=",
            b"*",
        ] {
            assert_eq!(decode(bad), Err(Base64Error), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(decode(&encode(&data)).unwrap(), data);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode(&data);
        }
    }
}
