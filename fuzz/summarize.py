#!/usr/bin/env python3
"""Table of fuzz results from fuzz/logs/*.log (libFuzzer output of run_all.sh): executions,
time, coverage at start and end, and where the last coverage increase happened (plateau)."""
import glob, os, re, sys

rows = []
for log in sorted([l for l in glob.glob(os.path.join(os.path.dirname(__file__) or ".", "logs", "*.log")) if "cmin-" not in l]):
    t = os.path.basename(log)[:-4].replace(".2", " (round 2)")
    text = open(log, errors="replace").read()
    inited = re.search(r"INITED cov: (\d+) ft: (\d+)", text)
    done = re.search(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+).*exec/s: (\d+)", text)
    last_cov, last_exec, prev = None, 0, -1
    for m in re.finditer(r"#(\d+)\s+(?:NEW|REDUCE|pulse)\s+cov: (\d+)", text):
        c = int(m.group(2))
        if c > prev:
            prev, last_exec = c, int(m.group(1))
    crash = "crash-" in text or "panicked" in text or "ERROR: libFuzzer" in text
    if not done:
        rows.append((t, "-", "-", "-", "-", "-", "-", "yes" if crash else "run did not finish"))
        continue
    execs, cov, ft, corp, size, eps = done.groups()
    secs = int(execs) / max(int(eps), 1)
    rows.append((t, execs, f"{secs:.0f}", f"{inited.group(1)}/{inited.group(2)}" if inited else "-",
                 f"{cov}/{ft}", f"{100 * last_exec / int(execs):.0f}%", f"{corp} ({size})",
                 "yes" if crash else "0"))
print("| target | executions | seconds | cov/ft at start | cov/ft at end | last new cov at | corpus before cmin | crashes |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for r in rows:
    print("| " + " | ".join(r) + " |")
