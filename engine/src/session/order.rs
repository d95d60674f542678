//! SORT and THREAD (RFC 5256), sans-I/O: pure functions over the header
//! sections of the messages a search selected. The runtime gathers one
//! [`MsgInfo`] per message and writes the answer with [`write_threads`].

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io::Write as _;

use crate::mime::address::{parse_address_list, Address};
use crate::mime::decode::{decode_header, parse_rfc5322_date};
use crate::mime::header::field_value;

pub use crate::protocol::imap::{Algorithm, SortCriterion, SortKey};

/// What sorting and threading look at in one message.
#[derive(Debug, Clone, Copy)]
pub struct MsgInfo<'a> {
    /// Message sequence number (the final tie-break, RFC 5256 section 3).
    pub seq: u32,
    /// Internal date, seconds since the epoch.
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u64,
    /// The raw header section (up to and including the empty line, or the
    /// whole message when it has no body).
    pub header: &'a [u8],
}

/// A node of a thread tree. `msg` indexes the slice given to [`thread`];
/// `None` is a dummy (a message referenced but not present).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The message, or none for a dummy.
    pub msg: Option<usize>,
    /// Children in order.
    pub children: Vec<Node>,
}

/// References kept per message for THREAD=REFERENCES: the last ones of the
/// References field (the parent is the last, so the tail matters most).
const THREAD_REFERENCES_MAX: usize = 1000;

/// Total steps the loop checks of one THREAD=REFERENCES run may take
/// (RFC 5256 section 3, step 1: no link may introduce a loop). Ordinary
/// mailboxes use a tiny fraction; past it, a check that cannot decide within
/// [`THREAD_LOOP_CHECK_STEPS_MIN`] steps refuses the link, which can never
/// create a loop, so a crafted mailbox costs bounded time.
const THREAD_LOOP_CHECK_BUDGET: u64 = 1 << 25;

/// References one THREAD=REFERENCES run keeps in all, beyond one per
/// message: each unknown id costs a dummy container, so a mailbox of mail
/// crafted with thousands of distinct references must not cost memory
/// without bound. Past it, a message keeps only its last reference (its
/// parent), which is what threads it.
const THREAD_REFERENCES_PER_MESSAGE: usize = 4;
const THREAD_REFERENCES_EXTRA: usize = 1000;

/// Octets of a Subject or address field that SORT and THREAD look at: keys
/// are compared on their start, and a 30 MiB Subject must not be decoded
/// and copied per sort key.
const KEY_FIELD_MAX: usize = 1024;

/// Steps every loop check may take even once the budget is spent.
const THREAD_LOOP_CHECK_STEPS_MIN: u64 = 64;

// A deep tree (a reply chain thousands long) must not be dropped by the
// recursive drop glue: take the descendants apart with an explicit stack.
impl Drop for Node {
    fn drop(&mut self) {
        if self.children.iter().all(|c| c.children.is_empty()) {
            return;
        }
        let mut stack = std::mem::take(&mut self.children);
        while let Some(mut node) = stack.pop() {
            stack.append(&mut node.children);
        }
    }
}

// ---------------------------------------------------------------------------
// Base subject (RFC 5256 section 2.1)
// ---------------------------------------------------------------------------

/// The base subject of a Subject field value (RFC 5256 section 2.1), ASCII
/// upper-cased so that plain byte comparison is the i;ascii-casemap
/// collation, and whether the message is a reply or forward: the extraction
/// removed a subj-refwd, a "(fwd)" subj-trailer, or a subj-fwd-hdr and
/// subj-fwd-trl (section 2.1, last paragraph; THREAD=REFERENCES step 5 uses
/// it). Linear in the length of the value.
pub fn base_subject(subject_field_value: &[u8]) -> (String, bool) {
    // (1) RFC 2047 encoded words to UTF-8 (decode_header also unfolds); tabs,
    // line ends and runs of spaces become one space. Upper-casing here lets
    // the case-insensitive ABNF literals ("re", "fwd", "(fwd)", "[fwd:") be
    // matched as bytes.
    let decoded = decode_header(subject_field_value);
    let mut text = String::with_capacity(decoded.len());
    let mut in_space = false;
    for ch in decoded.chars() {
        if matches!(ch, ' ' | '\t' | '\r' | '\n') {
            if !in_space {
                text.push(' ');
            }
            in_space = true;
        } else {
            text.push(ch.to_ascii_uppercase());
            in_space = false;
        }
    }
    let s = text.as_bytes();
    let brackets = next_brackets(s);
    let (mut start, mut end) = (0, s.len());
    let mut reply = false;
    loop {
        // (2) Trailing subj-trailer = "(fwd)" / WSP, as often as it matches.
        loop {
            if end > start && s[end - 1] == b' ' {
                end -= 1;
            } else if s[start..end].ends_with(b"(FWD)") {
                end -= 5;
                reply = true;
            } else {
                break;
            }
        }
        // (3) Leading subj-leader = (*subj-blob subj-refwd) / WSP, (4) a
        // leading subj-blob when something is left after it, (5) repeated
        // until neither applies. Where (3) fails after a run of blobs it
        // fails the same way from every later blob of the run (the run ends
        // at the same place, where no subj-refwd starts), so the rounds of
        // (4) that would follow are done at once: every blob of the run is
        // removed, except the last one when nothing follows it (the "last
        // subj-blob is subj-base" rule of subj-middle).
        loop {
            if start < end && s[start] == b' ' {
                start += 1;
                continue;
            }
            let mut pos = start;
            let mut last_blob = None;
            while let Some(after) = blob(s, &brackets, pos, end) {
                last_blob = Some(pos);
                pos = after;
            }
            if let Some(after) = refwd(s, &brackets, pos, end) {
                start = after;
                reply = true;
                continue;
            }
            if let Some(last) = last_blob {
                start = if pos < end { pos } else { last };
            }
            break;
        }
        // (6) "[fwd:" subject "]": unwrap and repeat from (2).
        let rest = &s[start..end];
        if rest.len() >= 6 && rest.starts_with(b"[FWD:") && rest.ends_with(b"]") {
            start += 5;
            end -= 1;
            reply = true;
            continue;
        }
        break;
    }
    // (7) What is left is the base subject. Every cut was next to an ASCII
    // byte, so the bounds are character boundaries.
    (text[start..end].to_owned(), reply)
}

