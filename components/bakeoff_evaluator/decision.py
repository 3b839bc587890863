"""The bake-off's one decision: the winner among the challengers and whether it is blessed, by the
configured rule (components/bakeoff_evaluator/rule.py) on the metrics and paired comparisons of
metrics.py. Every reason is said in words, in the order it was weighed."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from scipy import stats

from components.bakeoff_evaluator.rule import DecisionRule


def _find_pair(comparisons: list[dict[str, Any]], a: str, b: str) -> dict[str, Any] | None:
    for t in comparisons:
        if {t["first"], t["second"]} == {a, b}:
            return t
    return None


def _pair(comparisons: list[dict[str, Any]], a: str, b: str) -> dict[str, Any]:
    t = _find_pair(comparisons, a, b)
    if t is None:
        raise KeyError(f"no comparison between {a} and {b}")
    return t


def _oriented(t: dict[str, Any], a: str) -> tuple[float | None, list[float] | None]:
    """The pair's accuracy difference and interval as `a` minus the other (None where not recorded)."""
    diff, ci = t.get("accuracy_difference"), t.get("accuracy_difference_ci95")
    if t["first"] == a or diff is None:
        return diff, ci
    return -diff, ([-ci[1], -ci[0]] if ci is not None else None)


def _versus(results: dict[str, dict[str, Any]], rule: DecisionRule, comparisons: list[dict[str, Any]],
            winner: str, other: str) -> dict[str, Any] | None:
    """The winner against one other model: McNemar p, tie or not, the difference and its interval."""
    t = _find_pair(comparisons, winner, other)
    if t is None:
        return None
    diff, ci = _oriented(t, winner)
    if diff is None and "accuracy" in results[winner] and "accuracy" in results[other]:
        diff = results[winner]["accuracy"] - results[other]["accuracy"]
    return {"p_value": t["p_value"], "tied": t["p_value"] >= rule.champion_alpha,
            "accuracy_difference": diff, "accuracy_difference_ci95": ci}


def _chosen_by(results: dict[str, dict[str, Any]], key: str, winner: str, other: str) -> str:
    w, o = results[winner], results[other]
    if w[key] != o[key]:
        return f"the higher point estimate of test {key} ({w[key]:.4f} vs {o[key]:.4f})"
    if w["log_loss"] != o["log_loss"]:
        return f"the lower log loss ({w['log_loss']:.4f} vs {o['log_loss']:.4f})"
    return "the name (equal metrics)"


def _significance_reason(winner: str, other: str, label: str, v: dict[str, Any], alpha: float,
                         chosen_by: str | None) -> str:
    p = f"McNemar p = {v['p_value']:.2g} {'>=' if v['tied'] else '<'} champion_alpha {alpha}"
    difference = ""
    if v["accuracy_difference"] is not None:
        difference = f"; accuracy difference {v['accuracy_difference']:+.4f}"
        if v["accuracy_difference_ci95"] is not None:
            low, high = v["accuracy_difference_ci95"]
            difference += f", paired bootstrap 95 % CI {low:+.4f} to {high:+.4f}"
    if v["tied"]:
        text = f"{winner} and {label} are statistically tied ({p}, not significant{difference})"
        return text + (f": {winner} is chosen by {chosen_by}" if chosen_by else "")
    if (v["accuracy_difference"] or 0.0) >= 0:
        return f"{winner}'s lead over {label} is statistically significant ({p}{difference})"
    return f"{winner} is significantly less accurate than {label} ({p}{difference})"


