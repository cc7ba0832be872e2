"""Seasons on many processes and machines: torchrun and shards write what one process
writes, the journal accounts for every recording, kill -9 loses nothing, recorder time
stamps, and recordings read from fsspec filesystems and local HTTP servers (with and
without ranged reads), bad remote input named in the journal."""

import http.server
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest
import torch

import predict
from conftest import SRC
from evaluation.log_format import parse_log
from prediction.season import deal, report_lines, start_time
from utils.synthetic import make_recording

NAMES = {"site_A/AM01_20240612_031500.wav": 8.0, "site_A/AM01_20240612_041500.wav": 5.0,
         "site_B/AM01_20240612_031500.wav": 3.0, "site_B/5216.240613101500.wav": 6.0}


@pytest.fixture(scope="module")
def quick_model(tmp_path_factory):
    """An untrained ResNet whose head makes confident calls: instant, deterministic."""
    from data.features import FeatureOptions
    from models.model_file import ModelSpec, classifier_options, save_model

    root = tmp_path_factory.mktemp("quick")
    encoder = {"backbone": "resnet", "input_channels": 1, "conv_kernel_size": 7, "max_pool": 1, "resnet_size": 18}
    options = FeatureOptions(sr=16000, n_fft=256, hop_length=64, n_freq_bins=32, fmin=0, fmax=8000)
    classes = {"K1": 0, "K2": 1, "noise": 2}
    spec = ModelSpec(encoder, classifier_options(encoder, 3), options.data_opts(), classes, {"sequence_len": 200})
    torch.manual_seed(1)
    model = spec.build()
    with torch.no_grad():
        model.classifier.linear.weight.mul_(40)
        model.classifier.linear.bias.copy_(torch.tensor([0.0, 0.0, -0.8]))        # calls win now and then
    save_model(str(root / "m.pk"), model.eval(), spec)
    recordings = root / "season"
    for i, (name, seconds) in enumerate(NAMES.items()):
        make_recording(str(recordings / name), seconds, 16000, [("upsweep", 1.0), ("downsweep", 2.0)], seed=i)
    return str(root / "m.pk"), recordings


def argv_for(model, source, out, *extra):
    return ["--model_path", model, "--input_file", str(source), "--output_dir", str(out), "--sequence_len", "0.2",
            "--hop", "0.1", "--num_workers", "0", "--memory_format", "contiguous", "--no_progress", "--raven",
            "--threshold", "0.36"] + list(extra)


def outputs(folder):
    """Every file below ``folder`` but the journals (relative path -> text, logs without
    their time stamps)."""
    found = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = str(path.relative_to(folder))
        if relative.startswith("predict_journal."):
            continue
        text = path.read_text()
        if relative.endswith(".log"):
            text = re.sub(r"^\d\d:\d\d:\d\d\|", "", text, flags=re.M)
        found[relative] = text
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_shares_are_balanced_by_duration_and_time_stamps_are_read():
    shares = deal(["a", "b", "c", "d", "e"], 2, [10, 9, 2, 2, 1])
    assert shares == [["a", "d"], ["b", "c", "e"]]                    # loads 12 and 12
    assert sorted(sum(shares, [])) == ["a", "b", "c", "d", "e"]       # every recording in exactly one share
    assert start_time("x/SITE_20240612_031500.WAV") == datetime(2024, 6, 12, 3, 15)
    assert start_time("5216.240613101500.wav") == datetime(2024, 6, 13, 10, 15)
    assert start_time("2024-06-12_03-15-00.flac") == datetime(2024, 6, 12, 3, 15)
    assert start_time("rec01.wav") is None and start_time("id_12345678.wav") is None
    assert start_time("d12-06-2024 h031500.wav", "d%d-%m-%Y h%H%M%S") == datetime(2024, 6, 12, 3, 15)


def test_shards_then_merge_write_what_one_process_writes(quick_model, tmp_path):
    model, recordings = quick_model
    assert predict.main(argv_for(model, recordings, tmp_path / "one")) == 0
    for shard in ("1/3", "2/3", "3/3"):
        assert predict.main(argv_for(model, recordings, tmp_path / "shards", "--shard", shard)) == 0
    assert not (tmp_path / "shards" / "combined.Table.1.selections.txt").exists()        # a shard writes none
    assert predict.main(["--merge", str(tmp_path / "shards")]) == 0
    assert outputs(tmp_path / "shards") == outputs(tmp_path / "one")
    combined = (tmp_path / "one" / "combined.Table.1.selections.txt").read_text().splitlines()
    header = combined[0].split("\t")
    rows = [dict(zip(header, line.split("\t"))) for line in combined[1:]]
    assert {r["Begin Path"] for r in rows} == set(NAMES)             # same-named files in two sites stay apart
    first = next(r for r in rows if r["Begin Path"] == "site_B/5216.240613101500.wav")
    assert first["Begin Date Time"].startswith("2024/06/13 10:15:0")
    lines, complete = report_lines(str(tmp_path / "shards"))
    assert complete and "recordings: 4 done, 0 failed, 0 missing" in lines


