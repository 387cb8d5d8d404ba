"""The one scheme of cache keys (`results.fingerprint`), and the caches that use it: the decoded images, the
domain-feature classifier, the prior's codes and the `--help` texts."""

import numpy as np
import torch

from hf_autoencoders.results import fingerprint


def test_equal_parts_give_equal_keys_and_any_change_another():
    key = fingerprint("cache", 1, {"size": 28, "column": "image"}, torch.arange(6).reshape(2, 3))
    assert len(key) == 64 and int(key, 16) >= 0
    assert key == fingerprint("cache", 1, {"column": "image", "size": 28}, torch.arange(6).reshape(2, 3))  # dict order
    strided = torch.arange(6).reshape(2, 3).t().contiguous().t()  # the same values, laid out column by column
    assert not strided.is_contiguous() and key == fingerprint("cache", 1, {"size": 28, "column": "image"}, strided)
    others = [
        fingerprint("cache", 2, {"size": 28, "column": "image"}, torch.arange(6).reshape(2, 3)),  # a version
        fingerprint("cache", 1, {"size": 32, "column": "image"}, torch.arange(6).reshape(2, 3)),  # a setting
        fingerprint("cache", 1, {"size": 28, "column": "image"}, torch.arange(6).reshape(3, 2)),  # a shape
        fingerprint("cache", 1, {"size": 28, "column": "image"}, torch.arange(6.0).reshape(2, 3)),  # a dtype
        fingerprint("cache", 1, {"size": 28, "column": "image"}, torch.arange(1, 7).reshape(2, 3)),  # the values
    ]
    assert len({key, *others}) == 6
    assert fingerprint(b"ab", b"c") != fingerprint(b"a", b"bc") and fingerprint("ab") != fingerprint("a", "b")
    assert fingerprint(np.zeros(3, np.uint8)) != fingerprint(np.zeros(4, np.uint8))
    assert fingerprint(torch.zeros(2, dtype=torch.bfloat16)) != fingerprint(torch.zeros(2, dtype=torch.float16))


def test_the_caches_key_their_entries_with_it(tmp_path, monkeypatch):
    from hf_autoencoders.data.cache import CACHE_VERSION, DecodedCache
    from hf_autoencoders.evaluation import domain_features
    from hf_autoencoders.training.parsing import help_cache_file

    what = {"dataset": "x", "rows": 4}
    assert DecodedCache(tmp_path, what).data_path.stem == fingerprint("decoded images", CACHE_VERSION, what)[:24]
    images, labels = torch.rand(8, 1, 8, 8), torch.arange(8) % 2
    domain_features(images, labels, cache_dir=tmp_path, epochs=1, width=2, progress=False)
    settings = {"shape": [1, 8, 8], "seed": 0, "epochs": 1, "width": 2, "num_classes": 2}
    key = fingerprint("domain features", settings, images, labels)[:16]
    assert [p.name for p in tmp_path.glob("smallcnn-*")] == [f"smallcnn-1x8x8-seed0-{key}.safetensors"]
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "100")
    wide = help_cache_file("train")
    assert wide.parent == tmp_path / "hf_autoencoders" / "help" and wide != help_cache_file("train-prior")
    monkeypatch.setenv("COLUMNS", "60")
    assert help_cache_file("train") != wide
