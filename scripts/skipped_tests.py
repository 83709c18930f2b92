#!/usr/bin/env python3
"""Prints how many tests the last ctest run skipped, and why, from its log
(<build>/Testing/Temporary/LastTest.log): the reason of a GoogleTest skip is
the message after "<file>:<line>: Skipped", that of a script test (exit 77)
its "SKIP: ..." line. Also counts the tests of --not-run labels (excluded
from the run with ctest -LE), e.g. the GPU tests on a machine without one.

  scripts/skipped_tests.py build [--not-run cuda]
"""
import argparse
import collections
import os
import re
import subprocess
import sys

BLOCK = re.compile(r"^\d+/\d+ Test: (?P<name>[^\n]*?)(?:  # [^\n]*)?\nCommand: [^\n]*\n(?:[^\n]*\n)*?Output:\n-+\n"
                   r"(?P<out>.*?)<end of output>\n(?:[^\n]*\n)*?-{5,}\n(?P<result>Test [^\n]*)", re.S | re.M)
GTEST_SKIP = re.compile(r"^[^\n]*: Skipped\n(?P<why>.*?)(?:\n\n|\n\[  SKIPPED \]|$)", re.S | re.M)
SCRIPT_SKIP = re.compile(r"^SKIP: (?P<why>.*)$", re.M)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--not-run", action="append", default=[], metavar="LABEL")
    args = ap.parse_args()
    log = os.path.join(args.build, "Testing", "Temporary", "LastTest.log")
    try:
        with open(log, "rb") as f:
            logged = f.read()
    except OSError as err:
        sys.exit(f"skipped_tests.py: {err}")
    ran, why = 0, collections.defaultdict(list)
    text = logged.decode("utf-8", "replace").replace("\r\n", "\n")
    for m in BLOCK.finditer(text):
        ran += 1
        out = m.group("out")
        if "[  SKIPPED ]" not in out and "Skip" not in m.group("result") and not SCRIPT_SKIP.search(out):
            continue
        reason = GTEST_SKIP.search(out) or SCRIPT_SKIP.search(out)
        why[" ".join(reason.group("why").split()) if reason else "(no reason given)"].append(m.group("name"))
    skipped = sum(len(v) for v in why.values())
    print(f"Skipped: {skipped} of the {ran} tests that ran" + (":" if skipped else "."))
    for reason, names in sorted(why.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        print(f"  {len(names):4d}  {reason}  ({shown})")
    for label in args.not_run:
        listing = subprocess.run(["ctest", "--test-dir", args.build, "-N", "-L", label],
                                 capture_output=True, text=True).stdout
        total = re.search(r"Total Tests: (\d+)", listing)
        print(f"Not run: {total.group(1) if total else '?'} tests labelled {label} "
              f"(excluded; run them with ctest --test-dir {args.build} -L {label})")
    if args.not_run:  # ctest -N rewrote the log: put the run's back
        with open(log, "wb") as f:
            f.write(logged)


if __name__ == "__main__":
    main()
