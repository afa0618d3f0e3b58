"""Build hook: put ``dmoe_lm_eval_hook.pth`` at the top of the wheel (into site-packages).

The .pth registers the model ``dmoe`` with lm-evaluation-harness when the harness loads
(``src/dmoe_lm_eval_hook.py``), so that ``lm_eval --model dmoe ...`` works. A wheel installs
the files of its root into site-packages, where Python runs a .pth at start-up. An editable
install (``pip install -e``) gets only setuptools' own path file: ``scripts/install.sh`` then
runs ``python -m dmoe_lm_eval_hook install``. Everything else is in pyproject.toml.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "dmoe_lm_eval_hook.pth"
SOURCE = Path("src", PTH)


class BuildPyWithPth(build_py):
    """``build_py`` that also copies ``src/dmoe_lm_eval_hook.pth`` to the root of ``build_lib``
    (not in editable mode: an editable wheel installs no file of build_lib)."""

    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(str(SOURCE), str(Path(self.build_lib, PTH)), preserve_mode=False)

    def get_outputs(self, include_bytecode=True):
        outputs = super().get_outputs(include_bytecode)
        return outputs if self.editable_mode else [*outputs, str(Path(self.build_lib, PTH))]

    def get_source_files(self):
        return [*super().get_source_files(), str(SOURCE)]


setup(cmdclass={"build_py": BuildPyWithPth})
