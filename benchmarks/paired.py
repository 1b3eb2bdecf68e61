"""Two or more implementations in ONE process, alternated round by round: paired ratios.

    python benchmarks/paired.py --task infer_b1 --precision fp32 \\
        --impls keras-vit-frozen openvino-savedmodel --rounds 32

``run.py`` gives every job a fresh process and compares best steps across
processes that may run minutes apart. On a virtual machine whose speed moves
by 5-30 % from phase to phase, a margin of a few percent is then under the
noise. Here every implementation is built once in this process, and each
round runs ``--steps`` steps of each, one implementation after the other (the
order reversed every other round, a pause between them so that a runtime's
spinning threads go idle): the implementations of a round share its phase.
Each round gives each implementation its best step, and the first
implementation's speed against each other one is the per-round ratio
``other's best / first's best`` (above 1.0: the first is faster). Printed and
written: per implementation the best and the median step over all rounds, and
per pair the median per-round ratio with a 95 % bootstrap interval, the
median ratio of the quiet quarter (the rounds whose fastest step was fastest),
the ratio of the bests, and the rounds the first won.

Implementations with an environment of their own (the ``+onednn`` rows) need
it before TensorFlow starts, so they cannot share a process: use ``run.py``.
Exported implementations write their files first in a process of their own,
as in ``run.py`` (``--workdir`` keeps them for the next run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script

from benchmarks.registry import IMPLS  # noqa: E402
from benchmarks.run import machine, prepare_exports  # noqa: E402
from benchmarks.specs import TASKS  # noqa: E402
from benchmarks.worker import failure_reason, time_steps  # noqa: E402
from keras_vit.atomic import write_json_atomic  # noqa: E402


def paired_ratios(first_rounds, other_rounds):
    """Per-round speed of the first implementation over another.

    Args:
        first_rounds, other_rounds: sequences of equal length ``R``, each item
            the step times (seconds) of one round.

    Returns:
        list of ``R`` floats: ``min(other) / min(first)`` per round (above 1.0:
        the first was faster in that round).
    """
    if len(first_rounds) != len(other_rounds):
        raise ValueError(
            f"paired rounds must match: {len(first_rounds)} against {len(other_rounds)}."
        )
    return [min(other) / min(first) for first, other in zip(first_rounds, other_rounds)]


def quiet_rounds(first_rounds, other_rounds):
    """Indices of the quiet quarter: the rounds whose fastest step of the pair was fastest.

    The machine's quietest moments in the run, where each implementation
    ran closest to its undisturbed speed (at least one round).

    Returns:
        sorted list of ``max(1, R // 4)`` round indices.
    """
    fastest = [min(min(first), min(other)) for first, other in zip(first_rounds, other_rounds)]
    order = sorted(range(len(fastest)), key=fastest.__getitem__)
    return sorted(order[: max(1, len(fastest) // 4)])


def median_interval(values, confidence=0.95, resamples=4000, seed=0):
    """Bootstrap percentile interval of the median of ``values``.

    Args:
        values: sequence of floats, at least 2.
        confidence: the interval's coverage, in (0, 1).
        resamples: bootstrap resamples.
        seed: the resampling's seed (the interval is reproducible).

    Returns:
        (low, high) floats.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size < 2:
        raise ValueError(f"an interval needs at least 2 values; got {values.size}.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1); got {confidence}.")
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, (resamples, values.size)), axis=1)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(medians, [tail, 100.0 - tail])
    return float(low), float(high)


def summarize(rounds):
    """The printed and written summary of a paired run.

    Args:
        rounds: dict impl -> list of rounds, each a list of step times (s);
            the first key is the implementation compared with the others.

    Returns:
        dict with ``steps`` (impl -> best_ms, median_ms) and ``pairs`` (one
        per other impl: median ratio, its interval, the median ratio of the
        quiet quarter (``quiet_rounds``), the ratio of the bests, rounds won
        by the first).
    """
    first, *others = rounds
    steps, best = {}, {}
    for impl, runs in rounds.items():
        times = [t for run in runs for t in run]
        best[impl] = min(times)
        steps[impl] = dict(
            best_ms=round(best[impl] * 1e3, 2), median_ms=round(statistics.median(times) * 1e3, 2)
        )
    pairs = []
    for other in others:
        ratios = paired_ratios(rounds[first], rounds[other])
        low, high = median_interval(ratios)
        quiet = quiet_rounds(rounds[first], rounds[other])
        pairs.append(
            dict(
                first=first,
                other=other,
                median_ratio=round(statistics.median(ratios), 4),
                interval_95=[round(low, 4), round(high, 4)],
                quiet_median_ratio=round(statistics.median(ratios[i] for i in quiet), 4),
                quiet_rounds=len(quiet),
                best_ratio=round(best[other] / best[first], 4),
                rounds_won=sum(r > 1.0 for r in ratios),
                rounds=len(ratios),
            )
        )
    return dict(steps=steps, pairs=pairs)


