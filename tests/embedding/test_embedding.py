"""Season embeddings: the store (resumable, refuses another model), search by example,
a few-shot head, and classify against predict.py with the head's model file."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import embed
import predict
from conftest import SRC
from embedding.store import PartMeta, Store, StoreDescription, StoreError
from evaluation.log_format import parse_log
from models.model_file import load_model
from prediction.decisions import DecisionRule
from prediction.folder import PredictionFolder
from prediction.tables import RavenSink
from utils.synthetic import make_recording

# two recordings with planted calls (shape, start s): K1 = upsweep, K2 = downsweep
PLANTED = {"a.wav": [("upsweep", 1.0), ("downsweep", 3.0), ("upsweep", 5.0), ("downsweep", 7.0), ("upsweep", 9.0)],
           "b.wav": [("upsweep", 2.0), ("downsweep", 5.0), ("upsweep", 8.0), ("downsweep", 10.0)]}
CLASS_OF = {"upsweep": "K1", "downsweep": "K2"}
COMMON = ["--hop", "0.1", "--memory_format", "contiguous"]


@pytest.fixture(scope="module")
def season(trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("embedding")
    for seed, (name, calls) in enumerate(PLANTED.items()):
        make_recording(str(root / "recordings" / name), 12.0, 16000, calls, seed=20 + seed, call_len=0.3)
    model = str(trained / "m" / "ANIMAL-SPOT.pk")
    assert embed.main(["--model_path", model, "--input_file", str(root / "recordings"), "--store",
                       str(root / "store")] + COMMON) == 0
    return root, model


def inside_call(recording, begin, end, shape=None):
    return any(begin < t + 0.3 and t < end and (shape is None or s == shape) for s, t in PLANTED[recording])


def test_the_store_describes_itself_and_refuses_other_settings(season, tmp_path):
    root, model = season
    store = Store.existing(str(root / "store"))
    assert store.description.hop == 0.1 and store.description.window == 0.2
    assert store.description.dim == 512 and len(store.description.model["sha256"]) == 64
    meta = next(store.parts()).meta                   # a part says what it holds, at which rate
    assert meta.sr == 16000 and meta.n_samples == 12 * 16000 and meta.frames == 12 * 16000 and len(meta.fingerprint) == 32
    parts = {p.recording: p for p in store.parts()}
    assert set(parts) == {"a.wav", "b.wav"} and parts["a.wav"].vectors.dtype == np.float16
    assert len(parts["a.wav"].starts) == 119 and parts["a.wav"].starts[1] == 0.1     # predict.py's windows
    before = os.path.getmtime(store.part_path("a.wav"))
    assert embed.main(["--model_path", model, "--input_file", str(root / "recordings"), "--store",
                       str(root / "store")] + COMMON) == 0
    assert os.path.getmtime(store.part_path("a.wav")) == before                     # nothing embedded twice
    status = embed.main(["--model_path", model, "--input_file", str(root / "recordings"), "--store",
                         str(root / "store"), "--hop", "0.2"])
    assert status == 1                                                                # another hop: refused
    with pytest.raises(StoreError, match="another model or settings"):
        store.check(dataclasses.replace(store.description, hop=0.2))


def test_search_finds_the_planted_calls_of_the_querys_class(season, trained, tmp_path):
    root, model = season
    clip = next((trained / "data" / "K1").glob("*.wav"))                              # an upsweep the model trained on
    out = tmp_path / "hits.txt"
    assert embed.main(["search", "--store", str(root / "store"), "--query", str(clip), "--top", "6",
                       "--output", str(out)]) == 0
    rows = [r.split("\t") for r in out.read_text().splitlines()]
    header, rows = rows[0], rows[1:]
    assert {"Begin File", "Begin Path", "Similarity"} <= set(header) and len(rows) == 6
    at = {name: header.index(name) for name in header}
    hits = [(r[at["Begin Path"]], float(r[at["Begin time (s)"]]), float(r[at["End time (s)"]])) for r in rows]
    upsweeps = [h for h in hits if inside_call(*h, shape="upsweep")]
    assert len(upsweeps) >= 4 and {h[0] for h in upsweeps} == {"a.wav", "b.wav"}, hits
    similarities = [float(r[at["Similarity"]]) for r in rows]
    assert similarities == sorted(similarities, reverse=True)
    table = tmp_path / "query.Table.1.selections.txt"                               # a selection as the query
    table.write_text("Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSound type\tBegin Path\n"
                     "7\tSpectrogram 1\t1\t5.0\t5.3\tK1\ta.wav\n")
    assert embed.main(["search", "--store", str(root / "store"), "--query", f"{table}#7", "--top", "4",
                       "--output", str(out)]) == 0
    rows = [r.split("\t") for r in out.read_text().splitlines()[1:]]
    assert not any(r[at["Begin Path"]] == "a.wav" and 4.8 < float(r[3]) < 5.3 for r in rows)   # not itself
    assert sum(inside_call(r[at["Begin Path"]], float(r[3]), float(r[4]), "upsweep") for r in rows) >= 3


def test_a_head_from_a_few_examples_and_classify_equal_to_predict(season, tmp_path):
    root, model = season
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "a.Table.1.selections.txt").write_text(        # three calls of recording a annotated
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSound type\n"
        "1\tSpectrogram 1\t1\t1.0\t1.3\tK1\n2\tSpectrogram 1\t1\t3.0\t3.3\tK2\n3\tSpectrogram 1\t1\t5.0\t5.3\tK1\n"
        "4\tSpectrogram 1\t1\t7.0\t7.3\tK2\n")
    (labels / "b.Table.1.selections.txt").write_text(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tSound type\n1\tSpectrogram 1\t1\t2.0\t2.3\tK1\n")
    head = tmp_path / "head.pk"
    assert embed.main(["fit", "--store", str(root / "store"), "--labels", str(labels), "--out", str(head)]) == 0
    state = torch.load(head, weights_only=True)
    assert state["classifierOpts"]["round_float16"] and state["classes"] == {"K1": 0, "K2": 1, "noise": 2}
    out = tmp_path / "classified"
    assert embed.main(["classify", "--store", str(root / "store"), "--model_path", str(head), "--output_dir",
                       str(out), "--raven"]) == 0
    spec = load_model(str(head)).spec
    folder = PredictionFolder(str(out))                        # read back by the head's own rule, not 0.5
    assert spec.thresholds and folder.rule() == DecisionRule.from_model(spec)
    table = RavenSink.read(str(out / "b.Table.1.selections.txt"))
    decided = [(e.begin, e.end, e.label) for e in folder.events(folder.find("b")) if e.label != "noise"]
    assert [(e.begin, e.end, e.label) for e in table] == decided
    recording = root / "recordings" / "b.wav"
    log = parse_log(str(out / "b_predict_output.log"))
    truth, guessed = [], []
    for key, record in log.windows.items():
        start, end = (float(v) for v in key.split("-"))
        calls = [CLASS_OF[s] for s, t in PLANTED["b.wav"] if start < t + 0.3 and t < end and
                 min(end, t + 0.3) - max(start, t) >= 0.1]
        truth.append(calls[0] if calls else "noise")
        guessed.append(["K1", "K2", "noise"][int(np.argmax(record.probs))])
    truth, guessed = np.asarray(truth), np.asarray(guessed)
    recalls = [float((guessed[truth == c] == c).mean()) for c in ("K1", "K2", "noise")]
    assert np.mean(recalls) >= 0.6, recalls                      # chance: 1/3
    assert predict.main(["--model_path", str(head), "--input_file", str(recording), "--output_dir",
                         str(tmp_path / "predicted"), "--sequence_len", "0.2", "--hop", "0.1", "--num_workers", "0",
                         "--memory_format", "contiguous", "--no_progress", "--raven"]) == 0
    predicted = parse_log(str(tmp_path / "predicted" / "b_predict_output.log"))
    assert list(predicted.windows) == list(log.windows)
    worst = max(abs(p - q) for a, b in zip(predicted.windows.values(), log.windows.values())
                for p, q in zip(a.probs, b.probs))
    assert worst <= 1e-5, worst
    assert len((tmp_path / "predicted" / "b.Table.1.selections.txt").read_text().splitlines()) > 1


def test_a_store_killed_mid_write_is_readable_and_the_rerun_completes_it(trained, tmp_path):
    recordings = tmp_path / "recordings"
    for i in range(3):
        make_recording(str(recordings / f"r{i}.wav"), 8.0, 16000, [("upsweep", 4.0)], seed=i)
    from data.recording import WindowGeometry
    windows = WindowGeometry.from_seconds(0.2, 0.2, 16000, 8 * 16000).count
    argv = [sys.executable, os.path.join(SRC, "embed.py"), "--model_path", str(trained / "m" / "ANIMAL-SPOT.pk"),
            "--input_file", str(recordings), "--store", str(tmp_path / "store"), "--hop", "0.2", "--batch_size", "4"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "store" / "parts"
    deadline = time.time() + 120
    while time.time() < deadline and not (parts.is_dir() and any(n.endswith(".partial") for n in os.listdir(parts))):
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)                          # while a recording is being written
    process.wait(30)
    assert any(n.endswith(".partial") for n in os.listdir(parts))  # the half-written part is there ...
    store = Store.existing(str(tmp_path / "store"))
    done = list(store.parts())                                    # ... but the store reads only whole parts
    assert len(done) < 3 and all(len(p.starts) == len(p.vectors) == windows for p in done)
    assert subprocess.run(argv, capture_output=True, timeout=300).returncode == 0
    assert sorted(p.recording for p in store.parts()) == [f"r{i}.wav" for i in range(3)]
    assert not [n for n in os.listdir(parts) if n.endswith(".partial")]
    assert all(len(p.starts) == windows for p in store.parts())


def test_shards_of_a_job_array_fill_one_store(trained, tmp_path):
    """The second shard starts while the first is writing a part: nothing of the first's is
    touched, both finish, and the store's journals account for every recording."""
    recordings = tmp_path / "recordings"
    for i in range(4):
        make_recording(str(recordings / f"r{i}.wav"), 20.0 - i, 16000, [("upsweep", 5.0)], seed=i)
    argv = [sys.executable, os.path.join(SRC, "embed.py"), "--model_path", str(trained / "m" / "ANIMAL-SPOT.pk"),
            "--input_file", str(recordings), "--store", str(tmp_path / "store"), "--hop", "0.2", "--batch_size", "4"]
    first = subprocess.Popen(argv + ["--shard", "1/2"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    parts, deadline = tmp_path / "store" / "parts", time.time() + 120
    while time.time() < deadline and not (parts.is_dir() and any(n.endswith(".partial") for n in os.listdir(parts))):
        time.sleep(0.01)
    second = subprocess.run(argv + ["--shard", "2/2"], capture_output=True, text=True, timeout=300)
    assert first.wait(300) == 0, first.stderr.read()
    assert second.returncode == 0, second.stderr
    store = Store.existing(str(tmp_path / "store"))
    assert sorted(p.recording for p in store.parts()) == [f"r{i}.wav" for i in range(4)]
    assert sorted(n for n in os.listdir(tmp_path / "store") if n.startswith("embed_journal.")) == \
        ["embed_journal.shard1of2.jsonl", "embed_journal.shard2of2.jsonl"]
    assert embed.main(["report", "--store", str(tmp_path / "store")]) == 0


def test_more_like_this_and_active_learning_queue_items_the_estimators_do_not_count(season, tmp_path):
    import review
    from embedding import search
    from embedding.active import choose, more_like_this
    from reviews.app import create_app
    from reviews.units import unit_id

    root, model = season
    assert predict.main(["--model_path", model, "--input_file", str(root / "recordings"), "--output_dir",
                         str(tmp_path / "predictions"), "--sequence_len", "0.2", "--hop", "0.1", "--num_workers", "0",
                         "--memory_format", "contiguous", "--no_progress", "--threshold", "0.5"]) == 0
    args = review.build_parser().parse_args(["--predictions", str(tmp_path / "predictions"), "--recordings",
                                             str(root / "recordings"), "--out", str(tmp_path / "review"),
                                             "--store", str(root / "store"), "--per_class", "4", "--active"])
    page = review.open_review(args)
    session = page.session
    first = session.next()
    store = Store.existing(str(root / "store"))
    recording, begin, end, cls = session.stretch(first.id)
    vector, exclude = search.stored_stretch(store, recording, begin, end)
    hits = search.search(store, vector, 3, exclude)
    planned = {i for i, u in session.units.items() if u.inclusion is not None}
    fresh = [h for h in hits if unit_id(os.path.splitext(h.recording)[0], round(h.begin, 3), round(h.end, 3), cls,
                                        False, h.channel) not in planned]
    assert len(hits) == 3 and fresh                                # a hit that is a sampled unit is not queued twice
    assert more_like_this(session, store, first.id, top=3) == len(fresh)
    asked = []
    real, page.similar = page.similar, lambda item, top: asked.append(top) or 0
    client = create_app(page).test_client()
    for top, status in ((10 ** 9, 200), (-5, 200), ("many", 400)):          # the page's top is clamped
        assert client.post("/api/similar", json={"item": first.id, "top": top},
                           headers={"Host": "127.0.0.1"}).status_code == status
    assert asked == [100, 1]
    page.similar = real
    searched = [session.units[i] for i in session.extra]
    assert all(u.how == "search" and u.inclusion is None for u in searched)
    assert session.next().id == searched[0].id                    # "more like this" comes first
    for _ in range(10):                                           # a batch of answers refits the head ...
        unit = session.next()
        session.decide(unit.id, "correct" if inside_call(unit.recording + ".wav", unit.begin, unit.end) else "wrong")
        page.learner.answered()
    page.learner.refit(wait=True)                                 # (the page does this in the background)
    active = [session.units[i] for i in session.extra if session.units[i].how == "active"]
    assert active and "head fitted on" in page.learner.status(), page.learner.status()
    assert page.learner.status().endswith("next head after 10 more answer(s)")
    page.learner.answered()                                       # the status line moves with every answer
    assert page.learner.status().endswith("next head after 9 more answer(s)")
    journal = [json.loads(line) for line in open(tmp_path / "review" / "review_journal.jsonl")]
    assert {e["how"] for e in journal if e["type"] == "queued"} == {"search", "active"}
    summary = session.summary()
    random_answers = sum(1 for i in session.answers if session.units[i].inclusion is not None)
    assert sum(c["reviewed"] for c in summary["classes"].values()) == random_answers < len(session.answers)
    picked = choose([(0.9, "a", 0.0, 0.2, "K1", 0.5), (0.8, "a", 10.0, 10.2, "K1", 0.5),
                     (0.7, "a", 100.0, 100.2, "K1", 0.5), (0.6, "b", 0.0, 0.2, "K2", 0.5)], 3)
    assert [p[2] for p in picked] == [0.0, 0.0, 100.0]             # classes in turn, a minute apart


def test_an_untrained_backbone_embeds_with_its_weights_and_other_weights_are_refused(season, tmp_path):
    import torchvision
    root, _ = season
    torch.manual_seed(0)
    weights = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.pth"
        torch.save(torchvision.models.mobilenet_v3_small().state_dict(), path)
        weights.append(str(path))
    flags = ["--backbone", "mobilenet_v3_small", "--input_file", str(root / "recordings" / "b.wav"), "--store",
             str(tmp_path / "store"), "--sr", "16000", "--n_fft", "256", "--hop_length", "64", "--n_freq_bins",
             "32", "--fmin", "0", "--fmax", "8000", "--sequence_len", "0.5", "--hop", "0.5"]
    assert embed.main(flags + ["--pretrained_weights", weights[0]]) == 0
    store = Store.existing(str(tmp_path / "store"))
    assert store.description.model["backbone"] == "mobilenet_v3_small" and store.description.dim == 576
    assert store.description.window == 0.5 and store.description.data_opts["n_fft"] == 256
    assert len(next(store.parts()).starts) == 24                   # ceil((12 s + 1 sample - 0.5 s) / 0.5 s)
    assert embed.main(flags + ["--pretrained_weights", weights[1]]) == 1             # other weights: refused


def test_search_by_float16_products_returns_the_float32_best(tmp_path, monkeypatch):
    """The fast first step (float16 products) may misorder near ties; the answer must still
    be the float32 best windows with their float32 similarities, also where products overflow."""
    from embedding import search

    rng = np.random.default_rng(3)
    dim, keep = 64, 10
    q = rng.normal(size=dim).astype(np.float32)
    q /= np.linalg.norm(q)
    store = Store(str(tmp_path / "store"))
    store.create(StoreDescription({"file": "random"}, {}, False, dim, 1.0, 0.5))
    stored = {}
    for r in range(3):
        with store.writer(f"r{r}.wav", PartMeta(f"r{r}.wav")) as part:
            for batch in range(3):                                    # several blocks per part
                v = rng.normal(size=(400, dim))
                ties = rng.choice(400, 12, replace=False)             # cosines 0.9, 0.9002, ...: near ties
                cos = 0.9 + 2e-4 * rng.permutation(12)
                u = rng.normal(size=(12, dim))
                u -= np.outer(u @ q, q)
                u /= np.linalg.norm(u, axis=1, keepdims=True)
                v[ties] = (cos[:, None] * q + np.sqrt(1 - cos[:, None] ** 2) * u) * rng.uniform(0.1, 50, (12, 1))
                if batch == 0:                                        # vectors below float16's normal range
                    v[ties[:3]] *= (np.array([1e-6, 5e-6, 2e-5]) / np.linalg.norm(v[ties[:3]], axis=1))[:, None]
                if batch == 1:
                    v[0], v[1] = 60000 * q / np.abs(q).max(), -60000 * q / np.abs(q).max()   # float16 overflow
                if batch == 2:
                    v[:4] = -60000 * q / np.abs(q).max()             # more overflowing windows than kept
                    v[4, 0] = np.inf                                  # a broken vector: never a hit
                starts = (np.arange(400) + 400 * batch) * 0.5
                part.add(starts, starts + 1.0, np.zeros(400), v)
                stored.update({(f"r{r}.wav", s): x for s, x in zip(starts, v.astype(np.float16).astype(np.float64))})
    keys = list(stored)
    matrix = np.array([stored[k] for k in keys])
    with np.errstate(invalid="ignore"):                               # the broken vector: NaN
        truth = dict(zip(keys, matrix @ q.astype(np.float64) / np.linalg.norm(matrix, axis=1)))

    def check(hits, left_out=()):
        expected = sorted((s for k, s in truth.items() if k not in left_out and s == s), reverse=True)[:keep]
        assert np.allclose([h.similarity for h in hits], expected, atol=1e-5, rtol=0)
        for h in hits:                                                # each value is that window's own
            assert abs(truth[(h.recording, h.begin)] - h.similarity) <= 1e-5

    monkeypatch.setattr(search, "SAMPLE", 16)                       # the margin, not the sample, finds the best
    fallbacks = []
    monkeypatch.setattr(search, "everything_float32", lambda *a, f=search.everything_float32: fallbacks.append(1)
                        or f(*a))
    hits = search.similarities(store, q, keep)
    check(hits)
    assert hits[0].begin == 200.0 and hits[0].similarity > 0.999     # found though its product overflowed
    approx = torch.cat([search.cosines(p, torch.from_numpy(q).half()) for p in store.parts()]).numpy()
    reference = np.array([truth[(p.recording, s)] for p in store.parts() for s in p.starts])
    norms = np.concatenate([p.norms for p in store.parts()])
    normal = np.isfinite(approx) & (norms >= search.TINY)
    error = np.abs(approx - reference)
    assert error[normal].max() > 1e-5 and (~np.isfinite(approx)).sum() > keep   # inexact, and overflows
    assert error[normal].max() <= search.error_bound(dim)              # the bound holds, window by window
    assert error[norms < search.TINY].max() > search.error_bound(dim)  # ... and not below TINY: recomputed
    assert fallbacks == []
    check(search.similarities(store, q, keep, exclude=("r1.wav", 199.9, 200.1)), left_out={("r1.wav", 200.0)})
    monkeypatch.setattr(search, "error_bound", lambda dim: 1e-7)     # products "stray": all in float32
    fallbacks.clear()
    check(search.similarities(store, q, keep))
    assert fallbacks == [1]
    check(search.everything_float32(store, torch.from_numpy(q), keep, None))
    tiny = Store(str(tmp_path / "tiny"))                              # a broken vector takes no place in the top
    tiny.create(StoreDescription({"file": "random"}, {}, False, dim, 1.0, 0.5))
    tiny.write("t.wav", [0.0, 0.5, 1.0], [1.0, 1.5, 2.0], [1, 1, 1], np.stack([np.full(dim, np.inf), q, -q]),
               PartMeta())
    for found in (search.similarities(tiny, q, 2), search.everything_float32(tiny, torch.from_numpy(q), 2, None)):
        assert [h.begin for h in found] == [0.5, 1.0]
