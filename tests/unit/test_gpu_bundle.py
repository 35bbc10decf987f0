"""benchmarks/gpu_bundle.py: which packages travel to the GPU machine, and the check there.

The closure is walked on requirement strings (a made-up graph, and this venv's real
metadata for lmgym itself); markers are read for the GPU image's Python, 3.12 on Linux."""

from __future__ import annotations

import importlib.metadata as metadata
import sys

import pytest
from paths import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_bundle  # noqa: E402
from gpu_bundle import IMAGE, applies, canonical, closure, requires_here, unmet  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402

GRAPH = {
    "root": ["Alpha>=1", "beta[fast]; python_version >= '3.12'", "windows-only; sys_platform == 'win32'",
             "old-python; python_version < '3.12'", "trainer-dep; extra == 'train'"],
    "alpha": ["Gamma_Lib", "root"],  # a cycle back to the root
    "beta": ["speedup; extra == 'fast'", "slow-path; extra == 'slow'"],
    "gamma-lib": ["image-pkg"],
    "image-pkg": ["hidden"],  # the image's own dependency: never walked
    "trainer-dep": [],
    "speedup": [],
}


def requires(name: str) -> list[str]:
    return GRAPH.get(canonical(name), [])


def test_canonical_names_compare_as_indexes_compare_them():
    assert canonical("Latex2Sympy2_Extended") == canonical("latex2sympy2-extended") == "latex2sympy2-extended"
    assert canonical("zope.interface") == "zope-interface"


def test_markers_are_read_for_the_gpu_image_not_this_interpreter():
    assert applies(Requirement("a; python_version >= '3.12'"), ())
    assert not applies(Requirement("a; python_version < '3.12'"), ())
    assert not applies(Requirement("a; sys_platform == 'win32'"), ())
    assert applies(Requirement("a; extra == 'train'"), ("train",))
    assert not applies(Requirement("a; extra == 'train'"), ("bench",))
    assert applies(Requirement("a"), ())


def test_the_closure_follows_extras_and_markers_and_stops_at_what_the_image_provides():
    found = closure("root", ("train",), requires, provided={"image-pkg"}.__contains__)
    assert sorted(found) == ["alpha", "beta", "gamma-lib", "image-pkg", "speedup", "trainer-dep"]
    assert [str(r) for r in found["alpha"]] == ["Alpha>=1"]
    assert "hidden" not in found and "slow-path" not in found and "root" not in found


def test_without_the_extra_its_requirements_stay_out():
    assert "trainer-dep" not in closure("root", (), requires)


def test_unmet_names_what_is_absent_and_what_is_too_old():
    requirements = {"datasets": ["datasets>=4.7.0"], "hub": ["hub<3,>=1.31", "hub>=0.34"], "fine": ["fine>=1"],
                    "unknown": ["unknown>=9"]}
    versions = {"hub": "1.20.0", "fine": "2.0", "unknown": ""}
    assert unmet(requirements, versions) == [
        "datasets: not installed (needed as datasets>=4.7.0)",
        "hub 1.20.0: needed as hub<3,>=1.31",
    ]


def test_lmgym_s_own_requirements_travel_and_the_image_s_torch_stack_stays():
    needed = closure("lmgym", ("train",), requires_here, provided=IMAGE.__contains__)
    travelling = {name for name in needed if name not in IMAGE}
    assert {"openai", "pydantic", "pydantic-core", "datasets", "orjson", "math-verify"} <= travelling
    assert not {"torch", "transformers", "numpy", "tokenizers", "peft"} & travelling
    assert {"torch", "transformers", "peft"} <= set(needed)
    assert all(name in IMAGE or metadata.version(name) for name in needed)  # each installed here, at a version


def test_the_check_reports_unmet_requirements_and_passes_with_what_is_installed(tmp_path, capsys):
    (tmp_path / "requirements.json").write_text('{"packaging": ["packaging>=1"], "no-such-dist-here": ["no-such-dist-here>=1"]}')
    assert gpu_bundle.check(tmp_path, imports=("packaging.version",)) == 0
    printed = capsys.readouterr().out
    assert "requirement not met: no-such-dist-here: not installed" in printed
    assert "1 requirement(s) not met" in printed


def test_the_check_stops_on_an_import_that_fails(tmp_path):
    (tmp_path / "requirements.json").write_text("{}")
    with pytest.raises(ModuleNotFoundError):
        gpu_bundle.check(tmp_path, imports=("no_such_module_here",))