/// For every position, where the next '[' or ']' at or after it is (or the
/// length): lets a subj-blob be matched without rescanning.
fn next_brackets(s: &[u8]) -> Vec<usize> {
    let mut next = vec![s.len(); s.len() + 1];
    for i in (0..s.len()).rev() {
        next[i] = if matches!(s[i], b'[' | b']') {
            i
        } else {
            next[i + 1]
        };
    }
    next
}

/// subj-blob = "[" *BLOBCHAR "]" *WSP at `pos`: where it ends.
fn blob(s: &[u8], brackets: &[usize], pos: usize, end: usize) -> Option<usize> {
    if pos >= end || s[pos] != b'[' {
        return None;
    }
    let close = brackets[pos + 1];
    if close >= end || s[close] != b']' {
        return None;
    }
    let mut after = close + 1;
    while after < end && s[after] == b' ' {
        after += 1;
    }
    Some(after)
}

/// subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":" at `pos`: where
/// it ends.
fn refwd(s: &[u8], brackets: &[usize], pos: usize, end: usize) -> Option<usize> {
    let rest = &s[pos..end];
    let mut at = if rest.starts_with(b"RE") {
        pos + 2
    } else if rest.starts_with(b"FWD") {
        pos + 3
    } else if rest.starts_with(b"FW") {
        pos + 2
    } else {
        return None;
    };
    while at < end && s[at] == b' ' {
        at += 1;
    }
    if let Some(after) = blob(s, brackets, at, end) {
        at = after;
    }
    (at < end && s[at] == b':').then_some(at + 1)
}

fn subject_of(m: &MsgInfo<'_>) -> (String, bool) {
    base_subject(capped(field_value(m.header, b"Subject").unwrap_or(b"")))
}

/// The first [`KEY_FIELD_MAX`] octets of a field value.
fn capped(v: &[u8]) -> &[u8] {
    &v[..v.len().min(KEY_FIELD_MAX)]
}

/// Sent date (RFC 5256 section 2.2): the Date: field in UTC, seconds since
/// the epoch; the internal date when Date: is missing or unparsable.
fn sent_date(m: &MsgInfo<'_>) -> i64 {
    field_value(m.header, b"Date")
        .and_then(parse_rfc5322_date)
        .map_or(m.internal_date, |d| d.unix_secs())
}

// ---------------------------------------------------------------------------
// SORT (RFC 5256 section 3)
// ---------------------------------------------------------------------------

/// One message's value for one sort key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum KeyValue {
    Number(i64),
    Size(u64),
    /// ASCII upper-cased: byte order is i;ascii-casemap.
    Text(Vec<u8>),
}

/// addr-mailbox (RFC 3501 ENVELOPE) of the first address of field `name`;
/// empty when the field is missing or holds no address. The first address
/// may be a group start, whose addr-mailbox is the group name.
fn first_mailbox(header: &[u8], name: &[u8]) -> Vec<u8> {
    let Some(value) = field_value(header, name) else {
        return Vec::new();
    };
    let mailbox = match parse_address_list(capped(value)).into_iter().next() {
        Some(Address::Mailbox { mailbox, .. }) => mailbox,
        Some(Address::GroupStart(group)) => group,
        _ => return Vec::new(),
    };
    // Encoded words have no place in a local part (RFC 2047 section 5), but
    // where a sender put one anyway, compare what it says.
    let mut text = decode_header(&mailbox).into_bytes();
    text.make_ascii_uppercase();
    text
}

fn key_value(m: &MsgInfo<'_>, key: SortKey) -> KeyValue {
    match key {
        SortKey::Arrival => KeyValue::Number(m.internal_date),
        SortKey::Date => KeyValue::Number(sent_date(m)),
        SortKey::Size => KeyValue::Size(m.size),
        SortKey::Subject => KeyValue::Text(subject_of(m).0.into_bytes()),
        SortKey::Cc => KeyValue::Text(first_mailbox(m.header, b"Cc")),
        SortKey::From => KeyValue::Text(first_mailbox(m.header, b"From")),
        SortKey::To => KeyValue::Text(first_mailbox(m.header, b"To")),
    }
}

/// SORT (RFC 5256 section 3): indices into `msgs` in the order the criteria
/// give. REVERSE reverses only the key it precedes; messages equal on every
/// key keep sequence-number order, never reversed. Each key is computed once
/// per message.
pub fn sort(msgs: &[MsgInfo<'_>], criteria: &[SortCriterion]) -> Vec<usize> {
    let width = criteria.len();
    let mut keys = Vec::with_capacity(msgs.len() * width);
    for m in msgs {
        keys.extend(criteria.iter().map(|c| key_value(m, c.key)));
    }
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by(|&a, &b| {
        let (ka, kb) = (&keys[a * width..][..width], &keys[b * width..][..width]);
        for ((x, y), c) in ka.iter().zip(kb).zip(criteria) {
            let o = x.cmp(y);
            let o = if c.reverse { o.reverse() } else { o };
            if o != Ordering::Equal {
                return o;
            }
        }
        msgs[a].seq.cmp(&msgs[b].seq).then(a.cmp(&b))
    });
    order
}

// ---------------------------------------------------------------------------
// THREAD (RFC 5256 section 3)
// ---------------------------------------------------------------------------

/// THREAD: the thread trees of `msgs` by `algorithm`, roots in order.
pub fn thread(msgs: &[MsgInfo<'_>], algorithm: Algorithm) -> Vec<Node> {
    match algorithm {
        Algorithm::OrderedSubject => ordered_subject(msgs),
        Algorithm::References => references(msgs),
    }
}

/// Order of messages by sent date, then sequence number (section 2.2).
type DateKey = (i64, u32, usize);

/// THREAD=ORDEREDSUBJECT: sort by base subject then sent date; each run of
/// one base subject is a thread whose first message is the parent of all the
/// others; threads in the order of their first message's sent date.
fn ordered_subject(msgs: &[MsgInfo<'_>]) -> Vec<Node> {
    let subjects: Vec<String> = msgs.iter().map(|m| subject_of(m).0).collect();
    let dates: Vec<DateKey> = msgs
        .iter()
        .enumerate()
        .map(|(i, m)| (sent_date(m), m.seq, i))
        .collect();
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by(|&a, &b| subjects[a].cmp(&subjects[b]).then(dates[a].cmp(&dates[b])));
    let mut threads: Vec<&[usize]> = order
        .chunk_by(|&a, &b| subjects[a] == subjects[b])
        .collect();
    threads.sort_by_key(|t| dates[t[0]]);
    threads
        .into_iter()
        .map(|t| Node {
            msg: Some(t[0]),
            children: t[1..]
                .iter()
                .map(|&i| Node {
                    msg: Some(i),
                    children: Vec::new(),
                })
                .collect(),
        })
        .collect()
}

/// The msg-ids of a field value: what stands between each "<" and the next
/// ">", whitespace (folding) removed, empty ones skipped. Lenient: anything
/// outside angle brackets is ignored, and of "<a <b>" only "b" counts.
fn msg_ids(value: &[u8]) -> impl Iterator<Item = Cow<'_, [u8]>> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || loop {
        let open = pos + memchr::memchr(b'<', value.get(pos..)?)?;
        let close = open + 1 + memchr::memchr2(b'<', b'>', &value[open + 1..])?;
        pos = close;
        if value[close] == b'<' {
            continue;
        }
        pos = close + 1;
        let id = &value[open + 1..close];
        let id: Cow<'_, [u8]> = if id.iter().any(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n')) {
            Cow::Owned(
                id.iter()
                    .copied()
                    .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
                    .collect(),
            )
        } else {
            Cow::Borrowed(id)
        };
        if !id.is_empty() {
            return Some(id);
        }
    })
}

