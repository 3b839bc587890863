"""The reviewer's artifacts: a self-contained HTML report (figures inlined) and a Markdown summary."""

from __future__ import annotations

import os
from typing import Any

import jinja2
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np

from components.bakeoff_evaluator import corruptions, metrics
from components.figures import png_data_uri

DIGITS = [str(d) for d in range(10)]


def class_names(evaluation: dict[str, Any]) -> list[str]:
    """The label names (label i is class_names[i]); the ten digits in evaluations before format 7."""
    return evaluation.get("class_names") or DIGITS


def confusion_matrices(candidates: dict[str, Any], order: list[str], names: list[str]) -> str:
    columns = min(len(order), 4)  # several seeds: rows of four
    rows = -(-len(order) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(order):]:
        ax.set_axis_off()
    for ax, name in zip(axes.flat[:len(order)], order, strict=True):
        cm = np.array(candidates[name]["metrics"]["confusion_matrix"])
        ax.imshow(np.log1p(cm), cmap="Blues")
        for (i, j), v in np.ndenumerate(cm):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=6,
                        color="white" if i == j else "black")
        ticks = range(len(names))
        ax.set(title=name, xlabel="predicted", ylabel="true", xticks=ticks, yticks=ticks)
        ax.set_xticklabels(names, rotation=90 if max(map(len, names)) > 2 else 0, fontsize=7)
        ax.set_yticklabels(names, fontsize=7)
    return png_data_uri(fig)


def per_class_accuracy(candidates: dict[str, Any], order: list[str], names: list[str]) -> str:
    fig, ax = plt.subplots(figsize=(9, 3.2))
    width = 0.8 / len(order)
    labels = [str(k) for k in range(len(names))]
    for k, name in enumerate(order):
        recall = [candidates[name]["metrics"]["per_class"][label]["recall"] for label in labels]
        ax.bar(np.arange(len(names)) + k * width - 0.4 + width / 2, recall, width, label=name)
    low = min(candidates[n]["metrics"]["per_class"][label]["recall"] for n in order for label in labels)
    ax.set(xticks=range(len(names)), xlabel="class" if names != DIGITS else "digit", ylabel="accuracy (recall)",
           ylim=(max(0.0, low - 0.02), 1.0))
    ax.set_xticklabels(names)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return png_data_uri(fig)


