"""Compare recipes from the JSON lines of bench_convergence.py: mean ± std over seeds of FID,
precision, recall, density, coverage and FID / real-vs-real, at one iteration or at a budget of
training seconds, and Welch's t-test of every row against the first (the control).

    python bench/compare_recipes.py bench/convergence_runs/A.jsonl bench/convergence_runs/B.jsonl --at_itr 7200
    python bench/compare_recipes.py FILE ... --seconds 600
    python bench/compare_recipes.py FILE ... --at_itr 7200 \\
        --row "with SN=fmnist32_cpu_bs32_sd16_mbstd4_ch8+compile" --row "without=RECIPE_A,RECIPE_B"
    python bench/compare_recipes.py FILE ... --at_itr 7200 --row "two D steps=RECIPE_A" --row "one=RECIPE_B@10800"

Each file is the stdout of one bench_convergence.py invocation (its `convergence_curve` lines, one per
test, and its `real_vs_real` line). Without --row every recipe name is a row, in the order the files
first name them; a --row LABEL=RECIPE[,RECIPE...] pools the seeds of several names (the same flags
run in different sessions under different --name suffixes) and fixes the order; RECIPE...@ITR reads
that row at its own iteration instead of --at_itr's (recipes whose iterations cost different times,
compared at the iterations an equal budget holds). The table is the markdown
bench/RECIPE_EXPERIMENTS.md quotes; --json prints one JSON line per row instead.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_convergence  # noqa: E402
import grid_report  # noqa: E402
import utils  # noqa: E402

# (column, record key, decimals) of the table; FID / real is computed per seed from each file's floor.
COLUMNS = (("FID ↓", "FID", 1), ("P ↑", "precision", 3), ("R ↑", "recall", 3), ("D ↑", "density", 3),
           ("C ↑", "coverage", 3), ("FID / real", "FID_ratio", 2))


def read_runs(paths: list[str]) -> dict[str, dict[int, list[dict]]]:
    """{recipe: {seed: tests sorted by iteration}} from the files, recipes in the order the files name them.

    Each test carries "FID_ratio", its FID over the real-vs-real FID of its own file. A recipe and
    seed found in two files is refused: which of the two runs to read would be a guess."""
    runs: dict[str, dict[int, list[dict]]] = {}
    where: dict[tuple[str, int], str] = {}
    for path in paths:
        if not Path(path).is_file():
            raise utils.UserError(f"{path} does not exist; give the stdout files of bench_convergence.py")
        rows = bench_convergence.read_tests(Path(path))
        floors = [r["FID"] for r in rows if r.get("name") == "real_vs_real"]
        curves = [r for r in rows if r.get("name") == "convergence_curve"]
        if not floors or not curves:
            raise utils.UserError(f"{path} holds no convergence_curve and real_vs_real lines; give the "
                                  "stdout of a bench_convergence.py invocation")
        for r in curves:
            key = (r["recipe"], int(r["seed"]))
            if where.setdefault(key, path) != path:
                raise utils.UserError(f"recipe {key[0]} seed {key[1]} is in both {where[key]} and {path}; "
                                      "leave one of the two files out")
            runs.setdefault(key[0], {}).setdefault(key[1], []).append(dict(r, FID_ratio=r["FID"] / floors[0]))
    for seeds in runs.values():
        for tests in seeds.values():
            tests.sort(key=lambda t: t["itr"])
    return runs


def pick(tests: list[dict], at_itr: int | None, seconds: float | None) -> dict | None:
    """The test at iteration `at_itr`, or the last one within `seconds` of training (None: none such)."""
    if at_itr is not None:
        return next((t for t in tests if t["itr"] == at_itr), None)
    return bench_convergence.at_budget(tests, seconds)


def parse_rows(specs: list[str], recipes: list[str]) -> list[tuple[str, list[str], int | None]]:
    """(label, recipe names, the row's own iteration or None) of each --row, or one row per recipe
    when none is given."""
    if not specs:
        return [(name, [name], None) for name in recipes]
    rows = []
    for spec in specs:
        label, sep, names = spec.partition("=")
        names, at, itr = names.rpartition("@") if "@" in names else (names, "", "")
        members = [n.strip() for n in names.split(",") if n.strip()]
        if not sep or not label.strip() or not members or (at and not itr.strip().isdigit()):
            raise utils.UserError(f"--row {spec!r}: write LABEL=RECIPE[,RECIPE...][@ITERATION]")
        unknown = [n for n in members if n not in recipes]
        if unknown:
            raise utils.UserError(f"--row {label}: no runs of {', '.join(unknown)} in the files; they hold "
                                  f"{', '.join(recipes)}")
        rows.append((label.strip(), members, int(itr) if at else None))
    return rows


def summarise(runs: dict, rows: list[tuple[str, list[str], int | None]], at_itr: int | None,
              seconds: float | None) -> list[dict]:
    """Per row: its seeds, the iterations read, and every column's values over the seeds (a row with
    its own iteration is read there, whatever `at_itr` or `seconds` say)."""
    out = []
    for label, members, own_itr in rows:
        row_itr, row_seconds = (own_itr, None) if own_itr is not None else (at_itr, seconds)
        picked = {}
        for name in members:
            for seed, tests in runs[name].items():
                test = pick(tests, row_itr, row_seconds)
                if test is not None:
                    if seed in picked:
                        raise utils.UserError(f"--row {label}: seed {seed} is run by two of its recipes")
                    picked[seed] = test
        if not picked:
            raise utils.UserError(f"{label}: no run has a test at iteration {row_itr}; choose an iteration "
                                  "its runs were tested at (--test_every)")
        seeds = sorted(picked)
        out.append({"row": label, "seeds": seeds, "itr": [picked[s]["itr"] for s in seeds],
                    "values": {key: [picked[s][key] for s in seeds] for _, key, _ in COLUMNS}})
    return out


def _number(x: float, decimals: int) -> str:
    text = f"{x:.{decimals}f}"
    return text[1:] if text.startswith("0.") else text  # .501, as the README's tables print it


def cell(values: list[float], decimals: int) -> str:
    """'mean ± std' over the seeds (sample std), or the one value."""
    if len(values) == 1:
        return _number(values[0], decimals)
    return f"{_number(statistics.mean(values), decimals)} ± {_number(statistics.stdev(values), decimals)}"


def p_text(p: float) -> str:
    """A p-value to two significant digits without the leading zero (.011, .18), or '<.001'."""
    return "<.001" if p < 0.001 else f"{p:.2g}".removeprefix("0")


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Welch p of b against a (None with fewer than two seeds on a side)."""
    if len(a) < 2 or len(b) < 2:
        return None
    return grid_report.welch(statistics.mean(a), statistics.stdev(a), len(a),
                             statistics.mean(b), statistics.stdev(b), len(b)).p