/// A message's references (step 1): the msg-ids of References (the last
/// [`THREAD_REFERENCES_MAX`]), or when it has none, the first msg-id of
/// In-Reply-To.
fn message_references<'a>(header: &'a [u8]) -> Vec<Cow<'a, [u8]>> {
    let mut refs: Vec<Cow<'a, [u8]>> = Vec::new();
    if let Some(v) = field_value(header, b"References") {
        for id in msg_ids(v) {
            if refs.len() == 2 * THREAD_REFERENCES_MAX {
                refs.drain(..THREAD_REFERENCES_MAX);
            }
            refs.push(id);
        }
    }
    if refs.len() > THREAD_REFERENCES_MAX {
        refs.drain(..refs.len() - THREAD_REFERENCES_MAX);
    }
    if refs.is_empty() {
        if let Some(id) = field_value(header, b"In-Reply-To").and_then(|v| msg_ids(v).next()) {
            refs.push(id);
        }
    }
    refs
}

const NONE: usize = usize::MAX;

/// A container of step 1: a message, or a dummy for an id only referenced.
/// Children form a doubly linked list so that a link breaks in O(1).
#[derive(Clone, Copy)]
struct Container {
    msg: Option<usize>,
    parent: usize,
    first: usize,
    last: usize,
    prev: usize,
    next: usize,
}

/// The containers and links of step 1.
struct Links {
    c: Vec<Container>,
    budget: u64,
}

impl Links {
    fn add(&mut self, msg: Option<usize>) -> usize {
        self.c.push(Container {
            msg,
            parent: NONE,
            first: NONE,
            last: NONE,
            prev: NONE,
            next: NONE,
        });
        self.c.len() - 1
    }

    /// Make `child` (which has no parent) the last child of `parent`.
    fn link(&mut self, parent: usize, child: usize) {
        let last = self.c[parent].last;
        self.c[child].parent = parent;
        self.c[child].prev = last;
        self.c[child].next = NONE;
        if last == NONE {
            self.c[parent].first = child;
        } else {
            self.c[last].next = child;
        }
        self.c[parent].last = child;
    }

    /// Break the link between `x` and its parent, if any.
    fn unlink(&mut self, x: usize) {
        let Container {
            parent, prev, next, ..
        } = self.c[x];
        if parent == NONE {
            return;
        }
        if prev == NONE {
            self.c[parent].first = next;
        } else {
            self.c[prev].next = next;
        }
        if next == NONE {
            self.c[parent].last = prev;
        } else {
            self.c[next].prev = prev;
        }
        self.c[x].parent = NONE;
        self.c[x].prev = NONE;
        self.c[x].next = NONE;
    }

    /// The node after `x` in a pre-order walk of the subtree of `top`.
    fn next_below(&self, x: usize, top: usize) -> Option<usize> {
        if self.c[x].first != NONE {
            return Some(self.c[x].first);
        }
        let mut x = x;
        loop {
            if x == top {
                return None;
            }
            if self.c[x].next != NONE {
                return Some(self.c[x].next);
            }
            x = self.c[x].parent;
        }
    }

    /// Would making `parent` the parent of `child` make a loop, that is, is
    /// `parent` `child` or one of its descendants (step 1A)? Walks up from
    /// `parent` and through the subtree of `child` in step, so the cost is
    /// the smaller of the two (a fresh message has no subtree, a fresh dummy
    /// no ancestors). Undecided within the allowance: yes, so the link is
    /// not made.
    fn would_loop(&mut self, parent: usize, child: usize) -> bool {
        if parent == child {
            return true;
        }
        let allowance = self.budget.max(THREAD_LOOP_CHECK_STEPS_MIN);
        let (mut up, mut down) = (parent, child);
        let mut steps = 0;
        let looped = loop {
            if steps == allowance {
                break true;
            }
            steps += 1;
            up = self.c[up].parent;
            if up == NONE {
                break false;
            }
            if up == child {
                break true;
            }
            match self.next_below(down, child) {
                None => break false,
                Some(x) if x == parent => break true,
                Some(x) => down = x,
            }
        };
        self.budget = self.budget.saturating_sub(steps);
        looped
    }
}

/// Every node of the forest under `roots`, each after all its descendants.
fn bottom_up(roots: &[usize], kids: &[Vec<usize>]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut stack = roots.to_vec();
    while let Some(x) = stack.pop() {
        out.push(x);
        stack.extend_from_slice(&kids[x]);
    }
    out.reverse();
    out
}

