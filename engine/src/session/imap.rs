//! IMAP session logic that needs no I/O: a session's view of its selected
//! mailbox (sequence numbers, what the client has been told), flag
//! conversions, LIST pattern matching and SEARCH evaluation. The runtime
//! (`runtime/imap.rs`) owns the connection and the store and calls these.
//!
//! RFC 3501 state diagram (section 3):
//!
//! ```text
//!  connect -> Not Authenticated --LOGIN/AUTHENTICATE--> Authenticated
//!  Authenticated --SELECT/EXAMINE--> Selected --CLOSE/UNSELECT--> Authenticated
//!  any state --LOGOUT--> Logout (connection closed)
//! ```
pub mod exercise;
pub mod machine;
pub mod memory;

use std::collections::HashSet;

use super::mailboxes::shown;
use crate::mime;
use crate::protocol::imap::encode::{self, FetchWriter};
use crate::protocol::imap::{
    Code, Flag, Qresync, SearchKey, SearchReturn, SequenceArg, SequenceSet, Status,
};
use crate::storage::index::{flag, Mailbox, MessageEntry};

/// Hierarchy delimiter of mailbox names.
pub const DELIMITER: u8 = b'/';
/// Keywords per mailbox (one bit each in the index).
pub const KEYWORDS_MAX: usize = 64;
/// Longest keyword a client may create, in octets (Dovecot's default
/// `mail_max_keyword_length`); every FLAGS response carries them all.
pub const KEYWORD_LEN_MAX: usize = 50;

/// System flags of a flag list, and the keyword names in it.
pub fn split_flags<'a>(flags: &'a [Flag<'a>]) -> (u32, Vec<&'a [u8]>) {
    let mut sys = 0;
    let mut kws = Vec::new();
    for f in flags {
        match f {
            Flag::Seen => sys |= flag::SEEN,
            Flag::Answered => sys |= flag::ANSWERED,
            Flag::Flagged => sys |= flag::FLAGGED,
            Flag::Deleted => sys |= flag::DELETED,
            Flag::Draft => sys |= flag::DRAFT,
            Flag::Keyword(k) => kws.push(*k),
            // \Recent cannot be stored (RFC 3501 6.4.6); unknown \Extensions are ignored.
            Flag::Recent | Flag::MayCreate | Flag::Extension(_) => {}
        }
    }
    (sys, kws)
}

/// The flag list of a message as IMAP flags.
pub fn flag_list<'a>(
    flags: u32,
    keywords: u64,
    names: &'a [String],
    recent: bool,
) -> Vec<Flag<'a>> {
    let mut out = Vec::new();
    for (bit, f) in [
        (flag::SEEN, Flag::Seen),
        (flag::ANSWERED, Flag::Answered),
        (flag::FLAGGED, Flag::Flagged),
        (flag::DELETED, Flag::Deleted),
        (flag::DRAFT, Flag::Draft),
    ] {
        if flags & bit != 0 {
            out.push(f);
        }
    }
    if recent {
        out.push(Flag::Recent);
    }
    for (i, name) in names.iter().enumerate() {
        if keywords & (1 << i) != 0 && !name.is_empty() {
            out.push(Flag::Keyword(name.as_bytes()));
        }
    }
    out
}

/// Bits of the keywords named, among those the mailbox knows (unknown names give no bit).
pub fn keyword_mask(names: &[String], wanted: &[&[u8]]) -> u64 {
    let mut m = 0;
    for w in wanted {
        if let Some(i) = names
            .iter()
            .position(|n| n.as_bytes().eq_ignore_ascii_case(w))
        {
            m |= 1 << i;
        }
    }
    m
}

/// LIST wildcard match (RFC 3501 6.3.8): `*` matches anything, `%` anything
/// but the hierarchy delimiter. INBOX matches case-insensitively.
pub fn list_match(pattern: &[u8], name: &[u8]) -> bool {
    if name.eq_ignore_ascii_case(b"INBOX") && pattern.eq_ignore_ascii_case(b"INBOX") {
        return true;
    }
    fn rec(p: &[u8], n: &[u8], budget: &mut u32) -> bool {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| rec(&p[1..], &n[i..], budget)),
            Some(b'%') => {
                let limit = n.iter().position(|&b| b == DELIMITER).unwrap_or(n.len());
                (0..=limit).any(|i| rec(&p[1..], &n[i..], budget))
            }
            Some(c) => n.first() == Some(c) && rec(&p[1..], &n[1..], budget),
        }
    }
    // Bounded work: pathological patterns ("*%*%*...") cannot spin.
    let mut budget = 100_000;
    let name_cmp: Vec<u8>;
    let n = if name.len() >= 5
        && name[..5].eq_ignore_ascii_case(b"INBOX")
        && pattern.len() >= 5
        && pattern[..5].eq_ignore_ascii_case(b"INBOX")
    {
        name_cmp = [&pattern[..5], &name[5..]].concat();
        &name_cmp[..]
    } else {
        name
    };
    rec(pattern, n, &mut budget)
}

/// LSUB matching (RFC 3501 6.3.9): subscribed names matching `pattern`,
/// each with `false`, plus superiors of subscribed names that match
/// `pattern` themselves without being subscribed (the `%` case: "foo" for a
/// subscribed "foo/bar"), each with `true` (to be flagged \Noselect). In
/// subscription order, each name once.
pub fn lsub_matches(pattern: &[u8], subs: &[String]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    let subscribed = |n: &str| subs.iter().any(|s| s == n);
    for s in subs {
        if list_match(pattern, s.as_bytes()) {
            if !out.iter().any(|(n, _)| n == s) {
                out.push((s.clone(), false));
            }
            continue;
        }
        for (i, _) in s.match_indices(DELIMITER as char) {
            let parent = &s[..i];
            if !subscribed(parent)
                && list_match(pattern, parent.as_bytes())
                && !out.iter().any(|(n, _)| n == parent)
            {
                out.push((parent.to_string(), true));
            }
        }
    }
    out
}

