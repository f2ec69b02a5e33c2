"""The host's side of many small returned files: pack N files as a container would (tar_pieces), then
unpack them safely (files.unpack), timing each. No engine: this is where 100,000 files spent their time.

usage: python bench/unpack.py [--files 100000] [--per-dir 1000]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from dockertask.files import tar_pieces, unpack


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--per-dir", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dockertask-bench-unpack-") as tmp:
        src = os.path.join(tmp, "src")
        for i in range(args.files):
            d = os.path.join(src, f"d{i // args.per_dir}")
            if i % args.per_dir == 0:
                os.makedirs(d)
            with open(os.path.join(d, f"f{i}.txt"), "w") as f:
                f.write("x")
        with tempfile.TemporaryFile(dir=tmp) as archive:
            t0 = time.perf_counter()
            for piece in tar_pieces([("0/src", src)]):
                archive.write(piece)
            t1 = time.perf_counter()
            unpack(archive, os.path.join(tmp, "out"))
            t2 = time.perf_counter()
        shutil.rmtree(src)
    each = (t2 - t1) / args.files * 1e6
    print(f"{args.files} files: pack {t1 - t0:.1f} s, unpack {t2 - t1:.1f} s ({each:.0f} us a file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
