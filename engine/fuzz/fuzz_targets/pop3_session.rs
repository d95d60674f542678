//! Feeds arbitrary bytes to a POP3 session that logs in successfully with a
//! small maildrop, in chunks whose sizes come from the input itself, and
//! answers every event like the runtime would. Must never panic; the server
//! must only ever emit CRLF-terminated output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmail::protocol::pop3::write_stuffed;
use ringmail::session::pop3::{
    LoginResult, Maildrop, MaildropEntry, Pop3Event, Pop3Params, Pop3Session,
};

const MESSAGES: [&[u8]; 3] = [
    b"Subject: a\r\n\r\n.\r\n..x\r\nbody\r\n",
    b"Subject: b\n\n.bare\nlf",
    b"",
];

fuzz_target!(|data: &[u8]| {
    // First byte: chunk size (0 means everything at once). Second byte:
    // login outcome selector, so failure paths are reached too.
    let (chunk, mode, input) = match data {
        [c, m, rest @ ..] => (*c as usize, *m, rest),
        _ => return,
    };
    let maildrop = Maildrop {
        entries: MESSAGES
            .iter()
            .enumerate()
            .map(|(i, m)| MaildropEntry {
                size: m.len() as u64,
                uidl: format!("uid-{i}"),
            })
            .collect(),
    };
    let mut session = Pop3Session::new(Pop3Params {
        hostname: "fuzz.example".into(),
        auth_failures_max: 3,
        stls: true,
        tls: false,
        auth_plaintext: input.len() % 2 == 0,
    });
    let mut out = Vec::new();
    session.greeting(&mut out);
    let mut buf: Vec<u8> = Vec::new();
    let chunks: Vec<&[u8]> = if chunk == 0 {
        vec![input]
    } else {
        input.chunks(chunk).collect()
    };
    let mut logins = 0u8;
    'feed: for piece in chunks {
        buf.extend_from_slice(piece);
        loop {
            let (used, event) = session.advance(&buf, &mut out);
            assert!(used <= buf.len());
            buf.drain(..used);
            match event {
                Pop3Event::NeedInput => break,
                Pop3Event::Login { .. } => {
                    logins = logins.wrapping_add(1);
                    let result = match (mode.wrapping_add(logins)) % 4 {
                        0 => LoginResult::BadCredentials,
                        1 => LoginResult::InUse,
                        2 => LoginResult::TempFail,
                        _ => LoginResult::Ok(maildrop.clone()),
                    };
                    session.login_result(result, &mut out);
                }
                Pop3Event::SendMessage { index, body_lines } => {
                    let message = MESSAGES.get(index).expect("index within the maildrop");
                    write_stuffed(message, body_lines, &mut |b: &[u8]| {
                        out.extend_from_slice(b)
                    });
                }
                Pop3Event::Update { deleted } => {
                    assert!(deleted.iter().all(|&i| i < MESSAGES.len()));
                    session.update_result(mode & 1 == 0, &mut out);
                }
                Pop3Event::StartTls => {
                    // The runtime drops the rest of the read.
                    session.starttls_result(mode & 2 == 0, &mut out);
                    buf.clear();
                    session.tls_started();
                    break;
                }
                Pop3Event::Close => break 'feed,
            }
        }
        // Bounded buffering: an unconsumed remainder is at most one line.
        assert!(buf.len() <= 1026);
    }
    assert!(out.ends_with(b"\r\n"));
});
