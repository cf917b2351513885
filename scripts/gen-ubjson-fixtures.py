#!/usr/bin/env python3
"""Regenerates tests/fixtures/ubjson/py-ubjson.json with the reference UBJSON encoder.

py-ubjson is the library the official CloudPSS SDK decodes its message streams with. Each case
holds a JSON value and the bytes (hex) `ubjson.dumpb` writes for it, plain and with counted
containers (`container_count=True`); keys are sorted so the order matches serde_json's.
`decode_only` cases are values JSON cannot round-trip (integers beyond 64 bits), with what
jobctl's decoder must make of them.

Usage: python3 -m venv /tmp/ubj && /tmp/ubj/bin/pip install py-ubjson==0.16.1 &&
       /tmp/ubj/bin/python scripts/gen-ubjson-fixtures.py
"""

import json
import pathlib

import ubjson

VALUES = [
    None, True, False, 0, 1, 255, 256, -1, -128, -129, 32767, 32768, -32768, -32769,
    2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1,
    0.5, -1.25, 1.0, 0.1, 1e300, -2.5e-300, 3.141592653589793,
    "", "a", "é", "hello, world", "日本語", "x" * 300, "=t",
    [], {}, [1, 2, 3], [1, "a", None, True, 2.5], [[[]]], {"a": 1},
    {"b": [1.5, 2.5], "a": {"nested": {"deep": [None]}}},
    {"type": "log", "version": 1, "verb": "create", "data": {"level": "info", "content": "step 1 of 20"}},
    [1, 1, {"level": "info"}, {"type": "log", "data": {"level": "=level", "content": "=content"}}],
    [2, 1, {"t": [0.001, 0.0015], "va": [1.0, 1.5]}],
    {"key": "plot-1", "type": "plot", "data": {"traces": [{"name": "Va", "x": list(range(300)), "y": [i / 7 for i in range(300)]}]}},
]

DECODE_ONLY = [
    (2**70, "1180591620717411303424"),
    (-(2**70), "-1180591620717411303424"),
]


def main():
    cases = []
    for v in VALUES:
        cases.append({
            "value": v,
            "plain": ubjson.dumpb(v, sort_keys=True).hex(),
            "counted": ubjson.dumpb(v, sort_keys=True, container_count=True).hex(),
        })
    decode_only = [{"hex": ubjson.dumpb(v).hex(), "expect": e} for v, e in DECODE_ONLY]
    out = pathlib.Path(__file__).resolve().parent.parent / "tests/fixtures/ubjson/py-ubjson.json"
    out.write_text(json.dumps({"generator": "py-ubjson " + ubjson.__version__, "cases": cases,
                               "decode_only": decode_only}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
