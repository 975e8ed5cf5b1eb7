"""A grid of training runs ("cells") that differ only in instance selection, each scored
against the FULL training data: the paper's Table 1 and Figure 3, and the quickstart.

    python experiment_grid.py --grid table1 --output_dir results/table1 --jobs 2 \
        --dataset FMNIST32_hdf5 --data_root results/table1/data --prepare --max_images 5000 \
        --G_ch 16 --D_ch 16 --batch_size 32 --num_iters 600 --embedding efficientnet_lite0 ...

Every flag that is not a grid flag below is a train.py flag shared by all cells (same seed,
architecture and iteration budget, --num_iters required); each cell adds its own
--retention_ratio/--density_measure (and --embedding for e.g. the random-init row) and
its --experiment_name and roots under --output_dir. Cell names: `none` (all data) or
`MEASURE_RATIO[_EMBEDDING]`, e.g. `gaussian_50`, `uniform_50`,
`gaussian_50_random_inceptionv3`. With --seeds 0,1,2 every cell is trained once per seed (runs
`CELL_seedS`) and the summary reports mean +- sample std with Welch's t-test against the `none`
row. For each run:
  1. a finished cell (`cells/<cell>.json`, status done, same flags) is read, not retrained;
  2. otherwise train.py runs, with --resume when the cell has checkpoints (an interrupted
     cell continues where its last checkpoint left it; a finished one is not retrained, and a
     larger --num_iters takes it on from its checkpoint);
  3. sample.py --sample_inception_metrics scores it against the original data's moments
     and manifold and draws a class sheet.
Outputs in --output_dir (written by grid_report.py): `summary.md` (the table in the paper's
column order, settings, directions vs the no-selection row, and each cell's training set itself,
real images scored the same way: real_image_metrics.py), `results.json`, `samples.png`
(sheets side by side), `curves/`, `summary.png`, `selection/<cell>/` (selection reports) and,
for --grid figure3, `ratio_sweep.png` (the six metrics against the retention ratio). The runs go
seed-major (seed 0 of every cell first); while they run, each seed finished in every cell rewrites
these files with the seeds so far, marked partial (`Grid.report_so_far`).
The runs execute here (default) or as Slurm jobs through submitit (`--launcher slurm`, see
launchers.py): a preempted or failed job is requeued and resumes from its checkpoints.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import BigGAN
import config as config_flags
import density_estimators
import embeddings
import launchers
import metric_specs
import utils
from grid_presets import GRIDS, PRESETS
from grid_processes import REPO, metric_files, prepare_fmnist, run_logged, say, training_progress
from grid_report import METRICS, aggregate, write_outputs
from io_utils import atomic_write_json

# The flags that make one cell differ from another (the paper's method, set by the grid).
CELL_KEYS = ("retention_ratio", "density_measure")
# Flags the grid sets per cell; typing them would make the cells differ in more than selection.
GRID_OWNED = frozenset(CELL_KEYS) | config_flags.flags_with("output")
# What only the evaluation depends on: changing them re-scores a cell without retraining it.
EVAL_KEYS = config_flags.flags_with("metrics", "sampling") & set(vars(utils.prepare_parser().parse_args([])))
# Left out of the training signature: how a run is executed and where it writes, not what it computes.
NOT_TRAINING = config_flags.flags_with("runtime", "logging", "output") | EVAL_KEYS
# What sample.py is given for a cell's evaluation: the evaluation flags, the data, how G's noise
# is drawn (z_var, batch sizes, seed: sample.py takes them from its command line) and where to run.
EVAL_PASS = EVAL_KEYS | {"data_root", "z_var", "batch_size", "G_batch_size", "seed", "device", "num_workers", "pbar"}
# What instance_selection.py is given: the data, the selection flags and the runtime.
SELECTION_PASS = config_flags.flags_with("data", "selection", "runtime") - set(CELL_KEYS)
INCEPTION_MIN_RES = 75  # torchvision's Inception-v3 rejects smaller inputs
@dataclass(frozen=True)
class Cell:
    """One training run of the grid: no selection (`measure` None) or a measure at a ratio."""
    key: str
    measure: str | None
    ratio: float
    embedding: str | None  # None: the shared --embedding

    def flags(self, config: dict) -> list[str]:
        """train.py flags that make this cell (appended after the shared ones)."""
        if self.measure is None:
            return ["--retention_ratio", "100"]
        out = ["--retention_ratio", f"{self.ratio:g}", "--density_measure", self.measure]
        if self.embedding:
            out += ["--embedding", self.embedding]
        res = config["embedding_res"]
        if (self.embedding or config["embedding"]) in ("inceptionv3", "random_inceptionv3") \
                and 0 < res < INCEPTION_MIN_RES:
            out += ["--embedding_res", str(INCEPTION_MIN_RES)]
        return out

    def unused_keys(self) -> set[str]:
        """Selection flags that cannot change this cell (left out of its signature)."""
        embedding = {"embedding", "embedding_res", "embedding_weights"}
        if self.measure is None:
            return embedding | {"density_measure"} | density_estimators.SETTING_FLAGS
        spec = density_estimators.DENSITY_MEASURES[self.measure]
        unused = density_estimators.SETTING_FLAGS - set(spec.settings.values())
        return unused | (set() if spec.uses_embedding else embedding)

    def labels(self, config: dict) -> tuple[str, str, str, str]:
        """(Instance Selection, RR (%), Embedding, Pretraining) as in the paper's Table 1."""
        if self.measure is None:
            return "None", "100", "-", "-"
        spec = density_estimators.DENSITY_MEASURES[self.measure]
        if not spec.uses_embedding:
            return spec.label, f"{self.ratio:g}", "-", "-"
        embedding = embeddings.EMBEDDINGS[self.embedding or config["embedding"]]
        return spec.label, f"{self.ratio:g}", embedding.architecture, embedding.pretraining


