//! Feeds arbitrary bytes through the IMAP framer (both limit sets, in chunks
//! sized by the input), parses every complete command, and renders the
//! MIME structure of the same bytes taken as a message, with BINARY's
//! decoding of each part; the bytes as a mailbox name go through modified
//! UTF-7 both ways, which must round-trip. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmail::mime;
use ringmail::protocol::imap::{
    mutf7, parse_command, rejoin_diverted, Frame, Framer, FramingLimits,
};

fuzz_target!(|data: &[u8]| {
    let (chunk, input) = match data {
        [c, rest @ ..] => ((*c as usize).max(1), rest),
        _ => return,
    };
    for limits in [
        FramingLimits::NOT_AUTHENTICATED,
        FramingLimits::AUTHENTICATED,
    ] {
        let mut framer = Framer::new(limits);
        // Large APPEND literals are diverted, as the server does after login.
        framer.set_divert(64);
        let mut buf: Vec<u8> = Vec::new();
        let mut fed = 0;
        // Literal octets of a diverted APPEND still to drop, and its head.
        let mut skip = 0u64;
        let mut head: Option<Vec<u8>> = None;
        // Bounded: every round consumes input or buffered bytes.
        for _ in 0..input.len() * 2 + 16 {
            if skip > 0 {
                if buf.is_empty() {
                    if fed >= input.len() {
                        break;
                    }
                    let end = (fed + chunk).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
                let n = skip.min(buf.len() as u64);
                buf.drain(..n as usize);
                skip -= n;
                continue;
            }
            match framer.feed(&buf) {
                Frame::Command(n) => {
                    match head.take() {
                        Some(h) => {
                            let _ = parse_command(&rejoin_diverted(&h, &buf[..n]));
                        }
                        None => {
                            let _ = parse_command(&buf[..n]);
                        }
                    }
                    buf.drain(..n);
                }
                Frame::Divert { head: h, len, .. } => {
                    head = Some(buf.drain(..h).collect());
                    skip = len;
                }
                Frame::Discard(n) => {
                    buf.drain(..n.min(buf.len()));
                }
                Frame::Rejected(r) => {
                    head = None;
                    let _ = r.answer();
                    buf.drain(..r.consume.min(buf.len()));
                }
                Frame::Continue { .. } | Frame::NeedMore => {
                    if fed >= input.len() {
                        break;
                    }
                    let end = (fed + chunk).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }
    let msg = mime::Message::parse(input);
    let mut out = Vec::new();
    mime::write_bodystructure(&msg, true, &mut out);
    mime::write_envelope(&msg, &mut out);
    for part in [&[][..], &[1], &[1, 2], &[2, 1, 1]] {
        let _ = mime::binary_bytes(&msg, part);
    }
    if let Some(name) = mutf7::decode(input) {
        assert_eq!(mutf7::encode(&name).as_bytes(), input);
    }
    let text = String::from_utf8_lossy(input);
    assert_eq!(
        mutf7::decode(mutf7::encode(&text).as_bytes()).as_deref(),
        Some(&*text)
    );
});
