"""Training configuration: one TOML file, dotted overrides on the command line.

    [model]        which policy to train, and its LoRA adapter
    [env]          which environment supplies prompts and rewards
    [sampling]     how rollouts are sampled from the policy
    [algorithm]    the GRPO-family objective (`lmgym.train.losses`, `lmgym.train.advantages`)
    [trainer]      optimiser, schedule, batch shapes, seed
    [engine]       where rollouts are sampled: in process, or a vLLM server
    [eval]         periodic greedy evaluation on held-out examples
    [checkpoint]   how often to save, how many to keep
    [logging]      where metrics go
    [audit]        the reward-hacking audit, live (`lmgym.train.live_audit`)
    [sft]          the supervised warm start run by `lmgym sft`

Every key has a default, so an empty file (or no file) is a valid config:

    config = load_config("configs/reverse-digits.toml", ["--trainer.lr", "1e-4", "eval.every=0"])
    (run_dir / "config.toml").write_text(dump_config(config))

Every mistake (missing file, a file that is not UTF-8 text, bad TOML, unknown key, bad
value, inf or nan) is raised as one `UsageError` whose message names the file, the dotted
key and the value, and says what is allowed: the reading, overriding and messages are
`lmgym.config`'s, shared with `lmgym eval --config`; this module holds training's models.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lmgym.config import ConfigModel, dump, load
from lmgym.train.live_audit import AuditConfig

Loss = Literal["grpo", "dr_grpo", "dapo", "gspo", "cispo"]
RewardScale = Literal["group", "batch", "none"]
LrSchedule = Literal["constant", "linear", "cosine"]
ImportanceSampling = Literal["none", "tis", "mis"]
ToolFormatName = Literal["auto", "hermes", "qwen3", "llama3", "mistral"]  # lmgym.parsers.tool_calls.FORMATS
Precision = Literal["float32", "bfloat16", "float16"]
AttnImplementation = Literal["sdpa", "eager", "flash_attention_2"]  # lmgym.train.models.ATTN_IMPLEMENTATIONS


# A step holds all its rollouts in memory at once: past this, a typo (group_size = 10**7)
# would sample until killed rather than fail when the config is read.
MAX_ROLLOUTS_PER_STEP = 65_536


class _Section(ConfigModel):
    """A section of the training config: unknown keys and inf/nan refused (`lmgym.config`)."""


# ------------------------------------------------------------------------------- sections


class LoraConfig(_Section):
    enabled: bool = Field(False, description="Train a LoRA adapter instead of every weight.")
    r: int = Field(8, gt=0, description="LoRA rank.")
    alpha: int = Field(16, gt=0, description="LoRA scaling numerator: the update is scaled by alpha / r.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Names of the linear layers that get an adapter.",
    )


class ModelConfig(_Section):
    name: str = Field(
        "tiny-llama",
        min_length=1,
        description=(
            '"tiny-llama" (a small randomly initialised model), "smollm2", a local model directory, or a Hugging Face '
            'hub id such as "Qwen/Qwen3-0.6B", read through the Hugging Face cache (HF_HOME, HF_HUB_CACHE; '
            "with HF_HUB_OFFLINE=1 an uncached id is an error saying how to fetch it)."
        ),
    )
    revision: str | None = Field(
        None, min_length=1, description="Hub ids: the branch, tag or commit to load; unset = main."
    )
    trust_remote_code: bool = Field(
        False,
        description="Let a hub or local model run the Python code it ships (its config's auto_map); off = such a model is refused.",
    )
    dtype: Precision = Field(
        "float32",
        description=(
            'Compute precision of training: "float32", "bfloat16" or "float16" (autocast; the weights and AdamW\'s '
            "state stay float32, float16 adds loss scaling, and the logprobs of the loss are computed in float32). "
            "Applies to GRPO steps; the SFT warm start computes in float32."
        ),
    )
    attn_implementation: AttnImplementation = Field(
        "sdpa",
        description=(
            'Attention kernel: "sdpa" (PyTorch\'s), "eager", or "flash_attention_2" (needs the flash-attn package, '
            "a GPU and dtype bfloat16 or float16)."
        ),
    )
    chat_template: str | None = Field(
        None,
        description='The chat template to render with: "chatml-tools" (ChatML with tool calls) or a Jinja file; unset = the model\'s own.',
    )
    tool_format: ToolFormatName = Field(
        "auto",
        description='How the model writes tool calls: "hermes", "qwen3", "llama3", "mistral", or "auto" (read from the chat template).',
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="LoRA adapter settings.")

    @model_validator(mode="after")
    def _flash_attention_is_half_precision(self) -> ModelConfig:
        if self.attn_implementation == "flash_attention_2" and self.dtype == "float32":
            raise ValueError(
                'model.attn_implementation = "flash_attention_2" computes in bfloat16 or float16 only: '
                'set model.dtype = "bfloat16" (or "float16"), or use attn_implementation = "sdpa"'
            )
        return self

    def load_options(self) -> dict[str, Any]:
        """What `lmgym.train.models.load_model(self.name, **options)` takes from this section."""
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code, "attn_implementation": self.attn_implementation}

    def saved_load_options(self) -> dict[str, Any]:
        """What `load_model` takes from this section for a folder this run saved (sft_model/,
        final/): the same code and attention kernel; `revision` named a hub commit, not it."""
        return {"trust_remote_code": self.trust_remote_code, "attn_implementation": self.attn_implementation}


class EnvConfig(_Section):
    name: str = Field("reverse-digits", min_length=1, description="Environment name, as in `lmgym list`.")
    args: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the environment's loader.")


class SamplingConfig(_Section):
    temperature: float = Field(1.0, gt=0.0, description="Sampling temperature of training rollouts.")
    top_p: float = Field(
        1.0, gt=0.0, le=1.0, description="Nucleus sampling: keep the smallest token set with this much mass."
    )
    max_tokens: int = Field(16, gt=0, description="Most tokens generated per completion; longer ones are truncated.")
    stop: list[str] = Field(default_factory=list, description="Strings that end a completion.")


class AlgorithmConfig(_Section):
    loss: Loss = Field("grpo", description="Policy loss variant (see `lmgym.train.losses`).")
    group_size: int = Field(8, description="Completions sampled per prompt; advantages compare within a group.")
    prompts_per_step: int = Field(
        8, gt=0, description="Prompts per step; a step has prompts_per_step * group_size rollouts (at most 65,536)."
    )
    eps_low: float | None = Field(
        None, ge=0.0, description="Lower clip range: ratios below 1 - eps_low are clipped; unset = the loss's default. Not for cispo."
    )
    eps_high: float | None = Field(
        None, ge=0.0, description="Upper clip range: ratios above 1 + eps_high are clipped; unset = the loss's default. Not for cispo."
    )
    cispo_cap: float = Field(
        5.0,
        gt=0.0,
        description=(
            "cispo: the largest importance weight pi/pi_old, an absolute value (not 1 + eps): "
            "TRL's epsilon_high for its cispo loss is this same number."
        ),
    )
    dr_grpo_length: int | None = Field(
        None,
        gt=0,
        description=(
            "dr_grpo: the constant T each completion's token sum is divided by (TRL: max_completion_length); "
            "unset = sampling.max_tokens."
        ),
    )
    beta: float = Field(0.0, ge=0.0, description="KL coefficient towards the initial policy; 0 = no reference model.")
    scale_rewards: RewardScale = Field(
        "group", description="Divide centred rewards by the group's std, the batch's std, or nothing."
    )
    dynamic_sampling: bool = Field(False, description="Drop groups whose rewards are all equal (DAPO).")
    mask_truncated: bool = Field(False, description="Exclude completions cut off at max_tokens from the loss (DAPO).")
    num_iterations: int = Field(
        1, ge=1, description="Optimiser passes over each batch, against the stored old logprobs (GRPO's mu)."
    )
    max_off_policy_steps: int = Field(
        0,
        ge=0,
        description=(
            "Asynchronous generation: batches may be sampled by weights up to this many steps old while the "
            "trainer trains; 0 = synchronous (generate, then train)."
        ),
    )
    importance_sampling: ImportanceSampling = Field(
        "none",
        description=(
            "Per-token correction pi_old / mu for tokens sampled by stale weights or another sampler: "
            "tis (truncated at is_cap), mis (tokens outside [1/is_cap, is_cap] masked), none."
        ),
    )
    is_cap: float = Field(2.0, gt=1.0, description="Cap of the importance weights (tis) or width of the kept band (mis).")

    @field_validator("group_size")
    @classmethod
    def _group_of_two(cls, value: int) -> int:
        if value < 2:
            raise ValueError("group_size must be at least 2 (advantages compare completions of one prompt)")
        return value

    @property
    def rollouts_per_step(self) -> int:
        return self.prompts_per_step * self.group_size


class TrainerConfig(_Section):
    lr: float = Field(1e-5, gt=0.0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    warmup_steps: int = Field(0, ge=0, description="Steps of linear warm-up from 0 to lr.")
    lr_schedule: LrSchedule = Field("constant", description="Learning rate after warm-up, until max_steps.")
    max_grad_norm: float = Field(1.0, gt=0.0, description="Clip the global gradient norm to this.")
    micro_batch_size: int = Field(
        8, gt=0, description="Rollouts per forward/backward pass; gradients accumulate over a step."
    )
    max_steps: int = Field(100, gt=0, description="Optimiser steps (one batch of rollouts each).")
    max_seq_len: int = Field(512, gt=0, description="Most tokens of prompt plus completion.")
    seed: int = Field(0, description="Seed for sampling, data order and initialisation.")
    device: str = Field("auto", description='Where to train and sample: "auto" (cuda when available, else cpu), "cpu", "cuda", "cuda:1".')
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute each layer's activations in the backward pass instead of keeping them: less memory, about a third more compute.",
    )
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description='With several processes (--nproc): "ddp" gives every rank a full copy of the weights, gradients and '
        'optimizer state; "fsdp" shards all three over the ranks (FSDP2, one unit per decoder layer), for models '
        "whose training state does not fit one device. Both make the update one process makes with the whole batch.",
    )


class EngineConfig(_Section):
    kind: Literal["local", "vllm"] = Field(
        "local", description='Where rollouts are sampled: "local" (in this process, sharing the weights) or "vllm" (a vLLM server fed the weights after each step).'
    )
    generation: Literal["auto", "dynamic", "static", "compiled"] = Field(
        "auto",
        description='local: how the in-process engine runs the model each token: "dynamic" (a KV cache grown a token at a time), '
        '"static" (a cache preallocated for prompt + max_tokens), "compiled" (static, with the one-token step replayed as a CUDA '
        'graph: a GPU only; elsewhere it samples as "static" and says so); "auto" = compiled on CUDA, dynamic otherwise. '
        "All sample the same tokens with the same logprobs, up to float rounding.",
    )
    base_url: str | None = Field(
        None,
        description="vllm: attach to this running server (started on the initial weights) instead of launching one; several, "
        "comma-separated, for several trainer ranks: rank r samples from the (r mod count)-th, rank 0 publishes to all.",
    )
    python: str | None = Field(None, description="vllm: the python of vLLM's own virtual environment; unset = $LMGYM_VLLM_PYTHON or the one benchmarks/setup_vllm.sh makes.")
    dtype: str = Field("float32", description="vllm: weights dtype; float32 keeps its logprobs within ~1e-5 of the trainer's (bfloat16: up to 0.2).")
    max_model_len: int = Field(1024, gt=0, description="vllm: longest prompt plus completion it serves.")
    kv_cache_gb: float = Field(1.0, gt=0, description="vllm (CPU build): GB of KV cache (VLLM_CPU_KVCACHE_SPACE).")
    keep_versions: int = Field(2, ge=1, description="vllm with LoRA: adapter versions kept loaded (requests in flight may use the previous one).")

    @field_validator("base_url")
    @classmethod
    def _names_a_server(cls, value: str | None) -> str | None:
        if value is not None and not server_urls(value):
            raise ValueError("engine.base_url names no server; give one URL or several separated by commas, or unset it")
        return value

    @property
    def servers(self) -> list[str]:
        """The servers `base_url` lists (none: lmgym starts one)."""
        return server_urls(self.base_url or "")


def server_urls(base_url: str) -> list[str]:
    """`engine.base_url` as the URLs it lists: one, or several separated by commas."""
    return [url.strip().rstrip("/") for url in base_url.split(",") if url.strip()]


class HeldOutEvalConfig(_Section):
    """`[eval]` of training: greedy evaluation every N steps (not `lmgym.eval.config.EvalConfig`,
    the settings of an `lmgym eval` run)."""

    every: int = Field(10, ge=0, description="Evaluate every this many steps; 0 = never.")
    num_examples: int = Field(100, gt=0, description="Held-out examples per evaluation.")
    temperature: float = Field(0.0, ge=0.0, description="Sampling temperature of evaluation; 0 = greedy.")


class CheckpointConfig(_Section):
    every: int = Field(50, ge=0, description="Save a checkpoint every this many steps; 0 = never.")
    keep: int = Field(2, ge=1, description="Most recent checkpoints kept on disk.")


class LoggingConfig(_Section):
    output_dir: str | None = Field(None, description="Run directory (config, metrics, checkpoints); unset = a new one.")
    jsonl: bool = Field(True, description="Append one JSON line of metrics per step to metrics.jsonl.")
    tensorboard: bool = Field(False, description="Also write TensorBoard scalars (needs `tensorboard`).")
    wandb: bool = Field(False, description="Also log to Weights & Biases (needs `wandb`).")
    wandb_project: str = Field("lmgym", description="Weights & Biases project name.")
    console_every: int = Field(1, ge=0, description="Print a one-line summary every this many steps; 0 = never.")
    samples_per_step: int = Field(
        2, ge=0, description="Rollouts of each step (one per group) saved to samples.jsonl for `lmgym view`; 0 = none."
    )


class SFTConfig(_Section):
    warm_start: bool = Field(False, description="`lmgym train` runs this SFT first, then RL from its result.")
    data: str | None = Field(
        None,
        description=(
            'A .jsonl of {"prompt": messages, "completion": messages} or {"messages": [...]} rows; '
            "unset = the environment's sft_examples()."
        ),
    )
    epochs: int = Field(1, gt=0, description="Passes over the SFT data.")
    lr: float = Field(1e-3, gt=0.0, description="SFT learning rate.")
    batch_size: int = Field(32, gt=0, description="Examples per SFT step.")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many SFT steps; unset = run every epoch.")


class TrainConfig(_Section):
    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy.")
    env: EnvConfig = Field(default_factory=EnvConfig, description="The environment.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Rollout sampling.")
    algorithm: AlgorithmConfig = Field(default_factory=AlgorithmConfig, description="The RL objective.")
    trainer: TrainerConfig = Field(default_factory=TrainerConfig, description="Optimisation.")
    engine: EngineConfig = Field(default_factory=EngineConfig, description="The rollout engine.")
    eval: HeldOutEvalConfig = Field(default_factory=HeldOutEvalConfig, description="Held-out evaluation.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpoints.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Metrics sinks.")
    sft: SFTConfig = Field(default_factory=SFTConfig, description="Supervised warm start.")
    audit: AuditConfig = Field(default_factory=AuditConfig, description="The reward-hacking audit, live.")

    @model_validator(mode="after")
    def _cispo_has_no_clip_range(self) -> TrainConfig:
        """cispo caps its weight at an absolute value; eps_high = 5 would silently mean 6 or 5
        depending on which library the number came from, so only cispo_cap is taken."""
        algorithm = self.algorithm
        if algorithm.loss == "cispo":
            for key in ("eps_low", "eps_high"):
                value = getattr(algorithm, key)
                if value is not None:
                    raise ValueError(
                        f"algorithm.{key} = {value} does not apply to algorithm.loss = \"cispo\", which caps the "
                        f"importance weight at algorithm.cispo_cap, an absolute value (TRL's epsilon_high for cispo "
                        f"is the same number); set that instead and unset {key}"
                    )
        return self

    @model_validator(mode="after")
    def _micro_batches_tile_a_step(self) -> TrainConfig:
        rollouts = self.algorithm.rollouts_per_step
        micro = self.trainer.micro_batch_size
        if rollouts > MAX_ROLLOUTS_PER_STEP:
            raise ValueError(
                f"the rollouts of a step, algorithm.prompts_per_step * algorithm.group_size = "
                f"{self.algorithm.prompts_per_step} * {self.algorithm.group_size} = {rollouts}, "
                f"must be at most {MAX_ROLLOUTS_PER_STEP:,}; lower one of them"
            )
        if rollouts % micro:
            raise ValueError(
                f"the rollouts of a step, algorithm.prompts_per_step * algorithm.group_size = "
                f"{self.algorithm.prompts_per_step} * {self.algorithm.group_size} = {rollouts}, "
                f"must be divisible by trainer.micro_batch_size = {micro}"
            )
        return self


# ------------------------------------------------------------------------- loading, dumping


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a TOML config (None = all defaults), apply dotted overrides such as
    `"--trainer.lr", "1e-5"` or `"trainer.lr=1e-5"`, validate (see `lmgym.config.load`)."""
    return load(TrainConfig, path, overrides)


def dump_config(train_config: TrainConfig) -> str:
    """The config as TOML, unset (None) values left out; `load_config` reads it back equal."""
    return dump(train_config)
