"""The metrics, declared once: the key in metric dicts and records, the column label of tables,
the key the training log writes, the number format, the better direction and which computation
produces it. Every table, log reader, plot and summary reads this list.

The computations themselves are in `inception_utils.py` (IS, FID, KID, precision/recall/
density/coverage) and this module imports nothing heavy, so `--help` and the report scripts
stay fast.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricSpec:
    """One metric. `key` is its name in metric dicts and grid records, `label` its column, `log_key`
    its key in the training log (`<run>_log.jsonl`, BigGAN-PyTorch's names where it had them),
    `fmt` how tables print it, `higher_is_better` its direction, `family` the computation that
    produces it ("is", "fid", "kid", "prdc") and `std_key` the spread it comes with, if any."""
    key: str
    label: str
    log_key: str
    fmt: str
    higher_is_better: bool
    family: str
    std_key: str = ""

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"

    def read(self, row: dict) -> float | None:
        """The value in `row` under its key or its training-log key (None when absent)."""
        value = row.get(self.key, row.get(self.log_key))
        return None if value is None else float(value)


METRICS = (
    MetricSpec("IS_mean", "IS", "IS_mean", "{:.2f}", True, "is", std_key="IS_std"),
    MetricSpec("FID", "FID", "FID", "{:.2f}", False, "fid"),
    MetricSpec("KID_mean", "KID", "KID_mean", "{:.4f}", False, "kid", std_key="KID_std"),
    MetricSpec("precision", "P", "P", "{:.3f}", True, "prdc"),
    MetricSpec("recall", "R", "R", "{:.3f}", True, "prdc"),
    MetricSpec("density", "D", "D", "{:.3f}", True, "prdc"),
    MetricSpec("coverage", "C", "C", "{:.3f}", True, "prdc"),
)
BY_KEY = {m.key: m for m in METRICS}
# What training tests and the grid compute (KID is evaluate.py's, on request).
TRAINING_METRICS = tuple(m for m in METRICS if m.family != "kid")
PRDC = tuple(m for m in METRICS if m.family == "prdc")


def result_keys(metrics: tuple[MetricSpec, ...] = TRAINING_METRICS) -> tuple[str, ...]:
    """The keys of a metrics dict in order, each spread right after its mean."""
    return tuple(k for m in metrics for k in (m.key, m.std_key) if k)