def test_a_rerun_with_other_decisions_is_refused_and_same_named_recordings_too(quick_model, tmp_path, capfd):
    model, recordings = quick_model
    out = tmp_path / "out"
    assert predict.main(argv_for(model, recordings, out)) == 0
    before = outputs(out)
    assert predict.main(argv_for(model, recordings, out, "--threshold", "0.9")) == 1      # would keep old decisions
    assert "other settings (threshold)" in capfd.readouterr().err and outputs(out) == before
    assert predict.main(argv_for(model, recordings, out, "--threshold", "0.9", "--overwrite")) == 0
    assert outputs(out) != before and '"threshold": 0.9' in (out / "predict_run.json").read_text()
    listed = tmp_path / "list.txt"                                     # a list: outputs are named by file name
    listed.write_text("".join(f"{recordings / site / 'AM01_20240612_031500.wav'}\n" for site in ("site_A", "site_B")))
    assert predict.main(argv_for(model, listed, tmp_path / "listed")) == 1
    assert "same name" in capfd.readouterr().err and not (tmp_path / "listed").exists()


def test_torchrun_two_processes_write_what_one_process_writes(quick_model, tmp_path):
    model, recordings = quick_model
    assert predict.main(argv_for(model, recordings, tmp_path / "one")) == 0
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(free_port()), os.path.join(SRC, "predict.py")]
    result = subprocess.run(command + argv_for(model, recordings, tmp_path / "two"), env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert outputs(tmp_path / "two") == outputs(tmp_path / "one")
    journals = sorted(n for n in os.listdir(tmp_path / "two") if n.startswith("predict_journal."))
    assert journals == ["predict_journal.rank1of2.jsonl", "predict_journal.rank2of2.jsonl"]


def test_kill_minus_nine_and_a_rerun_predict_every_recording_once(quick_model, tmp_path):
    model, _ = quick_model
    recordings = tmp_path / "many"
    for i in range(6):
        make_recording(str(recordings / f"r{i}.wav"), 30.0, 16000, [("upsweep", 3.0)], seed=i)
    out = tmp_path / "out"
    argv = [sys.executable, os.path.join(SRC, "predict.py")] + argv_for(model, recordings, out)
    shards = [subprocess.Popen(argv + ["--shard", f"{i}/2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
              for i in (1, 2)]
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(n.endswith(".partial") for n in os.listdir(out))):
        time.sleep(0.01)
    os.kill(shards[0].pid, signal.SIGKILL)                     # mid-recording: a log is being written
    shards[1].wait(120)
    shards[0].wait(30)
    lines, complete = report_lines(str(out))
    assert not complete and re.search(r"recordings: \d done, 0 failed, [1-9]\d* missing", "\n".join(lines))
    for i in (1, 2):                                           # the same commands again
        assert predict.main(argv[2:] + ["--shard", f"{i}/2"]) == 0
    assert predict.main(["--merge", str(out)]) == 0
    assert not [n for n in os.listdir(out) if n.endswith((".partial", ".tmp"))]      # nothing half-written
    for i in range(6):
        assert len(parse_log(str(out / f"r{i}_predict_output.log")).windows) == 299
    entries = [json.loads(line) for name in os.listdir(out) if name.startswith("predict_journal.")
               for line in open(out / name)]
    done = [e["recording"] for e in entries if e["event"] == "done"]
    assert sorted(done) == sorted(set(done)) and len(done) == 6         # each predicted exactly once
    combined = (out / "combined.Table.1.selections.txt").read_text().splitlines()[1:]
    keys = [tuple(r.split("\t")[9:11]) for r in combined]
    assert len(keys) == len(set(keys)) and {k[0] for k in keys} == {f"r{i}.wav" for i in range(6)}
    lines, complete = report_lines(str(out))
    assert complete and "recordings: 6 done, 0 failed, 0 missing" in lines


# --------------------------------------------------------------------- remote reading
class Handler(http.server.SimpleHTTPRequestHandler):
    """Serves a folder; with ``ranges`` it answers Range requests (206), and it can cut
    one file short, forbid one, and count the bytes it sent."""

    ranges, sent, cut, forbidden = True, [], "", ""

    def log_message(self, *args):
        pass

    def do_GET(self):
        path = self.translate_path(self.path)
        name = os.path.basename(path)
        if name == self.forbidden:
            self.send_error(403)
            return
        if not os.path.isfile(path):
            self.send_error(404)
            return
        data = open(path, "rb").read()
        size = len(data)
        if name == self.cut:
            data = data[:size // 3]                        # the header says more than arrives
        match = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "")) if self.ranges else None
        if match:
            first, last = int(match.group(1)), int(match.group(2) or size - 1)
            body = data[first:last + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{min(last, size - 1)}/{size}")
            self.send_header("Accept-Ranges", "bytes")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) if name != self.cut else size))
        self.end_headers()
        type(self).sent.append(len(body))
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def do_HEAD(self):
        path = self.translate_path(self.path)
        if not os.path.isfile(path) or os.path.basename(path) == self.forbidden:
            self.send_error(404 if not os.path.isfile(path) else 403)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        if self.ranges:
            self.send_header("Accept-Ranges", "bytes")
        self.end_headers()


