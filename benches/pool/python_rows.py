"""wasmpool from Python (the package in python/), beside the anchors: prints JSON lines like
them. Run by `cargo bench --bench pool` with the venv the package is installed in
(target/python-venv, or $WASMPOOL_PYTHON); exits 3 with a note when wasmpool is not
installed there.

    python_rows.py MATH.wasm [--quick]

- `pool.map(mod.square, range(N))` (N = 100k, 10k quick): the Executor's map, batched.
- `counting(8M)` and `counting(7M)` as wasm tasks (`pool.map(mod.counting, ...)`), and the
  same Python function on a `concurrent.futures.ProcessPoolExecutor` (the tutorials' CPU
  example), both on pools already started.
"""

import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor


def counting(n):
    while n > 0:
        n -= 1
    return n


def median_time(fn, reps=3):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def out(**kw):
    print(json.dumps(kw), flush=True)


def main():
    try:
        import wasmpool
    except ImportError:
        print("the wasmpool Python package is not installed in this interpreter "
              f"({sys.executable}): pip install ./python (see README, Python)", file=sys.stderr)
        sys.exit(3)
    wasm = sys.argv[1]
    quick = "--quick" in sys.argv
    n = 10_000 if quick else 100_000
    work = [8_000_000, 7_000_000]
    workers = os.cpu_count()
    with wasmpool.Pool(workers, fuel=10**12, timeout=600.0) as pool:
        mod = pool.load(wasm)
        expected = [i * i for i in range(n)]
        assert list(pool.map(mod.square, range(1000))) == expected[:1000]  # warm every worker

        def squares():
            assert list(pool.map(mod.square, range(n))) == expected

        s = median_time(squares)
        out(bench="map_square", impl="wasmpool-python", n=n, seconds=round(s, 4), tasks_per_s=round(n / s))

        def wasm_counting():
            assert list(pool.map(mod.counting, work)) == [0, 0]

        s = median_time(wasm_counting)
        out(bench="seed_counting", impl="wasmpool-python", seconds=round(s, 4))

    with ProcessPoolExecutor(workers) as ex:
        ex.submit(counting, 1).result()

        def python_counting():
            assert list(ex.map(counting, work)) == [0, 0]

        s = median_time(python_counting)
        out(bench="seed_counting_8M_7M", impl="ProcessPoolExecutor", seconds=round(s, 4))


if __name__ == "__main__":
    main()
