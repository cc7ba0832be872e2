"""The model card: what a model is, what it was trained and tested on, how well it did,
and where it was not tested. Training stores the card's facts in the model file
(``modelCard``, plain data) and writes ``MODEL_CARD.md`` beside it; ``predict.py
--describe M.pk`` renders the same text from the model file alone. Files without a card
(the original's, older ones) get what the file itself says."""

from typing import Dict, List, Optional, Sequence

PURPOSE = ("Detects or classifies the calls of the classes listed below in recordings made like the training "
           "recordings (same species and call repertoire, similar recorders, sites and noise).")
NOT_TESTED = ("It was not tested on recordings from other sites, recorders, seasons or populations than the ones "
              "in its data, on call types it was not trained on (use predict.py --unknown to flag them), nor at "
              "other sample rates than those listed. Test figures are clip-level on held-out tapes; event-level "
              "performance on long recordings needs EVALUATION/score.py on annotated recordings of your own.")


def largest_confusions(test: Dict, names: List[str], count: int = 5) -> List[Dict]:
    matrix = test.get("confusion_matrix") or []
    pairs = [(matrix[i][j], names[i], names[j], sum(matrix[i])) for i in range(len(matrix))
             for j in range(len(matrix)) if i != j and matrix[i][j]]
    pairs.sort(key=lambda p: (-p[0], p[1], p[2]))
    return [{"true": t, "predicted": p, "clips": n, "share_of_true": n / total if total else None}
            for n, t, p, total in pairs[:count]]


def card_data(spec, metrics: Dict, data: Dict, machine: str) -> Dict:
    """The card's facts: ``data`` is the clips per class and partition, tapes and sample
    rates (``training_data.card_summary``)."""
    options = spec.train_opts or {}
    folds = options.get("folds")
    return {
        "data": data,
        "split": {"rule": "by recording (YEAR_TAPE): every clip of a tape in one partition, 70/15/15 "
                          "train/val/test" + (f" (fold of a {folds}-fold cross-validation)" if folds else ""),
                  "hash": (spec.provenance or {}).get("splitHash")},
        "test": {k: metrics["test"].get(k) for k in ("accuracy", "balanced_accuracy", "balanced_accuracy_ci95",
                                                     "macro_f1", "samples", "per_class")},
        "confusions": largest_confusions(metrics["test"], metrics["classes"]),
        "best_validation": {k: (metrics.get("best_val") or {}).get(k) for k in ("epoch", "monitor")},
        "unknown_on_test": (metrics.get("unknown") or {}).get("test"),
        "training": {"seconds": metrics.get("seconds"), "finished": metrics.get("finished"), "machine": machine,
                     "seed": metrics.get("seed")},
        "purpose": PURPOSE, "not_tested": NOT_TESTED,
    }


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def _interval(pair) -> str:
    return "" if not pair or pair[0] is None else f" [{100 * pair[0]:.1f}-{100 * pair[1]:.1f}]"


def band_lines(bands: Optional[Dict]) -> List[str]:
    """The per-class sample-rate table (``data.bandwidth``) and its warning, where recorded."""
    if not bands:
        return []
    lines = [f"Native sample rates per class (a clip recorded at rate r holds nothing above r/2; the spectrogram "
             f"reaches {bands['fmax']:g} Hz):", "",
             "| class | sample rates (Hz: clips) | clips whose band ends below fmax |", "| --- | --- | --- |"]
    lines += [f"| {n} | {', '.join(f'{r}: {c}' for r, c in b['sample_rates'].items())} | {b['below_fmax']} of "
              f"{b['clips']} |" for n, b in bands["classes"].items()]
    return lines + ["", f"**Warning:** {bands['warning']}" if bands.get("warning") else
                    "Every class's spectrograms span the same band.", ""]


def render(spec, title: str = "ANIMAL-SPOT model") -> str:
    """The model card as Markdown, from a ``ModelSpec`` alone."""
    card = spec.card or {}
    lines = [f"# Model card: {title}", "", "## What it is for", "", card.get("purpose", PURPOSE), "",
             "## Where it was not tested", "", card.get("not_tested", NOT_TESTED), ""]
    lines += ["## Classes", "", ", ".join(f"{n} ({i})" for n, i in spec.classes.items()), ""]
    lines += data_lines(card) + network_lines(spec) + held_out_lines(card, spec.class_map.names)
    lines += decision_lines(spec, card) + run_lines(card, spec.provenance or {})
    if not card:
        lines += ["This file carries no training record (a model of the original ANIMAL-SPOT or an older "
                  "version): its data and test figures are unknown.", ""]
    return "\n".join(lines)


