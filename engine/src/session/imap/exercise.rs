//! Arbitrary IMAP command sequences against an in-memory mailbox store,
//! with the invariants a client relies on checked after every command.
//! The `imap_session` fuzz target feeds it fuzzer input; a unit test feeds
//! it pseudo-random input so every `cargo test` runs some of it too.
//!
//! Three sessions of one account (plus deliveries from outside and
//! injected commit failures) take turns. Every command is framed from its
//! bytes given in pieces cut at arbitrary points, parsed, and executed by
//! [`Machine`], exactly as the runtime does it, and the responses are
//! checked against a model of what each client was told:
//!
//! - exactly one tagged response per command, last, and every line (and
//!   literal) complete;
//! - `* n EXISTS` never shrinks what the client has, `* n EXPUNGE` names a
//!   message it has, VANISHED names UIDs it has, a FETCH names a message
//!   it has and a message keeps its UID;
//! - after the command, the client's messages are the session's view, in
//!   the same order, with UIDs strictly ascending;
//! - after NOOP, IDLE or CHECK, the view is exactly the mailbox;
//! - in the store, every mailbox's UIDs ascend and stay below UIDNEXT, no
//!   message's mod-sequence passes HIGHESTMODSEQ, and no quota stays held
//!   once a command is over.
//!
//! Now and then a commit fails (both ways `Store::commit` can), and now and
//! then one waits between writing and durability while another session's
//! command runs, as it does under a group commit.
//!
//! A violation panics, which the fuzzer reports with its input.
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::machine::{Machine, Mailstore, Next};
use super::memory::{Failure, MemStore};
use crate::protocol::imap::{parse_command, Frame, Framer, FramingLimits};

const ACCOUNT: &str = "fuzz@example.test";
const SESSIONS: usize = 3;
const STEPS_MAX: usize = 400;
const MESSAGES_MAX: usize = 2_000;

/// Run a future of the machine on the memory store, which never makes it
/// wait: it must be ready at the first poll.
pub fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a session waited on the in-memory store"),
    }
}

/// Input bytes, read as choices; zero once used up.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }
    fn below(&mut self, n: usize) -> usize {
        self.byte() as usize % n
    }
    fn done(&self) -> bool {
        self.at >= self.data.len()
    }
    fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
        from[self.below(from.len())]
    }
    /// A mailbox name, INBOX half of the time.
    fn mailbox(&mut self) -> &'static str {
        match self.byte() {
            0..=127 => "INBOX",
            _ => self.pick(MAILBOXES),
        }
    }
}

/// What one client was told about its selected mailbox: a UID per
/// message, None until some response named it.
#[derive(Default)]
struct Client {
    seqs: Vec<Option<u32>>,
    tag: u32,
}

const MAILBOXES: &[&str] = &[
    "INBOX",
    "Sent",
    "Trash",
    "A",
    "A/B",
    "\"Entw&APw-rfe\"",
    "\"with space\"",
    "Nope",
];
const FLAGS: &[&str] = &[
    "\\Seen",
    "\\Deleted",
    "\\Flagged \\Deleted",
    "$Junk",
    "\\Answered kw1",
    "",
    "\\Draft kw2 kw3",
];
const ATTRS: &[&str] = &[
    "FLAGS",
    "(UID FLAGS)",
    "(FLAGS MODSEQ)",
    "BODY[]",
    "BODY.PEEK[HEADER.FIELDS (Subject)]",
    "(ENVELOPE BODYSTRUCTURE RFC822.SIZE INTERNALDATE)",
    "(BINARY.PEEK[1] BINARY.SIZE[1])",
    "BODY[1]<0.5>",
    "(EMAILID THREADID)",
    "RFC822",
    "FAST",
];
const SEARCHES: &[&str] = &[
    "ALL",
    "DELETED",
    "UNSEEN",
    "RECENT",
    "SUBJECT hello",
    "BODY text",
    "OR SEEN FLAGGED",
    "MODSEQ 3",
    "RETURN (SAVE) DELETED",
    "RETURN (MIN MAX COUNT) ALL",
    "UID 2:*",
    "NOT KEYWORD kw1",
    "$",
    "LARGER 100",
];

