//! The MIME tree of a message (RFC 2045/2046), with every part's header and
//! body as sub-slices of the message so BODY[section] is served without
//! copying.

use std::borrow::Cow;

use super::content::{parse_language, ContentType, Disposition};
use super::header::{fields, split, unfold};

/// Bounds on the structure parsed out of one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Nesting depth (multipart and message/rfc822 levels) past which a part
    /// is an opaque `application/octet-stream` leaf.
    pub max_depth: usize,
    /// Total parts; once reached, no further parts are split out.
    pub max_parts: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 32,
            max_parts: 1000,
        }
    }
}

/// What a part contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartKind<'a> {
    /// A single body (text, image, ... or anything opaque).
    Leaf,
    /// `multipart/*`: one or more children.
    Multipart(Vec<Part<'a>>),
    /// `message/rfc822` (or `message/global`): the encapsulated message,
    /// itself a part whose header is the message header.
    Message(Box<Part<'a>>),
}

/// One node of the tree. For the root, and for an encapsulated message, the
/// header is the message header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part<'a> {
    /// The header section including the blank line that ends it.
    pub header: &'a [u8],
    /// The body: after the blank line, up to (not including) the line end
    /// that belongs to the next boundary (RFC 2046 section 5.1.1).
    pub body: &'a [u8],
    /// Content-Type, or the default when missing or unparsable.
    pub content_type: ContentType<'a>,
    /// Whether Content-Type was present and parsed.
    pub explicit_type: bool,
    /// Content-Transfer-Encoding value, `7bit` when absent.
    pub encoding: Cow<'a, [u8]>,
    /// Content-ID.
    pub id: Option<Cow<'a, [u8]>>,
    /// Content-Description.
    pub description: Option<Cow<'a, [u8]>>,
    /// Content-MD5.
    pub md5: Option<Cow<'a, [u8]>>,
    /// Content-Disposition.
    pub disposition: Option<Disposition<'a>>,
    /// Content-Language tags.
    pub language: Vec<Cow<'a, [u8]>>,
    /// Content-Location.
    pub location: Option<Cow<'a, [u8]>>,
    /// Children.
    pub kind: PartKind<'a>,
}

/// A parsed message: the raw bytes and the root part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// The whole message.
    pub raw: &'a [u8],
    /// Root of the tree (header = the message header).
    pub root: Part<'a>,
}

impl<'a> Message<'a> {
    /// Parse with [`Limits::default`]. Never fails: malformed input gets a
    /// best-effort structure.
    pub fn parse(raw: &'a [u8]) -> Self {
        Self::parse_with(raw, Limits::default())
    }

    /// Where `slice` (a part's header or body, or anything else borrowed from
    /// this message) lies in the message, for callers that keep offsets into
    /// a stored segment instead of borrows. `None` for foreign slices.
    pub fn range_of(&self, slice: &[u8]) -> Option<std::ops::Range<usize>> {
        let base = self.raw.as_ptr() as usize;
        let start = (slice.as_ptr() as usize).checked_sub(base)?;
        let end = start.checked_add(slice.len())?;
        (end <= self.raw.len()).then_some(start..end)
    }

    /// Parse with explicit limits.
    pub fn parse_with(raw: &'a [u8], limits: Limits) -> Self {
        let mut count = 0;
        let root = parse_part(raw, 0, false, &limits, &mut count);
        Message { raw, root }
    }
}

/// Number of lines in `body` for body-fld-lines: line ends, plus one for a
/// final line without a line end.
pub fn count_lines(body: &[u8]) -> usize {
    let n = memchr::memchr_iter(b'\n', body).count();
    if body.last().is_some_and(|&b| b != b'\n') {
        n + 1
    } else {
        n
    }
}

