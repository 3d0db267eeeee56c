"""faiss spherical k-means for bench/kmeans-reference.ts.

Reads n × dim float32 rows (little-endian, row-major) from stdin, fits
faiss.Kmeans(dim, k, niter=niter, seed=s, spherical=True) for every seed given, and prints one
JSON object to stdout: {"faiss": version, "fits": [{"seed", "centroids" (k × dim, flat),
"seconds"}]}. The objective is computed by the caller, with the same code as for protoprune's
own fits, so both sides are measured alike.

usage: kmeans_reference.py N DIM K NITER SEED [SEED ...]
"""

import json
import sys
import time

import faiss
import numpy as np


def main() -> None:
    n, dim, k, niter = (int(a) for a in sys.argv[1:5])
    seeds = [int(a) for a in sys.argv[5:]]
    points = np.frombuffer(sys.stdin.buffer.read(), dtype="<f4")
    if points.size != n * dim:
        raise SystemExit(f"expected {n * dim} float32 values on stdin, got {points.size}")
    points = np.ascontiguousarray(points.reshape(n, dim))
    fits = []
    for seed in seeds:
        started = time.perf_counter()
        kmeans = faiss.Kmeans(dim, k, niter=niter, seed=seed, spherical=True)
        kmeans.train(points)
        fits.append({"seed": seed, "centroids": kmeans.centroids.ravel().tolist(), "seconds": time.perf_counter() - started})
    json.dump({"faiss": faiss.__version__, "fits": fits}, sys.stdout)


if __name__ == "__main__":
    main()
