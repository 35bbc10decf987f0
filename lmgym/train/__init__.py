"""Training: GRPO-family RL on the same environments `lmgym eval` runs, tools and turns included.

Why a layer of its own: training needs torch and a model in this process, evaluation needs
neither, so `import lmgym` (and `lmgym eval` against an API) never imports this package.
Environments do not know they are being trained: rollouts go through a `ModelClient` like
any other (`engines`), and what the trainer sees is exactly what was sampled (`tokens`).

    config.py           the TOML config and its dotted overrides
    models.py           tiny-llama, SmolLM2, saved folders, hub ids (hub.py; model_names.py: no torch)
    chat_templates.py   the templates lmgym writes; render.py: messages and tools to token ids
    template_check.py   does a template keep turns as prefixes and render tools (check-template)
    engines/            what samples rollouts: in process or a vLLM server (`RolloutEngine`)
    orchestrator.py     environment to batch: groups, rewards, advantages (advantages.py)
    tokens.py, batch.py the token layout of a trajectory, and the tensors a step trains on
    trainer.py          one optimiser step (losses.py, importance.py, logprobs.py, precision.py)
    loop.py             sample → step → publish → evaluate / log / checkpoint (checkpoint.py)
    session.py          a run built from its config, its directory, the SFT warm start (sft.py)
    distributed.py      torch.distributed data parallelism (fsdp.py: sharded); metrics.py where metrics go
    launch.py           what `--nproc N` checks before N processes start (no torch); torchrun.py starts them
    vllm_reachable.py   do the vLLM servers a run samples from answer (the launcher, then each rank)
    run_files.py        the names in a run directory (no torch)
    policy_client.py    a saved policy as a ModelClient, for `lmgym eval --model RUN_DIR/final`
"""
