import pytest
import torch

torch.set_num_threads(1)  # tiny models: one thread is fastest and immune to oversubscription


def zero_filled_in_backward(loss) -> int:
    """Elements that back-propagation from `loss` fills with zeros (aten fill_ / zero_)."""
    import math

    from torch.profiler import profile

    with profile(record_shapes=True) as prof:
        loss.backward()
    return sum(math.prod(e.input_shapes[0]) for e in prof.events()
               if e.name in ("aten::fill_", "aten::zero_") and e.input_shapes
               and e.input_shapes[0])


@pytest.fixture
def tiny_files(tmp_path):
    """A small reverse task written as parallel files: PREFIX.src / PREFIX.tgt."""
    from seqlab.synthetic import make_dataset

    prefixes = {}
    for split, n in (("train", 600), ("valid", 40), ("test", 40)):
        pairs = make_dataset("reverse", n, seed=0, split=split)
        prefix = tmp_path / "data" / split
        prefix.parent.mkdir(exist_ok=True)
        (prefix.parent / f"{split}.src").write_text("".join(s + "\n" for s, _ in pairs))
        (prefix.parent / f"{split}.tgt").write_text("".join(t + "\n" for _, t in pairs))
        prefixes[split] = str(prefix)
    return prefixes


TINY = """\
data:
  train: {train}
  valid: {valid}
  test: {test}
  src: src
  tgt: tgt
tokenizer:
  kind: word
model:
  cell: gru
  embedding_size: 16
  hidden_size: 32
  attention: general
  dropout: 0.1
train:
  batch_tokens: 400
  lr: 0.005
  max_steps: 30
  log_every: 10
  valid_every: 10
  valid_samples: 1
search:
  batch_size: 16
"""


@pytest.fixture
def tiny_config(tmp_path, tiny_files):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.format(**tiny_files))
    return path
