#!/usr/bin/env python3
"""The Fashion-MNIST sample embedded in the binary (MIT licence, Zalando Research): the first
N_TRAIN training and N_TEST test images with labels, as gzipped IDX files like the originals.

Run from the repository root after `apt-get install dataset-fashion-mnist`:
    python3 scripts/make_sample.py
"""
import gzip
import os
import struct

SRC = "/usr/share/datasets/fashion-mnist"
OUT = os.path.join(os.path.dirname(__file__), "..", "assets", "fashion-mnist-sample")
N_TRAIN, N_TEST = 6000, 2000


def cut(src, dst, n):
    data = gzip.open(os.path.join(SRC, src)).read()
    magic, count = struct.unpack(">II", data[:8])
    dims = magic & 0xFF
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    item = 1
    for d in shape[1:]:
        item *= d
    header = struct.pack(">I", magic) + struct.pack(">I", n) + data[8 : 4 + 4 * dims]
    body = data[4 + 4 * dims : 4 + 4 * dims + n * item]
    # mtime=0 keeps the file byte-identical from run to run.
    with gzip.GzipFile(os.path.join(OUT, dst), "wb", mtime=0) as f:
        f.write(header + body)


os.makedirs(OUT, exist_ok=True)
for split, n, prefix in [("train", N_TRAIN, "train"), ("test", N_TEST, "t10k")]:
    cut(f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-images-idx3-ubyte.gz", n)
    cut(f"{prefix}-labels-idx1-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz", n)
print(sorted(os.listdir(OUT)))