fn parse_part<'a>(
    raw: &'a [u8],
    depth: usize,
    in_digest: bool,
    limits: &Limits,
    count: &mut usize,
) -> Part<'a> {
    *count += 1;
    let (header, body) = split(raw);
    let mut part = Part {
        header,
        body,
        content_type: if in_digest {
            ContentType::default_digest()
        } else {
            ContentType::default_text()
        },
        explicit_type: false,
        encoding: Cow::Borrowed(b"7bit"),
        id: None,
        description: None,
        md5: None,
        disposition: None,
        language: Vec::new(),
        location: None,
        kind: PartKind::Leaf,
    };
    for f in fields(header) {
        let name = f.name;
        let is = |n: &[u8]| name.eq_ignore_ascii_case(n);
        let first_time = |o: &Option<Cow<'a, [u8]>>| o.is_none();
        if is(b"Content-Type") && !part.explicit_type {
            if let Some(ct) = ContentType::parse(f.value) {
                part.content_type = ct;
                part.explicit_type = true;
            }
        } else if is(b"Content-Transfer-Encoding") {
            let v = unfold(f.value);
            if !v.is_empty() {
                part.encoding = v;
            }
        } else if is(b"Content-ID") && first_time(&part.id) {
            part.id = Some(unfold(f.value));
        } else if is(b"Content-Description") && first_time(&part.description) {
            part.description = Some(unfold(f.value));
        } else if is(b"Content-MD5") && first_time(&part.md5) {
            part.md5 = Some(unfold(f.value));
        } else if is(b"Content-Location") && first_time(&part.location) {
            part.location = Some(unfold(f.value));
        } else if is(b"Content-Disposition") && part.disposition.is_none() {
            part.disposition = Disposition::parse(f.value);
        } else if is(b"Content-Language") && part.language.is_empty() {
            part.language = parse_language(f.value);
        }
    }
    let structured = part.content_type.is_type(b"multipart")
        || part.content_type.is(b"message", b"rfc822")
        || part.content_type.is(b"message", b"global");
    if !structured {
        return part;
    }
    if depth >= limits.max_depth || *count >= limits.max_parts {
        part.content_type = ContentType::opaque();
        return part;
    }
    if part.content_type.is_type(b"multipart") {
        let boundary = part.content_type.param(b"boundary").map(|b| b.to_vec());
        let bodies = match &boundary {
            Some(b) if !b.is_empty() && b.len() <= 200 => split_multipart(body, b),
            _ => Vec::new(),
        };
        if bodies.is_empty() {
            // No usable boundary: RFC 2046 section 5.1.7 asks to treat an
            // unrecognized multipart as multipart/mixed, but with no parts
            // there is nothing to mix; present the body as plain text.
            part.content_type = ContentType::default_text();
            return part;
        }
        let digest = part.content_type.subtype.eq_ignore_ascii_case(b"digest");
        let mut children = Vec::with_capacity(bodies.len());
        for b in bodies {
            if *count >= limits.max_parts {
                break;
            }
            children.push(parse_part(b, depth + 1, digest, limits, count));
        }
        part.kind = PartKind::Multipart(children);
    } else {
        // An encapsulated message must not be encoded (RFC 2046 section 5.2.1);
        // if it is, we cannot look inside without decoding: keep it a leaf.
        let enc = &part.encoding;
        let identity = [&b"7bit"[..], b"8bit", b"binary"]
            .iter()
            .any(|e| enc.eq_ignore_ascii_case(e));
        if !identity {
            part.content_type = ContentType::opaque();
            return part;
        }
        part.kind = PartKind::Message(Box::new(parse_part(body, depth + 1, false, limits, count)));
    }
    part
}

/// The body parts of a multipart body (RFC 2046 section 5.1.1): the preamble
/// and epilogue are dropped, a missing close delimiter ends the last part at
/// the end of the body.
fn split_multipart<'a>(body: &'a [u8], boundary: &[u8]) -> Vec<&'a [u8]> {
    let mut dash = Vec::with_capacity(boundary.len() + 2);
    dash.extend_from_slice(b"--");
    dash.extend_from_slice(boundary);
    let finder = memchr::memmem::Finder::new(&dash);
    let mut parts = Vec::new();
    // Start of the current part's content, once the first delimiter is seen.
    let mut open: Option<usize> = None;
    let mut search = 0;
    while let Some(i) = finder.find(&body[search..]).map(|i| search + i) {
        search = i + 1;
        if i > 0 && body[i - 1] != b'\n' {
            continue;
        }
        let mut j = i + dash.len();
        let close = body[j..].starts_with(b"--");
        if close {
            j += 2;
        }
        // Transport padding, then the line end.
        while j < body.len() && matches!(body[j], b' ' | b'\t') {
            j += 1;
        }
        let line_end = match body.get(j) {
            None => j,
            Some(b'\n') => j + 1,
            Some(b'\r') if body.get(j + 1) == Some(&b'\n') => j + 2,
            Some(b'\r') if j + 1 == body.len() => j + 1,
            _ => continue,
        };
        // The line end before the delimiter belongs to the delimiter.
        let content_end = if i >= 2 && &body[i - 2..i] == b"\r\n" {
            i - 2
        } else {
            i.saturating_sub(1)
        };
        if let Some(start) = open {
            parts.push(&body[start..content_end.max(start)]);
        }
        if close {
            return parts;
        }
        open = Some(line_end);
        search = line_end.max(search);
    }
    if let Some(start) = open {
        parts.push(&body[start..]);
    }
    parts
}

