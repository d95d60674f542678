//! What ringmail does with a verified message: a pure mapping from the
//! authentication results and the `[mail_auth]` settings to a decision
//! (store in the INBOX, store in Junk, refuse, defer). Tested apart from
//! any DNS.
use crate::config::{MailAuth, Quarantine, SpfFail, SpfTempError};

/// SPF result (RFC 7208 section 2.6) of the identity that counts: MAIL FROM,
/// or HELO for the null reverse path (section 2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spf {
    Pass,
    Fail,
    SoftFail,
    Neutral,
    None,
    TempError,
    PermError,
}

/// DMARC result for the From: domain (RFC 7489 section 11.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dmarc {
    /// An aligned SPF or DKIM pass.
    Pass,
    /// The domain publishes a policy and nothing aligned passed.
    Fail,
    /// No policy (no record, no single From: domain).
    None,
    /// The policy could not be fetched (DNS trouble).
    TempError,
    /// The policy record is broken.
    PermError,
    /// The From: addresses name more than one domain: no single policy
    /// applies (RFC 7489 section 6.6.1).
    SeveralDomains,
}

/// The policy the From: domain asks for (RFC 7489 section 6.3 `p`/`sp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    None,
    Quarantine,
    Reject,
}

/// Everything the decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub spf: Spf,
    pub dmarc: Dmarc,
    pub requested: Requested,
    /// Whether this message falls in the record's `pct` sample (RFC 7489
    /// section 6.6.4); true for pct=100.
    pub sampled: bool,
}

/// Why a message is refused or deferred (the runtime maps each to its reply).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `550 5.7.1`: DMARC failed under p=reject.
    DmarcReject,
    /// `550 5.7.23`: SPF fail, no DMARC policy, `spf_fail = "reject"`.
    SpfFail,
    /// `550 5.7.1`: From: addresses of several domains.
    SeveralFromDomains,
}

/// What happens to the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Stored in the INBOX (with the Authentication-Results field).
    Inbox,
    /// Stored in the account's \Junk folder.
    Junk,
    /// Refused at the end of data.
    Reject(Refusal),
    /// `451 4.7.24`: SPF temperror, try again later.
    Defer,
}