/// What a session has told its client about the selected mailbox: the
/// UIDs in sequence order (4 octets per message) and how far its flag
/// changes were reported. Flags themselves are read from the index: a
/// message's FETCH FLAGS is owed when its mod-sequence is above the
/// watermark and the session did not report that change itself.
#[derive(Clone, Debug, Default)]
pub struct View {
    /// UIDs in sequence-number order (sequence number = index + 1).
    pub uids: Vec<u32>,
    /// Every change with a mod-sequence up to this was reported (the
    /// highest mod-sequence of the mailbox's entries at the last sync; flag
    /// changes are applied when written, in mod-sequence order, so nothing
    /// at or below it can still appear).
    told_modseq: u64,
    /// Changes above `told_modseq` the session reported itself (its STORE,
    /// a FETCH that set \Seen): UID -> the mod-sequence reported.
    told: std::collections::HashMap<u32, u64>,
    /// UIDs that are \Recent in this session.
    pub recent: HashSet<u32>,
    /// Keyword names the client has been sent in FLAGS.
    pub keywords_told: usize,
    /// The mailbox as the last sync saw it (see [`View::sync`]), and
    /// whether that sync applied expunges.
    seen: Option<Fingerprint>,
    seen_full: bool,
}

/// What changes when anything a sync reports changes: HIGHESTMODSEQ (every
/// flag change, expunge and new message takes a mod-sequence when written),
/// the number of entries and the last UID (messages and expunges become
/// entries when durable, later), and the keyword count.
type Fingerprint = (u64, usize, u32, usize);

/// Untagged updates produced by [`View::sync`].
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    /// Sequence numbers to announce as EXPUNGE, in the order to send them.
    pub expunged: Vec<u32>,
    /// The UIDs of those messages (for QRESYNC's VANISHED, RFC 7162 3.2.10).
    pub expunged_uids: Vec<u32>,
    /// New EXISTS count, if it changed.
    pub exists: Option<u32>,
    /// New RECENT count, if new messages arrived.
    pub recent: Option<u32>,
    /// Sequence numbers whose flags changed.
    pub flags: Vec<u32>,
    /// The mailbox has keywords the client hasn't seen in FLAGS.
    pub new_keywords: bool,
    /// UIDs expunged from the mailbox that the view keeps because
    /// expunges may not be sent now.
    pub held: Vec<u32>,
}

impl View {
    pub fn seq_of(&self, uid: u32) -> Option<u32> {
        self.uids.binary_search(&uid).ok().map(|i| i as u32 + 1)
    }

    pub fn len(&self) -> u32 {
        self.uids.len() as u32
    }

    pub fn is_empty(&self) -> bool {
        self.uids.is_empty()
    }

    pub fn max_uid(&self) -> u32 {
        self.uids.last().copied().unwrap_or(0)
    }

    /// Is a FETCH FLAGS for this message owed to the client?
    pub fn untold(&self, e: &MessageEntry) -> bool {
        e.modseq > self.told_modseq && self.told.get(&e.uid) != Some(&e.modseq)
    }

    /// The client was just sent this message's flags (or asked not to be,
    /// with .SILENT): the next sync owes nothing for this change.
    pub fn told_now(&mut self, e: &MessageEntry) {
        if e.modseq > self.told_modseq {
            self.told.insert(e.uid, e.modseq);
        }
    }

    /// Bring the view up to date with the mailbox. Expunges are only applied
    /// when `allow_expunge` (RFC 3501 7.4.1: never while answering FETCH,
    /// STORE or SEARCH); new messages are claimed as recent when above
    /// `recent_floor` (the highest UID another session already saw as recent),
    /// and the new floor is returned in `recent_floor`. One merge pass over
    /// the view and the mailbox (both in UID order).
    pub fn sync(
        &mut self,
        mailbox: &Mailbox,
        allow_expunge: bool,
        recent_floor: &mut u32,
    ) -> Changes {
        let mut ch = Changes::default();
        let msgs = &mailbox.messages;
        // Nothing changed since the last sync (and nothing it held back is
        // now allowed): no work, whatever the mailbox's size. NOOP, IDLE
        // and every command start with a sync.
        let fingerprint = (
            mailbox.highest_modseq,
            msgs.len(),
            msgs.last().map_or(0, |e| e.uid),
            mailbox.keywords.len(),
        );
        if self.seen == Some(fingerprint) && (self.seen_full || !allow_expunge) {
            return ch;
        }
        self.seen = Some(fingerprint);
        self.seen_full = allow_expunge;
        if allow_expunge {
            // Highest sequence numbers first: each EXPUNGE then refers to the
            // numbering the client has right before it, which for a message
            // above every other one removed is its index + 1.
            let mut gone = Vec::new();
            let mut p = 0;
            for (i, &uid) in self.uids.iter().enumerate() {
                p += msgs[p..].partition_point(|e| e.uid < uid);
                if msgs.get(p).is_none_or(|e| e.uid != uid) {
                    gone.push(i);
                }
            }
            for &i in gone.iter().rev() {
                let uid = self.uids[i];
                ch.expunged_uids.push(uid);
                ch.expunged.push(i as u32 + 1);
                self.recent.remove(&uid);
            }
            if !gone.is_empty() {
                let mut k = 0;
                self.uids.retain(|_| {
                    let keep = gone.binary_search(&k).is_err();
                    k += 1;
                    keep
                });
            }
        }
        let mut p = 0;
        for (i, &uid) in self.uids.iter().enumerate() {
            p += msgs[p..].partition_point(|e| e.uid < uid);
            match msgs.get(p).filter(|e| e.uid == uid) {
                Some(e) if self.untold(e) => ch.flags.push(i as u32 + 1),
                Some(_) => {}
                None => ch.held.push(uid),
            }
        }
        let max = self.max_uid();
        let start = msgs.partition_point(|e| e.uid <= max);
        let mut added = false;
        for e in &msgs[start..] {
            self.uids.push(e.uid);
            if e.uid > *recent_floor {
                self.recent.insert(e.uid);
            }
            added = true;
        }
        let watermark = msgs.iter().map(|e| e.modseq).max().unwrap_or(0);
        self.told_modseq = self.told_modseq.max(watermark);
        self.told.clear();
        if added {
            *recent_floor = (*recent_floor).max(self.max_uid());
            ch.exists = Some(self.len());
            ch.recent = Some(self.recent.len() as u32);
        }
        ch.new_keywords = self.take_new_keywords(mailbox);
        ch
    }

