"""Training config: TOML loading, dotted overrides, and one readable error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest
from paths import ROOT
from pydantic import ValidationError

from lmgym.config import parse_overrides
from lmgym.errors import UsageError
from lmgym.train.config import (
    AlgorithmConfig,
    TrainConfig,
    dump_config,
    load_config,
)

CONFIGS = ROOT / "configs"


def write(tmp_path: Path, text: str, name: str = "run.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(*args, **kwargs) -> str:
    with pytest.raises(UsageError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


# ---------------------------------------------------------------------------- defaults, files


def test_defaults_are_valid():
    config = load_config(None)
    assert config == TrainConfig()
    assert config.model.name == "tiny-llama" and not config.model.lora.enabled
    assert config.model.lora.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert config.env.name == "reverse-digits" and config.env.args == {}
    assert config.algorithm.loss == "grpo" and config.algorithm.group_size == 8
    assert config.algorithm.eps_low is None and config.algorithm.eps_high is None
    assert config.algorithm.rollouts_per_step == 64
    assert config.trainer.micro_batch_size == 8 and config.trainer.lr_schedule == "constant"
    assert config.eval.temperature == 0.0 and config.logging.jsonl and config.sft.data is None


def test_toml_file_sets_values_and_keeps_other_defaults(tmp_path):
    path = write(
        tmp_path,
        """
