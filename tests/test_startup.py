"""Start-up of ``dmoe run`` (issue 18): lazy imports and the caches of what every run read
or computed again (GGUF metadata, the build's checksum, routing co-activation)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import make_tiny_moe


def test_run_help_does_not_import_the_experiments():
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from dmoe.cli import main\n"
        "res = CliRunner().invoke(main, ['run', '--help'])\n"
        "assert res.exit_code == 0 and '--policy' in res.output, res.output\n"
        "heavy = [m for m in ('dmoe.experiments', 'matplotlib', 'scipy.stats', 'torch') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_reproduce_is_still_a_subcommand():
    from click.testing import CliRunner

    from dmoe.cli import main

    res = CliRunner().invoke(main, ["--help"])
    assert res.exit_code == 0 and "reproduce" in res.output
    res = CliRunner().invoke(main, ["reproduce", "--list"])
    assert res.exit_code == 0 and "fig5" in res.output


# ------------------------------------------------------------------ GGUF metadata


def _tiny_gguf(path, ffn=96, name="tiny"):
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name(name)
    w.add_feed_forward_length(ffn)
    w.add_tensor("x", np.zeros(4, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_gguf_metadata_is_read_once_and_rebuilt_when_bad(tmp_path, monkeypatch):
    from dmoe.model import sources as load

    f = tmp_path / "m.gguf"
    _tiny_gguf(f)
    src = load.resolve_source(f)
    cache = tmp_path / "cache"
    assert load.read_intermediate_size(src, cache) == 96
    entry = load._gguf_meta_path(src, cache)
    assert json.loads(entry.read_text())["feed_forward_length"] == 96

    def no_parse(source):
        raise AssertionError("the GGUF file was parsed again")

    monkeypatch.setattr(load, "_read_gguf_intermediate_size", no_parse)
    assert load.read_intermediate_size(src, cache) == 96  # from the cache
    monkeypatch.undo()
    for bad in ("{not json", json.dumps({"format": 1, "identity": {"other": 1}, "feed_forward_length": 7}),
                json.dumps({"format": 1, "identity": src.identity(), "feed_forward_length": -3})):
        entry.write_text(bad)
        assert load.read_intermediate_size(src, cache) == 96
        assert json.loads(entry.read_text())["feed_forward_length"] == 96
    # another file (other content): another entry
    g = tmp_path / "n.gguf"
    _tiny_gguf(g, ffn=128, name="other")
    src2 = load.resolve_source(g)
    assert load.read_intermediate_size(src2, cache) == 128
    assert load._gguf_meta_path(src2, cache) != entry


def test_gguf_metadata_cache_may_be_unwritable(tmp_path):
    from dmoe.model import sources as load

    f = tmp_path / "m.gguf"
    _tiny_gguf(f)
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert load.read_intermediate_size(load.resolve_source(f), blocker) == 96


# ------------------------------------------------------------------ build checksum


def test_build_checksum_is_verified_once_per_file_version(tmp_path, tiny_llama, monkeypatch):
    from dmoe.model.carved import build

    moe = make_tiny_moe(tiny_llama, 4)
    meta = build.save_moe_model(moe, tmp_path / "b", {"key": "k"})
    path = tmp_path / "b"
    build.load_built_model(path)
    stamp = path / ("model.safetensors" + build.VERIFIED_SUFFIX)
    assert json.loads(stamp.read_text())["sha256"] == meta["files"]["model.safetensors"]["sha256"]

    def no_hash(p):
        raise AssertionError("hashed again")

    monkeypatch.setattr(build, "_sha256_file", no_hash)
    build.load_built_model(path)
    monkeypatch.undo()
    # the same size, other bytes, a new mtime: hashed again, and the mismatch is reported
    st = path / "model.safetensors"
    data = bytearray(st.read_bytes())
    data[-3] ^= 0xFF
    st.write_bytes(bytes(data))
    os.utime(st, ns=(st.stat().st_atime_ns, st.stat().st_mtime_ns + 10**9))
    with pytest.raises(build.CacheCorruptError, match="sha256"):
        build.load_built_model(path)


# ------------------------------------------------------------------ co-activation


@pytest.fixture()
def tiny_moe_tok(tiny_llama, tiny_tokenizer):
    moe = make_tiny_moe(tiny_llama, 8, seed=3)
    moe.tokenizer = tiny_tokenizer
    return moe


def test_coactivation_cache(tiny_moe_tok, tmp_path, monkeypatch):
    from dmoe.model import coactivation_cache as cc
    from dmoe.runtime import routing

    direct = routing.routing_coactivation(tiny_moe_tok, top_k=3, max_tokens=150)
    first = cc.cached_coactivation(tiny_moe_tok, top_k=3, max_tokens=150, cache_dir=tmp_path)
    np.testing.assert_array_equal(first, direct)
    path = cc.coactivation_path(tiny_moe_tok, 3, max_tokens=150, cache_dir=tmp_path)
    assert path.is_file() and str(path).startswith(str(tmp_path))

    def no_run(*a, **k):
        raise AssertionError("computed again")

    monkeypatch.setattr(routing, "routing_coactivation", no_run)
    np.testing.assert_array_equal(cc.cached_coactivation(tiny_moe_tok, top_k=3, max_tokens=150, cache_dir=tmp_path),
                                  direct)
    monkeypatch.undo()
    # corrupt or malformed entries are computed again and rewritten
    for bad in (b"garbage", None):
        if bad is None:
            np.save(path, -np.ones((2, 8, 8)))
        else:
            path.write_bytes(bad)
        np.testing.assert_array_equal(
            cc.cached_coactivation(tiny_moe_tok, top_k=3, max_tokens=150, cache_dir=tmp_path), direct)
        np.testing.assert_array_equal(np.load(path), direct)
    # other settings: other entries
    assert cc.coactivation_path(tiny_moe_tok, 2, max_tokens=150, cache_dir=tmp_path) != path
    assert cc.coactivation_path(tiny_moe_tok, 3, max_tokens=100, cache_dir=tmp_path) != path
    with pytest.raises(ValueError, match="top_k"):
        cc.cached_coactivation(tiny_moe_tok, top_k=9, cache_dir=tmp_path)
    assert torch.is_tensor(tiny_moe_tok.expert_neurons)
