//! Protocol benchmarks: SMTP command parsing, DATA scanning and dot-unstuffing,
//! IMAP framing and parsing, BODYSTRUCTURE of a nested multipart message, and
//! the POP3 byte-stuffing writer. Inputs come from `bench/corpus/` (written by
//! `bench/corpus/generate.py`). Every benchmark checks what it computed
//! against a value derived independently of the code under test, so a fast
//! wrong answer fails instead of looking good.
use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ringmail::mime::{write_bodystructure, Message};
use ringmail::protocol::imap::{self, CommandBody, Frame, Framer, FramingLimits};
use ringmail::protocol::pop3::write_stuffed;
use ringmail::protocol::smtp::{parse_command, Command, DataReceiver, MailParam, Progress};

fn corpus(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// CRLF-terminated lines without their terminator.
fn lines(data: &[u8]) -> Vec<&[u8]> {
    data.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect()
}

// ---------------------------------------------------------------- SMTP commands

/// What parsing the corpus must find: commands per verb, and the sums of
/// path lengths, SIZE values and BDAT sizes.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
struct SmtpTally {
    counts: [u32; 8], // EHLO/HELO, MAIL, RCPT, DATA, BDAT, RSET, NOOP, QUIT
    path_bytes: u64,
    size_sum: u64,
    bdat_sum: u64,
    bdat_last: u32,
}

/// The expected tally, from plain string handling of the corpus text.
fn smtp_expected(lines: &[&[u8]]) -> SmtpTally {
    let mut t = SmtpTally::default();
    for l in lines {
        let s = std::str::from_utf8(l).unwrap();
        let verb = s.split(' ').next().unwrap().to_ascii_uppercase();
        let i = [
            "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "QUIT",
        ]
        .iter()
        .position(|v| *v == verb || (verb == "HELO" && *v == "EHLO"))
        .unwrap_or_else(|| panic!("corpus verb {verb}"));
        t.counts[i] += 1;
        if verb == "MAIL" || verb == "RCPT" {
            let (a, b) = (s.find('<').unwrap(), s.find('>').unwrap());
            t.path_bytes += (b - a - 1) as u64;
            if let Some(p) = s.find("SIZE=") {
                t.size_sum += s[p + 5..]
                    .split(' ')
                    .next()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap();
            }
        }
        if verb == "BDAT" {
            let mut w = s.split(' ').skip(1);
            t.bdat_sum += w.next().unwrap().parse::<u64>().unwrap();
            t.bdat_last += u32::from(w.next() == Some("LAST"));
        }
    }
    t
}

fn smtp_parse_all(lines: &[&[u8]]) -> SmtpTally {
    let mut t = SmtpTally::default();
    for l in lines {
        match parse_command(black_box(l)).expect("corpus line parses") {
            Command::Ehlo(_) | Command::Helo(_) => t.counts[0] += 1,
            Command::Mail {
                reverse_path,
                params,
            } => {
                t.counts[1] += 1;
                t.path_bytes += reverse_path.len() as u64;
                for p in params.iter() {
                    if let MailParam::Size(n) = p.mail().unwrap() {
                        t.size_sum += n;
                    }
                }
            }
            Command::Rcpt { forward_path, .. } => {
                t.counts[2] += 1;
                t.path_bytes += forward_path.len() as u64;
            }
            Command::Data => t.counts[3] += 1,
            Command::Bdat { size, last } => {
                t.counts[4] += 1;
                t.bdat_sum += size;
                t.bdat_last += u32::from(last);
            }
            Command::Rset => t.counts[5] += 1,
            Command::Noop => t.counts[6] += 1,
            Command::Quit => t.counts[7] += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    t
}

fn smtp_commands(c: &mut Criterion) {
    let data = corpus("smtp-commands.txt");
    let lines = lines(&data);
    let expected = smtp_expected(&lines);
    let mut g = c.benchmark_group("smtp_parse_command");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function(
        BenchmarkId::new("corpus", format!("{}_lines", lines.len())),
        |b| b.iter(|| assert_eq!(smtp_parse_all(&lines), expected)),
    );
    g.finish();
}

// ------------------------------------------------------------------ SMTP DATA

/// A message body of about `size` bytes with realistic lines (header block,
/// prose lines of 20..78 characters, every 40th line starting with a dot)
/// and its DATA wire form (dot-stuffed, ended by CRLF . CRLF).
fn data_body(size: usize) -> (Vec<u8>, Vec<u8>) {
    let mut body = b"Received: from mx01.example.net ([192.0.2.15]) by mail.example.test\r\n\
From: Alice <alice@example.com>\r\nTo: bob@example.test\r\nSubject: benchmark\r\n\
Message-ID: <bench@example.com>\r\nMIME-Version: 1.0\r\n\r\n"
        .to_vec();
    let words = b"the quick brown fox jumps over a lazy dog while mail flows through queues ";
    let mut n = 0usize;
    while body.len() < size {
        let len = 20 + (n * 37) % 59;
        if n % 40 == 7 {
            body.push(b'.');
        }
        let start = (n * 13) % 20;
        body.extend_from_slice(&words[start..start + len.min(words.len() - start)]);
        body.extend_from_slice(b"\r\n");
        n += 1;
    }
    let mut wire = Vec::with_capacity(body.len() + body.len() / 1000 + 8);
    for line in body.split_inclusive(|&b| b == b'\n') {
        if line[0] == b'.' {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
    }
    wire.extend_from_slice(b".\r\n");
    (body, wire)
}

/// Feed `wire` the way the runtime does (read-sized chunks).
fn data_receive(wire: &[u8], out: &mut Vec<u8>) -> usize {
    let mut rx = DataReceiver::new();
    out.clear();
    let mut consumed = 0;
    for chunk in wire.chunks(ringmail::limits::READ_CHUNK) {
        let (n, progress) = rx.feed(black_box(chunk), out, usize::MAX);
        consumed += n;
        if progress == Progress::Done {
            return consumed;
        }
    }
    panic!("end of data not found");
}

fn smtp_data(c: &mut Criterion) {
    let mut g = c.benchmark_group("smtp_data_unstuff");
    for (label, size) in [
        ("1KiB", 1usize << 10),
        ("64KiB", 64 << 10),
        ("1MiB", 1 << 20),
    ] {
        let (body, wire) = data_body(size);
        let mut out = Vec::with_capacity(body.len());
        // Full check once: the unstuffed body is exactly the original.
        assert_eq!(data_receive(&wire, &mut out), wire.len());
        assert!(out == body, "unstuffed body differs");
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(label, |b| {
            b.iter(|| {
                assert_eq!(data_receive(&wire, &mut out), wire.len());
                assert_eq!(out.len(), body.len());
                assert_eq!(out[out.len() - 3..], body[body.len() - 3..]);
            })
        });
    }
    g.finish();
}

// --------------------------------------------------------------- IMAP commands

/// Command names and APPEND literal sizes expected from the corpus text.
fn imap_expected(data: &[u8]) -> (Vec<String>, usize) {
    let mut names = Vec::new();
    let mut literal_bytes = 0;
    let mut rest = data;
    while !rest.is_empty() {
        let nl = rest.iter().position(|&b| b == b'\n').unwrap();
        let line = std::str::from_utf8(&rest[..nl]).unwrap().trim_end();
        let mut words = line.split(' ').skip(1);
        let mut verb = words.next().unwrap();
        if verb == "UID" {
            verb = words.next().unwrap();
        }
        names.push(verb.to_string());
        rest = &rest[nl + 1..];
        if let Some(open) = line
            .strip_suffix('}')
            .and_then(|l| l.rfind('{').map(|i| &l[i + 1..]))
        {
            let n: usize = open.parse().unwrap();
            literal_bytes += n;
            rest = &rest[n..];
            let nl = rest.iter().position(|&b| b == b'\n').unwrap();
            rest = &rest[nl + 1..];
        }
    }
    (names, literal_bytes)
}

/// Frame and parse every command; returns names and APPEND literal bytes.
fn imap_parse_all(data: &[u8], names: &mut Vec<&'static str>) -> usize {
    let mut framer = Framer::new(FramingLimits::AUTHENTICATED);
    let mut buf = data;
    let mut literal_bytes = 0;
    names.clear();
    while !buf.is_empty() {
        let n = loop {
            match framer.feed(black_box(buf)) {
                Frame::Command(n) => break n,
                // All of the literal is already buffered: go on.
                Frame::Continue { .. } => continue,
                other => panic!("framing: {other:?}"),
            }
        };
        let cmd = imap::parse_command(&buf[..n]).expect("corpus command parses");
        if let CommandBody::Append { message, .. } = &cmd.body {
            literal_bytes += message.len();
        }
        names.push(cmd.body.name());
        buf = &buf[n..];
    }
    literal_bytes
}

fn imap_commands(c: &mut Criterion) {
    let data = corpus("imap-commands.txt");
    let (expected_names, expected_literals) = imap_expected(&data);
    let mut names = Vec::with_capacity(expected_names.len());
    assert_eq!(imap_parse_all(&data, &mut names), expected_literals);
    assert_eq!(names, expected_names);
    let mut g = c.benchmark_group("imap_frame_and_parse");
    g.throughput(Throughput::Elements(expected_names.len() as u64));
    g.bench_function(
        BenchmarkId::new("corpus", format!("{}_commands", expected_names.len())),
        |b| {
            b.iter(|| {
                assert_eq!(imap_parse_all(&data, &mut names), expected_literals);
                assert_eq!(names.len(), expected_names.len());
            })
        },
    );
    g.finish();
}

// ------------------------------------------------------------- BODYSTRUCTURE

fn expected(name: &str) -> Vec<u8> {
    if std::env::var_os("BENCH_WRITE_EXPECTED").is_some() {
        return Vec::new();
    }
    corpus(name)
}

fn bodystructure(c: &mut Criterion) {
    let mut g = c.benchmark_group("imap_bodystructure");
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../engine/tests/fixtures/mime/nested.eml");
    let cases = [
        (
            "nested-multipart.eml",
            corpus("nested-multipart.eml"),
            expected("nested-multipart.bodystructure"),
        ),
        (
            "fixture-nested.eml",
            std::fs::read(fixture).unwrap(),
            expected("fixture-nested.bodystructure"),
        ),
    ];
    for (label, raw, expected) in &cases {
        let expected = expected.strip_suffix(b"\n").unwrap_or(expected);
        let mut out = Vec::with_capacity(4096);
        let run = |out: &mut Vec<u8>| {
            out.clear();
            let msg = Message::parse(black_box(raw));
            write_bodystructure(&msg, true, out);
        };
        run(&mut out);
        if std::env::var_os("BENCH_WRITE_EXPECTED").is_some() {
            // Regenerate after a deliberate change; review the diff before committing.
            let name = format!("{}.bodystructure", label.trim_end_matches(".eml"));
            std::fs::write(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("corpus")
                    .join(name),
                [&out[..], b"\n"].concat(),
            )
            .unwrap();
            continue;
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(expected),
            "{label}"
        );
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(*label, |b| {
            b.iter(|| {
                run(&mut out);
                assert_eq!(out.len(), expected.len());
            })
        });
    }
    g.finish();
}

// ------------------------------------------------------------ POP3 stuffing

fn pop3_stuffing(c: &mut Criterion) {
    let (message, _) = data_body(1 << 20);
    // Expected output: one extra dot per line starting with a dot, then ".\r\n".
    let dot_lines = message
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l[0] == b'.')
        .count();
    let expected_len = message.len() + dot_lines + 3;
    let mut g = c.benchmark_group("pop3_write_stuffed");
    g.throughput(Throughput::Bytes(message.len() as u64));
    // Full check once: concatenated slices are the dot-stuffed message.
    let mut all = Vec::new();
    write_stuffed(&message, None, &mut |s| all.extend_from_slice(s));
    let mut stuffed = Vec::new();
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line[0] == b'.' {
            stuffed.push(b'.');
        }
        stuffed.extend_from_slice(line);
    }
    stuffed.extend_from_slice(b".\r\n");
    assert!(all == stuffed);
    g.bench_function("1MiB", |b| {
        b.iter(|| {
            let (mut len, mut slices) = (0usize, 0usize);
            write_stuffed(black_box(&message), None, &mut |s| {
                len += s.len();
                slices += 1;
            });
            assert_eq!(len, expected_len);
            // message pieces + one "." per dot line + the terminator
            assert_eq!(slices, 2 * dot_lines + 2);
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    smtp_commands,
    smtp_data,
    imap_commands,
    bodystructure,
    pop3_stuffing
);
criterion_main!(benches);
