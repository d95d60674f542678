#!/usr/bin/env python3
"""Summarize a bench/compare.sh results directory: medians over rounds,
p99 latencies and ringmail's ratio to each peer, as Markdown tables; with
the TLS legs also ringmail's TLS/plain ratios, ringmail-TLS/peer-TLS, the
handshake counts and the handshakes per core of the one-core legs.
Usage: bench/scripts/summarize.py RESULTS_DIR"""
import glob, json, os, re, statistics, sys

d = sys.argv[1]
legs = {}
for path in sorted(glob.glob(os.path.join(d, "*.json"))):
    if path.endswith(".meta.json"):
        continue
    name = os.path.basename(path)[:-5]
    m = re.match(r"(.*)-r(\d+)$", name)
    if not m:
        continue
    try:
        j = json.load(open(path))
    except (json.JSONDecodeError, OSError):
        continue
    meta = {}
    try:
        meta = json.load(open(path[:-5] + ".meta.json"))
    except (json.JSONDecodeError, OSError):
        pass
    j["_load1"] = meta.get("load1")
    j["_cpus"] = meta.get("server_cpus")
    j["_io"] = meta.get("io_pressure")
    j["_cpu_psi"] = meta.get("cpu_pressure")
    legs.setdefault(m.group(1), []).append(j)

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None

def op_p99(j, op):
    o = j.get("ops", {}).get(op)
    return o["p99_us"] / 1000.0 if o else None

def cmds_per_s(j):
    return j["counters"].get("commands_ok", 0) / j["duration_s"] if j["duration_s"] else None

def fmt(x, nd=0):
    return "-" if x is None else f"{x:,.{nd}f}"

def ratio(a, b, invert=False):
    if a is None or b is None or a == 0 or b == 0:
        return "-"
    r = (b / a) if invert else (a / b)
    return f"{r:.3g}x"

def rounds(name, f, nd=0):
    return " / ".join(fmt(f(j), nd) for j in legs.get(name, []))

def verify_note(name):
    vs = [j.get("verify") for j in legs.get(name, []) if j.get("verify")]
    if not vs:
        return "-"
    ok = all(v["ok"] for v in vs)
    found = sum(v["found_ok"] for v in vs)
    exp = sum(v["expected"] for v in vs)
    bad = sum(v["missing"] + v["corrupted"] + v["duplicated"] for v in vs)
    return f"{'ok' if ok else 'FAILED'} ({found}/{exp}{', ' + str(bad) + ' bad' if bad else ''})"

def errors(name):
    return sum(j["errors_total"] + j.get("messages_failed", 0) for j in legs.get(name, []))

def loads(name):
    return " / ".join(fmt(j["_load1"], 1) for j in legs.get(name, []))

def mtp(name, f=lambda j: j["messages_per_s"]):
    return med(map(f, legs.get(name, [])))

def cpus(j):
    return j.get("_cpus")

def cpu_us_per(j, rate):
    """ringmail's CPU time per unit (message, command, session) in us."""
    c, r = j.get("_cpus"), rate(j)
    return c / r * 1e6 if c is not None and r else None

def hs_counts(name):
    ts = [j.get("tls") for j in legs.get(name, []) if j.get("tls")]
    if not ts:
        return "-"
    full = sum(t["handshakes_full"] for t in ts)
    res = sum(t["handshakes_resumed"] for t in ts)
    return f"{full:,} / {res:,}"

def tls_ver(name):
    ts = [j.get("tls") for j in legs.get(name, []) if j.get("tls")]
    return f"{ts[0]['version']} {ts[0]['cipher']}" if ts and ts[0].get("version") else "-"

def verdict(r, goal):
    """'met'/'missed' for a ratio against a lower bound."""
    if r is None:
        return "not measured"
    return "met" if r >= goal else "MISSED"

def rr(a, b):
    return a / b if a and b else None

TARGETS = []  # (what, ratio, goal) for the TLS summary at the end

