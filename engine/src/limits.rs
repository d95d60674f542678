//! Every bound the server enforces, with where its number comes from.
//! Configuration may override the operator-facing ones (see `config.rs`);
//! the relations between them are checked at compile time below.
use std::time::Duration;

/// RFC 5321 section 4.5.3.1.4: a command line is at most 512 octets with CRLF.
/// We accept longer lines (ESMTP parameters such as AUTH= or SIZE= grow them,
/// RFC 1869 section 4.1.2 allows 1000+) up to this bound, then answer 500 5.5.6.
pub const SMTP_COMMAND_LINE_MAX: usize = 4096;
/// RFC 5321 section 4.5.3.1.6: a text line is at most 1000 octets with CRLF.
/// Longer body lines are kept (real mail breaks this rule) up to the message
/// size limit; this constant is what we advertise as the standard.
pub const SMTP_TEXT_LINE_MAX: usize = 1000;
/// Default maximum message size (SIZE extension, RFC 1870): 32 MiB.
pub const MESSAGE_SIZE_MAX: usize = 32 * 1024 * 1024;
/// RFC 5321 section 4.5.3.1.8 asks servers to accept at least 100 recipients.
pub const RECIPIENTS_MAX: usize = 100;
/// Default maximum simultaneous connections to the whole server.
pub const CONNECTIONS_MAX: usize = 10_000;
/// Default maximum simultaneous connections from one client IP address.
pub const CONNECTIONS_PER_ADDRESS_MAX: usize = 256;
/// Failed commands tolerated in one SMTP session before it is closed with 421.
pub const SMTP_ERRORS_MAX: usize = 20;

/// RFC 5321 section 4.5.3.2.7: the server should wait at least 5 minutes for
/// the next command.
pub const SMTP_COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// RFC 5321 section 4.5.3.2.6: at least 10 minutes for the final dot; we use
/// the same bound for the gap between two reads of a data block.
pub const SMTP_DATA_TIMEOUT: Duration = Duration::from_secs(600);

/// RFC 2449 section 4 (and RFC 1939 section 3): a POP3 command line, with CRLF,
/// is at most 255 octets.
pub const POP3_COMMAND_LINE_MAX: usize = 255;
/// RFC 1939 section 3: an inactivity autologout timer of at least 10 minutes.
pub const POP3_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Failed logins on one POP3/IMAP connection before it is closed.
pub const AUTH_FAILURES_MAX: usize = 3;
/// argon2 password checks one shard runs at once. Each takes about 19 MiB
/// (the argon2id default memory cost) and tens of milliseconds of a CPU;
/// more at once only adds memory, not throughput, so logins beyond this wait
/// their turn and a burst of failed logins cannot grow the process by
/// hundreds of megabytes.
pub const ARGON2_VERIFY_PER_SHARD: u64 = 2;

/// A TLS handshake that is not done after this is abandoned: a client that
/// connects and never finishes (or trickles bytes) holds a connection slot
/// for no longer than a slow honest one needs.
pub const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// TLS handshakes one shard runs at once. Each costs an ECDHE key exchange
/// and a signature (tens of microseconds of CPU) plus buffers; beyond this,
/// STARTTLS gets `454 4.7.0` and an implicit-TLS connection is closed.
pub const TLS_HANDSHAKES_MAX: usize = 512;
/// Ciphertext read from the socket at once on a TLS connection. rustls
/// refuses more input while 16 KiB of decrypted data wait to be read; one
/// read of at most this much never produces more than that.
pub const TLS_READ_CHUNK: usize = 16 * 1024;

/// RFC 2971 3.3: an IMAP ID list has at most 30 field-value pairs, fields
/// of at most 30 octets and values of at most 1024. ID is allowed before
/// login, so the pre-login framing bound makes room for the largest one.
pub const IMAP_ID_PAIRS_MAX: usize = 30;
pub const IMAP_ID_FIELD_MAX: usize = 30;
pub const IMAP_ID_VALUE_MAX: usize = 1024;
/// Sort criteria in one SORT command (RFC 5256 has seven keys; a client has
/// no reason to repeat them many times).
pub const IMAP_SORT_KEYS_MAX: usize = 16;
/// Mailboxes per account (each is kept in the account's index in memory
/// and in every checkpoint): `[limits] mailboxes_max`.
pub const IMAP_MAILBOXES_MAX: usize = 10_000;
/// Subscribed names per account (SUBSCRIBE takes names of mailboxes that
/// do not exist, so this is its own bound): `[limits] subscriptions_max`.
pub const IMAP_SUBSCRIPTIONS_MAX: usize = 10_000;
/// Messages per account that IMAP APPEND and COPY may reach (an empty
/// message costs no quota, and COPY 1:* doubles a mailbox for free):
/// `[limits] messages_max`. Delivery is not refused by it.
pub const IMAP_MESSAGES_MAX: usize = 1_000_000;
/// The largest ID command RFC 2971 allows, written the longest way: a tag
/// of up to 1 KiB, then every field and value a quoted string with every
/// octet escaped (a literal, `{1024}` CRLF and the data, is shorter). About
/// 63 KiB; every other command before login stays within 4 KiB.
pub const IMAP_ID_COMMAND_MAX: usize = 1024
    + b" ID ()\r\n".len()
    + IMAP_ID_PAIRS_MAX * ((2 + 2 * IMAP_ID_FIELD_MAX) + 1 + (2 + 2 * IMAP_ID_VALUE_MAX) + 1);

