//! FETCH responses without I/O (RFC 3501 6.4.5 and 7.4.2, RFC 3516
//! BINARY, RFC 7162 CONDSTORE, RFC 8474 OBJECTID, RFC 9051): the items of
//! each message, with message octets left as [`Piece`]s that the runtime
//! writes (splices) between the response text, so a FETCH of large
//! messages holds references to the mappings, not copies. The runtime
//! supplies the mailbox, the view and a way to read a body (`B`, a handle
//! that derefs to the message), and commits \Seen before it renders.
use std::borrow::Cow;
use std::ops::Deref;

use super::imap::{flag_list, write_flags_lines, View};
use crate::mime;
use crate::protocol::imap::encode::{self, FetchWriter};
use crate::protocol::imap::{FetchAttr, Partial};
use crate::storage::index::Mailbox;
use crate::storage::record::Loc;

/// Message octets at least this large are left as pieces instead of copied.
pub const SPLICE_MIN: usize = 4096;

/// Octets `start..start + len` of a message body, as they go out: the
/// runtime writes them between the response text when it flushes.
pub enum Piece<B> {
    /// As they are.
    Slice { body: B, start: usize, len: usize },
    /// Each NUL sent as a space (a literal cannot carry NUL, RFC 3501 4.3),
    /// a chunk at a time.
    NulAsSpace { body: B, start: usize, len: usize },
    /// A part's content with its transfer encoding undone (BINARY, RFC
    /// 3516), and the partial range of the decoded octets: decoded only
    /// while it is written, so one part at a time is ever in memory.
    Decoded {
        body: B,
        start: usize,
        len: usize,
        cte: mime::Cte,
        partial: Option<Partial>,
    },
}

impl<B: std::ops::Deref<Target = [u8]>> Piece<B> {
    /// The octets this piece stands for, appended to `out` at once (the
    /// runtime writes them in chunks instead; see `runtime/imap.rs`).
    pub fn render(&self, out: &mut Vec<u8>) {
        match self {
            Piece::Slice { body, start, len } => out.extend_from_slice(&body[*start..start + len]),
            Piece::NulAsSpace { body, start, len } => {
                out.extend(body[*start..start + len].iter().map(|&b| nul_as_space(b)))
            }
            Piece::Decoded {
                body,
                start,
                len,
                cte,
                partial,
            } => out.extend_from_slice(&decoded(&body[*start..start + len], *cte, *partial)),
        }
    }
}

/// A literal cannot carry NUL (RFC 3501 4.3): it goes out as a space.
pub fn nul_as_space(b: u8) -> u8 {
    if b == 0 {
        b' '
    } else {
        b
    }
}

/// A part's content with its transfer encoding undone, cut to `partial`.
pub fn decoded(content: &[u8], cte: mime::Cte, partial: Option<Partial>) -> Cow<'_, [u8]> {
    let data = cte.decode(content);
    match partial {
        Some(p) => mime::partial(data, p),
        None => data,
    }
}

/// How the FETCH is answered.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// UID FETCH: every response carries the UID.
    pub uid: bool,
    /// CONDSTORE enabled: UID and MODSEQ in every response (RFC 7162 3.1).
    pub condstore: bool,
    /// IMAP4rev2: no \Recent.
    pub rev2: bool,
    /// The FETCH set \Seen: changed flags are reported (RFC 3501 6.4.5).
    pub sets_seen: bool,
    /// CHANGEDSINCE: only messages with a higher mod-sequence.
    pub changed_since: Option<u64>,
    /// The mailbox is selected read-only.
    pub read_only: bool,
}