machine = open(os.path.join(d, "machine.txt")).read().strip() if os.path.exists(os.path.join(d, "machine.txt")) else ""
print(machine)
m = re.search(r"POP3_PER_ACCOUNT=(\d+)", machine)
POP3_MSGS = m.group(1) if m else "?"
_io = sorted(j["_io"] for L in legs.values() for j in L if j.get("_io") is not None)
_cp = sorted(j["_cpu_psi"] for L in legs.values() for j in L if j.get("_cpu_psi") is not None)
if _io:
    print(f"pressure at the end of each leg (/proc/pressure, 'some' avg10, % of time a task waited): "
          f"IO min {_io[0]:.0f} / median {statistics.median(_io):.0f} / max {_io[-1]:.0f}; "
          f"CPU min {_cp[0]:.0f} / median {statistics.median(_cp):.0f} / max {_cp[-1]:.0f}")
print()

# SMTP
print("### SMTP (4 KiB messages, 32 connections, closed loop)\n")
print("| server | msg/s median | msg/s per round | p99 message (ms) median | verify | errors | load1 per round |")
print("|---|---:|---|---:|---|---:|---|")
tp = lambda j: j["messages_per_s"]
p99m = lambda j: op_p99(j, "message")
for name, label in [("smtp-sink", "Postfix smtp-sink (no storage)"), ("postfix", "Postfix 3.7 (virtual, Maildir)"), ("ringmail-smtp", "ringmail"),
                    ("postfix-tls", "Postfix 3.7, STARTTLS"), ("ringmail-smtp-tls", "ringmail, STARTTLS")]:
    if name in legs:
        print(f"| {label} | {fmt(med(map(tp, legs[name])))} | {rounds(name, tp)} | {fmt(med(map(p99m, legs[name])), 2)} | {verify_note(name)} | {errors(name)} | {loads(name)} |")
rm = med(map(tp, legs.get("ringmail-smtp", [])))
rm99 = med(map(p99m, legs.get("ringmail-smtp", [])))
print()
for name, label, target in [("smtp-sink", "smtp-sink", "target >= 0.70x"), ("postfix", "Postfix", "target >= 20x")]:
    if name in legs:
        peer = med(map(tp, legs[name])); peer99 = med(map(p99m, legs[name]))
        print(f"- ringmail / {label}: throughput {ratio(rm, peer)} ({target}), p99 {ratio(rm99, peer99)} of {label}'s")
if "ringmail-smtp-tls" in legs:
    t, pf = mtp("ringmail-smtp-tls"), mtp("postfix-tls")
    TARGETS.append(("SMTP, connection reuse: ringmail STARTTLS / plain", rr(t, rm), 0.75))
    TARGETS.append(("SMTP, connection reuse: ringmail STARTTLS / Postfix STARTTLS", rr(t, pf), 10))
    print(f"- ringmail STARTTLS / ringmail plain: throughput {ratio(t, rm)} (target >= 0.75x: TLS costs at most 25%), "
          f"p99 {ratio(med(map(p99m, legs['ringmail-smtp-tls'])), rm99)}")
    if pf:
        print(f"- ringmail STARTTLS / Postfix STARTTLS: throughput {ratio(t, pf)} (target >= 10x)")
    for name, label in [("ringmail-smtp", "plain"), ("ringmail-smtp-tls", "STARTTLS")]:
        L = legs.get(name, [])
        print(f"- ringmail {label}: server CPUs {' / '.join(fmt(cpus(j), 2) for j in L)}, "
              f"CPU per message {fmt(med(cpu_us_per(j, tp) for j in L), 1)} us (median)")
print()