[model]
name = "smollm2"
[model.lora]
enabled = true
r = 4
[env]
name = "arithmetic"
args = { max_value = 20 }
[algorithm]
loss = "dapo"
eps_high = 0.28
""",
    )
    config = load_config(path)
    assert config.model.name == "smollm2"
    assert config.model.lora.enabled and config.model.lora.r == 4 and config.model.lora.alpha == 16
    assert config.env.args == {"max_value": 20}
    assert config.algorithm.loss == "dapo" and config.algorithm.eps_high == 0.28
    assert config.algorithm.eps_low is None
    assert config.trainer == TrainConfig().trainer


def test_path_may_be_a_string(tmp_path):
    path = write(tmp_path, "[trainer]\nseed = 3\n")
    assert load_config(str(path)).trainer.seed == 3


@pytest.mark.parametrize("name", ["reverse-digits.toml", "arithmetic-smollm2.toml"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / name)
    assert dump_config(config)  # and it serialises


def test_shipped_config_values():
    rd = load_config(CONFIGS / "reverse-digits.toml")
    assert rd.model.name == "tiny-llama" and rd.env.name == "reverse-digits"
    assert (rd.sampling.temperature, rd.sampling.max_tokens) == (1.0, 8)
    assert (rd.algorithm.loss, rd.algorithm.group_size, rd.algorithm.prompts_per_step) == ("grpo", 8, 16)
    t = rd.trainer
    assert (t.lr, t.max_steps, t.micro_batch_size, t.warmup_steps, t.seed) == (3e-4, 60, 64, 5, 0)
    assert (rd.eval.every, rd.eval.num_examples, rd.checkpoint.every) == (10, 200, 20)
    assert (rd.sft.warm_start, rd.sft.data, rd.sft.epochs, rd.sft.lr, rd.sft.batch_size) == (True, None, 3, 3e-3, 64)

    ar = load_config(CONFIGS / "arithmetic-smollm2.toml")
    lora = ar.model.lora
    assert ar.model.name == "smollm2" and (lora.enabled, lora.r, lora.alpha) == (True, 16, 32)
    assert ar.env.name == "arithmetic" and ar.env.args == {"max_value": 20, "operators": "+-"}
    assert (ar.sampling.temperature, ar.sampling.max_tokens) == (1.0, 24)
    a = ar.algorithm
    assert (a.loss, a.group_size, a.prompts_per_step, a.scale_rewards) == ("dr_grpo", 8, 2, "none")
    t = ar.trainer
    assert (t.lr, t.max_steps, t.micro_batch_size, t.max_seq_len) == (1e-4, 30, 8, 256)
    assert (ar.eval.every, ar.eval.num_examples, ar.checkpoint.every) == (10, 50, 10)
    assert (ar.sft.warm_start, ar.sft.lr, ar.sft.batch_size, ar.sft.max_steps) == (True, 5e-5, 8, 10)


# -------------------------------------------------------------------------------- overrides


def test_overrides_in_both_syntaxes_with_toml_types():
    config = load_config(
        None,
        [
            "--trainer.lr", "1e-5",
            "model.lora.enabled=true",
            "--sampling.stop", '["\\n", "END"]',
            "algorithm.loss=dapo",  # bare word -> string
            "--model.name", '"smollm2"',  # quoted -> string
            "trainer.seed=-3",
            "sampling.top_p=0.9",
        ],
    )  # fmt: skip
    assert config.trainer.lr == 1e-5 and isinstance(config.trainer.lr, float)
    assert config.model.lora.enabled is True
    assert config.sampling.stop == ["\n", "END"]
    assert config.algorithm.loss == "dapo"
    assert config.model.name == "smollm2"
    assert config.trainer.seed == -3
    assert config.sampling.top_p == 0.9


def test_overrides_beat_the_file(tmp_path):
    path = write(tmp_path, "[trainer]\nlr = 3e-3\nseed = 1\n")
    config = load_config(path, ["trainer.lr=2e-4"])
    assert config.trainer.lr == 2e-4 and config.trainer.seed == 1


def test_override_values_parse_as_toml():
    assert parse_overrides(["--a.b", "1", "c.d=x=y", "--e.f=2"]) == [("a.b", "1"), ("c.d", "x=y"), ("e.f", "2")]
    config = load_config(None, ['env.args={max_value = 20, ops = ["+"]}', "env.args.seed=7"])
    assert config.env.args == {"max_value": 20, "ops": ["+"], "seed": 7}


def test_str_fields_keep_text_that_looks_like_another_type():
    config = load_config(None, ["model.name=123", "sft.data=data/train.jsonl", "logging.output_dir=runs/a b"])
    assert config.model.name == "123"
    assert config.sft.data == "data/train.jsonl"
    assert config.logging.output_dir == "runs/a b"


def test_none_unsets_an_optional_key(tmp_path):
    path = write(tmp_path, "[algorithm]\neps_low = 0.1\n")
    assert load_config(path, ["algorithm.eps_low=none"]).algorithm.eps_low is None


@pytest.mark.parametrize(
    "bad", [["--trainer.lr"], ["--trainer.lr", "--trainer.seed", "1"], ["trainer.lr"], ["=1"], ["a..b=1"]]
)
def test_malformed_overrides(bad):
    message = error_of(None, bad)
    assert "trainer.lr" in message or "override" in message


# ----------------------------------------------------------------------------------- errors


def test_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope.toml"
    message = error_of(missing)
    assert str(missing) in message and "not found" in message


def test_invalid_toml_names_file_and_line(tmp_path):
    path = write(tmp_path, "[trainer]\nlr = 1e-3\nseed = = 2\n")
    message = error_of(path)
    assert str(path) in message and "line 3" in message


def test_unknown_nested_key_suggests_the_closest_and_lists_allowed(tmp_path):
    path = write(tmp_path, "[trainer]\nlrr = 1e-3\n")
    message = error_of(path)
    assert "'trainer.lrr'" in message
    assert "did you mean 'trainer.lr'" in message
    assert "max_grad_norm" in message and "micro_batch_size" in message  # the allowed keys
    assert str(path) in message


def test_unknown_key_from_an_override():
    message = error_of(None, ["--algorithm.group_sise", "4"])
    assert "'algorithm.group_sise'" in message and "did you mean 'algorithm.group_size'" in message
    assert "command line" in message


def test_unknown_deeply_nested_and_top_level_keys():
    message = error_of(None, ["model.lora.rank=4"])
    assert "'model.lora.rank'" in message and "target_modules" in message
    message = error_of(None, ["traner.lr=1"])
    assert "'traner'" in message and "did you mean 'trainer'" in message and "algorithm" in message


def test_env_args_are_free_form():
    assert load_config(None, ["env.args.anything_at_all=1"]).env.args == {"anything_at_all": 1}


def test_literal_error_lists_the_allowed_values():
    message = error_of(None, ["algorithm.loss=ppo"])
    assert "algorithm.loss" in message and '"ppo"' in message
    for name in ("grpo", "dr_grpo", "dapo", "gspo", "cispo"):
        assert name in message
    message = error_of(None, ["algorithm.scale_rewards=std"])
    assert '"group", "batch", "none"' in message


def test_group_size_one():
    message = error_of(None, ["algorithm.group_size=1"])
    assert "algorithm.group_size = 1" in message and "group_size must be at least 2" in message


def test_cispo_takes_an_absolute_cap_not_a_clip_range(tmp_path):
    # TRL's epsilon_high = 5.0 for cispo is a cap of 5; lmgym's old eps_high = 5.0 meant 6.
    path = write(tmp_path, '[algorithm]\nloss = "cispo"\neps_high = 5.0\n')
    message = error_of(path)
    assert str(path) in message and "algorithm.eps_high = 5.0" in message and "algorithm.cispo_cap" in message
    assert "absolute" in message
    assert "algorithm.eps_low = 0.2" in error_of(None, ["algorithm.loss=cispo", "algorithm.eps_low=0.2"])
    assert load_config(None, ["algorithm.loss=cispo", "algorithm.cispo_cap=5"]).algorithm.cispo_cap == 5.0
    assert "cispo_cap" in error_of(None, ["algorithm.cispo_cap=0"])


def test_dr_grpo_length_is_positive_and_optional():
    assert load_config(None).algorithm.dr_grpo_length is None
    assert load_config(None, ["algorithm.dr_grpo_length=1024"]).algorithm.dr_grpo_length == 1024
    assert "algorithm.dr_grpo_length = 0" in error_of(None, ["algorithm.dr_grpo_length=0"])


def test_hub_and_precision_settings_default_off_and_reach_load_model():
    config = load_config(None)
    model = config.model
    assert (model.revision, model.trust_remote_code, model.dtype, model.attn_implementation) == (None, False, "float32", "sdpa")
    assert not config.trainer.gradient_checkpointing
    config = load_config(None, ["--model.name", "Qwen/Qwen3-0.6B", "--model.revision", "v1.0", "model.trust_remote_code=true",
                                "model.dtype=bfloat16", "model.attn_implementation=flash_attention_2",
                                "trainer.gradient_checkpointing=true"])
    assert config.model.name == "Qwen/Qwen3-0.6B" and config.trainer.gradient_checkpointing
    assert config.model.load_options() == {"revision": "v1.0", "trust_remote_code": True, "attn_implementation": "flash_attention_2"}
    assert load_config(None, overrides=["model.revision=1234"]).model.revision == "1234"  # a str, whatever it looks like


def test_bad_precision_settings_name_the_key_and_the_choices():
    message = error_of(None, ["model.dtype=fp8"])
    assert "model.dtype" in message and '"float32", "bfloat16", "float16"' in message
    message = error_of(None, ["model.attn_implementation=flash"])
    assert "model.attn_implementation" in message and '"sdpa"' in message
    message = error_of(None, ["model.attn_implementation=flash_attention_2"])  # with float32
    assert "flash_attention_2" in message and 'model.dtype = "bfloat16"' in message


def test_micro_batch_must_divide_the_rollouts_of_a_step():
    message = error_of(None, ["algorithm.prompts_per_step=3", "algorithm.group_size=4", "trainer.micro_batch_size=8"])
    assert "12" in message and "8" in message
    assert "trainer.micro_batch_size" in message and "divisible" in message


def test_constraint_errors_name_key_value_and_constraint():
    message = error_of(None, ["sampling.top_p=1.5"])
    assert "sampling.top_p = 1.5" in message and "less than or equal to 1" in message
    message = error_of(None, ["sampling.temperature=0"])
    assert "sampling.temperature = 0" in message and "greater than 0" in message


def test_type_error_names_key_and_value():
    message = error_of(None, ["trainer.lr=fast"])
    assert 'trainer.lr = "fast"' in message and "number" in message


def test_section_given_as_a_value(tmp_path):
    message = error_of(write(tmp_path, "trainer = 3\n"))
    assert "trainer" in message and "table" in message
    message = error_of(None, ["trainer.lr=1", "trainer.lr.x=2"])
    assert "trainer.lr" in message and "not a section" in message


def test_several_errors_become_one_message():
    message = error_of(None, ["sampling.top_p=2", "eval.every=-1"])
    assert "2 config errors" in message and "sampling.top_p" in message and "eval.every" in message


def test_no_pydantic_traceback_leaks():
    with pytest.raises(UsageError) as info:
        load_config(None, ["algorithm.loss=ppo"])
    exc = info.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    assert "pydantic" not in str(info.value) and "errors.pydantic.dev" not in str(info.value)


def test_models_forbid_extra_keys_directly():
    with pytest.raises(ValidationError, match="group_sise"):
        AlgorithmConfig(group_sise=4)  # type: ignore[call-arg]


# -------------------------------------------------------------------------------- round trip


def test_dump_and_load_round_trip(tmp_path):
    config = load_config(
        CONFIGS / "arithmetic-smollm2.toml",
        ["algorithm.eps_high=0.28", "sampling.stop=['\\n']", "logging.output_dir=runs/x", "sft.max_steps=5"],
    )
    text = dump_config(config)
    assert "None" not in text and "null" not in text
    path = write(tmp_path, text, "config.toml")
    assert load_config(path) == config


def test_dump_omits_unset_values():
    text = dump_config(TrainConfig())
    assert "eps_low" not in text and "output_dir" not in text and "data" not in text
    assert load_config(None) == TrainConfig()