def _corruption_gate(rule: DecisionRule, winner: str, champion: str | None,
                     robustness: dict[str, float] | None) -> tuple[dict[str, Any], str | None]:
    gate: dict[str, Any] = {"applied": False, "passed": True, "corruption_max_drop": rule.corruption_max_drop}
    if not rule.corruption_gate:
        return gate, None
    if champion is None:
        return gate, (f"corruption gate (corruption_max_drop {rule.corruption_max_drop}): no champion, "
                      f"not applied")
    if not robustness or winner not in robustness or champion not in robustness:
        return gate, "corruption gate: no scores on the corrupted test copy, not applied"
    w, c = robustness[winner], robustness[champion]
    drop = c - w
    passed = drop <= rule.corruption_max_drop + 1e-12
    gate.update(applied=True, passed=passed, winner_mean_accuracy=w, champion_mean_accuracy=c, drop=drop)
    verdict = "passed" if passed else "FAILED"
    return gate, (f"corruption gate {verdict}: {winner}'s mean accuracy on the corrupted test copy is {w:.4f} vs "
                  f"the champion's {c:.4f} (drop {drop:+.4f}; at most corruption_max_drop "
                  f"{rule.corruption_max_drop} allowed)")


DIGITS = [str(d) for d in range(10)]


def proportion_drop_p_value(recorded: float, recorded_n: int, now: float, now_n: int) -> float:
    """One-sided two-sample z-test of proportions (pooled): the p-value of "accuracy now is lower
    than the recorded one" being chance."""
    pooled = (recorded * recorded_n + now * now_n) / (recorded_n + now_n)
    se = float(np.sqrt(pooled * (1 - pooled) * (1 / recorded_n + 1 / now_n)))
    if se == 0.0:
        return 1.0 if now >= recorded else 0.0
    return float(stats.norm.sf((recorded - now) / se))


def champion_shift(rule: DecisionRule, champion: str | None, results: dict[str, dict[str, Any]],
                   recorded: dict[str, Any] | None) -> tuple[dict[str, Any], str | None]:
    """The champion shift alarm: fired when the champion's accuracy on this test split is below
    the accuracy recorded when it was registered, by at least shift_alarm_min_drop, and the drop is
    significant at shift_alarm_alpha. Then the run does not move the alias on its own."""
    alarm: dict[str, Any] = {"applied": False, "fired": False, "action": rule.shift_alarm_action,
                             "alpha": rule.shift_alarm_alpha, "min_drop": rule.shift_alarm_min_drop}
    if not rule.shift_alarm or champion is None:
        return alarm, None
    if not recorded or not recorded.get("accuracy") or not recorded.get("examples"):
        return alarm, ("champion shift alarm: the champion carries no recorded accuracy (registered before it was "
                       "recorded): not applied")
    now, now_n = results[champion]["accuracy"], results[champion]["examples"]
    before, before_n = float(recorded["accuracy"]), int(recorded["examples"])
    drop, p = before - now, proportion_drop_p_value(before, before_n, now, now_n)
    fired = drop >= rule.shift_alarm_min_drop and p < rule.shift_alarm_alpha
    alarm.update(applied=True, fired=fired, recorded_accuracy=before, recorded_examples=before_n,
                 accuracy=now, examples=now_n, drop=drop, p_value=p)
    evidence = (f"the champion scores {now:.4f} on this test split ({now_n} examples) against {before:.4f} when it was "
                f"registered ({before_n} examples): a drop of {drop:+.4f}, one-sided two-sample z-test p = {p:.3g}")
    if fired:
        then = ("the run stops" if rule.shift_alarm_action == "stop"
                else "the challenger is registered without promotion, for a person to promote")
        return alarm, (f"champion shift alarm FIRED: the data changed under the champion: {evidence} (at least "
                       f"{rule.shift_alarm_min_drop:.4f} and p < {rule.shift_alarm_alpha}); the alias does not move "
                       f"on its own ({then})")
    return alarm, f"champion shift alarm not fired: {evidence}"


