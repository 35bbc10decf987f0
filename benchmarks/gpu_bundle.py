"""What `benchmarks/gpu_run.sh` needs on a lent GPU machine that has no internet, packed here.

The device tool's GPU machines (README: "A GPU, sometimes") hold an image with torch,
transformers, peft, accelerate and much else, but not TRL, datasets, openai, pydantic and
the rest of what lmgym and the benchmark import, and they cannot download. Device time is
short (15 minutes a task, a machine's start included), so a first call that stops on a
missing package costs a good part of it. This script, run here, writes `.gpu-bundle/`:

    wheels/             the wheels of every package that lmgym[train,bench] needs (as
                        installed in this venv, at these versions) and the image lacks, for
                        the image's Python (3.12, x86-64 manylinux)
    requirements.json   every requirement of that closure, for `--check` there
    smollm2/            SmolLM2-135M-Instruct's configuration and tokenizer (chat template
                        included), read from the embedded GGUF: the benchmark's random
                        models are built on them, no weights travel

Then one device call runs the benchmark (README, "benchmarks/gpu_vs_trl.py on one GPU"):

    .venv/bin/python benchmarks/gpu_bundle.py
    device run: command "bash benchmarks/gpu_run.sh", carry [".gpu-bundle"], timeout_s 590

There, `gpu_run.sh` installs the wheels into /tmp/site, runs `gpu_bundle.py --check` (every
requirement of the closure against what is importable there; fails at once where an import
fails) and then the benchmark, one model shape per process, writing each shape's results
to $OUT as it finishes.

The image's packages are as the device library's KINDS.md read them on 2026-11-17, with the
versions a session's `pip list` saw there: if the image changes, `--check` says what no
longer fits before the benchmark starts.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

ROOT = Path(__file__).resolve().parent.parent
BUNDLE = ROOT / ".gpu-bundle"
ROOTS = ("lmgym", ("train", "bench"))  # the distribution and extras the benchmark imports
TARGET = {  # the GPU image's interpreter, for requirement markers and wheel tags
    "python_version": "3.12", "python_full_version": "3.12.3", "implementation_name": "cpython",
    "platform_python_implementation": "CPython", "sys_platform": "linux", "platform_system": "Linux",
    "platform_machine": "x86_64", "os_name": "posix",
}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
# On the image (KINDS.md, 2026-11-17); a version where a session's pip list gave one.
IMAGE = dict.fromkeys("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft
pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split(), "")
IMAGE.update({"accelerate": "1.15.0", "huggingface-hub": "1.33.0", "numpy": "2.5.2", "safetensors": "0.8.0",
              "tokenizers": "0.23.2", "torch": "2.11.0", "transformers": "5.17.0", "triton": "3.6.0",
              "sentencepiece": "0.2.2", "tiktoken": "0.14.0"})


def canonical(name: str) -> str:
    """A distribution's name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def applies(requirement: Requirement, extras: Iterable[str]) -> bool:
    """Whether `requirement` holds on the target interpreter for a distribution installed
    with `extras` (an unconditional one always does)."""
    if requirement.marker is None:
        return True
    environment = {**default_environment(), **TARGET}
    return any(requirement.marker.evaluate({**environment, "extra": extra}) for extra in ("", *extras))


def closure(root: str, extras: Iterable[str], requires: Callable[[str], list[str]],
            provided: Callable[[str], bool] = lambda name: False) -> dict[str, list[Requirement]]:
    """Every distribution that `root[extras]` needs on the target, each with the requirements
    on it (`requires(name)` lists a distribution's requirement strings, as
    importlib.metadata.requires does). A `provided` distribution is listed but not expanded:
    it comes with its own dependencies (the image's, not this venv's versions of them).
    The root itself is not listed."""
    found: dict[str, list[Requirement]] = {}
    todo = [(root, tuple(extras))]
    expanded: set[tuple[str, tuple[str, ...]]] = set()
    while todo:
        name, with_extras = todo.pop()
        if (canonical(name), with_extras) in expanded or (name != root and provided(canonical(name))):
            continue
        expanded.add((canonical(name), with_extras))
        for requirement in map(Requirement, requires(name)):
            if applies(requirement, with_extras) and canonical(requirement.name) != canonical(root):
                found.setdefault(canonical(requirement.name), []).append(requirement)
                todo.append((requirement.name, tuple(sorted(requirement.extras))))
    return found