@pytest.fixture
def server(quick_model):
    _, recordings = quick_model
    handler = type("Serve", (Handler,), {"sent": [], "ranges": True, "cut": "", "forbidden": ""})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: handler(*a, directory=str(recordings)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}", handler, recordings
    httpd.shutdown()


def tables(folder):
    return {k: v for k, v in outputs(folder).items() if k.endswith(".Table.1.selections.txt") and
            not k.startswith("combined")}


@pytest.mark.parametrize("ranges", [True, False])
def test_recordings_over_http_with_and_without_ranged_reads(quick_model, server, tmp_path, ranges, monkeypatch):
    import data.remote
    monkeypatch.setattr(data.remote, "BLOCK", 1 << 15)       # blocks smaller than the recording (256 kB)
    model, recordings = quick_model
    url, handler, _ = server
    handler.ranges = ranges
    name = "site_A/AM01_20240612_031500.wav"
    assert predict.main(argv_for(model, recordings / name, tmp_path / "local")) == 0
    assert predict.main(argv_for(model, f"{url}/{name}", tmp_path / "http")) == 0
    local = parse_log(str(tmp_path / "local" / "AM01_20240612_031500_predict_output.log"))
    remote = parse_log(str(tmp_path / "http" / "AM01_20240612_031500_predict_output.log"))
    assert [r.probs for r in local.windows.values()] == [r.probs for r in remote.windows.values()]
    size = os.path.getsize(recordings / name)
    if ranges:
        assert max(handler.sent) < size                      # read in blocks, never the whole file at once
    else:
        assert sum(handler.sent) >= size                     # read once from start to end


def test_fsspec_filesystems_lists_and_bad_remote_input(quick_model, server, tmp_path):
    import fsspec
    model, recordings = quick_model
    url, handler, _ = server
    memory = fsspec.filesystem("memory")
    for name in NAMES:
        memory.pipe(f"/season/{name}", (recordings / name).read_bytes())
    assert predict.main(argv_for(model, "memory://season", tmp_path / "memory")) == 0
    assert predict.main(argv_for(model, f"file://{recordings}", tmp_path / "file")) == 0
    assert predict.main(argv_for(model, recordings, tmp_path / "local")) == 0
    assert tables(tmp_path / "memory") == tables(tmp_path / "local") == tables(tmp_path / "file")
    handler.cut, handler.forbidden = "AM01_20240612_041500.wav", "5216.240613101500.wav"
    listing = tmp_path / "season.txt"
    listing.write_text("\n".join([f"{url}/site_B/AM01_20240612_031500.wav",              # fine
                                  f"{url}/site_A/AM01_20240612_041500.wav",              # truncated
                                  f"{url}/site_B/5216.240613101500.wav",                 # forbidden
                                  f"http://127.0.0.1:{free_port()}/gone.wav",            # nobody listens
                                  str(recordings / "missing.wav")]) + "\n")              # not there
    assert predict.main(argv_for(model, listing, tmp_path / "listed")) == 1
    entries = [json.loads(line) for line in open(tmp_path / "listed" / "predict_journal.all.jsonl")]
    failed = {e["recording"]: e["reason"] for e in entries if e["event"] == "failed"}
    assert set(failed) == {f"{url}/site_A/AM01_20240612_041500.wav", f"{url}/site_B/5216.240613101500.wav",
                           next(line for line in listing.read_text().splitlines() if "gone.wav" in line),
                           str(recordings / "missing.wav")}
    assert all(reason.strip() and "\n" not in reason for reason in failed.values())
    assert [e["recording"] for e in entries if e["event"] == "done"] == [f"{url}/site_B/AM01_20240612_031500.wav"]
    lines, complete = report_lines(str(tmp_path / "listed"))
    assert not complete and "recordings: 1 done, 4 failed, 0 missing" in lines
    from data.sources import recording_list
    with pytest.raises(ValueError, match=r"needs s3fs \(pip install s3fs\)"):      # optional, named when missing
        recording_list("s3://bucket/season/")