def _slice_gate(results: dict[str, dict[str, Any]], rule: DecisionRule, winner: str,
                champion: str | None, class_names: list[str] | None = None) -> tuple[dict[str, Any], str | None]:
    gate: dict[str, Any] = {"applied": False, "passed": True, "slice_max_recall_drop": rule.slice_max_recall_drop,
                            "offending_digits": []}
    if not rule.slice_gate:
        return gate, None
    if champion is None:
        return gate, (f"slice gate (slice_max_recall_drop {rule.slice_max_recall_drop}): no champion, "
                      f"not applied")
    names = class_names or DIGITS
    noun = "digit" if names == DIGITS[:len(names)] else "class"
    w, c = results[winner]["per_class"], results[champion]["per_class"]
    drops = {d: c[d]["recall"] - w[d]["recall"] for d in w if d in c}
    offending = [d for d, drop in drops.items() if drop > rule.slice_max_recall_drop + 1e-12]
    gate.update(applied=True, passed=not offending, recall_drops=drops, offending_digits=offending)
    if offending:
        named = ", ".join(f"{names[int(d)]} ({w[d]['recall']:.4f} vs the champion's {c[d]['recall']:.4f})"
                          for d in offending)
        return gate, (f"slice gate FAILED: {winner}'s recall falls more than slice_max_recall_drop "
                      f"{rule.slice_max_recall_drop} below the champion's on {noun}{'s' if len(offending) > 1 else ''} "
                      f"{named}")
    worst = max(drops, key=lambda d: drops[d])
    return gate, (f"slice gate passed: no {noun}'s recall of {winner} is more than slice_max_recall_drop "
                  f"{rule.slice_max_recall_drop} below the champion's (largest drop {drops[worst]:+.4f}, "
                  f"{noun} {names[int(worst)]})")


# Across seeds each training run is one draw of a framework's outcome; the frameworks' spreads
# differ (measured here), so the unequal-variance t-test. Mann-Whitney's U was rejected: with three
# seeds per framework its smallest two-sided p is 0.1, so it could never find a difference at 0.05.
ACROSS_SEEDS_TEST = ("Welch's t-test (two-sided, unequal variances) on the per-seed test metric of each "
                     "framework's models: every seed's training is one independent draw of what the framework "
                     "delivers; with few seeds it finds only large differences")


def _rank_key(results: dict[str, dict[str, Any]], key: str):
    return lambda n: (-results[n][key], results[n]["log_loss"], n)


def across_seeds(results: dict[str, dict[str, Any]], rule: DecisionRule, groups: dict[str, list[str]],
                 robustness: dict[str, float] | None = None) -> dict[str, Any]:
    """Each framework's models (one per seed): mean, spread and range of the primary metric (and
    the mean of their corrupted-copy accuracies, given `robustness`), the framework ranking by mean
    (then mean log loss, then name), and Welch's t-test of the leading framework against each
    other one at rule.champion_alpha."""
    key = rule.primary_metric
    summary = {}
    for framework, names in sorted(groups.items()):
        values = np.array([results[n][key] for n in names], dtype=np.float64)
        summary[framework] = {
            "models": list(names), "values": values.tolist(), "seeds": len(names), "mean": float(values.mean()),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "min": float(values.min()), "max": float(values.max()),
            "mean_log_loss": float(np.mean([results[n]["log_loss"] for n in names])),
            "best_model": sorted(names, key=_rank_key(results, key))[0],
            "corrupted_mean_accuracy": float(np.mean([robustness[n] for n in names])) if robustness else None}
    # Means rounded: equal per-seed values summed in another order must tie, then go to log loss.
    order = sorted(summary, key=lambda f: (-round(summary[f]["mean"], 10), summary[f]["mean_log_loss"], f))
    versus = {}
    for other in order[1:]:
        a, b = np.array(summary[order[0]]["values"]), np.array(summary[other]["values"])
        p = None
        if len(a) >= 2 and len(b) >= 2 and (a.var() + b.var()) > 0:
            p = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
        versus[other] = {"mean_difference": float(a.mean() - b.mean()), "p_value": p,
                         "tied": p is None or p >= rule.champion_alpha}
    return {"metric": key, "test": ACROSS_SEEDS_TEST, "frameworks": summary, "ranking": order,
            "winner": order[0], "versus": versus}


