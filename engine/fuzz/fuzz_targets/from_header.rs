//! The sender-ownership check an authenticated submission passes at the end
//! of data (`runtime::smtp::from_header_allowed`: every From: mailbox must
//! belong to the account) and the choice of DKIM signing domain
//! (`runtime::smtp::signing_domain`), over hostile headers. The context
//! resolves addresses through a real `accounts::Directory` the way the
//! server's does (local domains, aliases, `+detail`, catch-all).
//!
//! Invariants checked, beyond "no panic":
//! - the check is deterministic, and an accepted message only had
//!   `local@domain` strings without line ends checked;
//! - a foreign From: field put in front of the message is always refused,
//!   and the account's own From: field put in front never changes the
//!   verdict (later fields cannot rescue or spoil the first);
//! - when the message is accepted, every From: address mail-auth finds (the
//!   view a DMARC verifier downstream has) belongs to the account too;
//! - the signing domain of an accepted message is one of ours.
#![no_main]

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use libfuzzer_sys::fuzz_target;
use ringmail::accounts::{Directory, Lookup};
use ringmail::runtime::smtp::{from_header_allowed, signing_domain};
use ringmail::session::smtp::{RcptVerdict, SmtpContext};

const LOCAL: [&str; 2] = ["example.test", "other.test"];
const ACCOUNT: &str = "alice@example.test";

struct Ctx {
    directory: Directory,
    asked: RefCell<Vec<String>>,
}

impl SmtpContext for Ctx {
    fn recipient(&self, address: &str) -> RcptVerdict {
        let Some((_, domain)) = address.rsplit_once('@') else {
            return RcptVerdict::UnknownUser;
        };
        let domain = domain.trim_end_matches('.');
        if !LOCAL.iter().any(|d| d.eq_ignore_ascii_case(domain)) {
            return RcptVerdict::NotLocal;
        }
        match self.directory.resolve(address) {
            Lookup::Account(account) => RcptVerdict::Local { account },
            Lookup::Unknown => RcptVerdict::UnknownUser,
        }
    }

    fn now_unix(&self) -> i64 {
        1_795_708_800
    }

    fn may_send_as(&self, account: &str, address: &str) -> bool {
        self.asked.borrow_mut().push(address.to_string());
        matches!(self.recipient(address), RcptVerdict::Local { account: owner } if owner.eq_ignore_ascii_case(account))
    }
}

fn ctx() -> Ctx {
    let accounts: HashMap<String, String> =
        ["alice@example.test", "bob@example.test", "carol@other.test"]
            .into_iter()
            .map(|a| (a.to_string(), String::new()))
            .collect();
    let aliases: BTreeMap<String, String> = [
        ("sales@example.test", "alice@example.test"),
        ("@other.test", "carol@other.test"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    Ctx {
        directory: Directory::new(accounts, &aliases),
        asked: RefCell::new(Vec::new()),
    }
}

fuzz_target!(|input: &[u8]| {
    let ctx = ctx();
    let allowed = from_header_allowed(&ctx, ACCOUNT, input);
    // ringmail's own parse unfolds; mail-auth's view may keep line ends or
    // lack an '@', but then the address is never the account's.
    for a in ctx.asked.borrow().iter().filter(|_| allowed) {
        assert!(
            a.contains('@') && !a.contains('\r') && !a.contains('\n'),
            "{a:?}"
        );
    }
    assert_eq!(from_header_allowed(&ctx, ACCOUNT, input), allowed);

    // A field in front: only when the input does not start with folding
    // whitespace, which would continue the field put in front.
    if !matches!(input.first(), Some(b' ' | b'\t')) {
        let mut foreign = b"From: mallory@elsewhere.test\r\n".to_vec();
        foreign.extend_from_slice(input);
        assert!(
            !from_header_allowed(&ctx, ACCOUNT, &foreign),
            "a foreign From: slipped through"
        );
        let mut own = b"From: Alice <alice@example.test>\r\n".to_vec();
        own.extend_from_slice(input);
        assert_eq!(from_header_allowed(&ctx, ACCOUNT, &own), allowed);
    }

    if !allowed {
        return;
    }
    let domain = signing_domain(input, ACCOUNT).expect("the reverse path has a domain");
    assert!(
        LOCAL.contains(&domain.trim_end_matches('.')),
        "an accepted message is signed for {domain:?}"
    );
    if let Some(msg) = mail_auth::AuthenticatedMessage::parse(input) {
        for from in &msg.from {
            assert!(
                ctx.may_send_as(ACCOUNT, from),
                "accepted, but a DMARC verifier sees From: {from:?}"
            );
        }
    }
});
