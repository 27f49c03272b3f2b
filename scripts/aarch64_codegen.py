"""What the compiled CPU kernels run on aarch64: the hot loops of each kernel, read from the
machine code of the cross-built extensions (``aarch64-linux-gnu-objdump -d``).

    python scripts/aarch64_codegen.py build/.../edgesentry/kernels/_cpu_*.cpython-311-aarch64-linux-gnu.so
    python scripts/aarch64_codegen.py --check SO...     # exit 1 when a hot loop is not NEON FMA code

For every hot function (inlining decides where a loop ends up, so the functions named here
are the ones that hold the loops in GCC 12's output), its densest NEON FMA loop:
its instruction count, NEON FMAs (``fmla``/``fmls`` on ``.2d`` double or ``.4s`` float
vectors, ``[i]`` when the multiplier is a lane), vector loads and 128-bit stack spills
(``ldr``/``str``/``ldp``/``stp`` of ``q`` registers at ``[sp ...]``). ``--check`` requires at
least 8 NEON FMAs in that loop and at most one spill per 8 FMAs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# kernel module -> (what the loop computes, function holding it, vector kind)
HOT_LOOPS: dict[str, list[tuple[str, str, str]]] = {
    "rx_global": [
        ("moments: 4x4 band Gram tile", r"moments\(.*_omp_fn", ".2d"),
        ("mahalanobis: triangular whitening, 4 bands x 8 pixels", r"::mahalanobis\(", ".2d"),
    ],
    "rx": [
        ("direct path / sample space: 4-pixel lockstep Cholesky panel (2 x 4 tile)", r"cholesky_mahalanobis_lanes\(",
         ".2d"),
        ("shared windows: bordered factorisation / Gram tiles", r"factor_bordered\(|lower_gram\(", ".2d"),
        ("sample space: pixel-pair dot table, 4 x 4 tiles (inlined)", r"score_samples\(", ".2d"),
    ],
    "isstad": [
        ("horizontal 33-tap FIR, taps by lane", r"hblur_row_neon<33>", ".4s"),
        ("vertical 33-tap FIR, two output rows", r"vblur_pair_neon<33>", ".4s"),
        ("row passes inlined in fuse_one (head softmax with a polynomial exp, error, blur)", r"fuse_one\(", ".4s"),
    ],
    "mavd": [
        ("align-and-fuse MLP: 4 rows x 16 outputs", r"fuse_tile\(", ".4s"),
        ("TCN causal convolutions", r"causal_conv\(", ".4s"),
        ("MIL head", r"mil_rows\(", ".4s"),
    ],
    "otam": [
        ("frame dot products: 6 prototype frames x 8 packed query frames", r"::block_dots\(", ".4s"),
        ("soft-OTAM DP, 4 x 4 problems in lockstep", r"run_dps\(", ".4s"),
    ],
}

BRANCH = re.compile(r"^(b|b\.\w+|cbn?z|tbn?z)$")
FMA = re.compile(r"^(fmla|fmls)$")


@dataclass
class Loop:
    function: str
    start: int
    instructions: int
    fmas: int
    by_lane: int
    loads: int
    spills: int
    kinds: set[str]


def _functions(so: Path, objdump: str) -> dict[str, list[tuple[int, str, str]]]:
    text = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", str(so)], capture_output=True, text=True,
                          check=True).stdout
    funcs: dict[str, list[tuple[int, str, str]]] = {}
    name = None
    for line in text.splitlines():
        head = re.match(r"^([0-9a-f]+) <(.*)>:$", line)
        if head:
            name = head.group(2)
            funcs[name] = []
            continue
        ins = re.match(r"^\s+([0-9a-f]+):\t(\S+)\s*(.*)$", line)
        if ins and name is not None:
            funcs[name].append((int(ins.group(1), 16), ins.group(2), ins.group(3)))
    return funcs


def loops(so: Path, objdump: str) -> list[Loop]:
    """Every backward branch's body that holds a NEON FMA."""
    found = []
    for name, body in _functions(so, objdump).items():
        if not body:
            continue
        for addr, op, ops in body:
            target = re.search(r"\b([0-9a-f]+) <", ops)
            if not (BRANCH.match(op) and target):
                continue
            start = int(target.group(1), 16)
            if not body[0][0] <= start < addr:
                continue
            span = [(o, a) for x, o, a in body if start <= x <= addr]
            vec = [(o, a) for o, a in span if FMA.match(o) and re.search(r"v\d+\.(2d|4s)", a)]
            if not vec:
                continue
            found.append(Loop(
                function=name, start=start, instructions=len(span), fmas=len(vec),
                by_lane=sum(1 for _, a in vec if re.search(r"\.[sd]\[\d\]", a)),
                loads=sum(1 for o, a in span if o in ("ldr", "ldur", "ldp", "ld1", "ld1r") and "[sp" not in a
                          and re.search(r"\bq\d+|v\d+\.", a)),
                spills=sum(1 for o, a in span if o in ("ldr", "str", "ldp", "stp", "ldur", "stur") and "[sp" in a
                           and re.search(r"\bq\d+", a)),
                kinds={k for _, a in vec for k in re.findall(r"\.(2d|4s)", a)},
            ))
    return found


def hottest(candidates: list[Loop]) -> Loop | None:
    """The loop with the most FMAs per instruction among those with at least 8 (an inner loop,
    not the outer loops around it), or the one with the most FMAs when none has 8."""
    rich = [lp for lp in candidates if lp.fmas >= 8]
    if rich:
        return max(rich, key=lambda lp: (lp.fmas / lp.instructions, lp.fmas))
    return max(candidates, key=lambda lp: lp.fmas, default=None)


def report(paths: list[Path], check: bool) -> int:
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump is None:
        raise SystemExit("aarch64-linux-gnu-objdump not found (Debian: binutils-aarch64-linux-gnu)")
    failures = 0
    for so in paths:
        kernel = re.sub(r"^_cpu_", "", so.name.split(".")[0])
        if kernel not in HOT_LOOPS:
            print(f"{so.name}: no hot loops listed for {kernel!r}")
            continue
        every = loops(so, objdump)
        print(f"{kernel} ({so.name}):")
        for what, pattern, kind in HOT_LOOPS[kernel]:
            best = hottest([lp for lp in every if re.search(pattern, lp.function) and kind[1:] in lp.kinds])
            if best is None:
                print(f"  {what}: NO NEON FMA LOOP in {pattern}")
                failures += 1
                continue
            ok = best.fmas >= 8 and best.spills * 8 <= best.fmas
            failures += not ok
            lane = f", {best.by_lane} by lane" if best.by_lane else ""
            print(f"  {what}: {best.fmas} fmla{kind}{lane}, {best.loads} vector loads, {best.spills} q spills,"
                  f" {best.instructions} instructions per iteration{'' if ok else '  <-- NOT OK'}")
    if check and failures:
        print(f"{failures} hot loop(s) without a spill-free NEON FMA path", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("extensions", nargs="+", type=Path, help="aarch64 _cpu_*.so files")
    ap.add_argument("--check", action="store_true", help="exit 1 when a hot loop is not spill-free NEON FMA code")
    args = ap.parse_args(argv)
    return report(args.extensions, args.check)


if __name__ == "__main__":
    sys.exit(main())
