#!/usr/bin/env python3
"""Summarize a bench/compare.sh results directory: medians over rounds,
p99 latencies and ringmail's ratio to each peer, as Markdown tables.
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

print(open(os.path.join(d, "machine.txt")).read().strip() if os.path.exists(os.path.join(d, "machine.txt")) else "")
print()

# SMTP
print("### SMTP (4 KiB messages, 32 connections, closed loop)\n")
print("| server | msg/s median | msg/s per round | p99 message (ms) median | verify | errors | load1 per round |")
print("|---|---:|---|---:|---|---:|---|")
tp = lambda j: j["messages_per_s"]
p99m = lambda j: op_p99(j, "message")
for name, label in [("smtp-sink", "Postfix smtp-sink (no storage)"), ("postfix", "Postfix 3.7 (virtual, Maildir)"), ("ringmail-smtp", "ringmail")]:
    if name in legs:
        print(f"| {label} | {fmt(med(map(tp, legs[name])))} | {rounds(name, tp)} | {fmt(med(map(p99m, legs[name])), 2)} | {verify_note(name)} | {errors(name)} | {loads(name)} |")
rm = med(map(tp, legs.get("ringmail-smtp", [])))
rm99 = med(map(p99m, legs.get("ringmail-smtp", [])))
print()
for name, label, target in [("smtp-sink", "smtp-sink", "target >= 0.70x"), ("postfix", "Postfix", "target >= 20x")]:
    if name in legs:
        peer = med(map(tp, legs[name])); peer99 = med(map(p99m, legs[name]))
        print(f"- ringmail / {label}: throughput {ratio(rm, peer)} ({target}), p99 {ratio(rm99, peer99)} of {label}'s")
print()

# POP3
print("### POP3 (retrieve and delete everything, 32 connections)\n")
print("| server | msg/s median | msg/s per round | sessions/s median | p99 RETR (ms) | p99 session (ms) | p99 QUIT (ms) | errors | load1 per round |")
print("|---|---:|---|---:|---:|---:|---:|---:|---|")
for name, label in [("dovecot-pop3", "Dovecot 2.3 (Maildir)"), ("ringmail-pop3", "ringmail")]:
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
print()

# IMAP
print("### IMAP (loadgen default mix, 100 sessions)\n")
ops = ["login", "select", "fetch_headers", "fetch_body", "store", "search", "logout"]
print("| server | commands/s median | commands/s per round | " + " | ".join(f"p99 {o} (ms)" for o in ops) + " | errors | load1 per round |")
print("|---|---:|---|" + "---:|" * len(ops) + "---:|---|")
for name, label in [("dovecot-imap", "Dovecot 2.3 (Maildir)"), ("ringmail-imap", "ringmail")]:
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