/// THREAD=REFERENCES, RFC 5256 section 3, steps 1 to 6.
fn references(msgs: &[MsgInfo<'_>]) -> Vec<Node> {
    // (1) Link messages by Message-ID, References and In-Reply-To. Message
    // IDs compare case-sensitively.
    let mut links = Links {
        c: Vec::with_capacity(msgs.len()),
        budget: THREAD_LOOP_CHECK_BUDGET,
    };
    let mut ids: HashMap<Cow<'_, [u8]>, usize> = HashMap::with_capacity(msgs.len());
    let mut refs_left = msgs.len() * THREAD_REFERENCES_PER_MESSAGE + THREAD_REFERENCES_EXTRA;
    for (i, m) in msgs.iter().enumerate() {
        // A message without a valid Message-ID, or with the id of an earlier
        // message, gets a container nothing can refer to (a unique id).
        let id = field_value(m.header, b"Message-ID").and_then(|v| msg_ids(v).next());
        let me = match id.map(|id| ids.entry(id)) {
            Some(Entry::Occupied(e)) if links.c[*e.get()].msg.is_none() => {
                let c = *e.get();
                links.c[c].msg = Some(i);
                c
            }
            Some(Entry::Vacant(e)) => *e.insert(links.add(Some(i))),
            _ => links.add(Some(i)),
        };
        // (1A) Each reference the parent of the next, unless the next one
        // already has a parent (References may have been truncated) or the
        // link would make a loop. Unknown ids get a dummy.
        let mut prev = NONE;
        let mut refs = message_references(m.header);
        if refs.len() > refs_left {
            refs.drain(..refs.len() - 1);
        }
        refs_left = refs_left.saturating_sub(refs.len());
        for r in refs {
            let c = *ids.entry(r).or_insert_with(|| links.add(None));
            if prev != NONE && links.c[c].parent == NONE && !links.would_loop(prev, c) {
                links.link(prev, c);
            }
            prev = c;
        }
        // (1B) The last reference is the parent: an older link (from a
        // truncated References) is broken, unless the new one would loop. No
        // references: no parent.
        if prev == NONE {
            links.unlink(me);
        } else if links.c[me].parent != prev && !links.would_loop(prev, me) {
            links.unlink(me);
            links.link(prev, me);
        }
    }
    drop(ids);

    // From here on the tree is held as child vectors.
    let count = links.c.len();
    let mut msg_of: Vec<Option<usize>> = links.c.iter().map(|c| c.msg).collect();
    let mut kids: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut roots = Vec::new();
    for (x, children) in kids.iter_mut().enumerate() {
        // Children in link order, as step 1 made them.
        if links.c[x].parent == NONE {
            roots.push(x);
        }
        let mut k = links.c[x].first;
        while k != NONE {
            children.push(k);
            k = links.c[k].next;
        }
    }
    drop(links);
    let is_dummy = |msg_of: &[Option<usize>], x: usize| msg_of[x].is_none();

    // (2) The parentless containers are the root set.
    // (3) Prune dummies, bottom up: below the root a dummy is replaced by
    // its children (none: it disappears). A dummy at the root is replaced by
    // its only child; with several children it stays.
    for x in bottom_up(&roots, &kids) {
        if !kids[x].iter().any(|&k| is_dummy(&msg_of, k)) {
            continue;
        }
        // Sibling order does not matter yet (steps 4 and 6 sort), so the
        // longest list is kept and the shorter ones appended to it: a
        // message moves only when its list is the shorter, so the list it is
        // in at least doubles each time, and a crafted chain of dummies each
        // with a message costs n log n, not n squared.
        let mut new = Vec::new();
        for k in std::mem::take(&mut kids[x]) {
            if is_dummy(&msg_of, k) {
                let mut theirs = std::mem::take(&mut kids[k]);
                if theirs.len() > new.len() {
                    std::mem::swap(&mut new, &mut theirs);
                }
                new.append(&mut theirs);
            } else {
                new.push(k);
            }
        }
        kids[x] = new;
    }
    let mut top: Vec<usize> = Vec::with_capacity(roots.len());
    for r in roots {
        if !is_dummy(&msg_of, r) || kids[r].len() > 1 {
            top.push(r);
        } else if let Some(&only) = kids[r].first() {
            top.push(only);
        }
    }

    // (4) Sort the roots by sent date; a dummy sorts its children and goes
    // by the first one.
    let mut keys: Vec<DateKey> = msg_of
        .iter()
        .map(|m| match *m {
            Some(i) => (sent_date(&msgs[i]), msgs[i].seq, i),
            None => (i64::MAX, u32::MAX, usize::MAX),
        })
        .collect();
    for &r in &top {
        if is_dummy(&msg_of, r) {
            kids[r].sort_by_key(|&k| keys[k]);
            keys[r] = keys[kids[r][0]];
        }
    }
    top.sort_by_key(|&r| keys[r]);

    // (5) Gather roots with the same base subject.
    let mut subjects: Vec<Option<(String, bool)>> = vec![None; msgs.len()];
    let mut subject = |msg_of: &[Option<usize>], kids: &[Vec<usize>], x: usize| -> (String, bool) {
        // (5B i) A dummy goes by its first child.
        let m = match msg_of[x] {
            Some(m) => Some(m),
            None => kids[x].first().and_then(|&k| msg_of[k]),
        };
        match m {
            Some(m) => subjects[m]
                .get_or_insert_with(|| subject_of(&msgs[m]))
                .clone(),
            None => (String::new(), false),
        }
    };
    // (5A, 5B) The subject table: one root per base subject. A dummy
    // replaces a message, and a message that is not a reply replaces a
    // reply.
    let mut table: HashMap<String, usize> = HashMap::new();
    let mut reply = vec![false; count];
    for &r in &top {
        let (s, is_reply) = subject(&msg_of, &kids, r);
        reply[r] = is_reply && !is_dummy(&msg_of, r);
        if s.is_empty() {
            continue; // (5B ii)
        }
        match table.entry(s) {
            Entry::Vacant(e) => {
                e.insert(r);
            }
            Entry::Occupied(mut e) => {
                let t = *e.get();
                if !is_dummy(&msg_of, t) && (is_dummy(&msg_of, r) || (reply[t] && !reply[r])) {
                    e.insert(r);
                }
            }
        }
    }
    // (5C) Merge every other root into the table's one.
    let mut at_root = vec![false; count];
    for &r in &top {
        at_root[r] = true;
    }
    let mut added = Vec::new();
    for &r in &top {
        if !at_root[r] {
            continue; // already merged under a new dummy
        }
        let (s, _) = subject(&msg_of, &kids, r);
        if s.is_empty() {
            continue;
        }
        let t = table[&s];
        if t == r {
            continue;
        }
        let (r_dummy, t_dummy) = (is_dummy(&msg_of, r), is_dummy(&msg_of, t));
        if r_dummy && t_dummy {
            // Both dummies: the children of both become siblings.
            let mut moved = std::mem::take(&mut kids[r]);
            kids[t].append(&mut moved);
            at_root[r] = false;
        } else if t_dummy || (reply[r] && !reply[t]) {
            // Under the dummy, or a reply under the original.
            kids[t].push(r);
            at_root[r] = false;
        } else {
            // Otherwise both under a new dummy, which takes the table's place.
            let d = msg_of.len();
            msg_of.push(None);
            kids.push(vec![t, r]);
            keys.push((i64::MAX, u32::MAX, usize::MAX));
            reply.push(false);
            at_root.push(true);
            at_root[t] = false;
            at_root[r] = false;
            added.push(d);
            table.insert(s, d);
        }
    }
    let mut roots: Vec<usize> = top.into_iter().filter(|&r| at_root[r]).collect();
    roots.extend(added.into_iter().filter(|&d| at_root[d]));

    // (6) Sort every set of siblings by sent date, the deepest first; a
    // dummy goes by its first child.
    for x in bottom_up(&roots, &kids) {
        if kids[x].len() > 1 {
            let mut k = std::mem::take(&mut kids[x]);
            k.sort_by_key(|&c| keys[c]);
            kids[x] = k;
        }
        if msg_of[x].is_none() {
            if let Some(&first) = kids[x].first() {
                keys[x] = keys[first];
            }
        }
    }
    roots.sort_by_key(|&r| keys[r]);
    build(&roots, &msg_of, &kids)
}

/// The [`Node`] trees of `roots`, built bottom up without recursion.
fn build(roots: &[usize], msg_of: &[Option<usize>], kids: &[Vec<usize>]) -> Vec<Node> {
    let mut built: Vec<Option<Node>> = Vec::new();
    built.resize_with(msg_of.len(), || None);
    for x in bottom_up(roots, kids) {
        let children = kids[x].iter().filter_map(|&k| built[k].take()).collect();
        built[x] = Some(Node {
            msg: msg_of[x],
            children,
        });
    }
    roots.iter().filter_map(|&r| built[r].take()).collect()
}

// ---------------------------------------------------------------------------
// THREAD response (RFC 5256 section 5)
// ---------------------------------------------------------------------------

/// The messages a list of nodes stands for when written: a dummy is
/// replaced by its children, recursively (one without children vanishes).
fn visible<'a>(nodes: &'a [Node], out: &mut Vec<&'a Node>) {
    out.clear();
    let mut stack: Vec<&Node> = nodes.iter().rev().collect();
    while let Some(n) = stack.pop() {
        if n.msg.is_some() {
            out.push(n);
        } else {
            stack.extend(n.children.iter().rev());
        }
    }
}

