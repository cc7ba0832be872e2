"""The review loop: estimators against simulated reviews with known truth, the review
session (sampling, journal, tables, summary), its HTTP interface and file serving, bad
input, and reviewed tables back into training clips. The real browser test is in
``test_review_browser.py``."""

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

from conftest import SRC
from evaluation.log_format import LogWriter
from prediction.decisions import PostProcessing
from reviews import estimators as est
from reviews.estimators import (Stratum, call_density, naive_share, precision, recall, stratified_total,
                                too_few_reviews)
from reviews.journal import decision_entry
from reviews.sampling import build_plan
from reviews.session import ReviewSession
from reviews.summary import curve_arrays
from reviews.units import ReviewError, Unit, load_units
from utils.classmap import ClassMap
from utils.logging import FORMAT, close_logger
from utils.synthetic import make_recording

NAMES = ["K1", "K2", "noise"]
# the calls placed in the two recordings (class, start s); each lasts 0.4 s
PLACED = {"site1/a": [("K1", 1.0), ("K2", 3.0), ("K1", 6.0), ("K2", 8.0)],
          "site2/b": [("K1", 2.0), ("K1", 5.0), ("K2", 7.0)]}
SHAPES = {"K1": "upsweep", "K2": "downsweep"}


# ------------------------------------------------------------------- simulation
def simulate(sims=1000, sizes=(400, 300, 200, 100), shares=(0.2, 0.5, 0.8, 0.95), below=(2000, 0.02), n=6,
             hours=10.0, draws=2000, seed=1):
    """Reviews of a finite population with known truth: 4 score strata of detections and
    one below the threshold, ``n`` random reviews each (30 per class)."""
    rng = np.random.default_rng(seed)
    hits = {"precision": 0, "recall": 0, "density": 0}
    inside = 0
    stratified, naive, truth = [], [], []
    for i in range(sims):
        labels = [rng.random(size) < share for size, share in zip(list(sizes) + [below[0]], list(shares) + [below[1]])]
        strata = []
        for j, calls in enumerate(labels):
            reviewed = calls[rng.permutation(len(calls))[:n]]
            strata.append(Stratum(str(j), len(calls), n, int(reviewed.sum()), above=j < len(sizes)))
        found, missed = sum(c.sum() for c in labels[:-1]), labels[-1].sum()
        true = {"precision": found / sum(sizes), "recall": found / (found + missed), "density": (found + missed) / hours}
        for name, (estimate, (lo, hi)) in (("precision", precision(strata[:-1], draws, i)),
                                           ("recall", recall(strata[:-1], strata[-1:], draws, i)),
                                           ("density", call_density(strata, hours, draws, i))):
            hits[name] += lo <= true[name] <= hi
            inside += lo <= estimate <= hi
        stratified.append(stratified_total(strata[:-1]) / sum(sizes))
        naive.append(naive_share(strata[:-1]))
        truth.append(true["precision"])
    coverage = {k: v / sims for k, v in hits.items()}
    coverage["estimate inside"] = inside / (3 * sims)
    return coverage, np.asarray(stratified), np.asarray(naive), np.asarray(truth)


def test_intervals_cover_the_truth_and_the_stratified_estimate_is_unbiased():
    coverage, stratified, naive, truth = simulate()
    assert coverage.pop("estimate inside") == 1.0                   # every shown interval holds its estimate
    for name, share in coverage.items():
        assert 0.93 <= share <= 0.97, (name, share)
    error = stratified - truth                       # unbiased: the mean error is within its standard error
    assert abs(error.mean()) < 3 * error.std() / np.sqrt(len(error))
    bias = naive - truth                              # the raw share of "correct" answers is not
    assert bias.mean() > 0.1 and abs(bias.mean()) > 10 * bias.std() / np.sqrt(len(bias))