def unmet(requirements: dict[str, list[str]], versions: dict[str, str | None]) -> list[str]:
    """What does not fit: a needed distribution that is absent, or one whose version fails a
    requirement on it. `versions` maps canonical names to what is installed (None: absent;
    "": present, version unknown, taken to fit)."""
    problems = []
    for name, specs in sorted(requirements.items()):
        version = versions.get(name)
        if version is None:
            problems.append(f"{name}: not installed (needed as {', '.join(sorted(set(specs)))})")
            continue
        if not version:
            continue
        try:
            parsed = Version(version)
        except InvalidVersion:
            continue
        failed = sorted({s for s in specs if not Requirement(s).specifier.contains(parsed, prereleases=True)})
        if failed:
            problems.append(f"{name} {version}: needed as {', '.join(failed)}")
    return problems


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def requires_here(name: str) -> list[str]:
    """A distribution's requirement strings as installed in this venv ([] if it is not)."""
    try:
        return metadata.requires(name) or []
    except metadata.PackageNotFoundError:
        return []


def plan() -> tuple[dict[str, list[str]], dict[str, str]]:
    """The closure's requirements (name -> requirement strings), and what travels: each
    needed distribution the image lacks, at the version installed here. The image's own
    packages are not expanded: their dependencies are the image's."""
    needed = closure(ROOTS[0], ROOTS[1], requires_here, provided=IMAGE.__contains__)
    requirements = {name: [str(r) for r in reqs] for name, reqs in needed.items()}
    versions = {name: installed_version(name) for name in needed}
    missing_here = [name for name, version in versions.items() if version is None]
    if missing_here:
        raise SystemExit(f"not installed in this venv: {', '.join(missing_here)} (run: .venv/bin/pip install -e '.[bench]', as make bench does)")
    travelling = {name: version for name, version in versions.items() if name not in IMAGE}
    return requirements, travelling


def download(travelling: dict[str, str], folder: Path, python_version: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.whl"):
        stale.unlink()
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", *platforms, "-d", str(folder),
               *(f"{name}=={version}" for name, version in sorted(travelling.items()))]
    subprocess.run(command, check=True)


def prepare(folder: Path, python_version: str) -> None:
    requirements, travelling = plan()
    image_misfits = unmet({n: s for n, s in requirements.items() if n in IMAGE}, IMAGE)
    download(travelling, folder / "wheels", python_version)
    (folder / "requirements.json").write_text(json.dumps(requirements, indent=1, sort_keys=True))
    from gpu_vs_trl import smollm2_base  # here, not at the top: it sets HF_HUB_OFFLINE for its process

    smollm2_base(folder / "smollm2")
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    print(f"{folder}: {len(travelling)} wheels for Python {python_version}, SmolLM2's config and tokenizer; "
          f"{size / 2**20:.1f} MiB (a device call carries 64 MiB)")
    for problem in image_misfits:
        print(f"  the image's known version may not fit: {problem}")


def check(folder: Path, imports: Iterable[str] = ("trl", "lmgym.train.session")) -> int:
    """On the GPU machine: what the closure needs against what is installed, printed, then
    `imports` (what the benchmark's processes import): one that fails raises, before the
    benchmark starts."""
    requirements = json.loads((folder / "requirements.json").read_text())
    problems = unmet(requirements, {name: installed_version(name) for name in requirements})
    for problem in problems:
        print(f"requirement not met: {problem}")
    versions = ", ".join(f"{n} {installed_version(n)}" for n in ("torch", "transformers", "trl", "peft", "datasets"))
    print(f"python {sys.version.split()[0]}; {versions}; {len(problems)} requirement(s) not met")
    for module in imports:
        importlib.import_module(module)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=BUNDLE, help="the bundle's folder (default: .gpu-bundle)")
    parser.add_argument("--python-version", default=TARGET["python_version"],
                        help="the wheels' Python (default: the GPU image's, 3.12)")
    parser.add_argument("--check", action="store_true", help="on the GPU machine: check the installed packages")
    args = parser.parse_args()
    if args.check:
        raise SystemExit(check(args.out))
    prepare(args.out, args.python_version)


if __name__ == "__main__":
    main()
