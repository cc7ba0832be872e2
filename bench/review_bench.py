"""How fast the review page shows the next item (a benchmark, not a test).

    python bench/review_bench.py [--items 200] [--seconds 600]

Writes a season (two recordings of ``--seconds`` at 44.1 kHz with placed calls, and
prediction logs for them at the template settings: 0.5 s windows, 0.25 s hop), starts
``review.py`` on it in this process, and times what a browser waits for per item: the
answer to the previous item (``POST /api/decision``, on disk before it returns), then
``GET /api/next`` and the spectrogram image, and (in parallel in a browser, here after)
the audio. Prints the median and the 95th percentile with the machine.
"""

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "ANIMAL-SPOT"))

import numpy as np  # noqa: E402

from evaluation.log_format import LogWriter  # noqa: E402
from utils.classmap import ClassMap  # noqa: E402
from utils.logging import FORMAT, close_logger  # noqa: E402
from utils.runtime import machine_description  # noqa: E402
from utils.synthetic import make_recording  # noqa: E402

NAMES = ["K1", "K2", "K3", "noise"]
DATA_OPTS = {"sr": 44100, "preemphases": 0.98, "n_fft": 1024, "hop_length": 172, "n_freq_bins": 256, "fmin": 500,
             "fmax": 10000, "freq_compression": "linear", "min_level_db": -100, "ref_level_db": 20}


def write_season(root: str, seconds: float) -> None:
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        calls = [(["upsweep", "downsweep", "pulses"][i % 3], float(t)) for i, t in
                 enumerate(np.sort(rng.uniform(1, seconds - 2, int(seconds / 10))))]
        recording = os.path.join(root, "recordings", f"{name}.wav")
        make_recording(recording, seconds, 44100, calls, seed=1, call_len=0.5)
        logger = logging.getLogger(f"bench-{name}")
        close_logger(logger)
        logger.setLevel(logging.INFO)
        logger.propagate = False
        os.makedirs(os.path.join(root, "predictions"), exist_ok=True)
        handler = logging.FileHandler(os.path.join(root, "predictions", f"{name}_predict_output.log"), mode="w")
        handler.setFormatter(FORMAT)
        logger.addHandler(handler)
        writer = LogWriter(logger, ClassMap.from_names(NAMES))
        writer.header(recording, "m.pk", DATA_OPTS, 0.5, 0.25, 0.5, 500, 10000, False, int(seconds * 44100), 11025)
        for i in range(int((seconds - 0.5) / 0.25) + 1):
            start = i * 0.25
            row = np.array([0.05, 0.05, 0.05, 0.85])
            for k, (_, t) in enumerate(calls):
                if start < t + 0.5 and t < start + 0.5:
                    row = np.array([0.1, 0.1, 0.1, 0.1])
                    row[k % 3] = rng.uniform(0.3, 0.95)
            if rng.random() < 0.03:
                row = np.array([0.6, 0.2, 0.1, 0.1])
            row = row / row.sum()
            writer.record(round(start, 3), round(start + 0.5, 3), list(row), int(row.max() >= 0.5))
        close_logger(logger)


def main(argv=None) -> int:
    import review

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200)
    p.add_argument("--seconds", type=float, default=600)
    args = p.parse_args(argv)
    root = tempfile.mkdtemp(prefix="review-bench-")
    write_season(root, args.seconds)
    options = review.build_parser().parse_args(["--predictions", os.path.join(root, "predictions"), "--recordings",
                                                os.path.join(root, "recordings"), "--out", os.path.join(root, "out"),
                                                "--per_class", str(args.items), "--port", "0"])
    page = review.open_review(options)
    from data.features import FeatureOptions
    page.options = FeatureOptions.from_data_opts(DATA_OPTS)          # the model's spectrogram settings
    servers, ready = [], threading.Event()
    threading.Thread(target=review.serve, args=(page, "127.0.0.1", 0, lambda s, a: (servers.append(a), ready.set())),
                     daemon=True).start()
    ready.wait(60)
    address = servers[0].rstrip("/")

    def get(path):
        with urllib.request.urlopen(address + path, timeout=60) as response:
            return response.read()
    waits, audio = [], []
    previous = None
    for _ in range(args.items):
        started = time.perf_counter()
        if previous is not None:
            body = json.dumps({"item": previous, "decision": "correct", "client": "bench"}).encode()
            request = urllib.request.Request(address + "/api/decision", data=body,
                                             headers={"Content-Type": "application/json"})
            urllib.request.urlopen(request, timeout=60).read()
        item = json.loads(get("/api/next?client=bench"))
        if item["item"] is None:
            break
        get(item["image"])
        waits.append(time.perf_counter() - started)
        begin = time.perf_counter()
        get(item["audio"])
        audio.append(time.perf_counter() - begin)
        previous = item["item"]
    waits.sort()
    p95 = waits[int(0.95 * (len(waits) - 1))]
    print(f"review page, {len(waits)} items (answer + next item + its spectrogram): median "
          f"{1000 * statistics.median(waits):.0f} ms, 95th percentile {1000 * p95:.0f} ms; audio median "
          f"{1000 * statistics.median(audio):.0f} ms")
    print(f"machine: {machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