/// Decide. In order:
/// 0. From: addresses of several domains: refused. RFC 7489 section 6.6.1
///    lets a receiver reject such a message or apply the strictest of the
///    domains' policies; refusing cannot be got around by choosing the
///    domains and is what large receivers do.
/// 1. DMARC pass: the INBOX, whatever SPF said (RFC 7489 section 6.6.2: an
///    aligned pass is enough).
/// 2. SPF temperror with `spf_temperror = "defer"`: 451 (RFC 7208 section
///    8.6 lets the receiver defer; a later try may pass DMARC).
/// 3. DMARC fail: the requested policy, one level lower when the message is
///    outside the `pct` sample (RFC 7489 section 6.6.4); p=reject refuses
///    when `dmarc_reject`, else it is handled as quarantine; quarantine goes
///    to Junk or is only tagged.
/// 4. No DMARC policy and SPF fail: `spf_fail`.
/// 5. Everything else (including DMARC temperror/permerror): the INBOX with
///    the results recorded.
pub fn decide(settings: &MailAuth, facts: &Facts) -> Decision {
    if facts.dmarc == Dmarc::SeveralDomains {
        return Decision::Reject(Refusal::SeveralFromDomains);
    }
    if facts.dmarc == Dmarc::Pass {
        return Decision::Inbox;
    }
    if facts.spf == Spf::TempError && settings.spf_temperror == SpfTempError::Defer {
        return Decision::Defer;
    }
    if facts.dmarc == Dmarc::Fail {
        let applied = match (facts.requested, facts.sampled) {
            (r, true) => r,
            (Requested::Reject, false) => Requested::Quarantine,
            (_, false) => Requested::None,
        };
        let quarantine = || match settings.dmarc_quarantine {
            Quarantine::Junk => Decision::Junk,
            Quarantine::Tag => Decision::Inbox,
        };
        return match applied {
            Requested::Reject if settings.dmarc_reject => Decision::Reject(Refusal::DmarcReject),
            Requested::Reject | Requested::Quarantine => quarantine(),
            Requested::None => Decision::Inbox,
        };
    }
    if facts.dmarc == Dmarc::None && facts.spf == Spf::Fail && settings.spf_fail == SpfFail::Reject
    {
        return Decision::Reject(Refusal::SpfFail);
    }
    Decision::Inbox
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(spf: Spf, dmarc: Dmarc, requested: Requested) -> Facts {
        Facts {
            spf,
            dmarc,
            requested,
            sampled: true,
        }
    }

    #[test]
    fn defaults() {
        let s = MailAuth::default();
        let d = |f: Facts| decide(&s, &f);
        assert_eq!(
            d(facts(Spf::Fail, Dmarc::Pass, Requested::Reject)),
            Decision::Inbox
        );
        assert_eq!(
            d(facts(Spf::Pass, Dmarc::Fail, Requested::Reject)),
            Decision::Reject(Refusal::DmarcReject)
        );
        assert_eq!(
            d(facts(Spf::Pass, Dmarc::Fail, Requested::Quarantine)),
            Decision::Junk
        );
        assert_eq!(
            d(facts(Spf::Fail, Dmarc::Fail, Requested::None)),
            Decision::Inbox
        );
        // SPF hard fail without DMARC: tag only.
        assert_eq!(
            d(facts(Spf::Fail, Dmarc::None, Requested::None)),
            Decision::Inbox
        );
        // temperror defers unless DMARC passed anyway.
        assert_eq!(
            d(facts(Spf::TempError, Dmarc::None, Requested::None)),
            Decision::Defer
        );
        assert_eq!(
            d(facts(Spf::TempError, Dmarc::Fail, Requested::Reject)),
            Decision::Defer
        );
        assert_eq!(
            d(facts(Spf::TempError, Dmarc::Pass, Requested::Reject)),
            Decision::Inbox
        );
        // Other DNS trouble is recorded, never deferred.
        assert_eq!(
            d(facts(Spf::Pass, Dmarc::TempError, Requested::None)),
            Decision::Inbox
        );
        assert_eq!(
            d(facts(Spf::PermError, Dmarc::PermError, Requested::None)),
            Decision::Inbox
        );
    }

    #[test]
    fn several_from_domains_are_refused_whatever_the_settings() {
        let lax = MailAuth {
            dmarc_reject: false,
            dmarc_quarantine: Quarantine::Tag,
            spf_temperror: SpfTempError::Accept,
            ..MailAuth::default()
        };
        for s in [MailAuth::default(), lax] {
            for spf in [Spf::Pass, Spf::TempError, Spf::None] {
                assert_eq!(
                    decide(&s, &facts(spf, Dmarc::SeveralDomains, Requested::None)),
                    Decision::Reject(Refusal::SeveralFromDomains)
                );
            }
        }
    }

    #[test]
    fn pct_lowers_the_policy_one_level() {
        let s = MailAuth::default();
        let mut f = facts(Spf::Fail, Dmarc::Fail, Requested::Reject);
        f.sampled = false;
        assert_eq!(decide(&s, &f), Decision::Junk);
        f.requested = Requested::Quarantine;
        assert_eq!(decide(&s, &f), Decision::Inbox);
    }

    #[test]
    fn settings() {
        let s = MailAuth {
            dmarc_reject: false,
            dmarc_quarantine: Quarantine::Tag,
            spf_fail: SpfFail::Reject,
            spf_temperror: SpfTempError::Accept,
            ..MailAuth::default()
        };
        let d = |f: Facts| decide(&s, &f);
        assert_eq!(
            d(facts(Spf::Pass, Dmarc::Fail, Requested::Reject)),
            Decision::Inbox
        );
        let junk = MailAuth {
            dmarc_reject: false,
            ..MailAuth::default()
        };
        assert_eq!(
            decide(&junk, &facts(Spf::Pass, Dmarc::Fail, Requested::Reject)),
            Decision::Junk
        );
        assert_eq!(
            d(facts(Spf::Fail, Dmarc::None, Requested::None)),
            Decision::Reject(Refusal::SpfFail)
        );
        // With a DMARC policy, DMARC decides, not SPF alone.
        assert_eq!(
            d(facts(Spf::Fail, Dmarc::Fail, Requested::None)),
            Decision::Inbox
        );
        assert_eq!(
            d(facts(Spf::TempError, Dmarc::None, Requested::None)),
            Decision::Inbox
        );
    }
}