# SMTP, a connection per message
if any(n in legs for n in ("postfix-1c", "ringmail-smtp-1c", "postfix-tls-1c", "ringmail-smtp-tls-1c")):
    print("### SMTP, a connection per message (--reuse 1: EHLO, [STARTTLS, EHLO], MAIL/RCPT/DATA, QUIT)\n")
    print("| server | msg/s median | msg/s per round | p99 message (ms) | p99 tls_handshake (ms) | handshakes full / resumed | verify | errors | ringmail CPU per message (us) | load1 per round |")
    print("|---|---:|---|---:|---:|---:|---|---:|---:|---|")
    for name, label in [("postfix-1c", "Postfix 3.7"), ("postfix-tls-1c", "Postfix 3.7, STARTTLS"),
                        ("ringmail-smtp-1c", "ringmail"), ("ringmail-smtp-tls-1c", "ringmail, STARTTLS")]:
        if name in legs:
            L = legs[name]
            print(f"| {label} | {fmt(mtp(name))} | {rounds(name, tp)} | {fmt(med(map(p99m, L)), 2)} | "
                  f"{fmt(med(op_p99(j, 'tls_handshake') for j in L), 2)} | {hs_counts(name)} | {verify_note(name)} | {errors(name)} | "
                  f"{fmt(med(cpu_us_per(j, tp) for j in L), 1)} | {loads(name)} |")
    t1, p1 = mtp("ringmail-smtp-tls-1c"), mtp("postfix-tls-1c")
    TARGETS.append(("SMTP, connection per message: ringmail STARTTLS / Postfix STARTTLS", rr(t1, p1), 10))
    print(f"\n- ringmail STARTTLS / Postfix STARTTLS: throughput {ratio(t1, p1)} (target >= 10x)")
    print(f"- ringmail STARTTLS / ringmail plain: {ratio(t1, mtp('ringmail-smtp-1c'))}; "
          f"Postfix STARTTLS / Postfix plain: {ratio(p1, mtp('postfix-1c'))}")
    print(f"- ringmail plain / Postfix plain: {ratio(mtp('ringmail-smtp-1c'), mtp('postfix-1c'))}")
    print()

# POP3
print("### POP3 (retrieve and delete everything, 32 connections)\n")
print("| server | msg/s median | msg/s per round | sessions/s median | p99 RETR (ms) | p99 session (ms) | p99 QUIT (ms) | errors | load1 per round |")
print("|---|---:|---|---:|---:|---:|---:|---:|---|")
for name, label in [("dovecot-pop3", "Dovecot 2.3 (Maildir)"), ("ringmail-pop3", "ringmail"),
                    ("dovecot-pop3s", "Dovecot 2.3, POP3S"), ("ringmail-pop3s", "ringmail, POP3S")]:
    if name in legs:
        L = legs[name]
        print(f"| {label} | {fmt(med(map(tp, L)))} | {rounds(name, tp)} | {fmt(med(j['sessions_per_s'] for j in L))} | "
              f"{fmt(med(op_p99(j, 'retr') for j in L), 2)} | {fmt(med(op_p99(j, 'session') for j in L), 2)} | "
              f"{fmt(med(op_p99(j, 'quit') for j in L), 2)} | {errors(name)} | {loads(name)} |")
if "dovecot-pop3" in legs and "ringmail-pop3" in legs:
    a, b = legs["ringmail-pop3"], legs["dovecot-pop3"]
    print(f"\n- ringmail / Dovecot: throughput {ratio(med(map(tp, a)), med(map(tp, b)))} (target >= 5x), "
          f"p99 RETR {ratio(med(op_p99(j, 'retr') for j in a), med(op_p99(j, 'retr') for j in b))} of Dovecot's, "
          f"p99 session {ratio(med(op_p99(j, 'session') for j in a), med(op_p99(j, 'session') for j in b))}")
if "ringmail-pop3s" in legs:
    t, d = mtp("ringmail-pop3s"), mtp("dovecot-pop3s")
    TARGETS.append(("POP3S: ringmail / Dovecot", rr(t, d), 5))
    print(f"- ringmail POP3S / Dovecot POP3S: throughput {ratio(t, d)} (target >= 5x)")
    print(f"- ringmail POP3S / ringmail POP3: {ratio(t, mtp('ringmail-pop3'))} (a connection and a handshake per session of "
          f"{POP3_MSGS} messages); Dovecot POP3S / POP3: {ratio(d, mtp('dovecot-pop3'))}")
