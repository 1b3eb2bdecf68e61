"""benchmarks/paired.py: implementations alternated in one process, compared round by round."""

import json

import pytest

from benchmarks import paired
from benchmarks.registry import IMPLS, Impl


def test_a_phase_shared_by_a_round_cancels_out_of_its_ratio():
    # Round speeds differ 1x, 1.5x, 0.8x (the VM's phases); the other is always 1.2x slower.
    phases = [1.0, 1.5, 0.8]
    first = [[0.100 * p, 0.110 * p] for p in phases]
    other = [[0.125 * p, 0.120 * p] for p in phases]
    assert paired.paired_ratios(first, other) == pytest.approx([1.2, 1.2, 1.2])
    assert paired.paired_ratios(other, first) == pytest.approx([1 / 1.2] * 3)


def test_rounds_of_different_counts_are_refused():
    with pytest.raises(ValueError, match="3 against 2"):
        paired.paired_ratios([[1.0]] * 3, [[1.0]] * 2)


def test_the_quiet_quarter_is_the_rounds_with_the_fastest_steps():
    # Fastest step per round (either side): 1.0, 0.8, 1.2, 0.9, 1.1, 0.7, 1.3, 0.95.
    first = [[1.0], [0.8], [1.2], [1.5], [1.1], [0.9], [1.3], [0.95]]
    other = [[1.1], [0.9], [1.3], [0.9], [1.2], [0.7], [1.4], [1.0]]
    assert paired.quiet_rounds(first, other) == [1, 5]
    assert paired.quiet_rounds(first[:3], other[:3]) == [1]


def test_the_median_interval_brackets_the_median_and_is_reproducible():
    values = [0.97, 0.99, 1.0, 1.01, 1.02, 1.03, 1.05, 1.2]
    low, high = paired.median_interval(values)
    assert 0.97 <= low <= 1.005 <= high <= 1.2  # the sample's median is 1.005
    assert paired.median_interval(values) == (low, high)
    assert paired.median_interval([1.1] * 5) == pytest.approx((1.1, 1.1))


@pytest.mark.parametrize(
    "values, confidence, message",
    [([1.0], 0.95, "at least 2 values; got 1"), ([1.0, 2.0], 1.0, r"in \(0, 1\); got 1.0")],
)
def test_an_interval_it_cannot_give_is_refused(values, confidence, message):
    with pytest.raises(ValueError, match=message):
        paired.median_interval(values, confidence)


def test_the_summary_gives_each_impl_s_steps_and_each_pair_s_ratios():
    rounds = {
        "ours": [[0.100, 0.102], [0.120, 0.130], [0.090, 0.095]],
        "peer": [[0.110, 0.111], [0.114, 0.140], [0.099, 0.120]],
    }
    summary = paired.summarize(rounds)
    assert summary["steps"]["ours"] == {"best_ms": 90.0, "median_ms": 101.0}
    assert summary["steps"]["peer"] == {"best_ms": 99.0, "median_ms": 112.5}
    (pair,) = summary["pairs"]
    # Per round: 110/100 = 1.1, 114/120 = 0.95, 99/90 = 1.1.
    assert pair["median_ratio"] == pytest.approx(1.1)
    assert pair["best_ratio"] == pytest.approx(1.1)
    assert (pair["rounds_won"], pair["rounds"]) == (2, 3)
    # The quiet quarter is round 3 (fastest step 90 ms): 99/90.
    assert (pair["quiet_median_ratio"], pair["quiet_rounds"]) == (pytest.approx(1.1), 1)
    assert pair["first"] == "ours" and pair["other"] == "peer"


def test_rounds_alternate_the_order_and_time_every_step():
    calls = []
    steps = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    times = paired.run_rounds(steps, rounds=3, per_round=2, pause=0.0)
    assert calls == ["a", "a", "b", "b", "c", "c"] + ["c", "c", "b", "b", "a", "a"] + [
        "a",
        "a",
        "b",
        "b",
        "c",
        "c",
    ]
    assert {name: [len(run) for run in runs] for name, runs in times.items()} == {
        name: [2, 2, 2] for name in "abc"
    }


@pytest.mark.parametrize(
    "impls, task, message",
    [
        (["keras-vit-frozen"], "infer_b1", "two or more different"),
        (["keras-vit-frozen", "keras-vit-frozen"], "infer_b1", "two or more different"),
        (["keras-vit-frozen", "keras-vit-frozen+onednn"], "infer_b1", "its own environment"),
        (["keras-vit-frozen", "openvino"], "train", "runs tasks"),
    ],
)
def test_impls_that_cannot_share_the_process_or_the_job_are_refused(impls, task, message):
    with pytest.raises(SystemExit, match=message):
        paired.check_impls(impls, task, "fp32")


def test_a_run_writes_the_step_times_and_the_summary(monkeypatch, tmp_path, capsys):
    built = []

    def builder(task, precision, workdir):
        built.append((task, precision))
        return lambda: sum(range(1000))  # a step that takes measurable time

    for name in ("fake-ours", "fake-peer"):
        monkeypatch.setitem(IMPLS, name, Impl(builder, ("infer_b1",), ("fp32",), True))
    monkeypatch.setattr(paired, "prepare_exports", lambda jobs, workdir: None)
    out = tmp_path / "paired.json"
    paired.main(
        ["--impls", "fake-ours", "fake-peer", "--rounds", "3", "--steps", "2", "--pause", "0"]
        + ["--json", str(out)]
    )
    result = json.loads(out.read_text())
    assert built == [("infer_b1", "fp32")] * 2
    assert [len(runs) for runs in result["step_times_s"].values()] == [3, 3]
    assert result["pairs"][0]["rounds"] == 3 and result["task"] == "infer_b1"
    assert "fake-ours / fake-peer: median per-round" in capsys.readouterr().out


def test_fewer_than_two_rounds_are_refused(capsys):
    with pytest.raises(SystemExit):
        paired.main(["--impls", "keras-vit-frozen", "openvino", "--rounds", "1"])
    assert "--rounds must be at least 2, got 1" in capsys.readouterr().err


def test_an_impl_that_cannot_be_built_stops_the_run_with_its_reason(monkeypatch):
    def builder(task, precision, workdir):
        raise ImportError("No module named 'openvino'")

    monkeypatch.setitem(IMPLS, "fake-ours", Impl(builder, ("infer_b1",), ("fp32",), True))
    monkeypatch.setitem(IMPLS, "fake-peer", Impl(builder, ("infer_b1",), ("fp32",), False))
    monkeypatch.setattr(paired, "prepare_exports", lambda jobs, workdir: None)
    with pytest.raises(SystemExit, match="fake-ours cannot run here: ImportError: No module"):
        paired.main(["--impls", "fake-ours", "fake-peer", "--rounds", "2"])