def parse_cell(key: str) -> Cell:
    """`none` or `MEASURE_RATIO[_EMBEDDING]` (e.g. `gaussian_50_random_inceptionv3`) -> Cell."""
    if key == "none":
        return Cell(key, None, 100.0, None)
    measures = "|".join(sorted(density_estimators.DENSITY_MEASURES, key=len, reverse=True))
    match = re.fullmatch(rf"({measures})_(\d+(?:\.\d+)?)(?:_(\w+))?", key)
    if not match or (match.group(3) and match.group(3) not in embeddings.EMBEDDINGS):
        raise ValueError(f"--cells: {key!r} is not 'none' or MEASURE_RATIO[_EMBEDDING] with MEASURE in "
                         f"{', '.join(density_estimators.DENSITY_MEASURES)} and EMBEDDING in "
                         f"{', '.join(embeddings.EMBEDDINGS)}")
    ratio = float(match.group(2))
    if not 0 < ratio < 100:
        raise ValueError(f"--cells: {key!r} needs a retention ratio in (0, 100); the 100 % cell is 'none'")
    return Cell(key, match.group(1), ratio, match.group(3))


def grid_cells(grid: str, cells: str, ratios: str) -> list[Cell]:
    """The cells of `grid`, or of the explicit --cells / --ratios lists."""
    if cells:
        keys = [k.strip() for k in cells.split(",") if k.strip()]
    elif ratios:
        try:
            values = [float(r) for r in ratios.split(",") if r.strip()]
        except ValueError:
            raise ValueError(f"--ratios {ratios!r} must be numbers joined by commas, e.g. 10,50,100") from None
        keys = ["none" if v == 100 else f"gaussian_{v:g}" for v in values]
    else:
        keys = GRIDS[grid]
    if len(set(keys)) != len(keys) or not keys:
        raise ValueError(f"--cells/--ratios must name at least one cell, each once (got {keys})")
    return [parse_cell(k) for k in keys]


@dataclass(frozen=True)
class Run:
    """One training run: a cell with one seed, named after the cell (with one seed) or `CELL_seedS`."""
    cell: Cell
    seed: int
    name: str


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-2' -> [0, 1, 2] (distinct non-negative integers)."""
    import sampling
    return sampling.parse_int_list(text, "--seeds")


# ----------------------------------------------------------------------------- flags
def _actions() -> dict[str, argparse.Action]:
    return {a.dest: a for a in utils.add_sample_parser(utils.prepare_parser())._actions if a.option_strings}


