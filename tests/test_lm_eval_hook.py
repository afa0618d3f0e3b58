"""The start-up hook behind a plain ``lm_eval --model dmoe`` (``src/dmoe_lm_eval_hook.py`` and
its ``.pth``): importing it imports nothing, it registers ``dmoe`` as a lazy placeholder beside
the harness's own models when the harness's registry loads, a left-over .pth without the
module is silent, ``python -m dmoe_lm_eval_hook`` installs and removes the .pth, and the
wheel ships it at its root (site-packages). The harness's command line itself:
``tests/test_lm_eval.py::test_plain_lm_eval_command_line_runs_dmoe``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PTH = ROOT / "src" / "dmoe_lm_eval_hook.pth"


def _run(args, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300, **kw)


def _site_with_pth(tmp_path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    shutil.copy(PTH, site)
    return site


def test_importing_the_hook_imports_nothing():
    code = ("import sys; before = set(sys.modules); import dmoe_lm_eval_hook; "
            "print(sorted(set(sys.modules) - before)); "
            "print(sum(type(f).__name__ == '_RegistryFinder' for f in sys.meta_path)); "
            "import dmoe_lm_eval_hook as h; h.install_finder(); "  # a second install adds no second finder
            "print(sum(type(f).__name__ == '_RegistryFinder' for f in sys.meta_path))")
    # -S: no site processing, so an installed dmoe_lm_eval_hook.pth (scripts/install.sh puts one
    # in the venv) has not imported the hook before the measurement
    proc = _run(["-S", "-c", code])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["['dmoe_lm_eval_hook']", "1", "1"]


def test_the_pth_imports_the_hook_and_nothing_heavy(tmp_path):
    site = _site_with_pth(tmp_path)
    code = (f"import site, sys; site.addsitedir({str(site)!r}); "
            "print('dmoe_lm_eval_hook' in sys.modules, [m for m in ('torch', 'numpy', 'lm_eval', 'dmoe') "
            "if m in sys.modules])")
    proc = _run(["-c", code])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.strip() == "True []"


def test_the_harness_registry_gets_dmoe_lazily_beside_its_own_models(tmp_path):
    pytest.importorskip("lm_eval")
    site = _site_with_pth(tmp_path)
    code = (f"import site, sys; site.addsitedir({str(site)!r}); "
            "from lm_eval.api.registry import get_model, model_registry; "
            "print('dmoe' in model_registry, 'hf' in model_registry, 'torch' in sys.modules, 'dmoe' in sys.modules); "
            "cls = get_model('dmoe'); "
            "import dmoe.integrations.lm_eval as m; print(cls is m.DMoELM, get_model('dmoe') is cls)")
    proc = _run(["-c", code])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.splitlines() == ["True True False False", "True True"]


def test_the_placeholder_names_the_backend_class():
    pytest.importorskip("lm_eval")
    import dmoe_lm_eval_hook as hook
    from dmoe.integrations import lm_eval as backend

    module, _, name = hook.MODEL_TARGET.partition(":")
    assert module == backend.__name__ and getattr(backend, name) is backend.DMoELM
    from lm_eval.api.registry import get_model

    assert get_model(hook.MODEL_NAME) is backend.DMoELM


def test_a_left_over_pth_without_the_module_is_silent(tmp_path):
    site = _site_with_pth(tmp_path)
    code = (f"import site, sys; sys.modules['dmoe_lm_eval_hook'] = None; site.addsitedir({str(site)!r}); "
            "print('ok')")
    proc = _run(["-c", code])
    assert proc.returncode == 0 and proc.stdout.strip() == "ok" and proc.stderr == "", proc.stderr


def test_install_status_uninstall(tmp_path):
    site = tmp_path / "site-packages"
    site.mkdir()
    proc = _run(["-m", "dmoe_lm_eval_hook", "install", "--site-dir", str(site)])
    assert proc.returncode == 0, proc.stderr
    assert (site / PTH.name).read_bytes() == PTH.read_bytes()
    assert "installed" in _run(["-m", "dmoe_lm_eval_hook", "status", "--site-dir", str(site)]).stdout
    proc = _run(["-m", "dmoe_lm_eval_hook", "uninstall", "--site-dir", str(site)])
    assert proc.returncode == 0 and not (site / PTH.name).exists()
    assert "not installed" in _run(["-m", "dmoe_lm_eval_hook", "status", "--site-dir", str(site)]).stdout
    proc = _run(["-m", "dmoe_lm_eval_hook", "install", "--site-dir", str(tmp_path / "missing")])
    assert proc.returncode == 2 and "--site-dir" in proc.stderr and not (tmp_path / "missing").exists()


def test_the_wheel_ships_the_pth_and_the_hook(tmp_path):
    """A regular install puts the .pth into site-packages: it is at the wheel's root (the
    editable wheel carries only setuptools' own path file; scripts/install.sh covers it)."""
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip("the build needs setuptools >= 77 (pyproject.toml)")
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, proj)
    shutil.copytree(ROOT / "src", proj / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    proc = _run(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
                 str(tmp_path / "dist"), str(proj)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("dmoe-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert "dmoe_lm_eval_hook.pth" in names and "dmoe_lm_eval_hook.py" in names
        assert z.read("dmoe_lm_eval_hook.pth") == PTH.read_bytes()
        assert "dmoe/integrations/lm_eval.py" in names


def test_install_into_a_venv_with_an_editable_path_file(tmp_path):
    """What scripts/install.sh does after ``pip install -e .``: in a fresh virtual environment
    whose only other start-up file is setuptools' editable path file (``__editable__.*.pth``,
    naming ``src``), ``python -m dmoe_lm_eval_hook install`` puts the .pth into that
    environment's site-packages and every later interpreter start imports the hook."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    assert purelib != Path(sysconfig.get_paths()["purelib"])
    (purelib / "__editable__.dmoe-0.1.0.pth").write_text(str(ROOT / "src") + "\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    proc = subprocess.run([str(python), "-m", "dmoe_lm_eval_hook", "install"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (purelib / PTH.name).read_bytes() == PTH.read_bytes()
    proc = subprocess.run([str(python), "-c", "import sys; print('dmoe_lm_eval_hook' in sys.modules)"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "True" and proc.stderr == "", proc.stderr
