"""Registers the model ``dmoe`` with lm-evaluation-harness, so that the harness's own command
line serves it: ``lm_eval --model dmoe --model_args 'policy=JESA(0.9,8)' --tasks ...``.

lm-evaluation-harness 0.4 discovers no plugin entry points, but its model registry
(``lm_eval.api.registry.model_registry``) accepts lazy placeholders: ``"module:Class"``
strings imported on first use. The file ``dmoe_lm_eval_hook.pth`` in site-packages imports
this module at every Python start-up, which costs nothing measurable: it imports nothing
beyond :mod:`sys` and puts a finder on :data:`sys.meta_path`. When ``lm_eval.api.registry``
has been executed, the finder registers ``"dmoe"`` -> :data:`MODEL_TARGET`, first importing
the harness's ``lm_eval.models`` (its own placeholders: the harness's ``get_model`` imports
them only into an empty registry, so without them ``--model hf`` would be unknown). Neither
torch nor the harness nor ``dmoe`` is imported before the harness asks for the model.

Installation: a wheel (``pip install dmoe``) puts the .pth into site-packages. An editable
install cannot (setuptools' editable wheels carry only their own path file), so
``scripts/install.sh`` runs ``python -m dmoe_lm_eval_hook install``, which copies the .pth
there; ``python -m dmoe_lm_eval_hook uninstall`` removes it, ``python -m dmoe_lm_eval_hook
status`` says where it is. Without the .pth, ``dmoe lm-eval ...`` runs the harness with the
model registered, and in Python ``import dmoe.integrations.lm_eval`` registers it.
"""

import sys

__all__ = ["MODEL_NAME", "MODEL_TARGET", "REGISTRY_MODULE", "PTH_NAME", "register", "install_finder", "main"]

#: The model name the harness knows dmoe by (``--model dmoe``).
MODEL_NAME = "dmoe"
#: The lazy placeholder: imported by the harness when ``--model dmoe`` is asked for.
MODEL_TARGET = "dmoe.integrations.lm_eval:DMoELM"
#: The harness module holding ``model_registry``.
REGISTRY_MODULE = "lm_eval.api.registry"
#: The start-up file in site-packages that imports this module.
PTH_NAME = "dmoe_lm_eval_hook.pth"


def register(registry_module) -> bool:
    """Register :data:`MODEL_NAME` -> :data:`MODEL_TARGET` in ``registry_module.model_registry``
    (after importing the harness's own models); a name already registered is left as it is.

    Args:
        registry_module: the executed ``lm_eval.api.registry`` module.

    Returns:
        True when ``dmoe`` is registered afterwards; False for a harness without a
        ``model_registry`` that takes placeholders (lm-evaluation-harness < 0.4.9).
    """
    registry = getattr(registry_module, "model_registry", None)
    if registry is None or not hasattr(registry, "register"):
        return False
    import lm_eval.models  # noqa: F401 - the harness's own placeholders (see the module docstring)

    if MODEL_NAME not in registry:
        registry.register(MODEL_NAME, target=MODEL_TARGET)
    return True


def _register_quietly(module) -> None:
    """:func:`register`, never failing the harness's import: a failure is a warning."""
    try:
        register(module)
    except Exception as exc:  # noqa: BLE001 - a start-up hook must not break the harness
        import warnings

        warnings.warn(f"dmoe: could not register the lm-evaluation-harness model `dmoe`: {exc!r}", stacklevel=2)


class _PostExecLoader:
    """Wraps the registry module's loader: runs it, then registers (other attributes are the
    wrapped loader's)."""

    def __init__(self, loader) -> None:
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        _register_quietly(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _RegistryFinder:
    """A :data:`sys.meta_path` finder that answers only for :data:`REGISTRY_MODULE`: the spec
    the other finders give, its loader wrapped by :class:`_PostExecLoader`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != REGISTRY_MODULE:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if isinstance(finder, _RegistryFinder) or find is None:
                continue
            spec = find(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _PostExecLoader(spec.loader)
        return spec


def install_finder() -> None:
    """Put the finder first on :data:`sys.meta_path` (once); when the registry is already
    imported, register now instead."""
    module = sys.modules.get(REGISTRY_MODULE)
    if module is not None:
        _register_quietly(module)
    elif not any(isinstance(f, _RegistryFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _RegistryFinder())


def main(argv=None) -> int:
    """``python -m dmoe_lm_eval_hook {install,uninstall,status} [--site-dir DIR]``: copy the
    .pth beside this module into site-packages (default this interpreter's purelib), remove
    it, or say where it is. Returns the exit status."""
    import argparse
    import shutil
    import sysconfig
    from pathlib import Path

    parser = argparse.ArgumentParser(
        prog="python -m dmoe_lm_eval_hook",
        description="Install the start-up file that registers the lm-evaluation-harness model `dmoe`.")
    parser.add_argument("action", choices=["install", "uninstall", "status"])
    parser.add_argument("--site-dir", default=None, help="site-packages directory (default: this interpreter's)")
    args = parser.parse_args(argv)
    site_dir = Path(args.site_dir or sysconfig.get_paths()["purelib"])
    dest = site_dir / PTH_NAME
    source = Path(__file__).with_name(PTH_NAME)
    if args.action == "install":
        if not site_dir.is_dir():
            parser.error(f"--site-dir: {str(site_dir)!r} is not a directory")
        if not source.is_file():
            parser.error(f"{str(source)!r} is missing: reinstall dmoe")
        if source.resolve() != dest.resolve():
            shutil.copyfile(source, dest)
        print(f"installed {dest}: `lm_eval --model dmoe ...` works in this environment")
    elif args.action == "uninstall":
        if dest.is_file():
            dest.unlink()
            print(f"removed {dest}")
        else:
            print(f"no {dest}")
    else:
        print(f"installed: {dest}" if dest.is_file() else f"not installed (no {dest})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
else:
    install_finder()
