"""Old module paths of the model package (issue 19): dmoe.model.load -> dmoe.model.sources,
dmoe.model.loader -> dmoe.model.dispatch. The same objects, with a DeprecationWarning."""

from __future__ import annotations

import importlib
import warnings

import pytest

import dmoe
import dmoe.model
from dmoe.model import dispatch, sources


@pytest.mark.parametrize("old_name, new", [("dmoe.model.load", sources), ("dmoe.model.loader", dispatch)])
def test_old_path_reexports_the_same_objects_with_a_warning(old_name, new):
    old = importlib.import_module(old_name)
    assert new.__all__ and sorted(dir(old)) == sorted(new.__all__)
    for name in new.__all__:
        with pytest.warns(DeprecationWarning, match=rf"`{old_name}\.{name}` moved to `{new.__name__}\.{name}`") as rec:
            obj = getattr(old, name)
        assert rec[0].filename == __file__
        assert obj is getattr(new, name)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        old.nope  # noqa: B018


def test_from_import_of_the_old_path_warns_at_the_importing_line():
    with pytest.warns(DeprecationWarning, match=r"moved to `dmoe\.model\.dispatch\.load_expert_model`") as rec:
        from dmoe.model.loader import load_expert_model
    assert rec[0].filename == __file__ and load_expert_model is dispatch.load_expert_model
    with pytest.warns(DeprecationWarning, match=r"moved to `dmoe\.model\.sources\.resolve_source`"):
        from dmoe.model.load import resolve_source
    assert resolve_source is sources.resolve_source


def test_public_names_are_unchanged_and_quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dmoe.load_moe_model is dispatch.load_moe_model is dmoe.model.load_moe_model
        assert dmoe.model.load_expert_model is dispatch.load_expert_model
        assert dmoe.model.resolve_source is sources.resolve_source
        assert dmoe.model.load_dense_model is sources.load_dense_model
        assert dmoe.model.inspect_checkpoint is dispatch.inspect_checkpoint