impl<'a> Part<'a> {
    /// Direct children of a multipart (empty otherwise).
    pub fn children(&self) -> &[Part<'a>] {
        match &self.kind {
            PartKind::Multipart(c) => c,
            _ => &[],
        }
    }

    /// The encapsulated message of a message/rfc822 part.
    pub fn message(&self) -> Option<&Part<'a>> {
        match &self.kind {
            PartKind::Message(m) => Some(m),
            _ => None,
        }
    }
}

/// Find the part named by `path` (RFC 3501 section 6.4.5 part numbering).
///
/// Numbering starts in a "message context" (the root, or the inside of a
/// message/rfc822 part): there, a multipart body's children are numbered from
/// 1, and a non-multipart body is part 1 itself. Below a multipart child,
/// only multiparts and message/rfc822 parts have further numbers.
pub fn resolve<'p, 'a>(root: &'p Part<'a>, path: &[u32]) -> Option<&'p Part<'a>> {
    let mut cur = root;
    let mut message_context = true;
    for &n in path {
        if !message_context {
            if let PartKind::Message(inner) = &cur.kind {
                cur = inner;
                message_context = true;
            }
        }
        let idx = usize::try_from(n).ok()?.checked_sub(1)?;
        match &cur.kind {
            PartKind::Multipart(children) => cur = children.get(idx)?,
            _ if message_context && idx == 0 => {}
            _ => return None,
        }
        message_context = false;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_split() {
        let body = b"preamble\r\n--b\r\nA: 1\r\n\r\none\r\n--b \r\n\r\ntwo\r\n--b--\r\nepilogue";
        assert_eq!(
            split_multipart(body, b"b"),
            vec![&b"A: 1\r\n\r\none"[..], &b"\r\ntwo"[..]]
        );
        // Boundary at the very start, bare LF, missing close delimiter.
        let body = b"--b\nx\n--bb\n--b\ny";
        assert_eq!(
            split_multipart(body, b"b"),
            vec![&b"x\n--bb"[..], &b"y"[..]]
        );
        // Empty parts and delimiters that are not at a line start.
        let body = b"--b\r\n--b\r\nx--b\r\n--b--";
        assert_eq!(split_multipart(body, b"b"), vec![&b""[..], &b"x--b"[..]]);
        assert!(split_multipart(b"no delimiters here", b"b").is_empty());
        assert!(split_multipart(b"--b--\r\n", b"b").is_empty());
    }

    #[test]
    fn line_counts() {
        assert_eq!(count_lines(b""), 0);
        assert_eq!(count_lines(b"a"), 1);
        assert_eq!(count_lines(b"a\r\n"), 1);
        assert_eq!(count_lines(b"a\r\nb"), 2);
    }

    #[test]
    fn depth_and_part_limits() {
        let mut msg = Vec::new();
        for i in 0..50 {
            msg.extend_from_slice(
                format!("Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n")
                    .as_bytes(),
            );
        }
        msg.extend_from_slice(b"\r\ninner\r\n");
        let m = Message::parse(&msg);
        let mut depth = 0;
        let mut p = &m.root;
        while let [c] = p.children() {
            depth += 1;
            p = c;
        }
        assert_eq!(depth, 32);
        assert!(p.content_type.is(b"application", b"octet-stream"));
        let mut many = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n".to_vec();
        for _ in 0..5000 {
            many.extend_from_slice(b"--x\r\n\r\np\r\n");
        }
        let m = Message::parse_with(
            &many,
            Limits {
                max_depth: 32,
                max_parts: 100,
            },
        );
        assert_eq!(m.root.children().len(), 99);
    }
}