print()

# IMAP
print("### IMAP (loadgen default mix, 100 sessions)\n")
ops = ["login", "select", "fetch_headers", "fetch_body", "store", "search", "logout"]
print("| server | commands/s median | commands/s per round | " + " | ".join(f"p99 {o} (ms)" for o in ops) + " | errors | load1 per round |")
print("|---|---:|---|" + "---:|" * len(ops) + "---:|---|")
for name, label in [("dovecot-imap", "Dovecot 2.3 (Maildir)"), ("ringmail-imap", "ringmail"),
                    ("dovecot-imaps", "Dovecot 2.3, IMAPS"), ("ringmail-imaps", "ringmail, IMAPS"),
                    ("ringmail-imap-held", "ringmail, sessions held (mix without login/logout)"),
                    ("ringmail-imaps-held", "ringmail, IMAPS, sessions held")]:
    if name in legs:
        L = legs[name]
        print(f"| {label} | {fmt(med(map(cmds_per_s, L)))} | {rounds(name, cmds_per_s)} | "
              + " | ".join(fmt(med(op_p99(j, o) for j in L), 2) for o in ops) + f" | {errors(name)} | {loads(name)} |")
if "dovecot-imap" in legs and "ringmail-imap" in legs:
    a, b = legs["ringmail-imap"], legs["dovecot-imap"]
    print(f"\n- ringmail / Dovecot: commands/s {ratio(med(map(cmds_per_s, a)), med(map(cmds_per_s, b)))} (target >= 3x with lower p99); p99 per op: "
          + ", ".join(f"{o} {ratio(med(op_p99(j, o) for j in a), med(op_p99(j, o) for j in b))}" for o in ops))
elif os.path.exists(os.path.join(d, "ringmail-imap-skipped.txt")):
    print("\n- ringmail: " + open(os.path.join(d, "ringmail-imap-skipped.txt")).read().strip())

if "ringmail-imaps" in legs:
    a, b = legs["ringmail-imaps"], legs.get("dovecot-imaps", [])
    t, dv = med(map(cmds_per_s, a)), med(map(cmds_per_s, b))
    TARGETS.append(("IMAPS: ringmail / Dovecot", rr(t, dv), 5))
    if "ringmail-imaps-held" in legs:
        TARGETS.append(("IMAP, sessions held: ringmail IMAPS / plain",
                        rr(mtp("ringmail-imaps-held", cmds_per_s), mtp("ringmail-imap-held", cmds_per_s)), 0.75))
    TARGETS.append(("IMAP, default mix (a reconnect every ~15 commands): ringmail IMAPS / plain",
                    rr(t, mtp("ringmail-imap", cmds_per_s)), 0.75))
    print(f"- ringmail IMAPS / Dovecot IMAPS: commands/s {ratio(t, dv)} (target >= 5x); p99 per op: "
          + ", ".join(f"{o} {ratio(med(op_p99(j, o) for j in a), med(op_p99(j, o) for j in b))}" for o in ops))
    print(f"- ringmail IMAPS / ringmail IMAP: commands/s {ratio(t, mtp('ringmail-imap', cmds_per_s))}; "
          f"Dovecot IMAPS / IMAP: {ratio(dv, mtp('dovecot-imap', cmds_per_s))}")
    if "ringmail-imaps-held" in legs:
        print(f"- sessions held: ringmail IMAPS / ringmail IMAP: commands/s "
              f"{ratio(mtp('ringmail-imaps-held', cmds_per_s), mtp('ringmail-imap-held', cmds_per_s))}")
    for name, label in [("ringmail-imap", "IMAP"), ("ringmail-imaps", "IMAPS"),
                        ("ringmail-imap-held", "IMAP, sessions held"), ("ringmail-imaps-held", "IMAPS, sessions held")]:
        L = legs.get(name, [])
        if not L:
            continue
        print(f"- ringmail {label}: server CPUs {' / '.join(fmt(cpus(j), 2) for j in L)}, "
              f"CPU per command {fmt(med(cpu_us_per(j, cmds_per_s) for j in L), 1)} us (median)")

