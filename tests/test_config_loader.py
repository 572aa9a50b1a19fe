"""The one config loader (connect.config.load), the same for every command: defaults < the command's TOML
table < flags < --set; unknown tables, unknown keys and wrong types are one-line user errors."""

import pytest

from connect import cli, config
from connect.cli import options
from connect.errors import UserError
from connect.lm.config import TrainLMConfig
from connect.studies.finetune.config import FinetuneConfig
from connect.studies.gpt2_connectivity.config import PathsConfig, StudyConfig
from connect.studies.width_sweep.config import WidthSweepConfig
from connect.twolayer.pair import BarrierConfig

#: (argv before the options, config class, an int option, a flag for it or None when the command has only --set)
COMMANDS = [
    (["width-sweep"], WidthSweepConfig, "steps", "--steps"),
    (["barrier", "A", "B"], BarrierConfig, "path_steps", "--path-steps"),
    (["train-lm"], TrainLMConfig, "steps", "--steps"),
    (["paths", "A", "B"], PathsConfig, "steps", "--steps"),
    (["study", "gpt2"], StudyConfig, "path_steps", None),
    (["study", "finetune", "--pretrained", "x"], FinetuneConfig, "steps", "--steps"),
]
IDS = [" ".join(c[0][:2]) for c in COMMANDS]


def _config(tmp_path, argv, cls, text: str, extra=()):
    path = tmp_path / "c.toml"
    path.write_text(text)
    args = cli.build_parser().parse_args([*argv, "--config", str(path), *extra])
    return options.config_from_args(args, cls)


@pytest.mark.parametrize("argv, cls, key, flag", COMMANDS, ids=IDS)
def test_precedence_defaults_table_flags_set(tmp_path, argv, cls, key, flag):
    default = getattr(cls(), key)
    assert getattr(_config(tmp_path, argv, cls, ""), key) == default
    assert getattr(_config(tmp_path, argv, cls, f"[{cls.TABLE}]\n{key} = {default + 3}\n"), key) == default + 3
    if flag:
        cfg = _config(tmp_path, argv, cls, f"[{cls.TABLE}]\n{key} = {default + 3}\n", [flag, str(default + 5)])
        assert getattr(cfg, key) == default + 5
        cfg = _config(tmp_path, argv, cls, "", [flag, str(default + 5), "--set", f"{key}={default + 7}"])
    else:
        cfg = _config(tmp_path, argv, cls, f"[{cls.TABLE}]\n{key} = {default + 3}\n", ["--set", f"{key}={default + 7}"])
    assert getattr(cfg, key) == default + 7


@pytest.mark.parametrize("argv, cls, key, flag", COMMANDS, ids=IDS)
def test_unknown_table_is_refused(tmp_path, argv, cls, key, flag):
    with pytest.raises(UserError, match=r"unknown table \[widht_sweep\]"):
        _config(tmp_path, argv, cls, f"[widht_sweep]\n{key} = 3\n")


@pytest.mark.parametrize("argv, cls, key, flag", COMMANDS, ids=IDS)
def test_unknown_key_is_refused(tmp_path, argv, cls, key, flag):
    with pytest.raises(UserError, match="unknown option 'no_such_option'"):
        _config(tmp_path, argv, cls, f"[{cls.TABLE}]\nno_such_option = 3\n")
    with pytest.raises(UserError, match="unknown option 'no_such_option'"):
        _config(tmp_path, argv, cls, "", ["--set", "no_such_option=3"])


@pytest.mark.parametrize("argv, cls, key, flag", COMMANDS, ids=IDS)
def test_wrong_type_is_refused(tmp_path, argv, cls, key, flag):
    with pytest.raises(UserError, match=f"option {key} = 'many' is not a valid int"):
        _config(tmp_path, argv, cls, f'[{cls.TABLE}]\n{key} = "many"\n')
    with pytest.raises(UserError, match=f"option {key} = 2.5 is not a valid int"):
        _config(tmp_path, argv, cls, "", ["--set", f"{key}=2.5"])


def test_other_commands_tables_and_variants_may_share_a_file(tmp_path):
    text = "[width_sweep]\nsteps = 5\n[train_lm]\nsteps = 6\n[tiny]\nsteps = 7\n"
    assert _config(tmp_path, ["width-sweep"], WidthSweepConfig, text).steps == 5
    assert _config(tmp_path, ["train-lm"], TrainLMConfig, text).steps == 6
    path = tmp_path / "c.toml"
    assert config.load(TrainLMConfig, str(path), variant="tiny").steps == 7
    with pytest.raises(UserError, match=r"has no \[small\] table"):
        config.load(TrainLMConfig, str(path), variant="small")


def test_options_at_the_top_level_and_dict_flags_merging_into_the_file(tmp_path):
    cfg = _config(tmp_path, ["width-sweep"], WidthSweepConfig, "steps = 5\n[lr]\nadamw = 0.5\n", ["--lr", "muon=0.25"])
    assert cfg.steps == 5 and cfg.lr == {"adamw": 0.5, "muon": 0.25}
    cfg = _config(tmp_path, ["study", "gpt2"], StudyConfig, "[gpt2_study.train]\nsteps = 9\nmodel = 'tiny'\n", ["--set", "train.steps=4"])
    assert cfg.train == {"steps": 4, "model": "tiny"}


def test_integers_that_overflow_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="width inf is invalid"):
        _config(tmp_path, ["width-sweep"], WidthSweepConfig, "[width_sweep]\nwidths = [2, inf]\n")
    with pytest.raises(UserError, match="option steps = inf is not a valid int"):
        _config(tmp_path, ["width-sweep"], WidthSweepConfig, "[width_sweep]\nsteps = inf\n")
