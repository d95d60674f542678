//! Feed arbitrary bytes to an SMTP session, split into reads of a
//! fuzzer-chosen size, and check it neither panics nor loses sync with its
//! own accounting: every `advance` consumes no more than it was given, every
//! reply line is `ddd SP|- ...`, and a closed session stays closed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringmail::session::smtp::{
    AuthResult, DeliveryOutcome, RcptVerdict, SmtpContext, SmtpEvent, SmtpParams, SmtpSession,
    StartTlsResult,
};
use ringmail::session::TlsInfo;

struct Stub;

impl SmtpContext for Stub {
    fn recipient(&self, address: &str) -> RcptVerdict {
        match address.len() % 4 {
            0 => RcptVerdict::Local {
                account: address.to_ascii_lowercase(),
            },
            1 => RcptVerdict::UnknownUser,
            2 => RcptVerdict::NotLocal,
            _ => RcptVerdict::TempFail,
        }
    }

    fn now_unix(&self) -> i64 {
        1_795_708_800
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else {
        return;
    };
    let read_size = usize::from(first % 64) + 1;
    let mut session = SmtpSession::new(SmtpParams {
        require_tls: false,
        hostname: "mx.fuzz.test".into(),
        peer: "192.0.2.1:2525".parse().unwrap(),
        message_size_max: 4096,
        recipients_max: 4,
        errors_max: 8,
        session_id: 1,
        auth: data.len() % 2 == 0,
        submission: data.len() % 3 == 0,
        relay_client: false,
        auth_failures_max: 3,
        starttls: true,
        tls: None,
    });
    let mut out = Vec::new();
    session.greeting(&mut out);
    let mut buf = Vec::new();
    let mut deliveries = 0u32;
    'reads: for read in input.chunks(read_size) {
        buf.extend_from_slice(read);
        loop {
            let (used, event) = session.advance(&buf, &Stub, &mut out);
            assert!(used <= buf.len());
            buf.drain(..used);
            match event {
                SmtpEvent::NeedInput => break,
                SmtpEvent::Deliver(tx) => {
                    // Local recipients, or (authenticated) relayed ones.
                    assert!(!tx.recipients.is_empty() || !tx.relay.is_empty());
                    assert!(tx.relay.is_empty() || tx.authenticated.is_some());
                    assert!(tx.body.starts_with(b"Received: "));
                    deliveries += 1;
                    let outcome = if deliveries % 3 == 0 {
                        DeliveryOutcome::TempFail
                    } else {
                        DeliveryOutcome::Stored
                    };
                    session.delivered(outcome, &mut out);
                    session.recycle_body(tx.body);
                }
                SmtpEvent::Auth { user, .. } => {
                    let r = if user == "ok" {
                        AuthResult::Ok {
                            account: "ok@fuzz.test".into(),
                        }
                    } else {
                        AuthResult::Failed
                    };
                    session.auth_result(r, &mut out);
                }
                SmtpEvent::StartTls => {
                    // The runtime drops what follows STARTTLS in this read.
                    session.starttls_result(StartTlsResult::Ready, &mut out);
                    buf.clear();
                    session.tls_started(TlsInfo {
                        version: "TLSv1.3",
                        cipher: "TLS_AES_128_GCM_SHA256",
                    });
                    break;
                }
                SmtpEvent::Close => {
                    let before = out.len();
                    assert!(matches!(
                        session.advance(b"NOOP\r\n", &Stub, &mut out),
                        (0, SmtpEvent::Close)
                    ));
                    assert_eq!(out.len(), before);
                    break 'reads;
                }
            }
        }
    }
    for line in out.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        assert!(line.len() >= 5 && line.ends_with(b"\r"), "{line:?}");
        assert!(line[..3].iter().all(u8::is_ascii_digit) && (line[3] == b' ' || line[3] == b'-'));
    }
});