fn set(inp: &mut Input<'_>) -> String {
    let a = inp.below(6) + 1;
    let b = inp.below(8) + 1;
    match inp.below(8) {
        0 => "1:*".into(),
        1 => "*".into(),
        2 => "$".into(),
        3 => format!("{a}:{b}"),
        4 => format!("{a},{b}"),
        5 => format!("{b}:*"),
        _ => a.to_string(),
    }
}

fn message(inp: &mut Input<'_>) -> Vec<u8> {
    let n = inp.byte();
    let subject = ["hello", "Re: hello", "[list] hi", "Fwd: x", ""][n as usize % 5];
    let mut m = format!(
        "From: a@example.test\r\nSubject: {subject}\r\nMessage-ID: <{n}@x>\r\n\
         References: <{}@x>\r\nDate: Mon, 7 Dec 2026 0{}:00:00 +0000\r\n",
        n / 3,
        n % 10
    );
    if n.is_multiple_of(4) {
        m.push_str(
            "MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
             --b\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8gdGV4dA==\r\n\
             --b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nsome=20text=\r\n\r\n--b--\r\n",
        );
    } else if n % 4 == 1 {
        m.push_str("Content-Transfer-Encoding: x-unknown\r\n\r\nbody text\r\n");
    } else {
        m.push_str("\r\nbody text ");
        for _ in 0..inp.below(40) {
            m.push_str("more text ");
        }
        m.push_str("\r\n");
    }
    m.into_bytes()
}

/// One command's bytes.
fn command(inp: &mut Input<'_>, tag: &str, selected: bool) -> Vec<u8> {
    // Most commands need a mailbox selected: a session without one
    // selects one more often than not.
    if !selected && inp.byte() < 160 {
        let how = inp.pick(&["SELECT", "SELECT", "EXAMINE", "SELECT INBOX (CONDSTORE)"]);
        return format!("{tag} {how}\r\n")
            .replace("SELECT\r", "SELECT INBOX\r")
            .replace("EXAMINE\r", "EXAMINE INBOX\r")
            .into_bytes();
    }
    let uid = if inp.byte().is_multiple_of(2) {
        "UID "
    } else {
        ""
    };
    let line = match inp.below(30) {
        0 => "NOOP".to_string(),
        1 | 2 => format!("SELECT {}", inp.mailbox()),
        3 => format!("EXAMINE {}", inp.mailbox()),
        4..=6 => {
            let mbox = inp.mailbox();
            let flags = inp.pick(FLAGS);
            let body = message(inp);
            let mut v =
                format!("{tag} APPEND {mbox} ({flags}) {{{}+}}\r\n", body.len()).into_bytes();
            v.extend_from_slice(&body);
            v.extend_from_slice(b"\r\n");
            return v;
        }
        7..=9 => {
            let s = set(inp);
            let mode = inp.pick(&["+FLAGS", "-FLAGS", "FLAGS", "+FLAGS.SILENT"]);
            let flags = inp.pick(FLAGS);
            let unchanged = if inp.byte().is_multiple_of(5) {
                " (UNCHANGEDSINCE 2)"
            } else {
                ""
            };
            format!("{uid}STORE {s}{unchanged} {mode} ({flags})")
        }
        10 => "EXPUNGE".into(),
        11 => format!("UID EXPUNGE {}", set(inp)),
        12 => format!("{uid}COPY {} {}", set(inp), inp.mailbox()),
        13 => format!("{uid}MOVE {} {}", set(inp), inp.mailbox()),
        14..=16 => format!("{uid}FETCH {} {}", set(inp), inp.pick(ATTRS)),
        17 => format!(
            "UID FETCH {} (FLAGS) (CHANGEDSINCE {} VANISHED)",
            set(inp),
            inp.below(5)
        ),
        18 | 19 => format!("{uid}SEARCH {}", inp.pick(SEARCHES)),
        20 => format!(
            "{uid}{} UTF-8 {}",
            inp.pick(&[
                "SORT (SUBJECT DATE)",
                "SORT (REVERSE ARRIVAL)",
                "THREAD REFERENCES",
                "THREAD ORDEREDSUBJECT"
            ]),
            inp.pick(SEARCHES)
        ),
        21 => format!("CREATE {}", inp.mailbox()),
        22 => format!("DELETE {}", inp.mailbox()),
        23 => format!("RENAME {} {}", inp.mailbox(), inp.mailbox()),
        24 => format!(
            "{} {}",
            inp.pick(&["SUBSCRIBE", "UNSUBSCRIBE"]),
            inp.mailbox()
        ),
        25 => inp
            .pick(&[
                "LIST \"\" *",
                "LSUB \"\" *",
                "LIST (SUBSCRIBED) \"\" * RETURN (STATUS (MESSAGES UIDNEXT SIZE))",
                "STATUS INBOX (MESSAGES UIDNEXT UNSEEN HIGHESTMODSEQ MAILBOXID)",
                "STATUS A (RECENT)",
                "GETQUOTAROOT INBOX",
                "NAMESPACE",
            ])
            .into(),
        26 => inp.pick(&["CLOSE", "UNSELECT", "IDLE", "CHECK"]).into(),
        27 => format!(
            "ENABLE {}",
            inp.pick(&["QRESYNC", "CONDSTORE", "IMAP4rev2", "QRESYNC IMAP4rev2"])
        ),
        28 => format!(
            "SELECT {} (QRESYNC ({} {} 1:{}))",
            inp.mailbox(),
            1_700_000_000 + inp.below(3),
            inp.below(9),
            inp.below(9) + 1
        ),
        // Whatever the input says: parse errors, odd arguments.
        _ => {
            let n = inp.below(24);
            let raw: Vec<u8> = (0..n)
                .map(|_| inp.byte())
                .filter(|b| *b != b'\r' && *b != b'\n' && *b != b'{' && *b != b'~')
                .collect();
            let mut v = format!("{tag} ").into_bytes();
            v.extend_from_slice(&raw);
            v.extend_from_slice(b"\r\n");
            return v;
        }
    };
    format!("{tag} {line}\r\n").into_bytes()
}

