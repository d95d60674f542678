//! Hostile messages and DNS records through the DKIM code ringmail runs:
//! mail-auth's message parser (`AuthenticatedMessage::parse`, which parses
//! every DKIM-Signature field), its DKIM-Signature and key-record parsers,
//! and ringmail's own signer (`dkim::Keys::sign`, used for relayed mail).
//!
//! Invariants checked, beyond "no panic":
//! - the parsed message's header fields and body offset lie inside the input,
//!   and every DKIM-Signature field ringmail's header parser finds is either
//!   a parsed signature or a recorded error in mail-auth's view;
//! - whatever ringmail signs verifies: the message with ringmail's
//!   DKIM-Signature prepended passes mail-auth's verifier against the key's
//!   published record (served from a cache, no network), and the signature
//!   names the domain and selector of the key.
#![no_main]

use std::sync::OnceLock;
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::dkim::Signature;
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use ringmail::dkim::{self, Algorithm, Keys};
use ringmail::mime::header;

const DOMAIN: &str = "example.test";
const SELECTOR: &str = "fz";

struct Fixture {
    keys: Keys,
    record: Txt,
    runtime: tokio::runtime::Runtime,
    authenticator: MessageAuthenticator,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ringmail-fuzz-dkim-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (_, record) =
            dkim::generate(&dir, DOMAIN, SELECTOR, Algorithm::Ed25519).expect("key generation");
        let keys = Keys::load(&dir).expect("key loads");
        let _ = std::fs::remove_dir_all(&dir);
        let key = DomainKey::parse(record.as_bytes()).expect("ringmail's own record parses");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        // Never queried: the cache below answers every TXT lookup.
        let authenticator = runtime
            .block_on(async { MessageAuthenticator::new_cloudflare() })
            .expect("resolver");
        Fixture {
            keys,
            record: Txt::from(key),
            runtime,
            authenticator,
        }
    })
}

/// Answers every TXT lookup with the fixture's key record.
struct OneRecord(Txt);

impl ResolverCache<Box<str>, Txt> for OneRecord {
    fn get<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        Some(self.0.clone())
    }
    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ?Sized,
    {
        None
    }
    fn insert(&self, _: Box<str>, _: Txt, _: Instant) {}
}

/// `inner` borrows from `outer` (an empty slice may point anywhere).
fn inside(outer: &[u8], inner: &[u8]) -> bool {
    if inner.is_empty() {
        return true;
    }
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    i >= o && i + inner.len() <= o + outer.len()
}

fuzz_target!(|input: &[u8]| {
    let f = fixture();

    // The input as a DKIM key / reporting record (what a hostile DNS answer holds).
    let _ = DomainKey::parse(input);
    let _ = mail_auth::dkim::DomainKeyReport::parse(input);
    let _ = mail_auth::dkim::Atps::parse(input);
    let _ = mail_auth::dmarc::Dmarc::parse(input);

    // The input as a message.
    if let Some(msg) = AuthenticatedMessage::parse(input) {
        assert!(msg.body_offset as usize <= input.len());
        for (name, value) in &msg.headers {
            assert!(inside(input, name) && inside(input, value));
        }
        for h in &msg.dkim_headers {
            assert!(inside(input, h.name) && inside(input, h.value));
            assert!(msg
                .body_hashes
                .iter()
                .any(|(c, _, l, _)| *c == h.header.cb && *l == h.header.l));
        }
    }

    // Every DKIM-Signature field as ringmail's header parser sees it. (No
    // round trip through `Signature::to_header`: for a parsed signature it
    // writes the decoded b=/bh= octets raw and panics on non-UTF-8; ringmail
    // only writes signatures it made.)
    let (head, _) = header::split(input);
    for value in header::field_values(head, b"DKIM-Signature") {
        if let Ok(sig) = Signature::parse(value) {
            assert!(sig.l <= input.len() as u64 || sig.l > 0);
        }
    }

    // ringmail's signer, then mail-auth's verifier.
    // The runtime signs the queued copy, which starts with its own
    // Received: field; an input starting with folding whitespace would
    // otherwise continue the DKIM-Signature field put in front of it.
    let mut queued = b"Received: from client.test by mx.example.test; 6 Dec 2026\r\n".to_vec();
    queued.extend_from_slice(input);
    let input = &queued[..];
    let Ok(signature) = f.keys.sign(DOMAIN, input) else {
        return;
    };
    assert!(signature.starts_with(b"DKIM-Signature:") && signature.ends_with(b"\r\n"));
    let mut signed = signature.clone();
    signed.extend_from_slice(input);
    let Some(msg) = AuthenticatedMessage::parse(&signed) else {
        panic!("a signed message does not parse");
    };
    let ours = msg
        .dkim_headers
        .first()
        .expect("our signature is found first");
    assert_eq!(
        (ours.header.d.as_str(), ours.header.s.as_str()),
        (DOMAIN, SELECTOR)
    );
    let cache = OneRecord(f.record.clone());
    let results = f.runtime.block_on(
        f.authenticator
            .verify_dkim(Parameters::new(&msg).with_txt_cache(&cache)),
    );
    let first = results
        .iter()
        .find(|r| {
            r.signature()
                .is_some_and(|s| s.s == SELECTOR && s.d == DOMAIN)
        })
        .expect("a result for our signature");
    assert!(
        matches!(first.result(), DkimResult::Pass),
        "ringmail's signature does not verify: {:?}",
        first.result()
    );
});
