"""The one parser: BigGAN-PyTorch's flags with their defaults, every launch/sample script's
command line, validation and deterministic experiment names."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

import config
import config_rules
import utils

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "biggan_pytorch_flags.json"
SAMPLE_FLAGS = {"sample_npz", "sample_num_npz", "sample_sheets", "sample_interps",
                "sample_sheet_folder_num", "sample_random", "sample_trunc_curves",
                "sample_inception_metrics"}


def _full_parser():
    return utils.add_sample_parser(utils.prepare_parser())


def _script_command(path: Path) -> tuple[str, list[str]]:
    """The (entry point, argv) a launch script runs: its `launch X.py` line with continuations."""
    text = path.read_text().replace("\\\n", " ")
    match = re.search(r"^launch (\S+\.py)(.*)$", text, flags=re.M)
    assert match, f"{path.name} has no 'launch <script>.py' line"
    args = [a for a in shlex.split(match.group(2)) if a != '"$@"' and a != "$@"]
    return match.group(1), args


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference not beside the repo")
def test_every_reference_flag_has_same_name_dest_and_default():
    parser = _full_parser()
    actions = {opt: a for a in parser._actions for opt in a.option_strings}
    reference = json.loads(REFERENCE.read_text())["flags"]
    assert len(reference) > 100
    for flag in reference:
        for opt in flag["flags"]:
            assert opt in actions, f"{opt} missing from the parser"
            action = actions[opt]
            assert action.dest == flag["dest"], opt
            # The one deliberate change (change_log.md): never more workers than cores.
            expected = min(flag["default"], config.DEFAULT_WORKERS) if opt == "--num_workers" else flag["default"]
            assert action.default == expected, (opt, action.default, flag["default"])
            if flag["choices"]:
                # Our choices may extend the reference's (e.g. offline embeddings), never drop one.
                assert set(flag["choices"]) <= set(action.choices), opt


def test_all_launch_and_sample_scripts_parse_unchanged(repo_root):
    scripts = sorted((repo_root / "scripts").glob("launch_*.sh")) + \
        sorted((repo_root / "scripts").glob("sample_*.sh"))
    names = {p.name for p in scripts}
    for required in ("launch_SAGAN_res64_ch32_bs128_dstep_1_rr40.sh",
                     "launch_BigGAN_res128_ch64_bs256_dstep_1_rr50.sh",
                     "launch_BigGAN_res256_ch64_bs256_dstep_2_rr50.sh",
                     "launch_BigGAN_bs256x8.sh", "launch_BigGAN_ch64_bs256x8.sh",
                     "launch_BigGAN_deep.sh", "launch_SAGAN_bs128x2_ema.sh", "launch_SNGAN.sh",
                     "launch_cifar_ema.sh", "sample_BigGAN_bs256x8.sh"):
        assert required in names
    parser = _full_parser()
    for path in scripts:
        entry, argv = _script_command(path)
        assert entry in ("train.py", "sample.py")
        config = vars(parser.parse_args(argv))
        utils.validate_config(config)
        if "rr40" in path.name:
            assert config["retention_ratio"] == 40 and config["dataset"] == "I64_hdf5"
            assert config["G_attn"] == "32" and config["G_ch"] == 32 and config["num_D_steps"] == 1
        if "rr50" in path.name:
            assert config["retention_ratio"] == 50 and config["embedding"] == "inceptionv3"
            assert config["density_measure"] == "gaussian" and config["G_ch"] == 64
        if "dstep_2" in path.name:
            assert config["num_D_steps"] == 2 and config["dataset"] == "I256_hdf5"


def test_unknown_flag_is_an_error(capsys):
    with pytest.raises(SystemExit) as exc:
        _full_parser().parse_args(["--not_a_flag", "1"])
    assert exc.value.code == 2
    assert "--not_a_flag" in capsys.readouterr().err


def test_abbreviations_are_not_silently_accepted():
    with pytest.raises(SystemExit):
        utils.prepare_parser().parse_args(["--retention", "50"])


@pytest.mark.parametrize("argv, flag", [
    (["--retention_ratio", "0"], "--retention_ratio"),
    (["--retention_ratio", "101"], "--retention_ratio"),
    (["--batch_size", "0"], "--batch_size"),
    (["--num_iters", "-1"], "--num_iters"),
    (["--G_attn", "sixty"], "attention"),
    (["--regan_sparsity", "1.0"], "--regan_sparsity"),
])
def test_validation_names_the_flag(argv, flag):
    config = vars(utils.prepare_parser().parse_args(argv))
    with pytest.raises(ValueError, match=flag):
        utils.validate_config(config)


def test_names_are_deterministic_and_readable():
    parser = utils.prepare_parser()
    base = vars(parser.parse_args(["--dataset", "FMNIST32", "--G_ch", "32", "--D_ch", "32"]))
    name = utils.name_from_config(base)
    assert name == utils.name_from_config(dict(base))
    assert name.startswith("BigGAN_FMNIST32_seed0_Gch32_Dch32_bs64_nDs2_Glr5.0e-05_Dlr2.0e-04")
    selected = dict(base, retention_ratio=50.0)
    assert utils.name_from_config(selected).endswith("rr50_inceptionv3_gaussian")
    assert utils.name_from_config(selected) != name
    narrowed = utils.name_from_config(dict(base, G_ch_mults="4_4_4_2", D_ch_mults="2_4_4_4"))
    assert "_Gch32_Dch32_Gm4-4-4-2_Dm2-4-4-4_bs64_" in narrowed
    assert "_Dch32_Dmbstd4_bs64_" in utils.name_from_config(dict(base, D_mbstd_group=4))
    assert "_Dnlrelu_lossdcgan_Ginit" in utils.name_from_config(dict(base, loss="dcgan"))
    hashed = dict(base, hashname=True)
    assert re.fullmatch(r"exp_[0-9a-f]{10}", utils.name_from_config(hashed))
    assert utils.name_from_config(hashed) == utils.name_from_config(dict(hashed))


def test_attention_spec_parsing():
    assert utils.attn_resolutions("0") == []
    assert utils.attn_resolutions("64") == [64]
    assert utils.attn_resolutions("32_64") == [32, 64]


def test_prepare_root_prefixes_base_root(tmp_path):
    config = vars(utils.prepare_parser().parse_args(["--base_root", str(tmp_path)]))
    utils.prepare_root(config)
    for key in ("weights_root", "logs_root", "samples_root"):
        assert Path(config[key]).is_dir() and str(tmp_path) in config[key]
    assert config["data_root"] == str(tmp_path / "data")


def test_every_numeric_flag_has_a_checked_range():
    """A numeric flag added without a range in config_rules.RANGES fails here."""
    parser = utils.add_sample_parser(utils.prepare_parser())
    numeric = {a.dest for a in parser._actions if a.type in (int, float)}
    assert numeric == set(config_rules.RANGES)
    config_rules.validate_config(vars(parser.parse_args([])))  # the defaults are valid


@pytest.mark.parametrize("flag, value, message", [
    ("G_B1", 1.5, r"--G_B1 must be in \[0, 1\), got 1.5"),
    ("D_B2", -0.1, r"--D_B2 must be in \[0, 1\)"),
    ("G_lr", float("nan"), r"--G_lr must be > 0, got nan"),
    ("D_lr", float("inf"), r"--D_lr must be > 0, got inf"),
    ("ema_decay", 1.2, r"--ema_decay must be in \(0, 1\]"),
    ("num_D_SV_itrs", 0, r"--num_D_SV_itrs must be positive, got 0"),
    ("num_save_copies", -1, r"--num_save_copies must be >= 0"),
    ("prdc_k", 0, r"--prdc_k must be positive"),
    ("G_ortho", -1e-4, r"--G_ortho must be >= 0"),
    ("sample_sheet_folder_num", -2, r"--sample_sheet_folder_num must be >= -1"),
    ("retention_ratio", 0.0, r"--retention_ratio must be in \(0, 100\]"),
])
def test_out_of_range_values_are_refused_naming_the_flag(flag, value, message):
    values = vars(utils.add_sample_parser(utils.prepare_parser()).parse_args([]))
    with pytest.raises(ValueError, match=message):
        config_rules.validate_config({**values, flag: value})


def test_flag_choices_equal_the_registries():
    """config.py's choices (kept import-light for a fast --help) name exactly the registered entries."""
    import density_estimators
    import embeddings
    import inception_utils
    import training_modes
    assert set(config.DENSITY_MEASURES) == set(density_estimators.DENSITY_MEASURES)
    assert set(config.EMBEDDINGS) == set(embeddings.EMBEDDINGS)
    assert set(config.FEATURE_NETS) == set(inception_utils.FEATURE_NETS)
    flags = vars(utils.prepare_parser().parse_args([]))
    assert all(flag in flags for flag in training_modes.MODES)


