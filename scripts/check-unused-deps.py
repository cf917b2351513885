#!/usr/bin/env python3
"""Fails when a crate of the workspace declares a dependency its code never names.

An equivalent of `cargo machete` that needs nothing beyond Python's standard library, so CI
can run it on a fresh machine without compiling a tool first. A dependency counts as used when
its crate name (dashes as underscores) appears as a path (`name::`), in a `use`, or in an
`extern crate` anywhere under the crate's sources, tests, examples or build script.
"""
import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent
# Dependencies used only through derive macros or features, never named in code.
USED_WITHOUT_NAMING = {"jobctl": set(), "jobctl-sim": set()}


def crate_dirs():
    root = tomllib.loads((ROOT / "Cargo.toml").read_text())
    for member in root.get("workspace", {}).get("members", ["."]):
        yield ROOT / member


def sources(crate_dir, kind):
    sub = ["src"] if kind == "dependencies" else ["tests", "examples", "benches", "src"]
    for s in sub:
        d = crate_dir / s
        if d.is_dir():
            for f in d.rglob("*.rs"):
                yield f
    if (crate_dir / "build.rs").exists():
        yield crate_dir / "build.rs"


def main():
    failed = False
    for crate_dir in crate_dirs():
        manifest = tomllib.loads((crate_dir / "Cargo.toml").read_text())
        name = manifest["package"]["name"]
        for kind in ("dependencies", "dev-dependencies"):
            deps = manifest.get(kind, {})
            if not deps:
                continue
            text = "\n".join(f.read_text(errors="replace") for f in sources(crate_dir, kind))
            for dep, spec in deps.items():
                ident = dep.replace("-", "_")
                if dep in USED_WITHOUT_NAMING.get(name, set()):
                    continue
                pattern = rf"\b{re.escape(ident)}::|\buse\s+{re.escape(ident)}\b|extern\s+crate\s+{re.escape(ident)}\b|#\[{re.escape(ident)}::"
                if not re.search(pattern, text):
                    print(f"{name}: {kind} '{dep}' is never used", file=sys.stderr)
                    failed = True
    if failed:
        sys.exit(1)
    print("no unused dependencies")


if __name__ == "__main__":
    main()
