"""The README's "your own images, end to end" block, run as written at a tiny size."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

import datasets

REPO = Path(__file__).resolve().parents[1]


def test_the_own_images_recipe_runs_end_to_end(fmnist_root, tmp_path):
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- own-images-recipe -->\n```bash\n", 1)[1].split("```", 1)[0]
    data = datasets.get_dataset("FMNIST32", fmnist_root)
    images = tmp_path / "my_images"
    for label, name in ((0, "tshirt"), (1, "trouser")):
        (images / name).mkdir(parents=True)
        for i in np.flatnonzero(data.labels == label)[:12]:
            Image.fromarray(data.load_uint8(int(i)).permute(1, 2, 0).numpy()).save(images / name / f"{i}.png")
    env = {**os.environ, "PATH": f"{REPO / '.venv' / 'bin'}:{os.environ['PATH']}", "IMAGES": str(images),
           "RES": "32", "ITERS": "2", "NAME": "tiny", "OUT": str(tmp_path / "out"), "NPZ": "24", "OMP_NUM_THREADS": "1",
           "FLAGS": "--G_ch 8 --D_ch 8 --batch_size 4 --num_D_steps 1 --G_attn 0 --D_attn 0 --dim_z 16 "
                    "--num_workers 0 --device cpu --pbar none --save_every 2"}
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((tmp_path / "out" / "samples" / "tiny" / "generated_ema").glob("seed*_class*.png"))) == 16
    derived = tmp_path / "my_images.derived"
    assert list(derived.glob("instance_selection/report_*/summary.json"))
    assert (derived / "custom_efficientnet_lite0_moments.npz").is_file()
    last = proc.stdout.strip().splitlines()
    assert any(line.strip().startswith("IS_mean") or "FID" in line for line in last[-4:])
    assert any("class tshirt" in line for line in last) and any("class trouser" in line for line in last)
    state = json.loads((tmp_path / "out" / "weights" / "tiny" / "config.json").read_text())
    assert state["retention_ratio"] == 50 and state["resolution"] == 32