def test_estimates_on_a_review_by_hand():
    above = [Stratum("a", 100, 10, 5), Stratum("b", 10, 10, 10)]
    below = [Stratum("c", 1000, 10, 1, above=False)]
    assert stratified_total(above) == pytest.approx(60)          # 100 * 5/10 + 10
    assert stratified_total(below) == pytest.approx(100)
    for estimate, (lo, hi) in (precision(above), recall(above, below), call_density(above + below, hours=2.0)):
        assert lo <= estimate <= hi                                # the posterior's median and percentiles
    assert stratified_total([Stratum("a", 5, 0, 0)]) is None      # a stratum without a review: no estimate yet
    assert precision([Stratum("a", 100)])[0] is None and recall(above, [Stratum("c", 10, 0, 0, above=False)])[0] \
        is None and call_density([Stratum("a", 100)], 1.0)[0] is None
    lo, hi = precision([Stratum("a", 10, 10, 7)])[1]
    assert lo == hi == pytest.approx(0.7)                          # a fully reviewed stratum is known exactly


def test_sparse_reviews_show_estimates_inside_their_intervals_that_still_cover_the_truth():
    """Three answers per stratum, every below-threshold answer empty: the plug-in said recall
    100 % beside an interval of [4-67 %]; now the estimate lies inside, and the intervals
    cover the truth of simulated reviews this sparse."""
    above = [Stratum("a", 4, 4, 1), Stratum("b", 4, 3, 1)]
    below = [Stratum("c", 60, 3, 0, above=False)] + [Stratum(f"d{i}", 10, 3, 0, above=False) for i in range(4)] + \
        [Stratum("e", 80, 3, 0, above=False)]
    estimate, (lo, hi) = recall(above, below)
    assert lo <= estimate <= hi < 1.0
    assert too_few_reviews(above + below) is False and too_few_reviews([Stratum("f", 40, 2, 1)]) is True
    coverage, *_ = simulate(sims=400, sizes=(40, 30, 20), shares=(0.3, 0.6, 0.9), below=(200, 0.03), n=3, hours=2.0)
    assert coverage.pop("estimate inside") == 1.0
    for name, share in coverage.items():
        assert 0.90 <= share <= 0.995, (name, share)


def population(rng, above=600, below=2000):
    """One class's units with known truth: detections (scores 0.5-1) and windows below the
    threshold (0.02-0.5), 60 % of which have this class on top (detectable); the chance
    of a call grows with the score. A quarter of the calls in detections are answered
    'other' naming the class (a relabelled unit of the class's own strata)."""
    units, calls = [], {}
    for i in range(above + below):
        detection = i < above
        score = rng.uniform(0.5, 1.0) if detection else rng.uniform(0.02, 0.5)
        detectable = detection or rng.random() < 0.6
        call = rng.random() < (0.1 + 0.85 * score ** 2 if detectable else 0.3 * score)
        unit = Unit(f"u{i}", "rec", "rec.wav", float(i), i + 0.5, "K1", float(score), "K1", detection,
                    detectable=detectable)
        units.append(unit)
        calls[unit.id] = call
    return units, calls


def true_precision(units, calls, t):
    chosen = [u for u in units if u.detectable and u.score >= t]
    return sum(calls[u.id] for u in chosen) / len(chosen)


def true_threshold(units, calls, target):
    ranked = sorted((u for u in units if u.detectable), key=lambda u: -u.score)
    hits = np.cumsum([calls[u.id] for u in ranked]) / np.arange(1, len(ranked) + 1)
    reaching = [u.score for u, p in zip(ranked, hits) if p >= target]
    return min(reaching) if reaching else None


