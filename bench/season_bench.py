"""A season on several processes, and over HTTP (a benchmark, not a test).

    python bench/season_bench.py [--recordings 8] [--seconds 60]

Whole ``predict.py`` runs over the same recordings (44.1 kHz, template settings, an
untrained ResNet-18: speed does not depend on the weights), best of two each:
1 process x 2 threads against ``torchrun`` with 2 processes x 1 thread (the sharing
costs what the ratio is short of 1); and one process reading the recordings from local
files against reading them from a local HTTP server with ranged reads (this file's
server) and from ``python -m http.server`` (no ranged reads: each recording is read once
from start to end into a temporary file).
"""

import argparse
import http.server
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "ANIMAL-SPOT")
sys.path.insert(0, SRC)
sys.path.insert(0, os.path.join(ROOT, "bench"))

from embedding_bench import model_file  # noqa: E402
from utils.runtime import machine_description  # noqa: E402
from utils.synthetic import make_recording  # noqa: E402


class Ranged(http.server.SimpleHTTPRequestHandler):
    """A static server that answers Range requests."""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path):
            self.send_error(404)
            return
        size = os.path.getsize(path)
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        first, last = (int(match.group(1)), int(match.group(2) or size - 1)) if match else (0, size - 1)
        last = min(last, size - 1)
        with open(path, "rb") as handle:
            handle.seek(first)
            body = handle.read(last - first + 1)
        self.send_response(206 if match else 200)
        if match:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(command, env=None, rounds=2) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, env=env)
        best = min(best, time.perf_counter() - started)
    return best


class QuietServer(http.server.ThreadingHTTPServer):
    """A client that stops reading early (fsspec probing a file) is not an error here."""

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recordings", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60)
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="season-bench-") as folder:
        model = model_file(folder)
        season = os.path.join(folder, "season")
        for i in range(args.recordings):
            make_recording(os.path.join(season, f"r{i}.wav"), args.seconds, 44100, [("upsweep", 5.0)], seed=i)
        audio = args.recordings * args.seconds

        def predict(source, out, *extra):
            return [os.path.join(SRC, "predict.py"), "--model_path", model, "--input_file", source, "--output_dir",
                    os.path.join(folder, out), "--hop", "0.5", "--num_workers", "0", "--no_progress", "--overwrite",
                    "--memory_format", "contiguous"] + list(extra)
        one = timed([sys.executable] + predict(season, "one"), dict(os.environ, OMP_NUM_THREADS="2"))
        two = timed([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                     "127.0.0.1", "--master_port", str(free_port())] + predict(season, "two"),
                    dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1"))
        print(f"{args.recordings} recordings x {args.seconds:.0f} s: 1 process x 2 threads {one:.1f} s "
              f"(real-time factor {audio / one:.0f}x); 2 processes x 1 thread {two:.1f} s ({audio / two:.0f}x): "
              f"ratio {one / two:.2f}")
        listing = os.path.join(folder, "urls.txt")
        servers = {}
        for name, handler in (("ranged", Ranged), ("http.server", http.server.SimpleHTTPRequestHandler)):
            quiet = type("Quiet", (handler,), {"log_message": lambda *a: None})
            httpd = QuietServer(("127.0.0.1", 0), lambda *a, h=quiet: h(*a, directory=season))
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            servers[name] = httpd
        env = dict(os.environ, OMP_NUM_THREADS="2")
        local = timed([sys.executable] + predict(season, "local"), env)
        for name, httpd in servers.items():
            with open(listing, "w") as handle:
                handle.writelines(f"http://127.0.0.1:{httpd.server_port}/r{i}.wav\n" for i in range(args.recordings))
            remote = timed([sys.executable] + predict(listing, f"http_{name}"), env)
            print(f"over HTTP ({name}): {remote:.1f} s against local files {local:.1f} s: ratio {local / remote:.2f}")
            httpd.shutdown()
    print(f"machine: {machine_description()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