/// Message bytes a session keeps in RAM before it spools the message to disk.
pub const SPOOL_THRESHOLD: usize = 128 * 1024;
/// Spool bytes the unauthenticated sessions of one client address may hold
/// at once on one shard: two messages of the default maximal size.
pub const SPOOL_PER_ADDRESS_MAX: u64 = 2 * MESSAGE_SIZE_MAX as u64;
/// Freed session memory after which a shard trims the heap.
pub const TRIM_AFTER_BYTES: u64 = 64 * 1024 * 1024;

/// Size of the per-connection read buffer chunk.
pub const READ_CHUNK: usize = 16 * 1024;

/// Segment files are preallocated (fallocate) to this size and mapped whole.
pub const SEGMENT_SIZE: u64 = 64 * 1024 * 1024;
/// Header bytes of one record plus the largest per-message metadata we store.
pub const RECORD_OVERHEAD_MAX: usize = 4096;
/// Trace headers (Return-Path, Received) prepended to a message, at most.
pub const TRACE_HEADERS_MAX: usize = 2048;

/// Inbound mail authentication (`auth/`): DKIM signatures verified per
/// message. A message may carry any number of DKIM-Signature fields (RFC
/// 6376 section 4 lets a verifier ignore some); each costs a key lookup, a
/// body hash when its `l=` differs and a public-key operation, so only the
/// first (topmost, newest) ones are verified and the rest are reported as
/// not checked.
pub const DKIM_SIGNATURES_MAX: usize = 10;
/// A DKIM-Signature or ARC field longer than this is not verified (it
/// could not be honest: a typical one is under 1 KiB). It bounds the `h=`
/// list, whose every name the verifier looks up among the header fields.
pub const AUTH_SIGNATURE_FIELD_MAX: usize = 4096;
/// A header section larger than this is not DKIM/ARC-verified (dkim and arc
/// are `permerror`); SPF and DMARC are still evaluated, DMARC from the
/// From: fields alone with no DKIM result.
pub const AUTH_HEADER_MAX: usize = 1024 * 1024;
/// RFC 8617 section 4.2.1: ARC instance numbers run from 1 to 50; a message
/// with more ARC sets fails ARC without being verified.
pub const ARC_SETS_MAX: usize = 50;
/// The whole verification of one message (the wait for a permit and every
/// DNS lookup of SPF, DKIM, DMARC and ARC) ends after this; what is unfinished is a `temperror`.
/// RFC 7208 section 4.6.4 caps SPF at 10 DNS-querying terms and suggests a
/// 20-second limit for the whole check.
pub const AUTH_VERIFY_TIMEOUT: Duration = Duration::from_secs(20);
/// Verifications in flight on the DNS thread at once; more wait their turn.
pub const AUTH_VERIFICATIONS_MAX: usize = 1024;
/// Entries of each of the verifier's parsed-record caches (TXT, MX, A,
/// AAAA, PTR) and of its resolver's record cache.
pub const AUTH_CACHE_ENTRIES: usize = 16_384;
/// The Authentication-Results field ringmail prepends, at most; results
/// beyond it are left out of the field (never the DMARC or SPF ones).
pub const AUTH_RESULTS_MAX: usize = 4096;

/// Virtual buckets accounts are hashed into. Fixed when the data directory is
/// created and stored there: bucket -> shard is `bucket % cores`, so the
/// layout survives a restart with a different number of cores.
pub const BUCKETS_DEFAULT: u32 = 256;

const _: () = assert!(
    (MESSAGE_SIZE_MAX + RECORD_OVERHEAD_MAX + TRACE_HEADERS_MAX + AUTH_RESULTS_MAX) as u64
        <= SEGMENT_SIZE,
    "a maximal message must fit in one segment"
);
const _: () = assert!(POP3_COMMAND_LINE_MAX < SMTP_COMMAND_LINE_MAX);
const _: () = assert!(SMTP_COMMAND_LINE_MAX <= READ_CHUNK);

/// RFC 8461 section 3.3: "a reasonable maximum" for the policy body, with
/// 64 KiB as the suggestion. A longer body fails the fetch.
pub const MTA_STS_POLICY_BYTES_MAX: usize = 64 * 1024;
/// RFC 8461 section 3.3 asks for a timeout on the policy fetch; this covers
/// the whole fetch (address lookup, connect, handshake, request, body).
pub const MTA_STS_FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// RFC 8461 section 3.2: `max_age` is at most 31557600 seconds (a year).
pub const MTA_STS_MAX_AGE_MAX: u64 = 31_557_600;
/// `mx` patterns kept from one policy (RFC 8461 sets no bound; real policies
/// list a handful). More fail the policy as invalid.
pub const MTA_STS_MX_PATTERNS_MAX: usize = 64;
/// Destination domains whose MTA-STS state is cached.
pub const MTA_STS_CACHE_ENTRIES_MAX: usize = 16_384;
/// Policy fetches (HTTPS connections) in flight at once.
pub const MTA_STS_FETCHES_MAX: usize = 32;
/// After a failed fetch, the same policy id is not fetched again before this
/// (a cached policy, if any, is used meanwhile; a new id is fetched at once).
pub const MTA_STS_FETCH_RETRY: Duration = Duration::from_secs(300);
/// Longest time the `_mta-sts` TXT answer is trusted before it is asked
/// again (RFC 8461 section 5.1: the id is checked to notice policy updates).
pub const MTA_STS_TXT_TTL_MAX: Duration = Duration::from_secs(3600);

/// Runs of expunged UIDs a mailbox remembers for QRESYNC (RFC 7162 3.2.5),
/// 16 octets each. Beyond, the oldest are forgotten and a resync from before
/// them reports every UID the client may know that is gone.
pub const VANISHED_RUNS_MAX: usize = 4096;
