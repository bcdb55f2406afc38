#!/usr/bin/env python3
"""Checks frames that flowdog-wire emitted against scapy's dissection.

Usage: scapy_check.py FILE, where each line of FILE is `name=... hex=... key=value ...` with
the fields the Rust emitter meant to write. Prints every mismatch and exits 1 if there is any.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scapy_frames import facts  # noqa: E402


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    mismatches = 0
    checked = 0
    with open(sys.argv[1]) as lines:
        for line in lines:
            expected = dict(token.split("=", 1) for token in line.split())
            name = expected.pop("name", "?")
            raw = bytes.fromhex(expected.pop("hex"))
            try:
                seen = {key: str(value) for key, value in facts(raw).items()}
            except Exception as error:  # A frame scapy cannot dissect is a mismatch too.
                print("%s: scapy failed: %r" % (name, error))
                mismatches += 1
                continue
            for key, value in expected.items():
                if seen.get(key) != value:
                    print("%s: %s: Rust wrote %s, scapy sees %s" % (name, key, value, seen.get(key, "nothing")))
                    mismatches += 1
            checked += 1
    print("%d frames checked, %d mismatches" % (checked, mismatches))
    sys.exit(1 if mismatches or not checked else 0)


if __name__ == "__main__":
    main()