def check_impls(impls, task, precision):
    """Refuses implementations that cannot share this process or do not run the job."""
    if len(impls) < 2 or len(set(impls)) != len(impls):
        raise SystemExit(f"--impls needs two or more different implementations; got {impls}.")
    for impl in impls:
        spec = IMPLS[impl]
        if spec.env:
            raise SystemExit(
                f"{impl} sets its own environment {dict(spec.env)} before TensorFlow starts; "
                "it cannot share a process with the others (use benchmarks/run.py)."
            )
        if task not in spec.tasks or precision not in spec.precisions:
            raise SystemExit(
                f"{impl} runs tasks {spec.tasks} in {spec.precisions}; got {task} {precision}."
            )


def run_rounds(steps, rounds, per_round, pause):
    """Alternates the implementations' steps; returns impl -> list of rounds of step times."""
    times = {impl: [] for impl in steps}
    order = list(steps)
    for number in range(rounds):
        for impl in order if number % 2 == 0 else order[::-1]:
            time.sleep(pause)
            times[impl].append(time_steps(steps[impl], 0, per_round, 0.0))
        best = "  ".join(f"{impl} {min(times[impl][-1]) * 1e3:.1f}" for impl in order)
        print(f"[round {number + 1}/{rounds}] best ms: {best}", flush=True)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impls", nargs="+", required=True, choices=list(IMPLS))
    parser.add_argument("--task", default="infer_b1", choices=list(TASKS))
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--rounds", type=int, default=24)
    parser.add_argument("--steps", type=int, default=5, help="steps of each impl in a round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between impls")
    parser.add_argument("--workdir", help="folder for exported models (default: temporary)")
    parser.add_argument("--json", help="write the step times and the summary to this file")
    args = parser.parse_args(argv)
    for name in ("rounds", "steps"):
        if getattr(args, name) < 2:
            parser.error(f"--{name} must be at least 2, got {getattr(args, name)}")
    if args.warmup < 0 or args.pause < 0:
        parser.error("--warmup and --pause must be >= 0")
    check_impls(args.impls, args.task, args.precision)
    with tempfile.TemporaryDirectory(prefix="keras_vit_paired_") as scratch:
        workdir = args.workdir or scratch
        prepare_exports([(impl, "infer_b1", args.precision) for impl in args.impls], workdir)
        steps = {}
        for impl in args.impls:
            print(f"[build] {impl} {args.task} {args.precision}", flush=True)
            try:
                steps[impl] = IMPLS[impl].builder(args.task, args.precision, workdir)
                for _ in range(args.warmup):
                    steps[impl]()
            except Exception as err:  # a third-party stack that cannot run here
                raise SystemExit(f"{impl} cannot run here: {failure_reason(err)}") from None
        times = run_rounds(steps, args.rounds, args.steps, args.pause)
    summary = summarize(times)
    print()
    for impl, row in summary["steps"].items():
        print(f"{impl:32} best {row['best_ms']:9.1f} ms   median {row['median_ms']:9.1f} ms")
    for pair in summary["pairs"]:
        low, high = pair["interval_95"]
        print(
            f"{pair['first']} / {pair['other']}: median per-round {pair['median_ratio']:.3f}x "
            f"(95 % interval {low:.3f}-{high:.3f}), quiet quarter "
            f"{pair['quiet_median_ratio']:.3f}x ({pair['quiet_rounds']} rounds), "
            f"best against best {pair['best_ratio']:.3f}x, "
            f"rounds won {pair['rounds_won']} of {pair['rounds']}"
        )
    if args.json:
        write_json_atomic(
            dict(
                machine=machine(),
                task=args.task,
                precision=args.precision,
                steps_per_round=args.steps,
                pause_s=args.pause,
                step_times_s=times,
                **summary,
            ),
            args.json,
        )


if __name__ == "__main__":
    main()
