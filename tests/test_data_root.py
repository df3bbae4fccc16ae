"""data.root: one setting says where a recipe's corpora lie."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqlab.config import DataConfig, config_from_dict, load_config
from seqlab.data import DataError
from seqlab.prepare import read_splits

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs").glob("*_*.yaml"))


def test_relative_prefixes_are_joined_to_root_and_absolute_ones_kept(tmp_path):
    d = DataConfig(root=str(tmp_path), train="corpus/train")
    assert d.path(d.train) == str(tmp_path / "corpus" / "train")
    assert d.path(str(tmp_path / "elsewhere")) == str(tmp_path / "elsewhere")
    assert d.path(None) is None
    assert DataConfig(train="corpus/train").path("corpus/train") == "corpus/train"


def test_splits_are_read_from_root(tmp_path):
    corpus = tmp_path / "corpora" / "toy"
    corpus.mkdir(parents=True)
    for split, n in (("train", 3), ("val", 2)):
        (corpus / f"{split}.de").write_text("".join(f"hallo {i}\n" for i in range(n)))
        (corpus / f"{split}.en").write_text("".join(f"hello {i}\n" for i in range(n)))
    raw = {"data": {"train": "toy/train", "valid": "toy/val", "src": "de", "tgt": "en"}}
    cfg = config_from_dict(raw, overrides=[f"data.root={tmp_path / 'corpora'}"])
    splits = read_splits(cfg)
    assert splits.train.src == ["hallo 0", "hallo 1", "hallo 2"]
    assert splits.valid.tgt == ["hello 0", "hello 1"]
    assert splits.test is None

    wrong = config_from_dict(raw, overrides=[f"data.root={tmp_path / 'nowhere'}"])
    with pytest.raises(DataError, match=str(tmp_path / "nowhere" / "toy" / "train")):
        read_splits(wrong)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipes_name_existing_files_under_their_root(recipe):
    cfg = load_config(recipe)
    d = cfg.data
    if cfg.problem == "forecast" and d.train is None:  # a series shipped inside statsmodels
        assert cfg.forecast.series in ("co2", "sunspots"), recipe.name
        return
    assert d.root == "../shared/data" and not Path(d.train).is_absolute()
    root = (REPO / d.root).resolve()
    if not root.is_dir():
        pytest.skip(f"{root} is not on this machine")
    for prefix in (d.train, d.valid, d.test):
        if prefix is None:  # NSMC holds its validation out of train; Shakespeare has no test
            continue
        if d.format == "parallel":
            for side in (d.src, d.tgt):
                assert (root / f"{prefix}.{side}").is_file(), (recipe.name, prefix, side)
        else:  # tsv, text: the name is the file
            assert (root / prefix).is_file(), (recipe.name, prefix)