/// Frame `bytes` handed over in pieces: the command must be complete at
/// the last byte and not before. None: the framer refused it.
fn framed(inp: &mut Input<'_>, bytes: &[u8]) -> Option<()> {
    let mut framer = Framer::new(FramingLimits::AUTHENTICATED);
    let mut cuts: Vec<usize> = (0..inp.below(4))
        .map(|_| inp.below(bytes.len().max(1)))
        .collect();
    cuts.push(bytes.len());
    cuts.sort_unstable();
    for (i, &cut) in cuts.iter().enumerate() {
        match framer.feed(&bytes[..cut]) {
            Frame::Command(n) => {
                assert_eq!(n, bytes.len(), "command framed early: {bytes:?}");
                assert_eq!(i, cuts.len() - 1);
                return Some(());
            }
            Frame::NeedMore | Frame::Continue { .. } => {}
            Frame::Rejected(_) | Frame::Discard(_) | Frame::Divert { .. } => return None,
        }
    }
    panic!("a whole command was not framed: {bytes:?}");
}

/// With RINGMAIL_EXERCISE_TRACE set, what happens goes to stderr.
fn trace(what: &str) {
    if std::env::var_os("RINGMAIL_EXERCISE_TRACE").is_some() {
        eprint!("{what}");
    }
}

/// Split responses into lines, each literal's octets replaced by nothing;
/// checks that every line ends in CRLF and every literal is whole.
fn lines(out: &[u8]) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut cur = Vec::new();
    let mut at = 0;
    while at < out.len() {
        let end =
            memchr::memmem::find(&out[at..], b"\r\n").expect("a response line without CRLF") + at;
        let line = &out[at..end];
        cur.extend_from_slice(line);
        at = end + 2;
        // A literal announced at the end of the line: `{n}` or `~{n}`.
        if line.ends_with(b"}") {
            if let Some(open) = line.iter().rposition(|&b| b == b'{') {
                if let Ok(n) = std::str::from_utf8(&line[open + 1..line.len() - 1])
                    .unwrap_or("x")
                    .parse::<usize>()
                {
                    assert!(at + n <= out.len(), "literal cut short");
                    at += n;
                    continue;
                }
            }
        }
        v.push(std::mem::take(&mut cur));
    }
    assert!(cur.is_empty());
    v
}

fn number(b: &[u8]) -> Option<u32> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// UIDs of a `uid-set` (`3,5:7`).
fn uid_set(b: &[u8]) -> Vec<u32> {
    let mut v = Vec::new();
    for part in b.split(|&c| c == b',') {
        let mut ends = part.split(|&c| c == b':');
        let a = ends.next().and_then(number).expect("a UID");
        let z = ends.next().map_or(Some(a), number).expect("a UID");
        v.extend(a.min(z)..=a.max(z));
    }
    v
}