def test_the_precision_curve_and_the_threshold_match_the_truth_of_simulated_reviews():
    """Reviews of simulated seasons (known truth) through the same code as the page: the
    answers as the journal holds them (``decision_entry``), the plan, ``curve_arrays``.
    'wrong' answers must count as no call; windows whose top class is noise (not
    detectable) must stay out of the curve. 120 reviews planned for the class (about 100
    land in its detectable strata). The threshold's bootstrap interval is approximate:
    README quotes the coverage measured here (and with 48 reviews)."""
    rng = np.random.default_rng(11)
    errors = {0.3: [], 0.6: [], 0.9: []}
    reached, covered, sims = [], 0, 150
    for sim in range(sims):
        units, calls = population(rng)
        plan = build_plan(units, per_class=120, bins=4, seed=sim)["K1"]
        answers = {}
        for item in plan.queue:
            decision = ("other" if rng.random() < 0.25 else "correct") if calls[item] else "wrong"
            answers[item] = decision_entry(units[int(item[1:])], decision, "K1" if decision == "other" else None)
        scores, found, weights, strata = curve_arrays(plan, {u.id: u for u in units}, answers)
        for t in errors:
            keep = scores >= t
            errors[t].append((weights[keep] * found[keep]).sum() / weights[keep].sum() - true_precision(units, calls, t))
        estimate = est.threshold_for_precision(scores, found, weights, 0.8)
        reached.append(true_precision(units, calls, estimate) if estimate is not None else np.nan)
        low, high = est.threshold_interval(scores, found, weights, strata, 0.8, resamples=200)
        covered += low is not None and low <= true_threshold(units, calls, 0.8) <= high
    for t, values in errors.items():                              # the curve: unbiased within sampling noise
        values = np.asarray(values)
        assert abs(values.mean()) < 3 * values.std() / np.sqrt(sims) + 0.01, (t, values.mean())
    assert np.isnan(reached).sum() <= 0.05 * sims                  # the target is reached in almost every review
    assert abs(np.nanmedian(reached) - 0.8) < 0.03, np.nanmedian(reached)   # ... at about the target
    assert covered / sims >= 0.88, covered / sims


# ------------------------------------------------------------------- a season
def write_log(path, recording, rows, hop=0.25, window=0.5, threshold=0.5, names=NAMES):
    """A prediction log as predict.py writes it, from probability rows of ``names``."""
    logger = logging.getLogger(f"test-log-{path}")
    close_logger(logger)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    os.makedirs(os.path.dirname(path), exist_ok=True)
    handler = logging.FileHandler(path, mode="w")
    handler.setFormatter(FORMAT)
    logger.addHandler(handler)
    class_map = ClassMap.from_names(names)
    writer = LogWriter(logger, class_map)
    data_opts = {"sr": 16000, "preemphases": 0.98, "n_fft": 256, "hop_length": 64, "n_freq_bins": 32, "fmin": 0,
                 "fmax": 8000, "freq_compression": "linear", "min_level_db": -100, "ref_level_db": 20}
    writer.header(recording, "m.pk", data_opts, window, hop, threshold, 0, 8000, False, 16000 * 10, 4000)
    for i, probs in enumerate(rows):
        start = round(i * hop, 3)
        top = int(np.argmax(probs))
        flag = probs[1] >= threshold if len(names) == 2 else probs[top] >= threshold     # binary: the target's
        writer.record(start, round(start + window, 3), list(probs), int(flag))
    close_logger(logger)


