"""seqlab: recurrent sequence learning (seq2seq, classification, language models, tagging,
forecasting).

    import seqlab
    cfg = seqlab.load_config("configs/multi30k_de_en.yaml")
    seqlab.train(cfg, "runs/de_en")
    seqlab.Translator.from_checkpoint("runs/de_en").translate(["Ein Hund läuft."])
    seqlab.Classifier.from_checkpoint("runs/nsmc_sentiment").predict(["재밌다"])
    seqlab.Generator.from_checkpoint("runs/shakespeare_char").generate("ROMEO:", 200)
    seqlab.Tagger.from_checkpoint("runs/korean_spacing").predict(["한남자가기타를치고있다."])

Names are imported on first use, so `import seqlab` is instant.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "Config": "seqlab.config", "load_config": "seqlab.config", "ConfigError": "seqlab.errors",
    "RNNCell": "seqlab.cells", "LSTMCell": "seqlab.cells", "GRUCell": "seqlab.cells",
    "Recurrent": "seqlab.recurrent", "Attention": "seqlab.attention",
    "Seq2Seq": "seqlab.model", "build_model": "seqlab.model",
    "train": "seqlab.train", "Translator": "seqlab.translate",
    "Classifier": "seqlab.problems.classify", "Generator": "seqlab.problems.lm",
    "RNNClassifier": "seqlab.problems.classify", "RNNLanguageModel": "seqlab.problems.lm",
    "Tagger": "seqlab.problems.tag", "RNNTagger": "seqlab.problems.tag",
    "Forecaster": "seqlab.problems.forecast",
    "greedy_search": "seqlab.search", "beam_search": "seqlab.search", "sample": "seqlab.search",
    "Vocab": "seqlab.vocab", "DataError": "seqlab.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'seqlab' has no attribute {name!r}")