impl Client {
    /// A message whose UID the client has not learned that may be `uid`:
    /// UIDs ascend, so it lies between a smaller known UID and a larger
    /// one. (All such messages sit in one run, and are alike to the model.)
    fn unknown_slot(&self, uid: u32) -> Option<usize> {
        (0..self.seqs.len()).find(|&i| {
            self.seqs[i].is_none()
                && self.seqs[..i].iter().flatten().all(|k| *k < uid)
                && self.seqs[i..].iter().flatten().all(|k| *k > uid)
        })
    }

    /// Follow one untagged response.
    fn untagged(&mut self, line: &[u8]) {
        let words: Vec<&[u8]> = line.splitn(4, |&b| b == b' ').collect();
        match words.as_slice() {
            [_, n, w, ..] if w.eq_ignore_ascii_case(b"EXISTS") => {
                let n = number(n).expect("EXISTS count") as usize;
                assert!(
                    n >= self.seqs.len(),
                    "EXISTS shrank: {n} < {}",
                    self.seqs.len()
                );
                self.seqs.resize(n, None);
            }
            [_, n, w, ..] if w.eq_ignore_ascii_case(b"EXPUNGE") => {
                let n = number(n).expect("EXPUNGE number") as usize;
                assert!(
                    n >= 1 && n <= self.seqs.len(),
                    "EXPUNGE {n} of {}",
                    self.seqs.len()
                );
                self.seqs.remove(n - 1);
            }
            [_, w, rest @ ..] if w.eq_ignore_ascii_case(b"VANISHED") => {
                if rest.first().is_some_and(|r| r.starts_with(b"(EARLIER)")) {
                    return;
                }
                let set = rest.join(&b' ');
                for uid in uid_set(&set) {
                    let at = self.seqs.iter().position(|u| *u == Some(uid));
                    let at = at.or_else(|| self.unknown_slot(uid));
                    let at =
                        at.unwrap_or_else(|| panic!("VANISHED {uid}, not a message of the client"));
                    self.seqs.remove(at);
                }
            }
            [_, n, w, rest @ ..] if w.eq_ignore_ascii_case(b"FETCH") => {
                let n = number(n).expect("FETCH number") as usize;
                assert!(
                    n >= 1 && n <= self.seqs.len(),
                    "FETCH {n} of {}",
                    self.seqs.len()
                );
                let rest = rest.join(&b' ');
                if let Some(p) = memchr::memmem::find(&rest, b"UID ") {
                    let digits: Vec<u8> = rest[p + 4..]
                        .iter()
                        .take_while(|b| b.is_ascii_digit())
                        .copied()
                        .collect();
                    let uid = number(&digits).expect("FETCH UID");
                    if let Some(known) = self.seqs[n - 1] {
                        assert_eq!(known, uid, "message {n} changed its UID");
                    }
                    self.seqs[n - 1] = Some(uid);
                }
            }
            _ => {}
        }
    }
}