def flags_for(config: dict, keys: Iterable[str]) -> list[str]:
    """Command-line flags that reproduce `config[key]` for each key (store_true/false aware)."""
    actions, out = _actions(), []
    for key in sorted(keys):
        action, value = actions[key], config[key]
        if isinstance(action, argparse._StoreTrueAction):
            out += [action.option_strings[0]] if value else []
        elif isinstance(action, argparse._StoreFalseAction):
            out += [] if value else [action.option_strings[0]]
        elif value is not None:
            out += [action.option_strings[0], str(value)]
    return out


def signature(config: dict, keys: list[str]) -> str:
    """Short hash of the values of `keys` that differ from the parser's defaults (plus the ones the
    grid sets per cell, always): adding a flag with a default never changes an existing cell's
    signature, so results already computed stay valid."""
    defaults = utils.flag_defaults()
    kept = {k: config.get(k) for k in sorted(keys)
            if k in CELL_KEYS or k not in defaults or str(config.get(k)) != str(defaults[k])}
    blob = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- one cell
class Grid:
    """The cells, their shared flags and the output folder; `run()` does everything."""

    def __init__(self, args: argparse.Namespace, train_argv: list[str]) -> None:
        self.args, self.train_argv = args, train_argv
        self.out = Path(args.output_dir)
        self.roots = ["--weights_root", str(self.out / "weights"), "--logs_root", str(self.out / "logs"),
                      "--samples_root", str(self.out / "samples")]
        owned = sorted(utils.explicit_flags(utils.prepare_parser(), train_argv) & GRID_OWNED)
        if owned:
            raise ValueError(f"--{owned[0]} is set per cell by the grid; leave it out (cells: --cells/--ratios, "
                             f"outputs: --output_dir)")
        self.config = self.parse(train_argv)
        if not self.config["num_iters"]:
            raise ValueError("--num_iters is required: every cell trains for the same number of iterations")
        self.cells = grid_cells(args.grid, args.cells, args.ratios)
        self.seeds = parse_seeds(args.seeds) if args.seeds else [self.config["seed"]]
        # Seed-major: the first seed of every cell runs first, so that a partial summary sets the rows
        # side by side a third of the way through a three-seed grid (`report_so_far`).
        self.runs = [Run(cell, seed, cell.key if len(self.seeds) == 1 else f"{cell.key}_seed{seed}")
                     for seed in self.seeds for cell in self.cells]
        self.start, self.seeds_reported = time.time(), 0  # run() sets both
        self.threads = args.threads or max(1, len(os.sched_getaffinity(0)) // args.jobs)

    def parse(self, argv: list[str]) -> dict:
        config = vars(utils.prepare_parser().parse_args(argv))
        utils.validate_config(config)
        return config

    def run_flags(self, run: Run) -> list[str]:
        """train.py flags of one run: the shared ones, the cell's selection and the run's seed."""
        return self.train_argv + run.cell.flags(self.config) + (["--seed", str(run.seed)] if self.args.seeds else [])

    def cell_config(self, cell: Cell) -> dict:
        return self.parse(self.train_argv + cell.flags(self.config) + ["--experiment_name", cell.key] + self.roots)

    def run_config(self, run: Run) -> dict:
        return self.parse(self.run_flags(run) + ["--experiment_name", run.name] + self.roots)

    def signatures(self, cell: Cell, config: dict) -> tuple[str, str]:
        skip = NOT_TRAINING | cell.unused_keys()
        train_keys = [k for k in config if k not in skip]
        return signature(config, train_keys), signature(config, sorted(EVAL_KEYS))

    def record_path(self, run: Run) -> Path:
        return self.out / "cells" / f"{run.name}.json"

    def read_record(self, run: Run) -> dict:
        path = self.record_path(run)
        if not path.exists():
            return {}
        fix = "delete it (the checkpoints are kept and resumed)"
        try:
            record = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ValueError(f"{path} is not valid JSON; {fix}") from None
        metrics = record.get("metrics", {}) if isinstance(record, dict) else None
        if not isinstance(metrics, dict) or not all(
                v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in metrics.values()):
            raise ValueError(f"{path} is not a grid record (an object whose 'metrics' are numbers); {fix}")
        return record

    def continues_record(self, run: Run, record: dict, config: dict, train_sig: str, weights: Path) -> bool:
        """True when `record` is this run's training so far: the same training flags, or the same but
        for --num_iters (a longer budget continues the checkpoint, bit for bit an uninterrupted run;
        not with --lr_decay_iters, whose decay ends at --num_iters and so would have run differently).
        A record of other flags whose checkpoints are still there is refused."""
        import checkpoints
        stored = record.get("train_signature")
        if stored in (None, train_sig):
            return stored is not None
        flags = record.get("flags") or []
        at = [i for i, flag in enumerate(flags[:-1]) if flag == "--num_iters"]  # the last one wins in train.py
        if at and not config.get("lr_decay_iters"):
            earlier = {**config, "num_iters": int(flags[at[-1] + 1])}
            if self.signatures(run.cell, earlier)[0] == stored:
                return True
        if checkpoints.has_checkpoint(weights):
            raise ValueError(f"{self.record_path(run)} was trained with other flags than now; use another "
                             f"--output_dir, or delete it and {weights} to retrain run {run.name}")
        return False

    def trained_itr(self, weights: Path) -> int:
        import checkpoints
        if not checkpoints.has_checkpoint(weights):
            return 0
        try:
            return int(checkpoints.load_state_dict_file(weights, checkpoints.find_resume_suffix(weights))["itr"])
        except FileNotFoundError:
            raise ValueError(f"{weights} holds no complete checkpoint (killed during the first save?); "
                             f"delete it to retrain cell") from None

    def select(self, cell: Cell) -> None:
        """The cell's selection with its report (the embeddings cache is then shared with training)."""
        report = self.out / "selection" / cell.key
        if cell.measure is None or (report / "summary.json").exists():
            return
        config = self.cell_config(cell)
        say(f"{cell.key}: instance selection ({cell.measure}, {cell.ratio:g} %), report in {report}")
        cmd = [sys.executable, str(REPO / "instance_selection.py"), *flags_for(config, SELECTION_PASS),
               "--retention_ratio", f"{cell.ratio:g}", "--density_measure", cell.measure,
               "--report_dir", str(report), "--pbar", "none"]
        run_logged(cmd, self.out / "cells" / f"{cell.key}.selection.log", len(os.sched_getaffinity(0)))

    def run_named(self, name: str) -> Run:
        return next(run for run in self.runs if run.name == name)

    def run_one(self, run: Run, env: dict) -> dict:
        """Select (once per cell), train (or resume, or skip) and evaluate one run; returns its record.
        What every launcher calls, here or on a cluster node."""
        self.select(run.cell)
        return self.train_and_evaluate(run, env)

    def train_and_evaluate(self, run: Run, env: dict) -> dict:
        cell, name = run.cell, run.name
        config = self.run_config(run)
        train_sig, eval_sig = self.signatures(cell, config)
        weights = self.out / "weights" / name
        record = self.read_record(run)
        continued = self.continues_record(run, record, config, train_sig, weights)
        if (record.get("status") == "done" and record.get("train_signature") == train_sig
                and record.get("eval_signature") == eval_sig):
            say(f"{name}: finished earlier, read from {self.record_path(run)} (not retrained)")
            return record
        total, done_itr = config["num_iters"], self.trained_itr(weights)
        if done_itr > total:
            raise ValueError(f"run {name} is already trained to iteration {done_itr}, past --num_iters {total} "
                             f"(a run cannot be taken back); use another --output_dir, or --num_iters {done_itr} "
                             f"or more")
        record = {**(record if continued else {}),
                  "cell": cell.key, "run": name, "seed": run.seed, "status": "training",
                  "train_signature": train_sig, "eval_signature": eval_sig, "flags": self.run_flags(run),
                  "labels": cell.labels(self.config)}
        atomic_write_json(self.record_path(run), record)
        if done_itr < total:
            resume = ["--resume"] if done_itr > 0 else []
            say(f"{name}: train.py {'resuming from iteration %d' % done_itr if resume else 'starting'} "
                f"({total} iterations; log {self.out / 'cells' / (name + '.train.log')})")
            start = time.time()
            run_logged([sys.executable, str(REPO / "train.py"), *record["flags"], "--experiment_name", name,
                        *self.roots, *resume], self.out / "cells" / f"{name}.train.log", self.threads,
                       env, progress=lambda: say(f"{name}: "
                                                 f"{training_progress(self.out / 'logs', name, total, done_itr)}"))
            record["train_seconds"] = round(record.get("train_seconds", 0) + time.time() - start, 1)
            record["train_launches"] = record.get("train_launches", 0) + 1
            say(f"{name}: trained ({record['train_seconds']:.0f} s)")
        else:
            say(f"{name}: already trained to iteration {done_itr}; evaluating")
        record.update(status="evaluating")
        atomic_write_json(self.record_path(run), record)
        record.update(self.evaluate(name, config, env), status="done")
        atomic_write_json(self.record_path(run), record)
        say(f"{name}: " + ", ".join(f"{label} {fmt.format(record['metrics'][key])}" for label, key, fmt, _ in
                                    METRICS if record["metrics"].get(key) is not None))
        return record

    def evaluate(self, name: str, config: dict, env: dict) -> dict:
        """sample.py: metrics against the full data and a class sheet; returns the record's new fields."""
        from sample import output_tag
        start = time.time()
        run_logged([sys.executable, str(REPO / "sample.py"), "--experiment_name", name, *self.roots,
                    *flags_for(config, EVAL_PASS), "--sample_inception_metrics", "--sample_sheets"],
                   self.out / "cells" / f"{name}.eval.log", self.threads, env)
        folder = self.out / "samples" / name
        tag = output_tag(config)
        metrics = json.loads((folder / f"metrics{tag}.json").read_text())
        sheet = folder / f"sample_itr{metrics['itr']}{tag}" / "samples0.png"
        return {"metrics": {key: metrics.get(key) for key in metric_specs.result_keys()},
                "itr": metrics["itr"], "sheet": str(sheet), "eval_seconds": round(time.time() - start, 1)}

    def training_sets(self) -> list[dict]:
        """Per cell, real images of its training set (its selection's kept images, or all of them)
        scored against the full data exactly as its generators are: what the selection costs before
        any training (real_image_metrics.training_set_rows; cached in cells/)."""
        import real_image_metrics
        pools = {cell.key: None if cell.measure is None else np.load(
            self.out / "selection" / cell.key / "indices.npz", allow_pickle=False)["indices"] for cell in self.cells}
        return real_image_metrics.training_set_rows(
            self.config, pools, {cell.key: cell.labels(self.config) for cell in self.cells}, self.out / "cells",
            signature(self.config, sorted(EVAL_KEYS)), say)

    # ------------------------------------------------------------------------- the whole grid
    def run(self, launcher: Any = None) -> list[dict]:
        """Prepare/check the data, run every cell (resuming or reading) through `launcher` (default:
        the one --launcher names), write the summary."""
        self.start = time.time()
        (self.out / "cells").mkdir(parents=True, exist_ok=True)
        if self.args.prepare:
            prepare_fmnist(self.config, self.args.max_images, len(os.sched_getaffinity(0)))
        missing = [str(p) for p in metric_files(self.config) if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{missing[0]} is missing: prepare the data first with "
                                    f"scripts/utils/prepare_data_<dataset>.sh and FEATURE_NET="
                                    f"{self.config['feature_net']} (or --prepare for FMNIST32_hdf5)")
        todo = [run for run in self.runs if self.read_record(run).get("status") != "done"]
        # A grid read back whole needs no partial summaries: its final one follows at once.
        self.seeds_reported = 0 if todo else len(self.seeds)
        if self.args.launcher == "local":  # on a cluster, each cell's first job selects on its node
            warn_if_bf16_is_emulated(self.config)
            for cell in self.cells:
                if any(run.cell == cell for run in todo):
                    self.select(cell)
        launcher = launcher or launchers.make_launcher(self.args, self.out, say)
        records, errors = launcher.run_all(self, self.runs)
        if errors:
            raise utils.UserError("; ".join(errors))
        ordered = self.cell_records(records, self.seeds)
        sets = [] if self.args.no_training_sets else self.training_sets()
        write_outputs(self.out, self.args.grid, self.args.title, self.config, ordered, time.time() - self.start, sets)
        return ordered

    def cell_records(self, records: dict[str, dict], seeds: list[int]) -> list[dict]:
        """Each cell's record (`aggregate`) over the runs of `seeds`, from the runs' records by name."""
        return [aggregate([records[run.name] for run in self.runs if run.cell == cell and run.seed in seeds])
                for cell in self.cells]

    def report_so_far(self, records: dict[str, dict]) -> None:
        """Called by the launchers after each finished run: when one more seed has finished in every
        cell and others are still to come, write the summary of the seeds so far (marked partial), so
        that a grid of an hour shows its rows side by side after its first round, not only at the end."""
        done = [seed for seed in self.seeds if all(run.name in records for run in self.runs if run.seed == seed)]
        if len(done) <= self.seeds_reported or len(done) == len(self.seeds):
            return
        self.seeds_reported = len(done)
        seeds = ", ".join(map(str, done))
        partial = (f"seed{'s' if len(done) > 1 else ''} {seeds} of {', '.join(map(str, self.seeds))} finished in "
                   f"every cell ({len(records)} of {len(self.runs)} runs)")
        write_outputs(self.out, self.args.grid, self.args.title, self.config, self.cell_records(records, done),
                      time.time() - self.start, partial=partial)


def warn_if_bf16_is_emulated(config: dict) -> None:
    """Say so before hours of runs when --amp bf16 will train in fp32 on this CPU (BigGAN.amp_dtype)."""
    if (config["amp"] == "bf16" and utils.resolve_device(config["device"]).type == "cpu"
            and not BigGAN.cpu_runs_bf16_natively()):
        say("this CPU has neither AVX512-BF16 nor AMX: --amp bf16 trains in fp32 here, and every run takes "
            "several times longer than on the AVX512-BF16 EPYC the README's timings come from (measured on a "
            "2-core Zen 3 EPYC: a batch-64 iteration of the CPU recipe 1.5-1.9 s against 0.18 s)")


def build_parser() -> argparse.ArgumentParser:
    """The grid's own flags (everything else goes to train.py)."""
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()), allow_abbrev=False,
                                epilog="All other flags are train.py flags shared by every cell.")
    p.add_argument("--grid", choices=sorted(GRIDS), default="table1", help="which cells and plots (default: %(default)s)")
    p.add_argument("--output_dir", required=True, help="folder for cells, checkpoints, logs and the summary")
    p.add_argument("--preset", choices=["none", *PRESETS], default="none",
                   help="shared train.py flags to start from: " + ", ".join(PRESETS) + " (default: %(default)s)")
    p.add_argument("--gpus", default="", help="comma-separated GPU ids, one per job (e.g. 0,1,2,3 with --jobs 4)")
    p.add_argument("--cells", default="", help="comma-separated cells instead of the grid's, e.g. none,gaussian_50")
    p.add_argument("--ratios", default="", help="retention ratios of a gaussian sweep, e.g. 10,20,...,100 (100 = none)")
    p.add_argument("--seeds", default="",
                   help="comma-separated seeds (e.g. 0,1,2): every cell is trained once per seed and the "
                        "summary reports mean +- std (default: the one --seed)")
    p.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per cell (0 = cores / jobs)")
    p.add_argument("--prepare", action="store_true", help="make missing FMNIST32_hdf5 data, moments and manifold")
    p.add_argument("--max_images", type=int, default=0, help="with --prepare: the first N Fashion-MNIST images (0 = all)")
    p.add_argument("--title", default="", help="heading of summary.md")
    p.add_argument("--no_training_sets", action="store_true",
                   help="leave out the table that scores each cell's training set itself (real images) "
                        "against the full data")
    launchers.add_flags(p)
    return p


def make_grid(argv: list[str] | None = None) -> Grid:
    """The grid a command line describes (grid flags, a preset, then train.py flags)."""
    args, train_argv = build_parser().parse_known_args(argv)
    if args.jobs < 1 or args.threads < 0 or args.max_images < 0:
        raise utils.UserError("--jobs must be >= 1, --threads and --max_images >= 0")
    launchers.check_args(args)
    gpus = [g for g in args.gpus.split(",") if g.strip()]
    if gpus and len(gpus) < args.jobs:
        raise utils.UserError(f"--gpus {args.gpus} names fewer GPUs than --jobs {args.jobs}")
    if args.preset != "none":
        flags, iters = PRESETS[args.preset]
        train_argv = flags.split() + ["--num_iters", str(iters[args.grid])] + train_argv
    return Grid(args, train_argv)


def main(argv: list[str] | None = None) -> None:
    """Command line: see the module docstring."""
    grid = make_grid(argv)
    grid.run()
    say(f"summary: {grid.out / 'summary.md'}")


if __name__ == "__main__":
    # The importable module's main, so that submitit jobs pickle experiment_grid.Grid by reference
    # (a class of __main__ would be pickled by value).
    import experiment_grid
    utils.run_cli(experiment_grid.main)