def _across_seeds_reasons(seeds: dict[str, Any], alpha: float) -> list[str]:
    key, fw = seeds["metric"], seeds["frameworks"]
    lead = seeds["winner"]

    def spread(f: str) -> str:
        s = fw[f]
        return f"{f} mean {s['mean']:.4f} ± {s['std']:.4f} over {s['seeds']} seeds ({s['min']:.4f}-{s['max']:.4f})"

    reasons = []
    for other, v in seeds["versus"].items():
        if v["p_value"] is None:
            test = "not testable (a framework needs 2 seeds and some spread)"
        else:
            test = f"Welch's t-test p = {v['p_value']:.2g} {'>=' if v['tied'] else '<'} champion_alpha {alpha}"
        by = ("the higher mean" if round(fw[lead]["mean"], 10) > round(fw[other]["mean"], 10) else
              f"the lower mean log loss ({fw[lead]['mean_log_loss']:.4f} vs {fw[other]['mean_log_loss']:.4f}; "
              f"equal means)" if fw[lead]["mean_log_loss"] < fw[other]["mean_log_loss"] else
              "the name (equal means and log losses)")
        verdict = (f"the frameworks are statistically tied across seeds ({test}): {lead} is chosen by {by}"
                   if v["tied"] else f"{lead} is better across seeds ({test})")
        reasons.append(f"across seeds, test {key}: {spread(lead)} vs {spread(other)}; {verdict}")
    best = fw[lead]["best_model"]
    reasons.append(f"{best} is {lead}'s best single model (test {key} {max(fw[lead]['values']):.4f}): "
                   f"the candidate for the registry")
    return reasons


def _champion_test(results: dict[str, dict[str, Any]], rule: DecisionRule, comparisons: list[dict[str, Any]],
                   winner: str, champion: str, challengers: int) -> tuple[bool, str]:
    """Whether the winner passes rule.champion_policy against the champion, and the reason."""
    key = rule.primary_metric
    value, c_value = results[winner][key], results[champion][key]
    delta = value - c_value
    if rule.champion_policy == "better_by":
        passes = delta >= rule.champion_min_delta
        return passes, (f"{winner} {'beats' if passes else 'does not beat'} the champion by the required "
                        f"{rule.champion_min_delta:.4f}: {value:.4f} vs {c_value:.4f} (difference {delta:+.4f})")
    p = _pair(comparisons, winner, champion)["p_value"]
    if rule.champion_policy == "not_significantly_worse":
        worse = delta < 0 and p < rule.champion_alpha
        return not worse, (f"{winner} is {'significantly worse than' if worse else 'not significantly worse than'}"
                           f" the champion: {value:.4f} vs {c_value:.4f}, McNemar p = {p:.4g}"
                           f" (champion_alpha {rule.champion_alpha})")
    level = rule.champion_alpha / challengers
    better = delta > 0 and p < level
    text = (f"{winner} is {'significantly better than' if better else 'not significantly better than'} the "
            f"champion: {value:.4f} vs {c_value:.4f} (difference {delta:+.4f}), McNemar p = {p:.2g} "
            f"{'<' if p < level else '>='} {level:.3g} (champion_alpha {rule.champion_alpha} / {challengers} "
            f"challenger{'s' if challengers > 1 else ''}, Bonferroni: the winner is the best of them)")
    if not better:
        return False, text + "; the champion stays (significantly_better: the alias does not move on noise)"
    if delta < rule.champion_min_delta:
        return False, text + f", but by less than champion_min_delta {rule.champion_min_delta:.4f}"
    return True, text