def reliability_diagram(labels: np.ndarray, probs: dict[str, np.ndarray], order: list[str]) -> str:
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    edges = np.linspace(0, 1, metrics.ECE_BINS + 1)
    for name in order:
        confidence = probs[name].max(axis=1)
        correct = probs[name].argmax(axis=1) == labels
        which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, metrics.ECE_BINS - 1)
        xs, ys = [], []
        for b in range(metrics.ECE_BINS):
            if (which == b).any():
                xs.append(confidence[which == b].mean())
                ys.append(correct[which == b].mean())
        ax.plot(xs, ys, marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", label="perfectly calibrated")
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return png_data_uri(fig)


def misclassified_grid(images: np.ndarray, labels: np.ndarray, predicted: np.ndarray, title: str,
                       names: list[str], limit: int = 48) -> str | None:
    """torchvision's make_grid of the misclassified digits, each marked true→predicted."""
    import torch
    from torchvision.utils import make_grid

    wrong = np.flatnonzero(predicted != labels)[:limit]
    if wrong.size == 0:
        return None
    nrow, pad, side = 12, 2, 28
    grid = make_grid(torch.from_numpy(images[wrong]).unsqueeze(1), nrow=nrow, padding=pad, pad_value=60)
    fig, ax = plt.subplots(figsize=(nrow * 0.9, 0.9 * ((len(wrong) + nrow - 1) // nrow) + 0.4))
    ax.imshow(grid[0].numpy(), cmap="gray_r")
    for k, i in enumerate(wrong):
        x, y = (k % nrow) * (side + pad) + pad, (k // nrow) * (side + pad) + pad
        ax.text(x + 1, y + 7, f"{names[labels[i]]}→{names[predicted[i]]}", color="red", fontsize=7, weight="bold")
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    return png_data_uri(fig)


def corruption_examples(images: np.ndarray | None, labels: np.ndarray | None, predicted: np.ndarray | None,
                        model: str, names: list[str]) -> str | None:
    """A few test digits (columns), clean and under each corruption (rows), with `model`'s answer."""
    if images is None or labels is None or not len(labels):
        return None
    rows = ("clean",) + corruptions.NAMES
    fig, axes = plt.subplots(len(rows), len(labels), figsize=(0.95 * len(labels) + 1.2, 1.0 * len(rows)),
                             squeeze=False)
    for r, name in enumerate(rows):
        for k in range(len(labels)):
            ax = axes[r][k]
            ax.imshow(images[r, k], cmap="gray_r", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            right = predicted[r, k] == labels[k]
            ax.set_title(f"{names[labels[k]]}→{names[predicted[r, k]]}", fontsize=7,
                         color="black" if right else "red", pad=2)
        axes[r][0].set_ylabel(name, fontsize=8, rotation=0, ha="right", va="center")
    fig.suptitle(f"the same test digits under each corruption (true→{model}'s answer; red: wrong)", fontsize=9)
    return png_data_uri(fig)


def training_curves(candidates: dict[str, Any], order: list[str]) -> str | None:
    """Per-epoch loss (train solid, eval dashed) and eval accuracy of every model with a history."""
    trained = [n for n in order if candidates[n].get("training", {}).get("history")]
    if not trained:
        return None
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 3.6))
    for k, name in enumerate(trained):
        history, color = candidates[name]["training"]["history"], f"C{k % 10}"
        epochs = np.arange(1, len(history["loss"]) + 1)
        loss_ax.plot(epochs, history["loss"], color=color, marker="o")
        loss_ax.plot(epochs, history["val_loss"], color=color, ls="--", marker="o")
        acc_ax.plot(epochs, history["val_accuracy"], color=color, marker="o", label=name)
    loss_ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss per epoch (solid: train, dashed: eval)")
    acc_ax.set(xlabel="epoch", ylabel="eval accuracy", title="eval-split accuracy per epoch")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
    acc_ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    return png_data_uri(fig)


def seed_points(evaluation: dict[str, Any]) -> str | None:
    """Each framework's models, one point per seed, with the mean and ±1 sd; the champion as a line."""
    seeds = evaluation["decision"].get("across_seeds")
    if not seeds:
        return None
    candidates, key = evaluation["candidates"], seeds["metric"]
    fig, ax = plt.subplots(figsize=(2.2 + 1.6 * len(seeds["ranking"]), 3.6))
    for x, framework in enumerate(seeds["ranking"]):
        f = seeds["frameworks"][framework]
        ax.scatter([x] * f["seeds"], f["values"], s=36, zorder=3, label=f"{framework} (per seed)")
        for name, value in zip(f["models"], f["values"], strict=True):
            ax.annotate(f"seed {candidates[name]['seed']}", (x, value), xytext=(8, -3), textcoords="offset points",
                        fontsize=7)
        ax.errorbar([x - 0.15], [f["mean"]], yerr=[f["std"]], fmt="_", color="black", markersize=14, capsize=4)
    champion = evaluation["decision"].get("champion")
    if champion:
        ax.axhline(candidates[champion]["metrics"][key], ls="--", color="grey", label="champion")
    ax.set(xticks=range(len(seeds["ranking"])), xticklabels=seeds["ranking"], xlim=(-0.6, len(seeds["ranking"]) - 0.2),
           ylabel=f"test {key}", title=f"per-seed test {key} (bar: mean ± 1 sd)")
    ax.legend(fontsize=7, loc="lower right")
    return png_data_uri(fig)


def _trial_value(trial: dict[str, Any]) -> float | None:
    """A trial's objective; a pruned trial's, its last reported eval accuracy."""
    return trial["value"] if trial["value"] is not None else (trial["curve"][-1] if trial["curve"] else None)


TRIAL_MARKERS = {"COMPLETE": ("o", "finished"), "PRUNED": ("v", "pruned"), "FAIL": ("x", "failed")}


def tuning_history(tuning: dict[str, Any]) -> str:
    """Each framework's search: every trial's eval accuracy by trial number (pruned: where it was
    stopped; failed: on the axis), the best so far as a line, the untuned trial ringed."""
    studies = tuning["frameworks"]
    fig, axes = plt.subplots(1, len(studies), figsize=(5.2 * len(studies), 3.6), squeeze=False, sharey=True)
    for ax, (framework, study) in zip(axes[0], sorted(studies.items()), strict=True):
        values = [v for t in study["trials"] if (v := _trial_value(t)) is not None]
        floor = min(values) if values else 0.0
        for state, (marker, label) in TRIAL_MARKERS.items():
            trials = [t for t in study["trials"] if t["state"] == state]
            if trials:
                ax.scatter([t["number"] for t in trials], [_trial_value(t) or floor for t in trials], marker=marker,
                           label=f"{label} ({len(trials)})", zorder=3)
        best, running = [], None
        for t in study["trials"]:
            if t["state"] == "COMPLETE":
                running = t["value"] if running is None else max(running, t["value"])
            best.append(running)
        ax.step(range(len(best)), [np.nan if b is None else b for b in best], where="post", color="black",
                lw=1, label="best so far")
        baseline = study.get("baseline")
        if baseline and baseline.get("value") is not None:
            ax.scatter([baseline["number"]], [baseline["value"]], s=160, facecolors="none", edgecolors="grey",
                       label="untuned settings")
        ax.set(title=f"{framework}: {study['spent']:,} of {study['budget']['total']:,} training examples",
               xlabel="trial", ylabel="eval accuracy")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=7, loc="lower right")
    return png_data_uri(fig)


def tuning_parameters(tuning: dict[str, Any]) -> str | None:
    """Eval accuracy against each searched setting's value, a row per framework (a scatter per
    parameter; learning rate on a log axis)."""
    studies = sorted(tuning["frameworks"].items())
    searched = [d for d in studies[0][1]["space"] if len(d.get("choices", [None, None])) > 1]
    if not searched:
        return None
    fig, axes = plt.subplots(len(studies), len(searched), figsize=(2.6 * len(searched), 2.4 * len(studies)),
                             squeeze=False, sharey=True)
    for row, (framework, study) in enumerate(studies):
        for col, dim in enumerate(searched):
            ax = axes[row][col]
            choices = [str(c) for c in dim.get("choices", [])]
            for state, (marker, _) in TRIAL_MARKERS.items():
                trials = [t for t in study["trials"] if t["state"] == state and dim["name"] in t["params"]
                          and _trial_value(t) is not None]
                xs = [choices.index(str(t["params"][dim["name"]])) if choices else t["params"][dim["name"]]
                      for t in trials]
                ax.scatter(xs, [_trial_value(t) for t in trials], marker=marker, s=18)
            if choices:  # one position per choice, labelled with its value
                ax.set_xticks(range(len(choices)), choices, fontsize=7)
                ax.set_xlim(-0.5, len(choices) - 0.5)
            else:
                ax.set_xlim(dim["low"], dim["high"])
                if dim.get("log"):
                    ax.set_xscale("log")
                    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
                else:
                    ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel(dim["name"], fontsize=8)
            ax.tick_params(labelsize=7)
        axes[row][0].set_ylabel(f"{framework}\neval accuracy", fontsize=8)
    fig.suptitle("eval accuracy by setting (o finished, v pruned: where stopped, x failed)", fontsize=9)
    fig.tight_layout()
    return png_data_uri(fig)


def tuning_rows(evaluation: dict[str, Any]) -> list[list[str]]:
    """Each framework's study in a table: budget, spent, trials, time, best and untuned trials."""
    rows = [["framework", "budget (examples)", "spent", "trials: finished / pruned / failed", "workers",
             "wall time (s)", "untuned eval acc", "best eval acc", "best values"]]
    for framework, study in sorted(evaluation["tuning"]["frameworks"].items()):
        b, c, base = study["budget"], study["counts"], study.get("baseline") or {}
        rows.append([framework, f"{b['total']:,} ({b['trials']} x {b['epochs']} x {b['examples']:,})",
                     f"{study['spent']:,}", f"{c['COMPLETE']} / {c['PRUNED']} / {c['FAIL']}", str(study["workers"]),
                     f"{study['execution_seconds']:.0f}" + (" (reused)" if study["reused"] else ""),
                     f"{base['value']:.4f}" if base.get("value") is not None else "—",
                     f"{study['best']['value']:.4f} (trial {study['best']['number']})",
                     ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                               for k, v in study["best"]["params"].items())])
    return rows


def figures(evaluation: dict[str, Any], scores) -> dict[str, Any]:
    order = list(evaluation["decision"]["ranking"])
    if evaluation["decision"].get("champion"):
        order.append(evaluation["decision"]["champion"])
    winner = evaluation["decision"]["winner"]
    names = class_names(evaluation)
    return {
        "confusion": confusion_matrices(evaluation["candidates"], order, names),
        "per_class": per_class_accuracy(evaluation["candidates"], order, names),
        "reliability": reliability_diagram(scores.labels, scores.probs, order),
        "misclassified": misclassified_grid(
            scores.wrong_images, scores.wrong_labels, scores.wrong_predictions[winner],
            f"test images {winner} got wrong (true→predicted), a sample", names),
        "seeds": seed_points(evaluation),
        "training": training_curves(evaluation["candidates"], order),
        "corruptions": corruption_examples(scores.example_images, scores.example_labels,
                                           scores.example_predictions.get(winner), winner, names),
        "tuning_history": tuning_history(evaluation["tuning"]) if evaluation.get("tuning") else None,
        "tuning_parameters": tuning_parameters(evaluation["tuning"]) if evaluation.get("tuning") else None,
    }


def render_html(evaluation: dict[str, Any], images: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.dirname(__file__)),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    tuning = tuning_rows(evaluation) if evaluation.get("tuning") else None
    return env.get_template("report.html.j2").render(images=images, tuning_table=tuning, **{
        **evaluation, "class_names": class_names(evaluation)})


def comparison_rows(evaluation: dict[str, Any]) -> list[list[str]]:
    """The comparison table shared by the Markdown summary and the terminal view."""
    d = evaluation["decision"]
    names = list(d["ranking"]) + ([d["champion"]] if d.get("champion") else [])
    robust = all(evaluation["candidates"][n].get("robustness") for n in names)
    rows = [["candidate", "framework", "accuracy", "95% CI", "log loss", "ECE"] + (["corrupted"] if robust else [])
            + ["p50 ms", "ex/s @256", "MB", "params"]]
    for name in names:
        c = evaluation["candidates"][name]
        m, perf = c["metrics"], c["performance"]
        label = name + (" *" if name == d["winner"] else "") + (f" v{c['version']}" if "version" in c else "")
        rows.append([label, c["framework"], f"{m['accuracy']:.4f}",
                     f"{m['accuracy_ci95'][0]:.4f}-{m['accuracy_ci95'][1]:.4f}", f"{m['log_loss']:.4f}",
                     f"{m['expected_calibration_error']:.4f}"]
                    + ([f"{c['robustness']['mean_accuracy']:.4f}"] if robust else [])
                    + [f"{perf['latency_ms_p50']:.2f}", f"{perf['throughput_per_s']:.0f}",
                       f"{c['size_bytes'] / 1e6:.2f}", str(c["parameters"])])
    return rows


def tie_statement(evaluation: dict[str, Any]) -> str:
    """One line: is the winner's lead significant (at champion_alpha) over the runner-up and the champion?"""
    d = evaluation["decision"]
    if "statistical_tie" not in d:
        return "statistical tie: not recorded (older evaluation format)"
    alpha = d["rule"]["champion_alpha"]
    versus = d.get("winner_versus", {})
    if not versus:
        return "statistical tie: no paired test of the winner"
    parts = [f"{'tied with' if v['tied'] else 'significantly different from'} {name} (p = {v['p_value']:.2g})"
             for name, v in sorted(versus.items(), key=lambda item: item[0] == d.get("champion"))]
    line = (f"statistical tie: {'YES' if d['statistical_tie'] else 'no'} at champion_alpha {alpha}: "
            f"{d['winner']} is " + ", ".join(parts))
    return line + (f"; {across_seeds_statement(d['across_seeds'])}" if d.get("across_seeds") else "")


def across_seeds_statement(seeds: dict[str, Any]) -> str:
    """One line: the frameworks' means over their seeds and whether the leader's lead is significant."""
    f = seeds["frameworks"]
    parts = []
    for other, v in seeds["versus"].items():
        test = "not testable" if v["p_value"] is None else f"Welch p = {v['p_value']:.2g}"
        parts.append(f"{'tied with' if v['tied'] else 'better than'} {other} ({f[other]['mean']:.4f}; {test})")
    lead = seeds["winner"]
    return (f"across seeds: {lead} (mean {f[lead]['mean']:.4f} ± {f[lead]['std']:.4f}, {f[lead]['seeds']} seeds) "
            f"is " + ", ".join(parts))


def render_markdown(evaluation: dict[str, Any]) -> str:
    d = evaluation["decision"]
    rows = comparison_rows(evaluation)
    lines = [f"# MNIST bake-off: **{d['winner']}** {'blessed' if d['blessed'] else 'NOT blessed'}", "",
             "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += ["", "Paired comparisons (exact McNemar; accuracy difference first - second, paired bootstrap "
              "95 % CI):", ""]
    for t in evaluation["comparisons"]:
        line = (f"- {t['first']} vs {t['second']}: {t['only_first_correct']} vs {t['only_second_correct']} "
                f"discordant, p = {t['p_value']:.4g}")
        if "accuracy_difference_ci95" in t:
            low, high = t["accuracy_difference_ci95"]
            line += f"; difference {t['accuracy_difference']:+.4f} (CI {low:+.4f} to {high:+.4f})"
        lines.append(line)
    lines += ["", tie_statement(evaluation)]
    seeds = d.get("across_seeds")
    if seeds:
        lines += ["", f"Frameworks across seeds (test {seeds['metric']}; {seeds['test']}):", "",
                  "| framework | seeds | mean | sd | min | max | best single model |", "|---|---|---|---|---|---|---|"]
        for name in seeds["ranking"]:
            f = seeds["frameworks"][name]
            lines.append(f"| {name} | {f['seeds']} | {f['mean']:.4f} | {f['std']:.4f} | {f['min']:.4f} | "
                         f"{f['max']:.4f} | {f['best_model']} |")
    if evaluation.get("robustness", {}).get("corruptions_per_example"):
        names = list(d["ranking"]) + ([d["champion"]] if d.get("champion") else [])
        suite = evaluation["robustness"]["names"]
        r = evaluation["robustness"]
        lines += ["", f"Accuracy on the corrupted test copy ({r['corrupted_images']} images: each example under "
                  f"{r['corruptions_per_example']} of the {len(r['names'])} corruptions; seed {r['seed']}, "
                  f"sha256 {r['sha256'][:16]}…):", "",
                  "| candidate | clean | " + " | ".join(suite) + " | mean |", "|" + "---|" * (len(suite) + 3)]
        for name in names:
            c = evaluation["candidates"][name]
            r = c["robustness"]
            lines.append(f"| {name} | {c['metrics']['accuracy']:.4f} | "
                         + " | ".join(f"{r['per_corruption'][k]:.4f}" for k in suite)
                         + f" | {r['mean_accuracy']:.4f} |")
    if evaluation.get("tuning"):
        rows = tuning_rows(evaluation)
        lines += ["", f"Tuning (the same budget for each framework; {evaluation['tuning']['verdict']['statement']}):",
                  "", "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines += ["", "Decision:", ""] + [f"- {r}" for r in d["reasons"]]
    return "\n".join(lines) + "\n"


def render_table(evaluation: dict[str, Any]) -> str:
    rows = comparison_rows(evaluation)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows)
