"""bench/run_all.py: --only re-runs the chosen benchmarks and keeps the others' figures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import run_all  # noqa: E402


def test_only_merges_with_earlier_results(tmp_path, monkeypatch):
    monkeypatch.setattr(run_all, "BENCH", tmp_path)
    calls = []

    def fake_run(script, args, timeout):
        calls.append(script)
        return [{"name": f"{script}-figure", "speedup": len(calls)}], "ok"

    monkeypatch.setattr(run_all, "run_benchmark", fake_run)
    run_all.main(["--quick"])
    assert calls == [b[0] for b in run_all.BENCHMARKS]
    first = (tmp_path / "results.jsonl").read_text().splitlines()
    run_all.main(["--only", "bench_metrics.py"])
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["bench"] for r in rows] == [b[0] for b in run_all.BENCHMARKS]  # order kept
    for old, new, row in zip(first, lines, rows):
        if row["bench"] == "bench_metrics.py":
            assert row["args"] == [] and row["speedup"] == len(calls)  # re-run at full size
        else:
            assert new == old  # untouched, with its own date
    md = (tmp_path / "RESULTS.md").read_text()
    assert "python bench/run_all.py --only bench_metrics.py" in md
    assert md.count("## bench_") == len(run_all.BENCHMARKS) and ", run 20" in md
    with pytest.raises(SystemExit):
        run_all.main(["--only", "bench_nothing.py"])