def test_every_flag_has_one_declared_role():
    """A flag added outside a role group would be missed by every list derived from the roles."""
    roles = config.flag_roles()
    assert set(roles) == set(config.flag_defaults())
    assert set(roles.values()) == set(config.ROLES)
    with pytest.raises(KeyError, match="unknown flag roles"):
        config.flags_with("evaluation")


def test_a_new_metrics_flag_is_classified_everywhere_by_its_role(monkeypatch):
    """Adding an evaluation flag to its group is all it takes: sample.py takes it from the command
    line (else from the run), the grid passes it to the evaluation and re-scores (not retrains)
    when it changes, and a resume may change it."""
    import importlib

    import experiment_grid
    import sample
    real_add = config._add_metrics_flags

    def with_a_new_flag(p):
        real_add(p)
        p._action_groups[-1].add_argument("--kde_bandwidth", type=float, default=0.5)
    monkeypatch.setattr(config, "_add_metrics_flags", with_a_new_flag)
    try:
        importlib.reload(sample)
        importlib.reload(experiment_grid)
        assert config.flag_roles()["kde_bandwidth"] == "metrics"
        assert "kde_bandwidth" in sample.SAMPLE_KEYS and "kde_bandwidth" in sample.RUN_DEFAULT_KEYS
        assert "kde_bandwidth" in experiment_grid.EVAL_KEYS and "kde_bandwidth" in experiment_grid.EVAL_PASS
        assert "kde_bandwidth" in experiment_grid.NOT_TRAINING
        stored = {**vars(utils.prepare_parser().parse_args([])), "kde_bandwidth": 0.5}
        merged, changed = config_rules.resume_config({**stored, "kde_bandwidth": 0.9}, stored, {"kde_bandwidth"}, "run")
        assert merged["kde_bandwidth"] == 0.9 and changed == ["kde_bandwidth"]
    finally:
        monkeypatch.undo()
        importlib.reload(sample)
        importlib.reload(experiment_grid)