/// Write the thread lists of `roots`, the data after `* THREAD ` (RFC 5256
/// section 5): one thread-list per root and nothing between them, e.g.
/// `(2)(3 6 (4 23)(44 7 96))`. Nothing at all for no roots: the caller
/// writes `* THREAD` alone then, else `* THREAD ` and this. `id_of` turns a
/// message index into the number to show (sequence number or UID).
///
/// A message followed by its only child continues the same list
/// (`(1 2 3)`); one with several children writes them as nested lists after
/// its number (`(1 (2)(3 4))`). A dummy root with several children writes
/// only their lists (`((3)(5))`). Dummies anywhere else (which [`thread`]
/// never leaves) are written as their children, so the output always fits
/// the grammar: a dummy with one child is that child, one with none is
/// nothing. Iterative: a reply chain thousands deep is fine.
pub fn write_threads(out: &mut Vec<u8>, roots: &[Node], id_of: impl Fn(usize) -> u32) {
    enum Step<'a> {
        /// A thread-list whose first member is this message.
        Open(&'a Node),
        Close,
    }
    let mut stack: Vec<Step<'_>> = Vec::new();
    let mut seen: Vec<&Node> = Vec::new();
    for root in roots {
        if root.msg.is_some() {
            stack.push(Step::Open(root));
        } else {
            visible(&root.children, &mut seen);
            match seen.len() {
                0 => {}
                1 => stack.push(Step::Open(seen[0])),
                _ => {
                    // thread-list = "(" thread-nested ")"
                    out.push(b'(');
                    stack.push(Step::Close);
                    stack.extend(seen.iter().rev().map(|&n| Step::Open(n)));
                }
            }
        }
        while let Some(step) = stack.pop() {
            let mut node = match step {
                Step::Close => {
                    out.push(b')');
                    continue;
                }
                Step::Open(node) => node,
            };
            // thread-members = nz-number *(SP nz-number) [SP thread-nested]
            out.push(b'(');
            loop {
                let _ = write!(out, "{}", id_of(node.msg.unwrap_or(0)));
                visible(&node.children, &mut seen);
                match seen.len() {
                    0 => {
                        out.push(b')');
                        break;
                    }
                    1 => {
                        out.push(b' ');
                        node = seen[0];
                    }
                    _ => {
                        out.push(b' ');
                        stack.push(Step::Close);
                        stack.extend(seen.iter().rev().map(|&n| Step::Open(n)));
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &str) -> (String, bool) {
        base_subject(s.as_bytes())
    }

    #[test]
    fn base_subject_extraction() {
        let cases: &[(&str, &str, bool)] = &[
            ("Re: [list] Fwd: Re: hello (fwd)", "HELLO", true),
            ("[fwd: Re: test]", "TEST", true),
            ("[tag] ", "[TAG]", false),
            ("[list] hello", "HELLO", false),
            ("[a][b] c", "C", false),
            ("[a] [b]", "[B]", false),
            ("re:re: x", "X", true),
            ("RE [2]: x", "X", true),
            ("Re[2]:x", "X", true),
            ("Fw: x", "X", true),
            ("FWD: x", "X", true),
            ("fwd :x", "X", true),
            ("[a] Re: [b] Re: x", "X", true),
            ("Re [a] [b]: x", "RE [A] [B]: X", false),
            ("Ref: x", "REF: X", false),
            ("Re x", "RE X", false),
            ("Fw d: x", "FW D: X", false),
            ("  hello \t\r\n   world  ", "HELLO WORLD", false),
            ("Hello (fwd) (FWD)  ", "HELLO", true),
            ("x(fwd)", "X", true),
            ("[fwd: x] (fwd)", "X", true),
            ("re: [fwd: re: x (fwd)]", "X", true),
            ("[a] [fwd: x]", "X", true),
            ("[unclosed hello", "[UNCLOSED HELLO", false),
            ("[a [b] c", "[A [B] C", false),
            ("Re: ", "", true),
            ("", "", false),
            ("[fwd:]", "", true),
            ("=?utf-8?q?Re=3A_caf=C3=A9?=", "CAFé", true),
            (
                "=?ISO-8859-1?B?SGVsbG8=?= =?ISO-8859-1?B?IFdvcmxk?=",
                "HELLO WORLD",
                false,
            ),
        ];
        for &(input, base, reply) in cases {
            assert_eq!(bs(input), (base.to_owned(), reply), "{input:?}");
        }
    }

    #[test]
    fn base_subject_long_inputs_are_fast() {
        // Many blobs, many leaders, an unclosed bracket: each linear.
        let blobs = "[x]".repeat(50_000) + " hi";
        assert_eq!(bs(&blobs).0, "HI");
        let leaders = "Re: [l] ".repeat(50_000) + "hi";
        assert_eq!(bs(&leaders), ("HI".to_owned(), true));
        let open = "[".to_owned() + &"a".repeat(100_000);
        assert_eq!(bs(&open).0.len(), 100_001);
        let wrapped = "[fwd: ".repeat(20_000) + "x" + &"]".repeat(20_000);
        assert_eq!(bs(&wrapped), ("X".to_owned(), true));
    }

    /// A mailbox: header texts, sequence numbers from 1, internal dates as
    /// given (or 1000 + index).
    struct Mailbox {
        headers: Vec<String>,
        internal: Vec<i64>,
    }

    impl Mailbox {
        fn new(headers: &[&str]) -> Mailbox {
            Mailbox {
                headers: headers.iter().map(|h| format!("{h}\r\n")).collect(),
                internal: (0..headers.len() as i64).map(|i| 1000 + i).collect(),
            }
        }

        fn infos(&self) -> Vec<MsgInfo<'_>> {
            self.headers
                .iter()
                .zip(&self.internal)
                .enumerate()
                .map(|(i, (h, &d))| MsgInfo {
                    seq: i as u32 + 1,
                    internal_date: d,
                    size: h.len() as u64,
                    header: h.as_bytes(),
                })
                .collect()
        }

        fn sorted(&self, criteria: &[(bool, SortKey)]) -> Vec<u32> {
            let criteria: Vec<SortCriterion> = criteria
                .iter()
                .map(|&(reverse, key)| SortCriterion { reverse, key })
                .collect();
            let infos = self.infos();
            sort(&infos, &criteria)
                .into_iter()
                .map(|i| infos[i].seq)
                .collect()
        }

        fn threads(&self, algorithm: Algorithm) -> String {
            let infos = self.infos();
            let roots = thread(&infos, algorithm);
            let mut out = Vec::new();
            write_threads(&mut out, &roots, |i| infos[i].seq);
            String::from_utf8(out).unwrap()
        }
    }

    fn msg(id: &str, refs: &str, subject: &str, day: u32) -> String {
        let mut h = String::new();
        if !id.is_empty() {
            h += &format!("Message-ID: <{id}>\r\n");
        }
        if !refs.is_empty() {
            h += &format!("References: {refs}\r\n");
        }
        h += &format!("Subject: {subject}\r\nDate: {day} Mar 2024 12:00:00 +0000\r\n");
        h
    }

    #[test]
    fn sort_by_each_key() {
        let mut m = Mailbox::new(&[
            "From: Zed <zed@x>\r\nTo: b@x\r\nCc: team: a@x;\r\nSubject: Re: b",
            "From: alice@x\r\nTo: =?utf-8?q?a?= <A@x>\r\nSubject: a",
            "From: Bob <BOB@y>\r\nCc: c@x\r\nSubject: [x] c\r\nX-Pad: 1234567890",
            "Subject: Fwd: a",
        ]);
        m.internal = vec![30, 10, 20, 40];
        assert_eq!(m.sorted(&[(false, SortKey::Arrival)]), [2, 3, 1, 4]);
        assert_eq!(m.sorted(&[(true, SortKey::Arrival)]), [4, 1, 3, 2]);
        // Missing From is the empty string; comparison ignores ASCII case.
        assert_eq!(m.sorted(&[(false, SortKey::From)]), [4, 2, 3, 1]);
        // A group's addr-mailbox is its name.
        assert_eq!(m.sorted(&[(false, SortKey::Cc)]), [2, 4, 3, 1]);
        assert_eq!(m.sorted(&[(false, SortKey::To)]), [3, 4, 2, 1]);
        let size = m.sorted(&[(false, SortKey::Size)]);
        assert_eq!(size, [4, 2, 1, 3]);
        // a (2), a (4, a forward), b, c.
        assert_eq!(m.sorted(&[(false, SortKey::Subject)]), [2, 4, 1, 3]);
        assert_eq!(
            m.sorted(&[(false, SortKey::Subject), (true, SortKey::Arrival)]),
            [4, 2, 1, 3]
        );
    }

    #[test]
    fn sort_ties_and_reverse() {
        let m = Mailbox::new(&[
            "Subject: same",
            "Subject: other",
            "Subject: Re: same",
            "Subject: same",
        ]);
        assert_eq!(m.sorted(&[(false, SortKey::Subject)]), [2, 1, 3, 4]);
        // REVERSE applies to its key only; ties stay in sequence order.
        assert_eq!(m.sorted(&[(true, SortKey::Subject)]), [1, 3, 4, 2]);
        assert_eq!(m.sorted(&[]), [1, 2, 3, 4]);
    }

    #[test]
    fn sort_by_sent_date() {
        let mut m = Mailbox::new(&[
            "Date: Mon, 1 Jan 2024 10:00:00 +0200",  // 08:00Z
            "Date: 1 Jan 2024 09:00:00 +0000",       // 09:00Z
            "Date: Sun, 31 Dec 2023 23:30:00 -1030", // 10:00Z
            "Subject: no date",                      // internal 08:30Z
            "Date: not a date",                      // internal 07:00Z
            "Date: 1 Jan 2024 09:00:00 GMT",         // 09:00Z, tie with 2
        ]);
        let jan1 = 19_723 * 86_400;
        m.internal = vec![0, 0, 0, jan1 + 8 * 3600 + 1800, jan1 + 7 * 3600, 0];
        assert_eq!(m.sorted(&[(false, SortKey::Date)]), [5, 1, 4, 2, 6, 3]);
        assert_eq!(m.sorted(&[(true, SortKey::Date)]), [3, 2, 6, 4, 1, 5]);
    }

    #[test]
    fn ordered_subject() {
        let m = Mailbox::new(&[
            &msg("1", "", "a", 3),
            &msg("2", "", "Re: a", 1),
            &msg("3", "", "b", 2),
            &msg("4", "", "A", 4),
            &msg("5", "", "c", 5),
            &msg("6", "", "Re: b", 6),
        ]);
        assert_eq!(m.threads(Algorithm::OrderedSubject), "(2 (1)(4))(3 6)(5)");
        assert_eq!(Mailbox::new(&[]).threads(Algorithm::OrderedSubject), "");
    }

    #[test]
    fn references_reply_chain() {
        let m = Mailbox::new(&[
            &msg("a@x", "", "hello", 1),
            "Message-ID: <b@x>\r\nIn-Reply-To: <a@x> (sent by someone)\r\nSubject: Re: hello",
            &msg("c@x", "<a@x>\r\n <b@x>", "Re: hello", 3),
            &msg("d@x", "<a@x> <b@x>", "Re: hello", 4),
        ]);
        assert_eq!(m.threads(Algorithm::References), "(1 2 (3)(4))");
    }

    /// Mail crafted with thousands of distinct references: past the run's
    /// budget a message keeps only its parent, so the chain still threads,
    /// and huge subjects are compared on their first octets only.
    #[test]
    fn reference_budget_keeps_parents() {
        let n = 200;
        let headers: Vec<String> = (0..n)
            .map(|i| {
                let junk: String = (0..1000).map(|j| format!("<junk{i}-{j}@x> ")).collect();
                let parent = if i == 0 {
                    String::new()
                } else {
                    format!("<m{}@x>", i - 1)
                };
                msg(
                    &format!("m{i}@x"),
                    &format!("{junk}{parent}"),
                    "Re: chain",
                    1,
                )
            })
            .collect();
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let m = Mailbox::new(&refs);
        let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
        assert_eq!(
            m.threads(Algorithm::References),
            format!("({})", want.join(" "))
        );
        let big = format!("Subject: Re: {}b", "a".repeat(4 << 20));
        let small = format!("Subject: {}a", "a".repeat(4 << 20));
        let m = Mailbox::new(&[&big, &small]);
        // Equal on their first KEY_FIELD_MAX octets: sequence order.
        assert_eq!(m.sorted(&[(false, SortKey::Subject)]), vec![1, 2]);
    }

    #[test]
    fn references_missing_parent_makes_a_dummy() {
        let m = Mailbox::new(&[
            &msg("b@x", "<a@x>", "Re: one", 2),
            &msg("c@x", "<a@x>", "Re: two", 1),
            &msg("d@x", "<lost@x>", "Re: three", 3),
        ]);
        // a is missing: a dummy with two children stays at the root (its
        // children sorted by date, it sorts by the first); lost has one
        // child, which takes its place.
        assert_eq!(m.threads(Algorithm::References), "((2)(1))(3)");
    }

    #[test]
    fn references_dummy_chain_collapses() {
        // Dummies below the root give way to their children; "x" gets no
        // children as b already has a parent (step 1A), and vanishes.
        let m = Mailbox::new(&[
            &msg("c@x", "<a@x> <b@x>", "one", 1),
            &msg("d@x", "<x@x> <b@x>", "two", 2),
            &msg("e@x", "<q@x> <r@x> <s@x>", "three", 3),
        ]);
        assert_eq!(m.threads(Algorithm::References), "((1)(2))(3)");
    }

    #[test]
    fn references_last_reference_wins() {
        // 1 claims c is a child of x; c itself says its parent is b: the old
        // link is broken (step 1B).
        let m = Mailbox::new(&[
            &msg("d@x", "<x@x> <c@x>", "one", 1),
            &msg("b@x", "", "two", 2),
            &msg("c@x", "<b@x>", "three", 3),
        ]);
        assert_eq!(m.threads(Algorithm::References), "(2 3 1)");
    }

    #[test]
    fn references_group_by_subject() {
        let m = Mailbox::new(&[
            &msg("1", "", "hello", 1),
            &msg("2", "", "Re: hello", 2),
            &msg("3", "", "Re: news", 3),
            &msg("4", "", "news", 4),
            &msg("5", "", "same", 5),
            &msg("6", "", "same", 6),
            &msg("7", "", "Re: again", 7),
            &msg("8", "", "Fwd: again", 8),
            &msg("9", "", "", 9),
            &msg("10", "", "Re:", 10),
        ]);
        // A reply goes under the original, even an earlier reply under a
        // later original; equals (two originals, two replies) under a new
        // dummy; empty base subjects are left alone.
        assert_eq!(
            m.threads(Algorithm::References),
            "(1 2)(4 3)((5)(6))((7)(8))(9)(10)"
        );
    }

    #[test]
    fn references_subject_merge_with_dummies() {
        let m = Mailbox::new(&[
            &msg("b@x", "<a@x>", "Re: topic", 1),
            &msg("c@x", "<a@x>", "Re: topic", 3),
            &msg("d@x", "", "topic", 2),
            &msg("f@x", "<e@x>", "Re: topic", 5),
            &msg("g@x", "<e@x>", "Re: topic", 4),
        ]);
        // Two dummies (a, e) and a message with one base subject: all under
        // the first dummy (step 5C), then in date order (step 6).
        assert_eq!(m.threads(Algorithm::References), "((1)(3)(2)(5)(4))");
    }

    #[test]
    fn references_loops_are_refused() {
        let m = Mailbox::new(&[
            &msg("a@x", "<b@x>", "one", 1),
            &msg("b@x", "<a@x>", "two", 2),
            &msg("c@x", "<c@x>", "three", 3),
            &msg("d@x", "<e@x> <d@x> <e@x>", "four", 4),
        ]);
        assert_eq!(m.threads(Algorithm::References), "(2 1)(3)(4)");
    }

    #[test]
    fn references_duplicate_and_missing_ids() {
        let m = Mailbox::new(&[
            &msg("a@x", "", "one", 1),
            &msg("a@x", "", "two", 2),
            &msg("b@x", "<a@x>", "three", 3),
            &msg("", "<a@x>", "four", 4),
            "Message-ID: <>\r\nSubject: five\r\nDate: 5 Mar 2024 12:00:00 +0000",
        ]);
        // The second <a@x> gets an id of its own; replies go to the first.
        assert_eq!(m.threads(Algorithm::References), "(1 (3)(4))(2)(5)");
    }

    #[test]
    fn references_out_of_date_order() {
        let m = Mailbox::new(&[
            &msg("c@x", "<a@x>", "x1", 5),
            &msg("b@x", "<a@x>", "x2", 4),
            &msg("a@x", "", "x3", 6),
            &msg("z@x", "", "x4", 1),
        ]);
        // Children by date (2 before 1); roots by date (4 first).
        assert_eq!(m.threads(Algorithm::References), "(4)(3 (2)(1))");
    }

    #[test]
    fn writer_forms() {
        fn leaf(i: usize) -> Node {
            Node {
                msg: Some(i),
                children: Vec::new(),
            }
        }
        fn node(msg: Option<usize>, children: Vec<Node>) -> Node {
            Node { msg, children }
        }
        let write = |roots: &[Node]| {
            let mut out = Vec::new();
            write_threads(&mut out, roots, |i| i as u32);
            String::from_utf8(out).unwrap()
        };
        // RFC 5256 section 4's example.
        let rfc = [
            leaf(2),
            node(
                Some(3),
                vec![node(
                    Some(6),
                    vec![
                        node(Some(4), vec![leaf(23)]),
                        node(Some(44), vec![node(Some(7), vec![leaf(96)])]),
                    ],
                )],
            ),
        ];
        assert_eq!(write(&rfc), "(2)(3 6 (4 23)(44 7 96))");
        assert_eq!(write(&[node(None, vec![leaf(3), leaf(5)])]), "((3)(5))");
        assert_eq!(
            write(&[node(Some(1), vec![leaf(2), node(Some(3), vec![leaf(4)])])]),
            "(1 (2)(3 4))"
        );
        // Forms thread() never makes still come out valid.
        assert_eq!(
            write(&[node(None, vec![node(Some(3), vec![leaf(4)])])]),
            "(3 4)"
        );
        assert_eq!(write(&[node(None, vec![]), leaf(1)]), "(1)");
        assert_eq!(
            write(&[node(Some(1), vec![node(None, vec![leaf(2), leaf(3)])])]),
            "(1 (2)(3))"
        );
        assert_eq!(
            write(&[node(Some(1), vec![node(None, vec![]), leaf(2)])]),
            "(1 2)"
        );
        assert_eq!(write(&[]), "");
    }

    const DEEP: usize = 100_000;

    #[test]
    fn deep_reply_chain_threads_and_writes() {
        let headers: Vec<String> = (0..DEEP)
            .map(|i| {
                let parent = if i == 0 {
                    String::new()
                } else {
                    format!("In-Reply-To: <{}@x>\r\n", i - 1)
                };
                format!("Message-ID: <{i}@x>\r\n{parent}Subject: Re: chain\r\n")
            })
            .collect();
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let mut m = Mailbox::new(&refs);
        let expected: String = {
            let ids: Vec<String> = (1..=DEEP).map(|i| i.to_string()).collect();
            format!("({})", ids.join(" "))
        };
        assert_eq!(m.threads(Algorithm::References), expected);
        // The same mailbox with the chain arriving newest first.
        m.headers.reverse();
        let out = m.threads(Algorithm::References);
        assert!(out.starts_with(&format!("({} {} ", DEEP, DEEP - 1)));
        assert!(out.ends_with(" 2 1)"));
    }

    #[test]
    fn deep_nested_tree_writes_and_drops() {
        // 1 (2)(3 (4)(5 (6)(7 ...: nesting DEEP levels deep.
        let mut tree = Node {
            msg: Some(2 * DEEP + 1),
            children: Vec::new(),
        };
        for i in (0..DEEP).rev() {
            tree = Node {
                msg: Some(2 * i + 1),
                children: vec![
                    Node {
                        msg: Some(2 * i + 2),
                        children: Vec::new(),
                    },
                    tree,
                ],
            };
        }
        let mut out = Vec::new();
        write_threads(&mut out, std::slice::from_ref(&tree), |i| i as u32);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("(1 (2)(3 (4)(5 "));
        assert!(text.ends_with(&format!("({}){}", 2 * DEEP + 1, ")".repeat(DEEP))));
        drop(tree);
    }

    #[test]
    fn crafted_links_cost_bounded_time() {
        // A deep chain d, then a chain c arriving newest first whose every
        // message also names the tip of d: each step-1B loop check would
        // walk up all of d or down all of c built so far.
        const N: usize = 50_000;
        let mut headers: Vec<String> = (0..N)
            .map(|i| {
                let parent = if i == 0 {
                    String::new()
                } else {
                    format!("In-Reply-To: <d{}@x>\r\n", i - 1)
                };
                format!("Message-ID: <d{i}@x>\r\n{parent}Subject: d\r\n")
            })
            .collect();
        headers.extend((1..N).rev().map(|i| {
            format!(
                "Message-ID: <c{i}@x>\r\nReferences: <d{}@x> <c{}@x>\r\nSubject: c\r\n",
                N - 1,
                i - 1
            )
        }));
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let m = Mailbox::new(&refs);
        let start = std::time::Instant::now();
        let out = m.threads(Algorithm::References);
        assert!(out.starts_with("(1 2 3 "));
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn crafted_dummy_chain_prunes_in_bounded_time() {
        // Dummies x0 -> x1 -> ... each with one message below: pruning
        // hands every message up the whole chain.
        const N: usize = 100_000;
        let headers: Vec<String> = (1..=N)
            .map(|i| {
                format!(
                    "Message-ID: <m{i}@x>\r\nReferences: <x{}@x> <x{i}@x>\r\n",
                    i - 1
                )
            })
            .collect();
        let refs: Vec<&str> = headers.iter().map(String::as_str).collect();
        let m = Mailbox::new(&refs);
        let start = std::time::Instant::now();
        let infos = m.infos();
        let roots = thread(&infos, Algorithm::References);
        assert_eq!(roots.len(), 1);
        assert_eq!(roots[0].msg, None);
        assert_eq!(roots[0].children.len(), N);
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }
}