/// Run the sessions on `data`. Panics where an invariant breaks.
pub fn run(data: &[u8]) {
    let mut store = MemStore::new();
    // Low enough that the limits are reached.
    store.limits.mailboxes_max = 9;
    store.limits.subscriptions_max = 4;
    let store = Rc::new(store);
    store.add_account(ACCOUNT);
    let mut inp = Input { data, at: 0 };
    if inp.byte().is_multiple_of(4) {
        store.set_quota(ACCOUNT, Some(4096 + 512 * inp.below(16) as u64));
    }
    let mut sessions: Vec<(Machine<MemStore>, Client)> = (0..SESSIONS)
        .map(|_| {
            (
                Machine::new(store.clone(), Some(ACCOUNT.into())),
                Client::default(),
            )
        })
        .collect();
    for _ in 0..STEPS_MAX {
        // COPY 1:* doubles a mailbox: a run stops before time does.
        let messages = store
            .with_account(ACCOUNT, |a| {
                a.mailboxes.iter().map(|m| m.messages.len()).sum::<usize>()
            })
            .unwrap_or(0);
        if inp.done() || messages > MESSAGES_MAX {
            break;
        }
        // Mostly commands; now and then a delivery, a commit that will
        // fail, or a second passing.
        let who = match inp.below(32) {
            0..=1 => {
                let body = message(&mut inp);
                let uid = store.deliver(ACCOUNT, &body);
                trace(&format!("delivered: UID {uid:?}\n"));
                continue;
            }
            2 => {
                let how = if inp.byte().is_multiple_of(2) {
                    Failure::NoRoom
                } else {
                    Failure::AfterWrite
                };
                store.fail_next(how);
                trace(&format!("next commit fails: {how:?}\n"));
                continue;
            }
            3 => {
                store.advance(1);
                continue;
            }
            n => n % SESSIONS,
        };
        // One time in eight, another session's command runs while this
        // one's commit waits for its sync.
        let other = inp
            .byte()
            .is_multiple_of(8)
            .then(|| (who + 1 + inp.below(SESSIONS - 1)) % SESSIONS);
        let Some(first) = prepare(&mut inp, &mut sessions[who]) else {
            continue;
        };
        let second = other.and_then(|o| prepare(&mut inp, &mut sessions[o]).map(|c| (o, c)));
        let first_cmd = parse_command(&first.bytes).expect("parsed before");
        match &second {
            None => {
                let next = ready(sessions[who].0.execute(first_cmd, None));
                finish(&store, &mut sessions[who], &first, next);
            }
            Some((o, c)) => {
                let second_cmd = parse_command(&c.bytes).expect("parsed before");
                trace(&format!("{who} may wait for its commit while {o} runs\n"));
                let (a, b) = two(&mut sessions, who, *o);
                store.yield_next();
                let (next, second_done) = {
                    let mut waiting = pin!(a.0.execute(first_cmd, None));
                    let mut cx = Context::from_waker(Waker::noop());
                    match waiting.as_mut().poll(&mut cx) {
                        // It did not wait (no commit): it is over before
                        // the other starts.
                        Poll::Ready(n) => (n, false),
                        Poll::Pending => {
                            store.no_yield();
                            let second_next = ready(b.0.execute(second_cmd.clone(), None));
                            finish(&store, b, c, second_next);
                            (ready(waiting), true)
                        }
                    }
                };
                store.no_yield();
                finish(&store, a, &first, next);
                if !second_done {
                    let second_next = ready(b.0.execute(second_cmd, None));
                    finish(&store, b, c, second_next);
                }
            }
        }
        // Every quota hold is given back when its command is over.
        assert!(
            store.quota_reserved().borrow().is_empty(),
            "quota left held"
        );
        check_store(&store);
    }
}

/// A command ready to run: its bytes (framed and parsed once already).
struct Prepared {
    bytes: Vec<u8>,
    tag: String,
    selecting: bool,
    noop: bool,
}

fn prepare(inp: &mut Input<'_>, (m, client): &mut (Machine<MemStore>, Client)) -> Option<Prepared> {
    client.tag += 1;
    let tag = format!("t{}", client.tag);
    let bytes = command(inp, &tag, m.sel.is_some());
    framed(inp, &bytes)?;
    let cmd = parse_command(&bytes).ok()?;
    use crate::protocol::imap::CommandBody as B;
    let selecting = matches!(cmd.body, B::Select { .. } | B::Examine { .. });
    let noop = matches!(cmd.body, B::Noop | B::Check | B::Idle);
    Some(Prepared {
        tag,
        selecting,
        noop,
        bytes,
    })
}

/// Two different elements of a slice, both mutable.
fn two<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert_ne!(a, b);
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &mut y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &mut x[b])
    }
}

/// Complete a command as the runtime would, and check what its client got.
fn finish(
    store: &Rc<MemStore>,
    (m, client): &mut (Machine<MemStore>, Client),
    c: &Prepared,
    next: Next,
) {
    let mut bye = false;
    match &next {
        Next::Idle(t) => {
            m.sync(true);
            if m.take_bye() {
                bye = true;
            } else {
                m.ok(t, "IDLE terminated");
            }
        }
        // The raw branch can say COMPRESS DEFLATE: the runtime would
        // answer and start deflating; the session's state is the same.
        Next::Compress(t) => {
            m.compressed = true;
            m.ok(t, "DEFLATE active");
        }
        Next::Continue | Next::Close => {}
        other => panic!("unexpected effect {other:?}"),
    }
    check(m, client, c);
    if next == Next::Close || bye {
        *m = Machine::new(store.clone(), Some(ACCOUNT.into()));
        *client = Client::default();
    }
}