def season_rows(calls, seconds=10.0, hop=0.25, seed=0):
    """Window probabilities: high for a placed call's class where the window overlaps
    it, except a few misses (low) and false alarms."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(int((seconds - 0.5) / hop) + 1):
        start = i * hop
        row = np.array([0.05, 0.05, 0.9])
        for cls, t in calls:
            if start < t + 0.4 and t < start + 0.5:
                c = NAMES.index(cls)
                row = np.array([0.1, 0.1, 0.1])
                row[c] = 0.8 if rng.random() > 0.25 else 0.3            # a quarter of the call windows are missed
                row /= row.sum()
        if rng.random() < 0.05:                                          # a false alarm
            row = np.array([0.7, 0.2, 0.1]) if rng.random() < 0.5 else np.array([0.2, 0.7, 0.1])
        rows.append(row)
    return rows


def write_season(root):
    """``root/recordings`` with the placed calls and ``root/predictions`` with their logs."""
    for key, calls in PLACED.items():
        recording = root / "recordings" / f"{key}.wav"
        make_recording(str(recording), 10.0, 16000, [(SHAPES[c], t) for c, t in calls], seed=3, call_len=0.4)
        write_log(str(root / "predictions" / f"{key}_predict_output.log"), str(recording), season_rows(calls))
    return root


@pytest.fixture
def season(tmp_path):
    return write_season(tmp_path)


def truth(unit) -> str:
    """What a reviewer who knows the placed calls answers."""
    for cls, t in PLACED.get(unit.recording, []):
        if unit.begin < t + 0.4 and t < unit.end:
            return "correct" if cls == unit.cls else "other:" + cls
    return "wrong"


def answer_all(session, client="tester"):
    answered = 0
    while True:
        unit = session.next(client=client)
        if unit is None:
            return answered
        verdict = truth(unit)
        session.decide(unit.id, verdict.split(":")[0], verdict.split(":")[1] if ":" in verdict else None, "", client)
        answered += 1


def test_a_review_samples_every_stratum_and_writes_journal_tables_and_summary(season):
    loaded = load_units(str(season / "predictions"), str(season / "recordings"))
    assert loaded.all_logs and set(loaded.seconds) == {"site1/a", "site2/b"}
    session = ReviewSession(loaded, str(season / "out"), per_class=10, bins=2, seed=4, target_precision=0.8)
    plan = session.plans["K1"]
    assert [s.name for s in plan.strata] == ["K1|above|1", "K1|above|2", "K1|below|1"]   # equal scores: one bin
    first = [session.units[i].stratum for i in plan.queue[:3]]
    assert sorted(first) == sorted(s.name for s in plan.strata if s.size)     # any prefix covers every stratum
    for stratum in plan.strata:
        picked = [i for i in plan.queue if session.units[i].stratum == stratum.name]
        assert all(session.units[i].inclusion == pytest.approx(len(picked) / stratum.size) for i in picked)
    assert answer_all(session) == sum(len(p.queue) for p in session.plans.values())
    assert session.next() is None
    journal = [json.loads(line) for line in open(season / "out" / "review_journal.jsonl")]
    assert len(journal) == sum(len(p.queue) for p in session.plans.values())
    assert {"item", "decision", "label", "inclusion", "how", "stratum", "recording", "begin", "end"} <= set(journal[0])
    table = (season / "out" / "tables" / "site1" / "a.Table.1.selections.txt").read_text().splitlines()
    assert table[0].endswith("\tScore\tVerified\tReviewed label")
    verified = [row.split("\t")[10] for row in table[1:]]
    assert set(verified) <= {"", "yes", "no", "unsure"} and "yes" in verified
    summary = session.write_summary()
    for name in ("K1", "K2"):
        entry = summary["classes"][name]
        assert entry["reviewed"] == entry["sampled"] and entry["precision"] is not None
        assert entry["precision_ci95"][0] <= entry["precision"] <= entry["precision_ci95"][1]
        assert entry["recall_ci95"][0] <= entry["recall"] <= entry["recall_ci95"][1]
        assert not entry["call_density_is_lower_bound"] and set(entry["per_recording"]) == {"site1/a", "site2/b"}
        assert entry["threshold_for_target_precision_interval"] and entry["precision_curve"]
    assert summary["sources"] == {"logs": 2, "tables": 0} and "assumes" in summary["notes"][0]
    for recording in ("site1/a", "site2/b"):                     # the units of a recording never overlap
        spans = sorted((u.begin, u.end) for u in session.units.values() if u.recording == recording)
        assert all(b[0] >= a[1] - 1e-9 for a, b in zip(spans, spans[1:]))
    assert json.loads((season / "out" / "review_summary.json").read_text()) == json.loads(json.dumps(summary))


def test_the_journal_survives_restarts_undo_and_corrupt_lines(season):
    out = str(season / "out")
    session = ReviewSession(load_units(str(season / "predictions"), str(season / "recordings")), out, per_class=6,
                            seed=1)
    answered = []
    for _ in range(4):
        unit = session.next()
        session.decide(unit.id, "correct")
        answered.append(unit.id)
    assert session.undo()["item"] == answered[-1]
    with open(os.path.join(out, "review_journal.jsonl"), "a") as handle:
        handle.write('{"type": "decision", "item": "cut sh')                   # a crash mid-line
    again = ReviewSession(load_units(str(season / "predictions"), str(season / "recordings")), out, per_class=6,
                          seed=1)
    assert list(again.answers) == answered[:3]                                   # nothing earlier lost
    assert len(again.journal.problems) == 1 and "review_journal.jsonl:6" in again.journal.problems[0]
    unit = again.next()
    assert unit.id == answered[3]                                                # continues where it stopped
    again.decide(unit.id, "wrong")
    lines = open(os.path.join(out, "review_journal.jsonl")).read().splitlines()
    assert json.loads(lines[-1])["item"] == unit.id and len(lines) == 7         # appended on a new line


def test_two_tabs_lose_no_decision(season):
    session = ReviewSession(load_units(str(season / "predictions"), str(season / "recordings")), str(season / "out"),
                            per_class=20, seed=2)
    handed = [session.next(client="tab1").id, session.next(client="tab2").id]
    assert handed[0] != handed[1]                                                # each tab its own item
    errors = []

    def tab(name):
        try:
            answer_all(session, name)
        except Exception as error:                  # pragma: no cover - reported below
            errors.append(error)
    threads = [threading.Thread(target=tab, args=(name,)) for name in ("tab1", "tab2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    lines = [json.loads(line) for line in open(season / "out" / "review_journal.jsonl")]
    planned = {i for p in session.plans.values() for i in p.queue}
    assert {entry["item"] for entry in lines} == planned and set(session.answers) == planned


def test_bad_input_gets_one_clear_message(season, tmp_path):
    import review

    missing = tmp_path / "missing_recordings"
    (missing / "site1").mkdir(parents=True)
    os.link(season / "recordings" / "site1" / "a.wav", missing / "site1" / "a.wav")
    with pytest.raises(ReviewError, match=r"(?s)not found below --recordings.*site2/b"):
        load_units(str(season / "predictions"), str(missing))
    tables = tmp_path / "tables"
    (tables / "site1").mkdir(parents=True)
    (tables / "site1" / "a.Table.1.selections.txt").write_text("Selection\tBegin Time (s)\tEnd Time (s)\n1\t1\t2\n")
    with pytest.raises(ReviewError, match=r"a\.Table\.1\.selections\.txt: no label column"):
        load_units(str(tables), str(season / "recordings"))
    (tables / "site1" / "a.Table.1.selections.txt").write_text(
        "Selection\tBegin Time (s)\tEnd Time (s)\tSound type\n1\t9.5\t12.5\tK1\n")
    with pytest.raises(ReviewError, match=r"ends after the recording .*a\.wav \(10 s\)"):
        load_units(str(tables), str(season / "recordings"))
    status = review.main(["--predictions", str(tables), "--recordings", str(season / "recordings"),
                          "--out", str(tmp_path / "o"), "--port", "0"])
    assert status == 1


def test_tables_alone_give_precision_and_a_lower_bound_on_call_density(season, tmp_path):
    tables = tmp_path / "tables"
    (tables / "site1").mkdir(parents=True)
    (tables / "site1" / "a.annotation.result.txt").write_text(
        "Selection\tView\tChannel\tBegin time (s)\tEnd time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSound type\tComments\n"
        "1\tSpectrogram_1\t1\t1.0\t1.5\t0\t8000\tK1\t \n2\tSpectrogram_1\t1\t4.0\t4.5\t0\t8000\tK1\t \n")
    loaded = load_units(str(tables), str(season / "recordings"))
    assert not loaded.all_logs and len(loaded.units) == 2 and all(u.score is None for u in loaded.units)
    session = ReviewSession(loaded, str(season / "out"), per_class=5)
    assert [s.name for s in session.plans["K1"].strata] == ["K1|above|1"]   # no score: one stratum, no below
    answer_all(session)
    summary = session.summary()
    entry = summary["classes"]["K1"]
    assert entry["precision"] == 0.5 and entry["recall"] is None and entry["call_density_is_lower_bound"]
    assert "threshold_for_target_precision" not in entry                      # not asked for: not shown
    assert summary["sources"] == {"logs": 0, "tables": 1} and not any("biased" in n for n in summary["notes"])
    os.link(season / "predictions" / "site2" / "b_predict_output.log", tables / "b_predict_output.log")
    (tables / "site2").mkdir()
    os.rename(tables / "b_predict_output.log", tables / "site2" / "b_predict_output.log")
    mixed = ReviewSession(load_units(str(tables), str(season / "recordings")), str(season / "mixed"), per_class=5)
    assert "recall is biased upward" in mixed.summary()["notes"][0]          # a mix of logs and tables: said


# ------------------------------------------------------------------- HTTP
@pytest.fixture
def server(season):
    """review.py in a subprocess on a free port; yields (address, process, folder)."""
    out = season / "out"
    argv = [sys.executable, os.path.join(SRC, "review.py"), "--predictions", str(season / "predictions"),
            "--recordings", str(season / "recordings"), "--out", str(out), "--port", "0", "--per_class", "4",
            "--seed", "5"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line.startswith("Review page: http://127.0.0.1:"), line + process.stderr.read()
    address = line.split()[2]
    yield address, process, season, argv
    process.kill()
    process.wait(10)


class HTTPFailure(Exception):
    """The review server answered with an error status."""


def fetch(address, path, body=None):
    """``(status, bytes)`` of one request to the local review server (127.0.0.1 only),
    sent as written: no client-side normalisation of the path."""
    host, port = address.split("//")[1].rstrip("/").split(":")
    assert host == "127.0.0.1"
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    data = None if body is None else json.dumps(body).encode()
    connection.request("GET" if data is None else "POST", path, body=data,
                       headers={"Content-Type": "application/json"} if data else {})
    response = connection.getresponse()
    status, payload = response.status, response.read()
    connection.close()
    return status, payload


def call(address, path, body=None):
    status, payload = fetch(address, path, body)
    if status >= 400:
        raise HTTPFailure(f"{path}: {status} {payload[:200]!r}")
    return json.loads(payload)


def raw_status(address, path):
    return fetch(address, path)[0]


def test_http_interface_and_kill_minus_nine(server):
    address, process, season, argv = server
    item = call(address, "/api/next")
    assert {"item", "recording", "begin", "end", "label", "score", "alternatives", "image", "audio"} <= set(item)
    for url, kind in ((item["image"], b"\x89PNG"), (item["audio"], b"RIFF")):
        status, payload = fetch(address, url)
        assert status == 200 and payload[:4] == kind
    done = []
    for _ in range(3):
        item = call(address, "/api/next")
        assert call(address, "/api/decision", {"item": item["item"], "decision": "correct"})["ok"]
        done.append(item["item"])
    os.kill(process.pid, signal.SIGKILL)                               # no chance to save anything more
    process.wait(10)
    restarted = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        address = restarted.stdout.readline().split()[2]
        assert call(address, "/api/next")["item"] not in done
        summary = call(address, "/api/summary")
        assert sum(c["answered"] for c in summary["classes"].values()) == 3
        with pytest.raises(HTTPFailure):
            call(address, "/api/decision", {"item": "nope", "decision": "correct"})
    finally:
        restarted.kill()
        restarted.wait(10)


def raw_host_status(address, path, host):
    name, port = address.split("//")[1].rstrip("/").split(":")
    connection = http.client.HTTPConnection(name, int(port), timeout=10)
    connection.putrequest("GET", path, skip_host=True)
    connection.putheader("Host", host.replace("PORT", port))
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def test_only_requests_for_the_servers_own_host_are_answered(server):
    address = server[0]
    for host in ("127.0.0.1:PORT", "localhost:PORT"):
        assert raw_host_status(address, "/api/classes", host) == 200, host
    for host in ("attacker.example:PORT", "attacker.example", "127.0.0.1:1", "localhost.attacker.example:PORT"):
        assert raw_host_status(address, "/api/classes", host) == 403, host       # a DNS-rebinding page gets nothing


def test_only_the_page_and_the_two_folders_are_served(server, tmp_path):
    address, process, season, _ = server
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (season / "recordings" / "link.txt").symlink_to(outside)
    assert raw_status(address, "/files/recordings/site1/a.wav") == 200
    assert raw_status(address, "/assets/review.js") == 200
    for path in ("/files/recordings/../predictions/site1/a_predict_output.log", "/files/recordings/%2e%2e/x",
                 "/files/recordings/%2E%2E%2Fpredictions%2Fsite1", "/files/recordings//etc/passwd",
                 "/files/recordings/link.txt", "/files/other/site1/a.wav", "/assets/../review.py",
                 "/files/out/..%2f..%2fetc%2fpasswd"):
        assert raw_status(address, path) in (400, 404), path


def test_labels_and_comments_are_one_line_of_text(season):
    session = ReviewSession(load_units(str(season / "predictions"), str(season / "recordings")), str(season / "out"),
                            per_class=4, seed=1)
    unit = session.next()
    for label, comment in (("K1\nnoise", ""), ("K\t1", ""), ("", "fine\n1\tSpectrogram_1"), ("K\x1b1", "")):
        with pytest.raises(ReviewError, match="one line of text"):
            session.decide(unit.id, "other" if label else "correct", label or None, comment)
    assert not session.answers and not (season / "out" / "review_journal.jsonl").exists()   # nothing recorded
    session.decide(unit.id, "other", "  K9 ", "a faint one")
    table = session.table_path(unit.recording)
    rows = [r.split("\t") for r in open(table).read().splitlines()[1:]]
    assert [r for r in rows if r[-1] == "K9"] and all(len(r) == 12 for r in rows)


# ------------------------------------------------------------------- back into training
def test_reviewed_tables_become_training_clips(season, tmp_path):
    sys.path.insert(0, os.path.join(os.path.dirname(SRC), "TRAINING"))
    import clips_from_raven
    from data.filenames import class_name, find_audio_files

    session = ReviewSession(load_units(str(season / "predictions"), str(season / "recordings")), str(season / "out"),
                            per_class=30, seed=3)
    answer_all(session)
    verdicts = [json.loads(line) for line in open(season / "out" / "review_journal.jsonl")]
    yes = [v for v in verdicts if v["decision"] in ("correct", "other")]
    no = [v for v in verdicts if v["decision"] == "wrong"]
    assert yes and no
    for flag, expected in (([], len(yes)), (["--rejected_as_noise"], len(yes) + len(no))):
        out = tmp_path / f"clips{len(flag)}"
        assert clips_from_raven.main(["--recordings", str(season / "recordings"), "--annotations",
                                      str(season / "out" / "tables"), "--out", str(out)] + flag) == 0
        clips = find_audio_files(str(out))
        assert len(clips) == expected
        counts = {name: sum(1 for c in clips if class_name(c) == name) for name in ("K1", "K2", "noise")}
        assert counts["K1"] + counts["K2"] == len(yes) and counts["noise"] == expected - len(yes)
        relabelled = [v for v in yes if v["decision"] == "other"]
        assert counts["K1"] == sum(1 for v in yes if v["label"] == "K1")
        assert all(v["label"] != v["model_label"] for v in relabelled)


def test_a_combined_table_serves_only_recordings_without_their_own(season, tmp_path):
    tables = tmp_path / "tables"
    (tables / "site1").mkdir(parents=True)
    columns = "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tSound type\t" \
              "Comments\tBegin File\tFile Offset (s)\tScore\tBegin Path\n"
    (tables / "site1" / "a.Table.1.selections.txt").write_text(columns.split("\tBegin File")[0] + "\n"
                                                               "1\tSpectrogram_1\t1\t1.0\t1.5\t0\t8000\tK1\t \n")
    (tables / "combined.Table.1.selections.txt").write_text(
        columns + "1\tSpectrogram_1\t1\t6.0\t6.5\t0\t8000\tK1\t \ta.wav\t6.0\t0.9\tsite1/a.wav\n"     # has its own
        "2\tSpectrogram_1\t1\t12.0\t12.5\t0\t8000\tK2\t \tb.wav\t2.0\t0.8\tsite2/b.wav\n"
        "3\tSpectrogram_1\t1\t14.0\t14.5\t0\t8000\tnoise\t \tb.wav\t4.0\t0.7\tsite2/b.wav\n"
        f"4\tSpectrogram_1\t1\t1.0\t1.5\t0\t8000\tK1\t \tx.wav\t1.0\t0.9\t{season / 'outside.wav'}\n"   # absolute
        "5\tSpectrogram_1\t1\t1.0\t1.5\t0\t8000\tK1\t \tx.wav\t1.0\t0.9\t../outside.wav\n")
    (tables / "combined.empty.selections.txt").write_text("")                                      # skipped
    make_recording(str(season / "outside.wav"), 2.0, 16000, [], seed=1)        # outside --recordings: never served
    loaded = load_units(str(tables), str(season / "recordings"))
    assert sorted((u.recording, u.begin, u.end, u.cls, u.score) for u in loaded.units) == [
        ("site1/a", 1.0, 1.5, "K1", None), ("site2/b", 2.0, 2.5, "K2", 0.8)]
    assert not loaded.all_logs and loaded.seconds == {"site1/a": 10.0, "site2/b": 10.0}
    (tables / "combined.Table.1.selections.txt").write_bytes(b"\xff\xfe\x00broken")
    with pytest.raises(ReviewError, match=r"combined\.Table\.1\.selections\.txt: cannot read the table"):
        load_units(str(tables), str(season / "recordings"))


def test_a_binary_models_quiet_windows_are_detectable_by_a_lower_threshold(tmp_path):
    recording = tmp_path / "recordings" / "r.wav"
    make_recording(str(recording), 4.0, 16000, [], seed=1)
    rows = [np.array([1 - p, p]) for p in (0.1, 0.3, 0.8, 0.9, 0.2, 0.05, 0.4)]
    write_log(str(tmp_path / "predictions" / "r_predict_output.log"), str(recording), rows, names=["noise", "target"])
    units = load_units(str(tmp_path / "predictions"), str(tmp_path / "recordings")).units
    above = [u for u in units if u.above]
    quiet = [u for u in units if not u.above]
    assert [(u.begin, u.end, u.cls) for u in above] == [(0.5, 1.25, "target")]
    assert quiet and all(u.detectable and u.cls == "target" for u in quiet)       # a lower threshold finds them


def test_recordings_reached_through_links_are_found(season, tmp_path_factory):
    disk2 = tmp_path_factory.mktemp("disk2")
    os.rename(season / "recordings" / "site2", disk2 / "site2")
    os.symlink(disk2 / "site2", season / "recordings" / "site2")          # a season spread over two disks
    loaded = load_units(str(season / "predictions"), str(season / "recordings"))
    assert sorted(loaded.seconds) == sorted(PLACED) and loaded.seconds["site2/b"] == 10.0


def test_a_review_reopened_with_another_plan_is_refused_and_its_units_are_the_tables_events(season):
    out = str(season / "out")
    loaded = load_units(str(season / "predictions"), str(season / "recordings"))
    session = ReviewSession(loaded, out, per_class=6, bins=2, seed=1)
    for _ in range(3):
        session.decide(session.next().id, "correct")
    for changed in ({"seed": 2}, {"bins": 3}, {"per_class": 4}):                  # would drop answers silently
        settings = dict({"per_class": 6, "bins": 2, "seed": 1}, **changed)
        with pytest.raises(ReviewError, match="started with --per_class 6 --bins 2 --seed 1"):
            ReviewSession(load_units(str(season / "predictions"), str(season / "recordings")), out, **settings)
    again = ReviewSession(load_units(str(season / "predictions"), str(season / "recordings")), out, per_class=6,
                          bins=2, seed=1)
    assert len(again.answers) == 3
    from prediction.folder import PredictionFolder
    from prediction.records import RunFile

    folder = PredictionFolder(str(season / "predictions"))
    events = sum(len([e for e in folder.events(o) if e.label != "noise"]) for o in folder.outputs().values())
    assert sum(u.above for u in loaded.units) == events                           # the tables' events, one each
    RunFile(post=PostProcessing(min_duration=30.0)).write(str(season / "predictions"))   # the run's own setting
    strict = load_units(str(season / "predictions"), str(season / "recordings"))
    assert sum(u.above for u in strict.units) == 0 < len(strict.units)             # no event: no detection to review