/// Does an item need the message parsed?
fn needs_parse(attrs: &[FetchAttr<'_>]) -> bool {
    attrs.iter().any(|a| {
        matches!(
            a,
            FetchAttr::Envelope
                | FetchAttr::Body
                | FetchAttr::BodyStructure
                | FetchAttr::BodySection { .. }
                | FetchAttr::Binary { .. }
                | FetchAttr::BinarySize { .. }
                | FetchAttr::Rfc822Header
                | FetchAttr::Rfc822Text
        )
    })
}

/// Can every BINARY / BINARY.SIZE item of `attrs` be answered for the
/// messages at view positions `idx` (their encodings are known)? RFC 3516
/// 4.1: otherwise the FETCH fails before any response or \Seen.
pub fn binary_decodable<B: Deref<Target = [u8]>>(
    mb: &Mailbox,
    view: &View,
    idx: &[usize],
    attrs: &[FetchAttr<'_>],
    body_of: impl Fn(Loc) -> Option<B>,
) -> bool {
    let parts: Vec<&[u32]> = attrs
        .iter()
        .filter_map(|a| match a {
            FetchAttr::Binary { part, .. } | FetchAttr::BinarySize { part } => Some(&part[..]),
            _ => None,
        })
        .filter(|p| !p.is_empty())
        .collect();
    parts.is_empty()
        || idx.iter().all(|&i| {
            let Some(p) = mb.position(view.uids[i]) else {
                return true;
            };
            let body = body_of(mb.messages[p].loc);
            let msg = mime::Message::parse(body.as_deref().unwrap_or(&[]));
            parts
                .iter()
                .all(|part| mime::binary_part(&msg, part).is_ok())
        })
}

/// The FETCH responses of the messages at view positions `idx` into `buf`
/// and `splices`; the view learns the flags it reports.
#[allow(clippy::too_many_arguments)]
pub fn render<B: Deref<Target = [u8]> + Clone>(
    buf: &mut Vec<u8>,
    splices: &mut Vec<(usize, Piece<B>)>,
    mb: &Mailbox,
    view: &mut View,
    idx: &[usize],
    attrs: &[FetchAttr<'_>],
    o: Options,
    body_of: impl Fn(Loc) -> Option<B>,
) {
    let needs_parse = needs_parse(attrs);
    // Keywords another session created since our sync (we may have
    // waited for the \Seen commit) are announced before any FETCH.
    if view.take_new_keywords(mb) {
        write_flags_lines(buf, &mb.keywords, o.read_only);
    }
    for &i in idx {
        let seq = i as u32 + 1;
        let Some(p) = mb.position(view.uids[i]) else {
            continue;
        };
        let e = &mb.messages[p];
        if o.changed_since.is_some_and(|cs| e.modseq <= cs) {
            continue;
        }
        let flags_changed = view.untold(e);
        view.told_now(e);
        let body = body_of(e.loc);
        let raw: &[u8] = body.as_deref().unwrap_or(&[]);
        let parsed = needs_parse.then(|| mime::Message::parse(raw));
        // RFC 9051: no \Recent for IMAP4rev2.
        let recent = !o.rev2 && view.recent.contains(&e.uid);
        let mut w = FetchWriter::new(buf, seq);
        let mut wrote_flags = false;
        let mut wrote_uid = false;
        for attr in attrs {
            match attr {
                FetchAttr::Flags => {
                    w.flags(&flag_list(e.flags, e.keywords, &mb.keywords, recent));
                    wrote_flags = true;
                }
                FetchAttr::Uid => {
                    w.uid(e.uid);
                    wrote_uid = true;
                }
                FetchAttr::InternalDate => w.internal_date(e.internal_date, 0),
                FetchAttr::Rfc822Size => w.rfc822_size(u64::from(e.loc.len)),
                FetchAttr::ModSeq => w.modseq(e.modseq),
                // RFC 8474 5.1 and 5.2: threads have no id (NIL).
                FetchAttr::EmailId => {
                    let out = w.item("EMAILID");
                    out.push(b'(');
                    encode::write_email_objectid(out, e.email_id);
                    out.push(b')');
                }
                FetchAttr::ThreadId => w.item("THREADID").extend_from_slice(b"NIL"),
                FetchAttr::Envelope => {
                    mime::write_envelope(parsed.as_ref().expect("parsed"), w.item("ENVELOPE"))
                }
                FetchAttr::Body => mime::write_bodystructure(
                    parsed.as_ref().expect("parsed"),
                    false,
                    w.item("BODY"),
                ),
                FetchAttr::BodyStructure => mime::write_bodystructure(
                    parsed.as_ref().expect("parsed"),
                    true,
                    w.item("BODYSTRUCTURE"),
                ),
                FetchAttr::Rfc822 => literal(
                    &mut w,
                    splices,
                    "RFC822",
                    body.as_ref(),
                    raw,
                    Cow::Borrowed(raw),
                ),
                FetchAttr::Rfc822Header => {
                    let h = mime::split(raw).0;
                    literal(
                        &mut w,
                        splices,
                        "RFC822.HEADER",
                        body.as_ref(),
                        raw,
                        Cow::Borrowed(h),
                    );
                }
                FetchAttr::Rfc822Text => {
                    let t = mime::split(raw).1;
                    literal(
                        &mut w,
                        splices,
                        "RFC822.TEXT",
                        body.as_ref(),
                        raw,
                        Cow::Borrowed(t),
                    );
                }
                FetchAttr::BodySection {
                    section, partial, ..
                } => {
                    let data = mime::section_bytes(parsed.as_ref().expect("parsed"), section);
                    let mut name = b"BODY[".to_vec();
                    section.write(&mut name);
                    name.push(b']');
                    let data = match (data, partial) {
                        (Some(d), Some(p)) => {
                            name.extend_from_slice(format!("<{}>", p.start).as_bytes());
                            Some(mime::partial(d, *p))
                        }
                        (d, _) => d,
                    };
                    let name = String::from_utf8_lossy(&name).into_owned();
                    match data {
                        Some(d) => literal(&mut w, splices, &name, body.as_ref(), raw, d),
                        // A part that doesn't exist is empty (RFC 3501 6.4.5), not NIL.
                        None => literal(
                            &mut w,
                            splices,
                            &name,
                            body.as_ref(),
                            raw,
                            Cow::Borrowed(&[]),
                        ),
                    }
                }
                FetchAttr::Binary { part, partial, .. } => {
                    let parsed = parsed.as_ref().expect("parsed");
                    // Checked before anything was written.
                    let found = mime::binary_part(parsed, part).unwrap_or(None);
                    // A part that doesn't exist is empty, as for BODY.
                    let (encoded, cte) = found.unwrap_or((&[], mime::Cte::Identity));
                    let mut name = binary_name("BINARY", part);
                    if let Some(p) = partial {
                        name.push_str(&format!("<{}>", p.start));
                    }
                    binary_literal(
                        &mut w,
                        splices,
                        &name,
                        body.as_ref(),
                        raw,
                        encoded,
                        cte,
                        *partial,
                    );
                }
                FetchAttr::BinarySize { part } => {
                    let parsed = parsed.as_ref().expect("parsed");
                    let data = mime::binary_bytes(parsed, part).unwrap_or(None);
                    let size = data.map_or(0, |d| d.len());
                    let name = binary_name("BINARY.SIZE", part);
                    w.item(&name).extend_from_slice(size.to_string().as_bytes());
                }
            }
        }
        // RFC 7162 3.1: once CONDSTORE is enabled every untagged
        // FETCH carries UID and MODSEQ.
        if (o.uid || o.condstore) && !wrote_uid {
            w.uid(e.uid);
        }
        if o.sets_seen && flags_changed && !wrote_flags {
            w.flags(&flag_list(e.flags, e.keywords, &mb.keywords, recent));
        }
        if o.condstore && !attrs.contains(&FetchAttr::ModSeq) {
            w.modseq(e.modseq);
        }
        w.finish();
    }
}

/// `BINARY[1.2]` / `BINARY.SIZE[1.2]`: the item's name in a FETCH response.
fn binary_name(item: &str, part: &[u32]) -> String {
    let parts: Vec<String> = part.iter().map(u32::to_string).collect();
    format!("{item}[{}]", parts.join("."))
}

/// Where `d` lies in `raw`, if it is a large enough slice of it to splice.
fn spliceable(raw: &[u8], d: &[u8]) -> Option<usize> {
    let base = raw.as_ptr() as usize;
    let p = d.as_ptr() as usize;
    (d.len() >= SPLICE_MIN && p >= base && p + d.len() <= base + raw.len()).then(|| p - base)
}

/// Write a literal item, splicing large borrowed data from the mapping
/// (with each NUL as a space, RFC 3501 4.3, as `write_literal` does).
fn literal<B: Clone>(
    w: &mut FetchWriter<'_>,
    splices: &mut Vec<(usize, Piece<B>)>,
    name: &str,
    body: Option<&B>,
    raw: &[u8],
    data: Cow<'_, [u8]>,
) {
    let out = w.item(name);
    if let (Cow::Borrowed(d), Some(body)) = (&data, body) {
        if let Some(start) = spliceable(raw, d) {
            out.extend_from_slice(format!("{{{}}}\r\n", d.len()).as_bytes());
            let (body, len) = (body.clone(), d.len());
            let piece = match memchr::memchr(0, d) {
                None => Piece::Slice { body, start, len },
                Some(_) => Piece::NulAsSpace { body, start, len },
            };
            splices.push((out.len(), piece));
            return;
        }
    }
    encode::write_literal(out, &data);
}

/// Write `BINARY[...]` (RFC 3516 4.2): a literal, or a literal8 when the
/// content holds NUL. Large content is spliced from the mapping, or, when
/// it has to be decoded, decoded again while it is written.
#[allow(clippy::too_many_arguments)]
fn binary_literal<B: Clone>(
    w: &mut FetchWriter<'_>,
    splices: &mut Vec<(usize, Piece<B>)>,
    name: &str,
    body: Option<&B>,
    raw: &[u8],
    encoded: &[u8],
    cte: mime::Cte,
    partial: Option<Partial>,
) {
    let decoded = cte.decode(encoded);
    let data = match partial {
        Some(p) => mime::partial(decoded, p),
        None => decoded,
    };
    let nul = memchr::memchr(0, &data).is_some();
    if !nul && matches!(data, Cow::Borrowed(_)) {
        return literal(w, splices, name, body, raw, data);
    }
    let out = w.item(name);
    let place = body.zip(spliceable(raw, encoded));
    let Some((body, start)) = place.filter(|_| data.len() >= SPLICE_MIN) else {
        return match nul {
            true => encode::write_literal8(out, &data),
            false => encode::write_literal(out, &data),
        };
    };
    let tilde = if nul { "~" } else { "" };
    out.extend_from_slice(format!("{tilde}{{{}}}\r\n", data.len()).as_bytes());
    let (body, len) = (body.clone(), encoded.len());
    let piece = match (cte, partial) {
        (mime::Cte::Identity, Some(p)) => {
            let (from, n) = partial_range(len, p);
            Piece::Slice {
                body,
                start: start + from,
                len: n,
            }
        }
        (mime::Cte::Identity, None) => Piece::Slice { body, start, len },
        (cte, partial) => Piece::Decoded {
            body,
            start,
            len,
            cte,
            partial,
        },
    };
    splices.push((out.len(), piece));
}

/// `<start.len>` of `len` octets as (first, count), as `mime::partial` cuts.
fn partial_range(len: usize, p: Partial) -> (usize, usize) {
    let start = (p.start as usize).min(len);
    (start, (p.len as usize).min(len - start))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::imap::{parse_command, CommandBody};
    use crate::storage::index::{flag, MessageEntry};

    type Pieces = Vec<(usize, Piece<&'static [u8]>)>;

    /// Render `FETCH line` over `bodies` (UIDs 1..), with view positions
    /// for every message; the text and the pieces.
    fn run(line: &str, bodies: &[Vec<u8>], o: Options) -> (String, Pieces) {
        let bodies: Vec<&'static [u8]> = bodies.iter().map(|b| &*b.clone().leak()).collect();
        let mut mb = Mailbox::new(0, "INBOX", 1, 0);
        for (i, b) in bodies.iter().enumerate() {
            mb.messages.push(MessageEntry {
                uid: i as u32 + 1,
                flags: flag::SEEN,
                keywords: 0,
                internal_date: 0,
                modseq: 5,
                loc: Loc {
                    seg: 1,
                    offset: i as u32,
                    len: b.len() as u32,
                },
                email_id: 9,
            });
        }
        let mut view = View::default();
        let mut floor = u32::MAX;
        view.sync(&mb, true, &mut floor);
        let input = format!("t {line}\r\n");
        let cmd = parse_command(input.as_bytes()).unwrap();
        let CommandBody::Fetch {
            attrs, set, uid, ..
        } = cmd.body
        else {
            panic!()
        };
        let crate::protocol::imap::SequenceArg::Set(set) = set else {
            panic!()
        };
        let idx = view.resolve(&set, uid);
        let (mut buf, mut splices) = (Vec::new(), Vec::new());
        let body_of = |l: Loc| Some(bodies[l.offset as usize]);
        render(
            &mut buf,
            &mut splices,
            &mb,
            &mut view,
            &idx,
            &attrs,
            o,
            body_of,
        );
        (String::from_utf8_lossy(&buf).into_owned(), splices)
    }

    #[test]
    fn items_and_pieces() {
        let small = b"Subject: s\r\n\r\nhi\r\n".to_vec();
        let data: Vec<u8> = (0..6000u32).map(|i| (i % 7) as u8).collect();
        let b64: String = {
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            data.chunks(3)
                .flat_map(|c| {
                    let n = (u32::from(c[0]) << 16) | (u32::from(c[1]) << 8) | u32::from(c[2]);
                    (0..4).map(move |k| A[(n >> (18 - 6 * k) & 63) as usize] as char)
                })
                .collect()
        };
        let big = format!(
            "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b\r\n\
             Content-Transfer-Encoding: base64\r\n\r\n{b64}\r\n--b--\r\n"
        )
        .into_bytes();
        let nul = [&b"Subject: n\r\n\r\n"[..], &[0u8; 5000]].concat();
        let o = Options::default();
        let (text, pieces) = run(
            "FETCH 1 (FLAGS UID EMAILID THREADID RFC822.SIZE)",
            std::slice::from_ref(&small),
            o,
        );
        assert_eq!(
            text,
            "* 1 FETCH (FLAGS (\\Seen) UID 1 EMAILID (M9) THREADID NIL RFC822.SIZE 18)\r\n"
        );
        assert!(pieces.is_empty());
        // A small body is copied in; CONDSTORE adds UID and MODSEQ.
        let cs = Options {
            condstore: true,
            ..o
        };
        let (text, _) = run("FETCH 1 BODY.PEEK[TEXT]", std::slice::from_ref(&small), cs);
        assert_eq!(
            text,
            "* 1 FETCH (BODY[TEXT] {4}\r\nhi\r\n UID 1 MODSEQ (5))\r\n"
        );
        // A decoded part is a Decoded piece (literal8: it holds NULs).
        let (text, pieces) = run("FETCH 1 (BINARY.PEEK[2])", std::slice::from_ref(&big), o);
        assert_eq!(text, "* 1 FETCH (BINARY[2] ~{6000}\r\n)\r\n");
        assert!(matches!(pieces[..], [(30, Piece::Decoded { len, .. })] if len > 6000));
        // BODY[] with NULs goes out with spaces; BINARY[] as it is.
        let (text, pieces) = run(
            "FETCH 1 (BODY.PEEK[] BINARY.PEEK[])",
            std::slice::from_ref(&nul),
            o,
        );
        assert_eq!(
            text,
            "* 1 FETCH (BODY[] {5014}\r\n BINARY[] ~{5014}\r\n)\r\n"
        );
        assert!(matches!(
            pieces[..],
            [
                (_, Piece::NulAsSpace { len: 5014, .. }),
                (_, Piece::Slice { len: 5014, .. })
            ]
        ));
        assert!(binary_decodable_of(&big, "FETCH 1 BINARY[2]"));
        let odd = b"Content-Transfer-Encoding: x-uue\r\n\r\nx\r\n".to_vec();
        assert!(!binary_decodable_of(&odd, "FETCH 1 BINARY[1]"));
    }

    fn binary_decodable_of(body: &[u8], line: &str) -> bool {
        let mut mb = Mailbox::new(0, "INBOX", 1, 0);
        mb.messages.push(MessageEntry {
            uid: 1,
            flags: 0,
            keywords: 0,
            internal_date: 0,
            modseq: 1,
            loc: Loc {
                seg: 1,
                offset: 0,
                len: body.len() as u32,
            },
            email_id: 1,
        });
        let mut view = View::default();
        view.sync(&mb, true, &mut 0);
        let input = format!("t {line}\r\n");
        let CommandBody::Fetch { attrs, .. } = parse_command(input.as_bytes()).unwrap().body else {
            panic!()
        };
        binary_decodable(&mb, &view, &[0], &attrs, |_| Some(body))
    }
}