def decide(results: dict[str, dict[str, Any]], rule: DecisionRule, champion: str | None = None,
           comparisons: list[dict[str, Any]] | None = None,
           robustness: dict[str, float] | None = None,
           frameworks: dict[str, str] | None = None, class_names: list[str] | None = None,
           champion_recorded: dict[str, Any] | None = None) -> dict[str, Any]:
    """The winner among the challengers (every result but `champion`), and whether it is blessed.

    Ranking: higher primary metric, then lower log loss, then name. Where `frameworks` (model ->
    framework) names several frameworks, one of them with several challengers (one per training seed), they are
    compared across seeds first (across_seeds) and the winner is the best single model of the
    leading framework. Blessed when the winner reaches rule.min_metric and, if a champion exists,
    passes rule.champion_policy and the optional gates (corruption_max_drop on `robustness`, each
    model's mean accuracy on the corrupted test copy; slice_max_recall_drop on the per-class
    recall, classes named by `class_names`) against it, and unless the champion shift alarm fires
    (the champion's accuracy now against `champion_recorded`, what it scored when registered).

    Where `comparisons` holds the winner's pair with the runner-up (or the champion), the
    decision says whether the lead is significant at rule.champion_alpha: `statistical_tie` is
    true when it is not for any of them, and `tied_with` names them.
    """
    key = rule.primary_metric
    comparisons = comparisons or []
    challengers = [n for n in results if n != champion]
    ranked = sorted(challengers, key=_rank_key(results, key))
    reasons: list[str] = []
    seeds = None
    groups: dict[str, list[str]] = {}
    for name in challengers:
        groups.setdefault((frameworks or {}).get(name, name), []).append(name)
    rivals = ranked[1:]
    if len(groups) > 1 and any(len(names) > 1 for names in groups.values()):
        seeds = across_seeds(results, rule, groups, robustness)
        ranked = [n for f in seeds["ranking"] for n in sorted(groups[f], key=_rank_key(results, key))]
        rivals = [seeds["frameworks"][f]["best_model"] for f in seeds["ranking"][1:]]
        reasons += _across_seeds_reasons(seeds, rule.champion_alpha)
    winner = ranked[0]
    value = results[winner][key]
    versus: dict[str, dict[str, Any]] = {}
    for other in rivals:
        o = results[other]
        if o[key] == value:
            reasons.append(f"{winner} ties {other} on {key} ({value:.4f}) and wins on log loss "
                           f"({results[winner]['log_loss']:.4f} vs {o['log_loss']:.4f})")
        elif o[key] < value:
            reasons.append(f"{winner} has the higher test {key}: {value:.4f} vs {other} {o[key]:.4f}")
        else:
            reasons.append(f"{winner} has the lower test {key} of the two best single models: {value:.4f} vs "
                           f"{other} {o[key]:.4f} (it wins with its framework)")
        v = _versus(results, rule, comparisons, winner, other)
        if v is not None:
            versus[other] = v
            reasons.append(_significance_reason(winner, other, other, v, rule.champion_alpha,
                                                _chosen_by(results, key, winner, other) if o[key] <= value
                                                else None))
    blessed = value >= rule.min_metric
    reasons.append(f"{winner} {key} {value:.4f} {'reaches' if blessed else 'is below'} "
                   f"the minimum {rule.min_metric:.4f}")
    if champion is not None:
        passes, reason = _champion_test(results, rule, comparisons, winner, champion, len(challengers))
        reasons.append(reason)
        v = _versus(results, rule, comparisons, winner, champion)
        if v is not None:
            versus[champion] = v
            reasons.append(_significance_reason(winner, champion, "the champion", v, rule.champion_alpha, None))
        blessed = blessed and passes
    else:
        reasons.append("no champion in the registry: the winner is compared with the minimum only")
    gates = {}
    for name, (gate, reason) in (("corruption", _corruption_gate(rule, winner, champion, robustness)),
                                 ("slices", _slice_gate(results, rule, winner, champion, class_names))):
        gates[name] = gate
        if reason:
            reasons.append(reason)
        blessed = blessed and gate["passed"]
    shift, reason = champion_shift(rule, champion, results, champion_recorded)
    shift["blessed_otherwise"] = blessed  # what shift_alarm_action register registers
    gates["champion_shift"] = shift
    if reason:
        reasons.append(reason)
    blessed = blessed and not shift["fired"]
    tied_with = [n for n, v in versus.items() if v["tied"]]
    reasons.append(f"decision: {winner} is {'blessed' if blessed else 'NOT blessed'}")
    return {"winner": winner, "blessed": blessed, "ranking": ranked, "champion": champion,
            "statistical_tie": bool(tied_with), "tied_with": tied_with, "winner_versus": versus,
            "across_seeds": seeds, "gates": gates, "reasons": reasons, "rule": dataclasses.asdict(rule)}