    /// Whether the mailbox has keywords this client was not sent in FLAGS
    /// yet; they count as sent from now on, so the caller must send FLAGS
    /// (and PERMANENTFLAGS) now, before any FETCH FLAGS that could carry
    /// one (RFC 3501 7.2.6: the FLAGS response names every flag in use).
    /// Keywords get their bit when another session's STORE, APPEND or COPY
    /// is written, so one may appear while this session waits for its own
    /// commit; every path that writes FETCH FLAGS asks here first.
    pub fn take_new_keywords(&mut self, mailbox: &Mailbox) -> bool {
        if mailbox.keywords.len() > self.keywords_told {
            self.keywords_told = mailbox.keywords.len();
            true
        } else {
            false
        }
    }

    /// Resolve a sequence set (by sequence number or UID) to view indexes.
    /// Following RFC 3501 6.4.8, UIDs that don't exist are ignored, and `*`
    /// means the largest number in use.
    pub fn resolve(&self, set: &SequenceSet, uid: bool) -> Vec<usize> {
        if self.uids.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        if uid {
            let largest = self.max_uid();
            for (lo, hi) in set.normalized(largest) {
                let start = self.uids.partition_point(|&u| u < lo);
                let end = self.uids.partition_point(|&u| u <= hi);
                out.extend(start..end);
            }
        } else {
            for (lo, hi) in set.normalized(self.len()) {
                let hi = hi.min(self.len());
                if lo >= 1 && lo <= hi {
                    out.extend((lo - 1) as usize..hi as usize);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// A sequence set must name existing messages (sequence numbers only).
    pub fn valid_seqs(&self, set: &SequenceSet) -> bool {
        set.ranges.iter().all(|r| {
            let (a, b) = r.bounds(self.len().max(1));
            a >= 1 && b <= self.len().max(1)
        })
    }
}

/// The number of messages with \Recent for STATUS (RFC 3501 6.3.10): those
/// above `floor` (no session has claimed them yet, so the next one to select
/// the mailbox will) plus, for the session that has the mailbox selected,
/// its own recent messages that still exist.
pub fn recent_count(mailbox: &Mailbox, floor: u32, own: Option<&HashSet<u32>>) -> u64 {
    let unclaimed = mailbox.messages.len() - mailbox.messages.partition_point(|e| e.uid <= floor);
    let mine = own.map_or(0, |r| {
        r.iter()
            .filter(|u| **u <= floor && mailbox.position(**u).is_some())
            .count()
    });
    (unclaimed + mine) as u64
}

/// The sequence numbers, in this view, of saved UIDs (RFC 5182 `$` in a
/// non-UID command), ascending; UIDs no longer in the view are dropped.
pub fn saved_seqs(view: &View, saved: &[u32]) -> Vec<u32> {
    let mut seqs: Vec<u32> = saved.iter().filter_map(|u| view.seq_of(*u)).collect();
    seqs.sort_unstable();
    seqs.dedup();
    seqs
}

/// Inclusive ranges in both `a` and `b` (each sorted and merged).
pub fn intersect(a: &[(u32, u32)], b: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// The UIDs of `within` (sorted, merged ranges) that are not in `present`
/// (ascending), as ranges.
pub fn absent(present: &[u32], within: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut p = 0;
    for &(lo, hi) in within {
        // u64: the next candidate after u32::MAX is past every range.
        let mut next = u64::from(lo);
        p += present[p..].partition_point(|&u| u < lo);
        while p < present.len() && present[p] <= hi {
            if u64::from(present[p]) > next {
                out.push((next as u32, present[p] - 1));
            }
            next = u64::from(present[p]) + 1;
            p += 1;
        }
        if next <= u64::from(hi) {
            out.push((next as u32, hi));
        }
    }
    out
}

/// UIDs of `known` (sorted, merged ranges) expunged from the mailbox after
/// `modseq`: what `VANISHED (EARLIER)` reports (RFC 7162 3.2.5, 3.2.6).
/// Exact while the mailbox remembers expunges that old; otherwise every
/// known UID that is not in the mailbox now, which RFC 7162 section 6
/// allows a server with bounded expunge memory to send (a client just
/// removes UIDs it did not have).
pub fn vanished_earlier(mailbox: &Mailbox, modseq: u64, known: &[(u32, u32)]) -> Vec<(u32, u32)> {
    match mailbox.vanished_since(modseq) {
        Some(runs) => intersect(&runs, known),
        None => {
            let present: Vec<u32> = mailbox.messages.iter().map(|e| e.uid).collect();
            // Only UIDs ever given out can have vanished.
            let given = [(1, mailbox.uidnext.saturating_sub(1))];
            absent(&present, &intersect(known, &given))
        }
    }
}

/// What `RETURN (SAVE ...)` puts in `$` (RFC 5182 section 2.4): with SAVE
/// and only MIN and/or MAX beside it, just those messages (the first and
/// last of `uids`, which are in the order the command returns them: UID
/// order for SEARCH, sort order for SORT); otherwise all of them.
pub fn saved_result(returns: &[SearchReturn], uids: &[u32]) -> Vec<u32> {
    let only_min_max = returns.iter().all(|r| {
        matches!(
            r,
            SearchReturn::Save | SearchReturn::Min | SearchReturn::Max
        )
    }) && returns
        .iter()
        .any(|r| matches!(r, SearchReturn::Min | SearchReturn::Max));
    if !only_min_max {
        return uids.to_vec();
    }
    let mut out = Vec::new();
    if returns.contains(&SearchReturn::Min) {
        out.extend(uids.first());
    }
    if returns.contains(&SearchReturn::Max) {
        out.extend(uids.last());
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Everything SEARCH may look at for one message.
pub struct SearchInput<'a> {
    pub seq: u32,
    pub entry: &'a MessageEntry,
    pub keyword_names: &'a [String],
    pub recent: bool,
    pub max_seq: u32,
    pub max_uid: u32,
    pub body: &'a [u8],
    pub saved: &'a [u32],
}

/// Lazily parsed message for header and text keys.
struct Parsed<'a> {
    raw: &'a [u8],
    msg: Option<mime::Message<'a>>,
}

impl<'a> Parsed<'a> {
    fn get(&mut self) -> &mime::Message<'a> {
        let raw = self.raw;
        self.msg.get_or_insert_with(|| mime::Message::parse(raw))
    }
    fn header(&self) -> &'a [u8] {
        mime::split(self.raw).0
    }
}

/// Does the message match every key? Case-insensitive substring matching for
/// strings (RFC 3501 6.4.4), dates compared in UTC days.
pub fn matches(keys: &[SearchKey<'_>], input: &SearchInput<'_>) -> bool {
    let mut parsed = Parsed {
        raw: input.body,
        msg: None,
    };
    keys.iter().all(|k| eval(k, input, &mut parsed, 0))
}

fn str_of(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

fn eval(key: &SearchKey<'_>, m: &SearchInput<'_>, p: &mut Parsed<'_>, depth: usize) -> bool {
    if depth > crate::protocol::imap::MAX_DEPTH as usize {
        return false;
    }
    let day = |secs: i64| secs.div_euclid(86_400);
    let flags = m.entry.flags;
    match key {
        SearchKey::All => true,
        SearchKey::Sequence(SequenceArg::Set(set)) => set.contains(m.seq, m.max_seq),
        SearchKey::Sequence(SequenceArg::Saved) => m.saved.contains(&m.entry.uid),
        SearchKey::Uid(SequenceArg::Set(set)) => set.contains(m.entry.uid, m.max_uid),
        SearchKey::Uid(SequenceArg::Saved) => m.saved.contains(&m.entry.uid),
        SearchKey::Answered => flags & flag::ANSWERED != 0,
        SearchKey::Unanswered => flags & flag::ANSWERED == 0,
        SearchKey::Deleted => flags & flag::DELETED != 0,
        SearchKey::Undeleted => flags & flag::DELETED == 0,
        SearchKey::Draft => flags & flag::DRAFT != 0,
        SearchKey::Undraft => flags & flag::DRAFT == 0,
        SearchKey::Flagged => flags & flag::FLAGGED != 0,
        SearchKey::Unflagged => flags & flag::FLAGGED == 0,
        SearchKey::Seen => flags & flag::SEEN != 0,
        SearchKey::Unseen => flags & flag::SEEN == 0,
        SearchKey::Recent => m.recent,
        SearchKey::Old => !m.recent,
        SearchKey::New => m.recent && flags & flag::SEEN == 0,
        SearchKey::Keyword(k) => m.entry.keywords & keyword_mask(m.keyword_names, &[k]) != 0,
        SearchKey::Unkeyword(k) => m.entry.keywords & keyword_mask(m.keyword_names, &[k]) == 0,
        SearchKey::Larger(n) => u64::from(m.entry.loc.len) > *n,
        SearchKey::Smaller(n) => u64::from(m.entry.loc.len) < *n,
        SearchKey::Before(d) => day(m.entry.internal_date) < d.days_since_epoch(),
        SearchKey::On(d) => day(m.entry.internal_date) == d.days_since_epoch(),
        SearchKey::Since(d) => day(m.entry.internal_date) >= d.days_since_epoch(),
        SearchKey::SentBefore(d) => {
            mime::sent_date(p.header()).is_some_and(|s| s.days_since_epoch() < d.days_since_epoch())
        }
        SearchKey::SentOn(d) => mime::sent_date(p.header())
            .is_some_and(|s| s.days_since_epoch() == d.days_since_epoch()),
        SearchKey::SentSince(d) => mime::sent_date(p.header())
            .is_some_and(|s| s.days_since_epoch() >= d.days_since_epoch()),
        SearchKey::From(s) => mime::address_header_contains(p.header(), b"From", &str_of(s)),
        SearchKey::To(s) => mime::address_header_contains(p.header(), b"To", &str_of(s)),
        SearchKey::Cc(s) => mime::address_header_contains(p.header(), b"Cc", &str_of(s)),
        SearchKey::Bcc(s) => mime::address_header_contains(p.header(), b"Bcc", &str_of(s)),
        SearchKey::Subject(s) => mime::header_contains(p.header(), b"Subject", &str_of(s)),
        SearchKey::Header(name, s) => {
            let needle = str_of(s);
            if needle.is_empty() {
                // RFC 3501: an empty string matches every message that has the field.
                mime::field_value(p.header(), name).is_some()
            } else {
                mime::header_contains(p.header(), name, &needle)
            }
        }
        SearchKey::Body(s) => mime::body_contains(p.get(), &str_of(s)),
        SearchKey::Text(s) => mime::text_contains(p.get(), &str_of(s)),
        SearchKey::ModSeq { modseq, .. } => m.entry.modseq >= *modseq,
        SearchKey::EmailId(id) => *id == Some(m.entry.email_id),
        SearchKey::ThreadId => false,
        SearchKey::Not(k) => !eval(k, m, p, depth + 1),
        SearchKey::Or(a, b) => eval(a, m, p, depth + 1) || eval(b, m, p, depth + 1),
        SearchKey::And(ks) => ks.iter().all(|k| eval(k, m, p, depth + 1)),
    }
}

/// Whether a search has a MODSEQ key anywhere (RFC 7162 3.1.5): it enables
/// CONDSTORE and makes the result carry the highest mod-sequence.
pub fn has_modseq_key(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(|k| match k {
        SearchKey::ModSeq { .. } => true,
        SearchKey::Not(k) => has_modseq_key(std::slice::from_ref(k)),
        SearchKey::Or(a, b) => {
            has_modseq_key(std::slice::from_ref(a)) || has_modseq_key(std::slice::from_ref(b))
        }
        SearchKey::And(ks) => has_modseq_key(ks),
        _ => false,
    })
}

/// Whether a search needs the message bytes at all (flags-only searches
/// never touch the mapping).
pub fn needs_body(keys: &[SearchKey<'_>]) -> bool {
    keys.iter().any(|k| match k {
        SearchKey::SentBefore(_)
        | SearchKey::SentOn(_)
        | SearchKey::SentSince(_)
        | SearchKey::From(_)
        | SearchKey::To(_)
        | SearchKey::Cc(_)
        | SearchKey::Bcc(_)
        | SearchKey::Subject(_)
        | SearchKey::Header(..)
        | SearchKey::Body(_)
        | SearchKey::Text(_) => true,
        SearchKey::Not(k) => needs_body(std::slice::from_ref(k)),
        SearchKey::Or(a, b) => {
            needs_body(std::slice::from_ref(a)) || needs_body(std::slice::from_ref(b))
        }
        SearchKey::And(ks) => needs_body(ks),
        _ => false,
    })
}

/// Which extensions shape a session's untagged responses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Modes {
    /// CONDSTORE enabled: FETCH updates carry MODSEQ (RFC 7162 3.1).
    pub condstore: bool,
    /// QRESYNC enabled: VANISHED instead of EXPUNGE (RFC 7162 3.2.10).
    pub qresync: bool,
    /// IMAP4rev2 enabled: no RECENT, no \Recent (RFC 9051).
    pub rev2: bool,
}

/// Bring `view` up to `mb` and write what changed as untagged responses
/// (RFC 3501 5.2 and 7.4.1): new keywords, EXPUNGE or VANISHED (only with
/// `allow_expunge`; RFC 3501 7.4.1 forbids them during FETCH, STORE and
/// SEARCH), EXISTS, RECENT and FETCH of flags changed by others.
/// `floor`: the shard's \Recent claim for the mailbox.
pub fn report(
    out: &mut Vec<u8>,
    mb: &Mailbox,
    view: &mut View,
    read_only: bool,
    allow_expunge: bool,
    floor: &mut u32,
    modes: Modes,
) {
    let Modes {
        condstore,
        qresync,
        rev2,
    } = modes;
    let ch = view.sync(mb, allow_expunge, floor);
    if ch.new_keywords {
        write_flags_lines(out, &mb.keywords, read_only);
    }
    if qresync {
        // RFC 7162 3.2.10: VANISHED replaces EXPUNGE once enabled.
        let mut uids = ch.expunged_uids.clone();
        uids.sort_unstable();
        let ranges = SequenceSet::compress(&uids)
            .map(|s| s.normalized(u32::MAX))
            .unwrap_or_default();
        encode::write_vanished(out, false, &ranges);
    } else {
        for seq in &ch.expunged {
            encode::write_expunge(out, *seq);
        }
    }
    if let Some(n) = ch.exists {
        encode::write_exists(out, n);
    }
    // RFC 9051: IMAP4rev2 has no RECENT response.
    if let Some(n) = ch.recent.filter(|_| !rev2) {
        encode::write_recent(out, n);
    }
    // RFC 7162 3.2: flag updates with MODSEQ while expunges are held
    // back must come with a HIGHESTMODSEQ below those expunges, so
    // a client that stores it still resynchronises them later.
    if condstore && !ch.flags.is_empty() && !ch.held.is_empty() {
        let below = mb
            .vanished
            .iter()
            .filter(|r| ch.held.iter().any(|u| (r.first..=r.last).contains(u)))
            .map(|r| r.modseq)
            .min();
        if let Some(m) = below {
            encode::write_status(
                out,
                None,
                Status::Ok,
                Some(&Code::HighestModSeq(m - 1)),
                "Expunges pending",
            );
        }
    }
    for seq in &ch.flags {
        let uid = view.uids[*seq as usize - 1];
        let Some(m) = mb.position(uid).map(|p| &mb.messages[p]) else {
            continue;
        };
        let mut w = FetchWriter::new(out, *seq);
        w.flags(&flag_list(
            m.flags,
            m.keywords,
            &mb.keywords,
            !rev2 && view.recent.contains(&m.uid),
        ));
        w.uid(m.uid);
        if condstore {
            w.modseq(m.modseq);
        }
        w.finish();
    }
}

/// SELECT / EXAMINE (RFC 3501 6.3.1, RFC 9051 6.3.2) of `mb`: the untagged
/// responses into `out` and the session's new view. `floor`: the shard's
/// \Recent claim for the mailbox (raised by SELECT, not by EXAMINE);
/// `rev2`: an IMAP4rev2 session; `qresync`: the QRESYNC parameter (RFC 7162
/// 3.2.5), answered when its UIDVALIDITY matches.
pub fn open(
    out: &mut Vec<u8>,
    mb: &Mailbox,
    read_only: bool,
    floor: &mut u32,
    rev2: bool,
    qresync: Option<&Qresync>,
) -> View {
    let mut view = View::default();
    // RFC 3501 6.3.2: EXAMINE MUST NOT cause messages to lose \Recent.
    // The session still sees them as recent, but the floor (which
    // messages a later SELECT or STATUS counts) stays where it was.
    let mut examined = *floor;
    view.sync(mb, true, if read_only { &mut examined } else { floor });
    write_flags_lines(out, &mb.keywords, read_only);
    encode::write_exists(out, view.len());
    // RFC 9051 6.3.2: IMAP4rev2 has neither RECENT nor [UNSEEN]; it
    // names the mailbox in a LIST response instead.
    if rev2 {
        let shown_name = shown(true, &mb.name);
        encode::write_list(out, false, &[], Some(DELIMITER), shown_name.as_bytes());
    } else {
        encode::write_recent(out, view.recent.len() as u32);
    }
    // The view is the mailbox itself right after this first sync.
    let first_unseen = || mb.messages.iter().position(|m| m.flags & flag::SEEN == 0);
    if let Some(i) = first_unseen().filter(|_| !rev2) {
        encode::write_status(
            out,
            None,
            Status::Ok,
            Some(&Code::Unseen(i as u32 + 1)),
            "First unseen",
        );
    }
    encode::write_status(
        out,
        None,
        Status::Ok,
        Some(&Code::UidValidity(mb.uidvalidity)),
        "UIDs valid",
    );
    encode::write_status(
        out,
        None,
        Status::Ok,
        Some(&Code::UidNext(mb.uidnext)),
        "Predicted next UID",
    );
    encode::write_status(
        out,
        None,
        Status::Ok,
        Some(&Code::HighestModSeq(mb.reported_modseq())),
        "Highest",
    );
    // RFC 8474 4.1.
    encode::write_status(
        out,
        None,
        Status::Ok,
        Some(&Code::MailboxId(encode::mailbox_objectid(
            mb.uidvalidity,
            mb.id,
        ))),
        "Ok",
    );
    // RFC 7162 3.2.5: with the client's UIDVALIDITY, what vanished
    // since its mod-sequence (among the UIDs it knows), then the
    // flags of every message changed since.
    if let Some(q) = qresync.filter(|q| q.uidvalidity == mb.uidvalidity) {
        let known = match &q.known_uids {
            Some(set) => set.normalized(u32::MAX),
            None => vec![(1, u32::MAX)],
        };
        let gone = vanished_earlier(mb, q.modseq, &known);
        encode::write_vanished(out, true, &gone);
        for (i, m) in mb.messages.iter().enumerate() {
            if m.modseq > q.modseq {
                let mut w = FetchWriter::new(out, i as u32 + 1);
                w.uid(m.uid);
                w.flags(&flag_list(
                    m.flags,
                    m.keywords,
                    &mb.keywords,
                    !rev2 && view.recent.contains(&m.uid),
                ));
                w.modseq(m.modseq);
                w.finish();
            }
        }
    }
    view
}

/// `* FLAGS` and `* OK [PERMANENTFLAGS]` for a mailbox's keywords (RFC 3501
/// 7.2.6, 7.1); no permanent flags when read-only.
pub fn write_flags_lines(out: &mut Vec<u8>, keywords: &[String], read_only: bool) {
    let mut flags = vec![
        Flag::Answered,
        Flag::Flagged,
        Flag::Deleted,
        Flag::Seen,
        Flag::Draft,
    ];
    flags.extend(
        keywords
            .iter()
            .filter(|k| !k.is_empty())
            .map(|k| Flag::Keyword(k.as_bytes())),
    );
    encode::write_flags(out, &flags);
    let perm: Vec<Flag<'_>> = if read_only {
        Vec::new()
    } else {
        let mut p = flags.clone();
        p.push(Flag::MayCreate);
        p
    };
    encode::write_status(
        out,
        None,
        Status::Ok,
        Some(&Code::PermanentFlags(&perm)),
        "Flags permitted",
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::imap::{parse_command, CommandBody};
    use crate::storage::record::Loc;

    fn entry(uid: u32, flags: u32, modseq: u64) -> MessageEntry {
        MessageEntry {
            uid,
            flags,
            keywords: 0,
            internal_date: 1_795_708_800,
            modseq,
            loc: Loc {
                seg: 1,
                offset: 0,
                len: 100,
            },
            email_id: u64::from(uid),
        }
    }

    #[test]
    fn saved_results() {
        use SearchReturn::*;
        let uids = [7, 3, 9];
        assert_eq!(saved_result(&[Save], &uids), vec![7, 3, 9]);
        assert_eq!(saved_result(&[Save, Min], &uids), vec![7]);
        assert_eq!(saved_result(&[Max, Save], &uids), vec![9]);
        assert_eq!(saved_result(&[Save, Min, Max], &uids), vec![7, 9]);
        assert_eq!(saved_result(&[Save, Min, Count], &uids), vec![7, 3, 9]);
        assert_eq!(saved_result(&[Save, Min], &[]), Vec::<u32>::new());
    }

    #[test]
    fn vanished_ranges() {
        assert_eq!(
            intersect(&[(1, 5), (8, 9)], &[(3, 8)]),
            vec![(3, 5), (8, 8)]
        );
        assert_eq!(intersect(&[(1, 5)], &[]), vec![]);
        assert_eq!(absent(&[2, 3, 7], &[(1, 8)]), vec![(1, 1), (4, 6), (8, 8)]);
        assert_eq!(absent(&[2, 3, 7], &[(2, 3), (5, 9)]), vec![(5, 6), (8, 9)]);
        assert_eq!(absent(&[], &[(1, u32::MAX)]), vec![(1, u32::MAX)]);
        assert_eq!(
            absent(&[u32::MAX], &[(u32::MAX - 1, u32::MAX)]),
            vec![(u32::MAX - 1, u32::MAX - 1)]
        );
        let mut mb = Mailbox::new(0, "INBOX", 1, 0);
        mb.uidnext = 11;
        mb.messages = vec![entry(2, 0, 3), entry(7, 0, 3)];
        // Forgotten expunges: every known UID ever given out and absent now.
        mb.vanished_floor = 50;
        assert_eq!(
            vanished_earlier(&mb, 10, &[(1, u32::MAX)]),
            vec![(1, 1), (3, 6), (8, 10)]
        );
        assert_eq!(vanished_earlier(&mb, 60, &[(1, u32::MAX)]), vec![]);
    }

    #[test]
    fn list_patterns() {
        assert!(list_match(b"*", b"Sent/2026"));
        assert!(list_match(b"%", b"Sent"));
        assert!(!list_match(b"%", b"Sent/2026"));
        assert!(list_match(b"Sent/%", b"Sent/2026"));
        assert!(list_match(b"inbox", b"INBOX"));
        assert!(list_match(b"INBOX*", b"INBOX"));
        assert!(!list_match(b"Dr", b"Drafts"));
        assert!(!list_match(
            b"*%*%*%*%*%*%*%*%*%*%*%*%*%x",
            b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
        ));
    }

    #[test]
    fn lsub_percent_returns_unsubscribed_parents() {
        let subs: Vec<String> = ["INBOX", "foo/bar", "foo/baz", "a/b/c", "x"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            lsub_matches(b"%", &subs),
            vec![
                ("INBOX".into(), false),
                ("foo".into(), true),
                ("a".into(), true),
                ("x".into(), false)
            ]
        );
        assert_eq!(lsub_matches(b"a/%", &subs), vec![("a/b".into(), true)]);
        assert_eq!(lsub_matches(b"*", &subs).len(), 5);
        assert!(lsub_matches(b"*", &subs)
            .iter()
            .all(|(_, implied)| !implied));
        let subs: Vec<String> = ["foo", "foo/bar"].iter().map(|s| s.to_string()).collect();
        assert_eq!(lsub_matches(b"%", &subs), vec![("foo".into(), false)]);
    }

    #[test]
    fn view_sync_reports_expunge_exists_and_flags() {
        let mut mb = Mailbox::new(0, "INBOX", 1, 0);
        for u in 1..=4 {
            mb.messages.push(entry(u, 0, u as u64));
        }
        let mut v = View::default();
        let mut floor = 0;
        let ch = v.sync(&mb, true, &mut floor);
        assert_eq!(ch.exists, Some(4));
        assert_eq!(ch.recent, Some(4));
        assert_eq!(floor, 4);
        // Another session would see none of them as recent.
        let mut v2 = View::default();
        assert_eq!(v2.sync(&mb, true, &mut floor).recent, Some(0));
        mb.messages.remove(1); // uid 2
        mb.messages.remove(2); // uid 4
        mb.messages[0].flags = flag::SEEN;
        mb.messages[0].modseq = 9;
        mb.messages.push(entry(7, 0, 10));
        // Not allowed to expunge: the view keeps 4 + 1 messages, flags still reported.
        let ch = v.sync(&mb, false, &mut floor);
        assert!(ch.expunged.is_empty());
        assert_eq!(ch.flags, vec![1]);
        assert_eq!(ch.exists, Some(5));
        let ch = v.sync(&mb, true, &mut floor);
        assert_eq!(ch.expunged, vec![4, 2]);
        assert_eq!(v.uids, vec![1, 3, 7]);
        assert_eq!(v.seq_of(7), Some(3));
        let set = SequenceSet::parse(b"2:*").unwrap();
        assert_eq!(v.resolve(&set, false), vec![1, 2]);
        assert_eq!(
            v.resolve(&SequenceSet::parse(b"4:*").unwrap(), true),
            vec![2]
        );
        assert_eq!(
            v.resolve(&SequenceSet::parse(b"100:*").unwrap(), true),
            vec![2]
        );
    }

    #[test]
    fn select_and_examine_responses() {
        let mut mb = Mailbox::new(3, "Entw&APw-rfe", 42, 0);
        for uid in 1..=3 {
            mb.messages.push(entry(
                uid,
                if uid == 1 { flag::SEEN } else { 0 },
                u64::from(uid),
            ));
        }
        mb.uidnext = 4;
        mb.highest_modseq = 3;
        let text = |out: Vec<u8>| String::from_utf8(out).unwrap();
        // EXAMINE leaves the \Recent claim alone; SELECT takes it.
        let (mut floor, mut out) = (0, Vec::new());
        let view = open(&mut out, &mb, true, &mut floor, false, None);
        assert_eq!((view.len(), view.recent.len(), floor), (3, 3, 0));
        let out = text(out);
        for line in [
            "* 3 EXISTS\r\n",
            "* 3 RECENT\r\n",
            "* OK [UNSEEN 2] First unseen\r\n",
            "* OK [UIDVALIDITY 42] UIDs valid\r\n",
            "* OK [UIDNEXT 4] Predicted next UID\r\n",
            "* OK [HIGHESTMODSEQ 3] Highest\r\n",
            "* OK [MAILBOXID (F0000002a00000003)] Ok\r\n",
            "* OK [PERMANENTFLAGS ()] Flags permitted\r\n",
        ] {
            assert!(out.contains(line), "{line:?} in {out}");
        }
        // IMAP4rev2 (RFC 9051 6.3.2): LIST with the UTF-8 name, no RECENT
        // or UNSEEN; QRESYNC (RFC 7162 3.2.5) reports changes since 1.
        let q = Qresync {
            uidvalidity: 42,
            modseq: 1,
            known_uids: None,
            seq_match: None,
        };
        let mut out = Vec::new();
        let view = open(&mut out, &mb, false, &mut floor, true, Some(&q));
        assert_eq!((view.recent.len(), floor), (3, 3));
        let out = text(out);
        assert!(out.contains("* LIST () \"/\" \"Entwürfe\"\r\n"), "{out}");
        assert!(!out.contains("RECENT") && !out.contains("UNSEEN"), "{out}");
        assert!(
            out.contains("* 2 FETCH (UID 2 FLAGS () MODSEQ (2))\r\n"),
            "{out}"
        );
        assert!(
            out.contains("* 3 FETCH (UID 3 FLAGS () MODSEQ (3))\r\n"),
            "{out}"
        );
        assert!(!out.contains("* 1 FETCH"), "{out}");
    }

    #[test]
    fn status_recent_counts_unclaimed_and_own() {
        let mut mb = Mailbox::new(0, "INBOX", 1, 0);
        for u in 1..=5 {
            mb.messages.push(entry(u, 0, u as u64));
        }
        // Nobody selected the mailbox yet: everything is recent.
        assert_eq!(recent_count(&mb, 0, None), 5);
        // A session claimed 1..=3; another session sees only 4 and 5.
        assert_eq!(recent_count(&mb, 3, None), 2);
        let own: HashSet<u32> = [2, 3].into_iter().collect();
        assert_eq!(recent_count(&mb, 3, Some(&own)), 4);
        // An expunged recent message no longer counts.
        mb.messages.remove(1);
        assert_eq!(recent_count(&mb, 3, Some(&own)), 3);
    }

    /// Changes the session reported itself are not reported again; others
    /// are; an unchanged mailbox costs no pass; a held-back expunge comes
    /// with the next sync that may send it. (Every change raises
    /// HIGHESTMODSEQ, as the store does.)
    #[test]
    fn view_sync_reports_each_change_once() {
        let mut mb = Mailbox::new(0, "INBOX", 1, 0);
        for u in 1..=3 {
            mb.messages.push(entry(u, 0, 2));
        }
        mb.highest_modseq = 2;
        let mut v = View::default();
        let mut floor = 0;
        let _ = v.sync(&mb, true, &mut floor);
        mb.messages[1].flags = flag::FLAGGED;
        mb.messages[1].modseq = 11;
        mb.highest_modseq = 11;
        v.told_now(&mb.messages[1]);
        assert!(v.sync(&mb, true, &mut floor).flags.is_empty());
        mb.messages[1].modseq = 12;
        mb.highest_modseq = 12;
        assert_eq!(v.sync(&mb, true, &mut floor).flags, vec![2]);
        assert_eq!(v.sync(&mb, true, &mut floor), Changes::default());
        mb.messages.remove(0);
        mb.highest_modseq = 13;
        assert!(v.sync(&mb, false, &mut floor).expunged.is_empty());
        assert_eq!(v.sync(&mb, false, &mut floor), Changes::default());
        let ch = v.sync(&mb, true, &mut floor);
        assert_eq!((ch.expunged, ch.expunged_uids), (vec![1], vec![1]));
        assert_eq!(v.uids, vec![2, 3]);
        assert_eq!(v.sync(&mb, true, &mut floor), Changes::default());
    }

    #[test]
    fn saved_uids_become_sequence_numbers() {
        let v = View {
            uids: vec![3, 7, 9, 12],
            ..View::default()
        };
        assert_eq!(saved_seqs(&v, &[12, 7, 5]), vec![2, 4]);
        assert!(saved_seqs(&v, &[1, 2]).is_empty());
    }

    #[test]
    fn search_keys() {
        let body = b"From: Alice <alice@example.test>\r\nSubject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?=\r\nDate: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\nHello World\r\n";
        let e = entry(5, flag::SEEN, 3);
        let input = SearchInput {
            seq: 2,
            entry: &e,
            keyword_names: &[],
            recent: false,
            max_seq: 3,
            max_uid: 9,
            body,
            saved: &[],
        };
        let search = |q: &str| {
            let line = format!("a SEARCH {q}\r\n");
            let cmd = parse_command(line.as_bytes()).unwrap();
            let CommandBody::Search { search, .. } = cmd.body else {
                panic!()
            };
            matches(&search.keys, &input)
        };
        assert!(search("SEEN"));
        assert!(!search("UNSEEN"));
        assert!(search("FROM alice"));
        assert!(search("FROM ALICE"));
        assert!(
            search("CHARSET UTF-8 SUBJECT \"GRÜSSE\"") || search("CHARSET UTF-8 SUBJECT \"grüße\"")
        );
        assert!(search("BODY world"));
        assert!(!search("BODY absent"));
        assert!(search("TEXT alice"));
        assert!(search("OR UNSEEN FROM alice"));
        assert!(search("NOT DELETED"));
        assert!(search("2"));
        assert!(!search("3:*"));
        assert!(search("UID 5"));
        assert!(search("SENTON 25-Nov-2026"));
        assert!(search("SENTBEFORE 26-Nov-2026"));
        assert!(search("SINCE 26-Nov-2026"));
        assert!(!search("BEFORE 26-Nov-2026"));
        assert!(search("LARGER 99 SMALLER 101"));
        assert!(search("HEADER Subject \"\""));
        assert!(!search("HEADER X-Missing \"\""));
        assert!(search("(SEEN (FROM alice))"));
    }

    #[test]
    fn address_keys_see_through_comments() {
        let e = entry(1, 0, 1);
        let forms = [
            "user-from@domain.org",
            "<user-from@domain.org>",
            "User From <user-from@domain.org>",
            "user-from@domain.org (User From)",
            "<user-from (comment)@ (comment) domain.org>",
            "User (a) From <user-from(b)@(c)domain.org>",
            "(lead) user-from (x) @ (y) domain (z) . org (trail)",
            "=?utf-8?q?J=C3=B6rg?= <user-from (c)@domain.org>",
        ];
        for form in forms {
            for field in ["From", "To", "Cc", "Bcc"] {
                let body = format!("{field}: {form}\r\nSubject: x\r\n\r\nbody\r\n");
                let input = SearchInput {
                    seq: 1,
                    entry: &e,
                    keyword_names: &[],
                    recent: false,
                    max_seq: 1,
                    max_uid: 1,
                    body: body.as_bytes(),
                    saved: &[],
                };
                let search = |q: &str| {
                    let line = format!("a SEARCH {q}\r\n");
                    let cmd = parse_command(line.as_bytes()).unwrap();
                    let CommandBody::Search { search, .. } = cmd.body else {
                        panic!()
                    };
                    matches(&search.keys, &input)
                };
                let key = field.to_ascii_uppercase();
                assert!(
                    search(&format!("{key} user-from@domain.org")),
                    "{field}: {form}"
                );
                assert!(
                    search(&format!("{key} USER-FROM@DOMAIN.ORG")),
                    "{field}: {form}"
                );
                assert!(search(&format!("{key} user-from")), "{field}: {form}");
                assert!(search(&format!("{key} domain.org")), "{field}: {form}");
                assert!(
                    !search(&format!("{key} other@domain.org")),
                    "{field}: {form}"
                );
                assert!(
                    !search(&format!("{key} user-from@domain.org.uk")),
                    "{field}: {form}"
                );
                let other = if field == "From" { "TO" } else { "FROM" };
                assert!(
                    !search(&format!("{other} user-from@domain.org")),
                    "{field}: {form}"
                );
            }
        }
    }
}
