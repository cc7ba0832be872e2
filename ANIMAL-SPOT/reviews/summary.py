"""The review's figures, per class, from its plans and the answers so far: precision,
recall and call density with 95 % intervals, the precision curve and the threshold for a
target precision (``reviews.estimators``). Only randomly sampled units count; what an
answer means is ``reviews.journal.called``."""

import os
from collections import OrderedDict
from dataclasses import asdict
from typing import Dict, List, Optional

import numpy as np

from . import estimators as est
from .journal import USABLE, called
from .sampling import ClassPlan
from .units import Unit

ESTIMATORS = ("stratified; estimates (medians) and 95 % intervals from the finite-population posterior (Jeffreys "
              "prior); only randomly sampled units count")
FEW = ("too_few_reviews: a stratum of that class (or one its recall and call density draw on) has fewer than 3 "
       "answers, so the prior still weighs: review more before trusting its figures")
PER_RECORDING = ("a recording's call density assumes its units of a stratum hold calls at the stratum's rate (the "
                 "review samples strata, not recordings)")
MIXED = ("{tables} of {total} recordings had only a table (no log): their missed calls cannot be sampled, so recall "
         "is biased upward and call density is a lower bound")


def sampled_answers(plan_units: List[str], units: Dict[str, Unit], answers: Dict[str, dict]) -> List[tuple]:
    """``(unit, answer)`` of the randomly sampled units with a usable answer."""
    return [(units[i], answers[i]) for i in plan_units if i in answers and units[i].inclusion is not None
            and answers[i]["decision"] in USABLE]


def strata_counts(plan: ClassPlan, units: Dict[str, Unit], answers: Dict[str, dict], target: str
                  ) -> List[est.Stratum]:
    """The plan's strata with the random sample's answers counted: ``correct`` = the
    units that hold a call of ``target``."""
    counted = []
    for stratum in plan.strata:
        usable = sampled_answers(plan.members[stratum.name], units, answers)
        calls = sum(1 for _, answer in usable if called(answer) == target)
        counted.append(est.Stratum(stratum.name, stratum.size, len(usable), calls, stratum.above,
                                   stratum.low, stratum.high, stratum.recordings))
    return counted


def curve_arrays(plan: ClassPlan, units: Dict[str, Unit], answers: Dict[str, dict]):
    """Scores, calls (1 = holds a call of the class), weights (stratum size / usable
    reviews in it) and strata of the class's sampled, answered units that a threshold on
    its score could detect."""
    scores, calls, weights, strata = [], [], [], []
    for stratum in plan.strata:
        usable = sampled_answers(plan.members[stratum.name], units, answers)
        for unit, answer in usable:
            if unit.detectable:
                scores.append(unit.score if unit.score is not None else 0.0)
                calls.append(1.0 if called(answer) == plan.name else 0.0)
                weights.append(stratum.size / len(usable))
                strata.append(stratum.name)
    return np.asarray(scores), np.asarray(calls), np.asarray(weights), np.asarray(strata)


def class_summary(plans: Dict[str, ClassPlan], name: str, units: Dict[str, Unit], answers: Dict[str, dict],
                  seconds: Dict[str, float], all_logs: bool) -> dict:
    """Precision from the class's detections; recall and call density from every stratum
    (a call of this class may hide below the threshold of any class, or in another
    class's detections, where the reviewer names it)."""
    plan = plans[name]
    hours = sum(seconds.values()) / 3600
    own = strata_counts(plan, units, answers, name)
    above = [s for s in own if s.above]
    others = [s for other in plans.values() for s in strata_counts(other, units, answers, name)
              if other.name != name or not s.above]
    p, p_ci = est.precision(above)
    r, r_ci = est.recall(above, others) if any(not s.above for s in others) else (None, (None, None))
    everything = above + others
    d, d_ci = est.call_density(everything, hours)
    per_recording = OrderedDict()
    for recording in sorted(seconds):
        value, ci = est.call_density(everything, seconds[recording] / 3600, recording=recording)
        per_recording[recording] = {"call_density_per_hour": value, "call_density_ci95": list(ci)}
    answered = sum(1 for i in plan.queue if i in answers)
    return {"too_few_reviews": est.too_few_reviews(everything),
            "precision": p, "precision_ci95": list(p_ci), "recall": r, "recall_ci95": list(r_ci),
            "call_density_per_hour": d, "call_density_ci95": list(d_ci),
            "call_density_is_lower_bound": not all_logs, "per_recording": per_recording,
            "reviewed": sum(s.reviewed for s in own), "sampled": len(plan.queue), "answered": answered,
            "detections": sum(s.size for s in above), "strata": [asdict(s) | {"share": s.share} for s in own]}


def threshold_figures(plan: ClassPlan, units: Dict[str, Unit], answers: Dict[str, dict],
                      target: Optional[float]) -> dict:
    """The precision curve, and the lowest threshold reaching ``target`` with its
    interval (only where a target was given)."""
    scores, calls, weights, strata = curve_arrays(plan, units, answers)
    figures = {"precision_curve": []}
    if len(scores):
        thresholds, values = est.weighted_precision_curve(scores, calls, weights)
        figures["precision_curve"] = [[float(t), float(v)] for t, v in zip(thresholds, values)]
    if target is not None:
        figures["threshold_for_target_precision"] = est.threshold_for_precision(scores, calls, weights, target)
        figures["threshold_for_target_precision_interval"] = list(est.threshold_interval(scores, calls, weights, strata,
                                                                                     target))
    return figures


def season_summary(session) -> dict:
    """Every class's figures (``session``: its plans, units, answers, recordings)."""
    tables = sum(1 for kind in session.sources.values() if kind != "log")
    all_logs = tables == 0
    classes = OrderedDict()
    for name, plan in session.plans.items():
        entry = class_summary(session.plans, name, session.units, session.answers, session.seconds, all_logs)
        entry.update(threshold_figures(plan, session.units, session.answers, session.target_precision))
        classes[name] = entry
    notes = [PER_RECORDING] + ([FEW] if any(c["too_few_reviews"] for c in classes.values()) else [])
    if tables and tables < len(session.sources):
        notes.insert(0, MIXED.format(tables=tables, total=len(session.sources)))
    return {"classes": classes, "hours": sum(session.seconds.values()) / 3600, "recordings": len(session.seconds),
            "sources": {"logs": len(session.sources) - tables, "tables": tables},
            "target_precision": session.target_precision, "journal": os.path.join(session.out, "review_journal.jsonl"),
            "estimators": ESTIMATORS, "notes": notes}