# TLS handshakes seen by every TLS leg
tls_legs = [(n, l) for n, l in [
    ("postfix-tls", "SMTP STARTTLS, Postfix"), ("ringmail-smtp-tls", "SMTP STARTTLS, ringmail"),
    ("postfix-tls-1c", "SMTP STARTTLS per message, Postfix"), ("ringmail-smtp-tls-1c", "SMTP STARTTLS per message, ringmail"),
    ("dovecot-pop3s", "POP3S, Dovecot"), ("ringmail-pop3s", "POP3S, ringmail"),
    ("dovecot-imaps", "IMAPS, Dovecot"), ("ringmail-imaps", "IMAPS, ringmail"),
    ("ringmail-imaps-held", "IMAPS sessions held, ringmail")] if n in legs]
if tls_legs:
    print("\n### TLS handshakes in the TLS legs (all rounds)\n")
    print("| leg | negotiated | handshakes full / resumed | p50 tls_handshake (ms) | p99 tls_handshake (ms) |")
    print("|---|---|---:|---:|---:|")
    op50 = lambda j, op: j["ops"][op]["p50_us"] / 1000.0 if op in j.get("ops", {}) else None
    for n, l in tls_legs:
        L = legs[n]
        print(f"| {l} | {tls_ver(n)} | {hs_counts(n)} | {fmt(med(op50(j, 'tls_handshake') for j in L), 2)} | "
              f"{fmt(med(op_p99(j, 'tls_handshake') for j in L), 2)} |")

# Handshakes per core (ringmail with cores = 1)
if "hs-plain" in legs or "hs-full" in legs:
    print("\n### TLS handshakes per core (ringmail, cores = 1; POP3 sessions, a connection each)\n")
    print("| leg | sessions/s median | sessions/s per round | server CPUs per round | server CPU per session (us) | "
          "sessions per server CPU-second | handshakes full / resumed | p99 tls_handshake (ms) | p99 session (ms) | errors |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    sp = lambda j: j["sessions_per_s"]
    per = {}
    for n, l in [("hs-plain", "plain POP3"), ("hs-full", "POP3S, full handshakes (--tls-resume off)"),
                 ("hs-resumed", "POP3S, resumed (--tls-resume on)")]:
        if n not in legs:
            continue
        L = legs[n]
        us = med(cpu_us_per(j, sp) for j in L)
        per[n] = us
        print(f"| {l} | {fmt(med(map(sp, L)))} | {rounds(n, sp)} | {' / '.join(fmt(cpus(j), 2) for j in L)} | "
              f"{fmt(us, 1)} | {fmt(1e6 / us if us else None)} | {hs_counts(n)} | "
              f"{fmt(med(op_p99(j, 'tls_handshake') for j in L), 2)} | {fmt(med(op_p99(j, 'session') for j in L), 2)} | {errors(n)} |")
    print()
    for n, l in [("hs-full", "full"), ("hs-resumed", "resumed")]:
        if n in per and per.get("hs-plain") and per[n]:
            extra = per[n] - per["hs-plain"]
            print(f"- {l} handshake: {fmt(per[n], 1)} us of server CPU per TLS session against {fmt(per['hs-plain'], 1)} us plain: "
                  f"the handshake and record layer cost {fmt(extra, 1)} us, "
                  f"**{fmt(1e6 / extra if extra > 0 else None)} {l} handshakes per second per core** on top of the session work, "
                  f"{fmt(1e6 / per[n])} TLS sessions per CPU-second with it")

if TARGETS:
    print("\n### TLS targets\n")
    print("| | ratio | target | |")
    print("|---|---:|---:|---|")
    for what, r, goal in TARGETS:
        print(f"| {what} | {'-' if r is None else f'{r:.3g}x'} | >= {goal:g}x | {verdict(r, goal)} |")
