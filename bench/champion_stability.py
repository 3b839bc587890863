"""Does the champion alias move on noise? Full pipeline runs, one after the other, against one registry.

PYTHONPATH=. $(infra/bootstrap.sh)/bin/python -m bench.champion_stability [--seeds 1 2 3 4 5] \
    [--first-model seed_cnn] [--policy significantly_better] [--mnist ../shared/data/mnist] [--output DIR]

Run 0 trains the `--first-model` architecture (default seed_cnn, the seed article's model) and
registers the first champion. Then one run per seed with the default architecture (bn_cnn), as a
user's reruns on the same data: the first of them is the genuinely better architecture and must be
promoted; the rest are statistically tied challengers of the same architecture, and each alias
move among them is a move on noise (goal: at most one). Every run is `python -m pipelines run`
in its own process with the pipeline's defaults except the seed and the model, on the full MNIST;
the data steps are cached after run 0. Prints a Markdown table and writes it with the figures as
JSON to the output folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_pipeline(output_root: str, mnist: str, model: str, seed: int, policy: str) -> tuple[dict, float]:
    command = [sys.executable, "-m", "pipelines", "run", "--json", "--output-root", output_root,
               "--source", mnist, "--cache-dir", os.path.join(output_root, "cache"),
               "--model", model, "--seed", str(seed), "--champion-policy", policy]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"})
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"run failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout), seconds  # --json: the summary alone on stdout


def champion_version(output_root: str) -> str | None:
    from components.registry import MlflowRegistry, embedded_uri

    champion = MlflowRegistry(embedded_uri(os.path.join(output_root, "registry")), "mnist-digits").champion()
    return champion.version if champion else None


def describe(summary: dict, model: str, seed: int, before: str | None, after: str | None, seconds: float) -> dict:
    with open(summary["evaluation"]) as f:
        d = json.load(f)["decision"]
    versus = d["winner_versus"].get("champion") or {}
    return {"model": model, "seed": seed, "winner": d["winner"], "accuracy": summary["accuracy"][d["winner"]],
            "champion_accuracy": summary["accuracy"].get("champion"), "p_value": versus.get("p_value"),
            "blessed": d["blessed"], "champion_before": before, "champion_after": after,
            "moved": before is not None and after != before, "seconds": round(seconds, 1)}


def table(rows: list[dict]) -> str:
    lines = ["| run | model | seed | winner | accuracy | champion's | McNemar p vs champion | alias | s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for k, r in enumerate(rows):
        champion = "—" if r["champion_accuracy"] is None else f"{r['champion_accuracy']:.4f}"
        p = "—" if r["p_value"] is None else f"{r['p_value']:.2g}"
        alias = (f"v{r['champion_before']} → v{r['champion_after']}" if r["moved"] else
                 f"stays v{r['champion_after']}" if r["champion_before"] else f"first: v{r['champion_after']}")
        lines.append(f"| {k} | {r['model']} | {r['seed']} | {r['winner']} | {r['accuracy']:.4f} | {champion} | "
                     f"{p} | {alias} | {r['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--first-model", default="seed_cnn")
    parser.add_argument("--model", default="bn_cnn")
    parser.add_argument("--policy", default="significantly_better")
    parser.add_argument("--mnist", default=os.path.join(REPO, "..", "shared", "data", "mnist"))
    parser.add_argument("--output", default="")
    args = parser.parse_args()
    output_root = args.output or tempfile.mkdtemp(prefix="champion-stability-")
    mnist = os.path.abspath(args.mnist)
    plan = [(args.first_model, args.seeds[0])] + [(args.model, seed) for seed in args.seeds]
    rows = []
    for model, seed in plan:
        before = champion_version(output_root) if rows else None
        summary, seconds = run_pipeline(output_root, mnist, model, seed, args.policy)
        rows.append(describe(summary, model, seed, before, champion_version(output_root), seconds))
        print(table(rows).splitlines()[-1], flush=True)
    better_promoted = rows[1]["moved"]
    tied_moves = sum(r["moved"] for r in rows[2:])
    result = {"policy": args.policy, "runs": rows, "better_architecture_promoted": better_promoted,
              "moves_among_tied_challengers": tied_moves, "output_root": output_root}
    with open(os.path.join(output_root, "champion_stability.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"\npolicy {args.policy}\n\n{table(rows)}\n\n{args.model} over the {args.first_model} champion: "
          f"{'promoted' if better_promoted else 'NOT promoted'}; alias moves among the {len(rows) - 2} "
          f"tied challengers that followed: {tied_moves}\n(figures: {output_root}/champion_stability.json)")


if __name__ == "__main__":
    main()