def data_lines(card: Dict) -> List[str]:
    """Clips per class and partition, sample rates, bands, and the split."""
    lines: List[str] = []
    data = card.get("data")
    if data:
        lines += ["## Data", "", "| class | train | val | test | tapes |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {n} | {c['train']} | {c['val']} | {c['test']} | {c['tapes']} |"
                  for n, c in data["classes"].items()]
        rates = ", ".join(f"{rate} Hz: {count}" for rate, count in data["sample_rates"].items())
        lines += ["", f"Sample rates of the clips: {rates}.", ""]
        lines += band_lines(data.get("bands"))
    split = card.get("split")
    if split:
        lines += ["## Split", "", f"{split['rule']}; split hash `{split.get('hash')}`.", ""]
    return lines


def network_lines(spec) -> List[str]:
    """The foundation encoder (its licence), the network, its input and the training options."""
    lines: List[str] = []
    encoder = dict(spec.encoder_opts)
    options = spec.train_opts or {}
    if encoder.get("licence"):
        what = "Trained from" if encoder.get("trainable") else "A head on"          # fine-tuned: weights in this file
        lines += ["## Foundation encoder", "", f"{what} {encoder.get('version')} (`{spec.backbone}`"
                  + (f", package {encoder['package']} {encoder.get('package_version')}" if encoder.get("package") else "")
                  + f"), weights SHA-256 `{encoder.get('sha256')}`. Licence of the encoder's weights: "
                  f"**{encoder['licence']}**; it binds every use of this model.", ""]
    lines += ["## Network and input", "", f"Backbone `{spec.backbone}`, encoder options `{encoder}`, "
              f"head `{spec.classifier_opts}`.", f"Input: `{spec.data_opts}`, segment "
              f"{options.get('sequence_len', 'unknown')} ms, "
              f"{'min-max' if spec.min_max_norm else 'dB'} normalisation.", ""]
    if options:
        shown = {k: options[k] for k in ("lr", "batch_size", "max_train_epochs", "augmentation", "spec_augment",
                                         "mixup", "class_weights", "weighted_sampling", "loss", "label_smoothing",
                                         "scheduler", "monitor", "seed", "precision") if k in options}
        lines += [f"Training options (all in the file's `trainOpts`): `{shown}`.", ""]
    return lines


def held_out_lines(card: Dict, names: Sequence[str]) -> List[str]:
    """Per-class test figures with intervals, the overall ones, the largest confusions."""
    lines: List[str] = []
    test = card.get("test")
    if test:
        lines += ["## Test figures (held-out tapes, clip level, 95 % intervals)", "",
                  "| class | recall | precision | F1 | clips |", "| --- | --- | --- | --- | --- |"]
        for name in names:
            c = (test.get("per_class") or {}).get(name, {})
            lines.append(f"| {name} | {_pct(c.get('recall'))}{_interval(c.get('recall_ci95'))} | "
                         f"{_pct(c.get('precision'))} | {_pct(c.get('f1'))} | {c.get('support', 0)} |")
        lines += ["", f"Balanced accuracy {_pct(test.get('balanced_accuracy'))}"
                      f"{_interval(test.get('balanced_accuracy_ci95'))}, accuracy {_pct(test.get('accuracy'))}, "
                      f"macro-F1 {_pct(test.get('macro_f1'))}, {test.get('samples')} test clips.", ""]
    if card.get("confusions"):
        lines += ["Largest confusions: " + "; ".join(
            f"{c['true']} called {c['predicted']} {c['clips']}x ({_pct(c['share_of_true'])} of {c['true']})"
            for c in card["confusions"]) + ".", ""]
    elif test:
        lines += ["Largest confusions: none (every test clip was called its own class).", ""]
    return lines


def decision_lines(spec, card: Dict) -> List[str]:
    """Thresholds and temperature, and the unknown answer."""
    lines = ["## Decisions", ""]
    if spec.thresholds:
        lines.append("Per-class thresholds on calibrated probabilities (chosen on validation): " +
                     ", ".join(f"{k} {v:.3f}" for k, v in spec.thresholds.items()) +
                     f"; temperature {spec.temperature:.3f}.")
    else:
        lines.append("No thresholds stored: predict.py decides with --threshold (default 0.5).")
    if spec.unknown:
        rejected = (card.get("unknown_on_test") or {}).get("rejected_share")
        lines.append(f"Unknown answer (`predict.py --unknown`): {spec.unknown['score']} beyond "
                     f"{spec.unknown['threshold']:.4f} (rejects {_pct(spec.unknown['false_rejection'])} of known "
                     f"validation clips; {_pct(rejected)} of known test clips).")
    return lines + [""]


def run_lines(card: Dict, provenance: Dict) -> List[str]:
    """When, where and with which versions the model was trained."""
    training = card.get("training")
    if not training and not provenance:
        return []
    lines = ["## Training run", ""]
    if training:
        lines.append(f"Finished {training.get('finished')} after {training.get('seconds')} s on "
                     f"{training.get('machine')}; seed {training.get('seed')}.")
    if provenance:
        lines.append(f"Versions: project {provenance.get('version')}, torch {provenance.get('torch')}, "
                     f"torchvision {provenance.get('torchvision')}, Python {provenance.get('python')}.")
    return lines + [""]