def markdown(summary: list[dict], title: str) -> str:
    """The table: one line per row, then one 'Welch p' line per row after the first."""
    head = f"| {title} | seeds | iterations | " + " | ".join(c for c, _, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (3 + len(COLUMNS))]
    for row in summary:
        its = sorted(set(row["itr"]))
        lines.append(f"| {row['row']} | {', '.join(map(str, row['seeds']))} | "
                     f"{its[0] if len(its) == 1 else f'{its[0]}-{its[-1]}'} | "
                     + " | ".join(cell(row["values"][key], d) for _, key, d in COLUMNS) + " |")
    control = summary[0]
    for row in summary[1:]:
        ps = [welch_p(control["values"][key], row["values"][key]) for _, key, _ in COLUMNS[:-1]]
        lines.append(f"| Welch p, {row['row']} against {control['row']} | | | "
                     + " | ".join("-" if p is None else p_text(p) for p in ps) + " | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("files", nargs="+", metavar="JSONL", help="stdout files of bench_convergence.py")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--at_itr", type=int, help="read every run's test at this iteration")
    where.add_argument("--seconds", type=float, help="read every run's last test within this many training seconds")
    p.add_argument("--row", action="append", default=[], metavar="LABEL=RECIPE[,RECIPE...]",
                   help="a row pooling the seeds of these recipe names (repeat; the first is the control)")
    p.add_argument("--json", action="store_true", help="one JSON line per row instead of the table")
    args = p.parse_args(argv)
    runs = read_runs(args.files)
    rows = parse_rows(args.row, list(runs))
    summary = summarise(runs, rows, args.at_itr, args.seconds)
    if args.json:
        for row in summary:
            print(json.dumps(row))
        return
    title = f"at {args.at_itr} iterations" if args.at_itr is not None else f"at {args.seconds:g} s"
    if any(row[2] is not None for row in rows):
        title += " (or the row's own)"
    print(markdown(summary, title))


if __name__ == "__main__":
    utils.run_cli(main)