fn check(m: &mut Machine<MemStore>, client: &mut Client, c: &Prepared) {
    let (tag, selecting, cmd) = (&c.tag, c.selecting, &c.bytes);
    let out = m.out.take_bytes();
    trace(&format!(
        "C: {}S: {}",
        String::from_utf8_lossy(cmd),
        String::from_utf8_lossy(&out)
    ));
    let lines = lines(&out);
    let last = lines.last().expect("no response");
    // The selected mailbox was deleted meanwhile: the session ends with
    // BYE, and nothing follows it.
    if last.starts_with(b"* BYE ") {
        assert!(m.sel.is_none(), "BYE while a mailbox is still selected");
        for line in &lines[..lines.len() - 1] {
            client.untagged(line);
        }
        return;
    }
    let mut words = last.splitn(3, |&b| b == b' ');
    assert_eq!(
        words.next(),
        Some(tag.as_bytes()),
        "last line not tagged: {:?}",
        String::from_utf8_lossy(last)
    );
    let status = words.next().unwrap_or_default();
    assert!(
        [&b"OK"[..], b"NO", b"BAD"].contains(&status),
        "tagged status {:?}",
        String::from_utf8_lossy(status)
    );
    // A SELECT that is not refused as BAD leaves the old mailbox, whether
    // or not the new one opens (RFC 3501 6.3.1).
    if selecting && status != b"BAD" {
        client.seqs.clear();
    }
    for line in &lines[..lines.len() - 1] {
        if line.starts_with(b"* OK [CLOSED]") {
            client.seqs.clear();
            continue;
        }
        assert!(
            line.starts_with(b"* ") || line.starts_with(b"+ "),
            "tagged line before the end: {:?}",
            String::from_utf8_lossy(line)
        );
        client.untagged(line);
    }
    match &m.sel {
        Some(sel) => {
            let uids = &sel.view.uids;
            assert!(
                uids.windows(2).all(|w| w[0] < w[1]),
                "view UIDs not ascending"
            );
            assert_eq!(
                client.seqs.len(),
                uids.len(),
                "client and view disagree on the count"
            );
            for (i, (c, v)) in client.seqs.iter_mut().zip(uids.iter()).enumerate() {
                match c {
                    Some(u) => assert_eq!(
                        *u,
                        *v,
                        "message {} has UID {u} for the client, {v} in the view",
                        i + 1
                    ),
                    // As a client would learn it with FETCH UID.
                    None => *c = Some(*v),
                }
            }
        }
        None => client.seqs.clear(),
    }
    // After a NOOP (or IDLE) the client knows the mailbox as it is.
    if let (true, b"OK", Some(sel)) = (c.noop, status, &m.sel) {
        let stored = m
            .store
            .with_account(ACCOUNT, |a| {
                a.mailbox(sel.id)
                    .map(|mb| mb.messages.iter().map(|e| e.uid).collect::<Vec<u32>>())
            })
            .flatten();
        assert_eq!(
            stored.as_ref(),
            Some(&sel.view.uids),
            "view after NOOP is not the mailbox"
        );
    }
}

fn check_store(store: &MemStore) {
    store.with_account(ACCOUNT, |a| {
        for m in &a.mailboxes {
            assert!(
                m.messages.windows(2).all(|w| w[0].uid < w[1].uid),
                "mailbox UIDs not ascending"
            );
            assert!(
                m.messages.iter().all(|e| e.uid < m.uidnext && e.uid > 0),
                "UID at or past UIDNEXT"
            );
            assert!(
                m.messages.iter().all(|e| e.modseq <= m.highest_modseq),
                "MODSEQ above HIGHESTMODSEQ"
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the files named in RINGMAIL_EXERCISE_REPLAY (fuzz
    /// artifacts, colon-separated); nothing without it.
    #[test]
    fn replay_named_inputs() {
        let Some(files) = std::env::var_os("RINGMAIL_EXERCISE_REPLAY") else {
            return;
        };
        for f in std::env::split_paths(&files) {
            run(&std::fs::read(&f).expect("readable input"));
        }
    }

    /// A few thousand pseudo-random runs (the fuzz target runs many more).
    #[test]
    fn random_sessions_keep_the_invariants() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..1000 {
            let data: Vec<u8> = (0..600)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 24) as u8
                })
                .collect();
            run(&data);
        }
    }
}
