"""``python -m dmoe.experiments [NAME ...|all] --output DIR [--quick]`` (same as ``dmoe reproduce``)."""

from dmoe.experiments.cli import reproduce

if __name__ == "__main__":  # pragma: no cover
    reproduce(prog_name="python -m dmoe.experiments")
