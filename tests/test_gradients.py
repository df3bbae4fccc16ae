"""The gradient story's numbers: ||dL/dh_t|| against an independent computation (torch.nn's
own cells, retain_grad and backward), the vanishing profile of a plain RNN, and what the two
kinds of clipping do to the direction of an update."""

import pytest
import torch

from seqlab.gradients import flat_gradient, state_gradient_norms, update_cosine
from seqlab.recurrent import Recurrent

TORCH_CELLS = {"rnn": torch.nn.RNNCell, "lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}


def _reference_norms(layer: Recurrent, x, readout, target) -> torch.Tensor:
    """torch.nn's cell with the layer's weights, stepped here; each h_t kept with
    retain_grad(); one backward from the loss at the last step."""
    cell = TORCH_CELLS[layer.cell](layer.input_size, layer.hidden_size).double()
    cell.load_state_dict({k: getattr(layer.rnn, f"{k}_l0") for k in
                          ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
    B = x.shape[0]
    h = torch.zeros(B, layer.hidden_size, dtype=torch.float64)
    c = torch.zeros_like(h)
    states = []
    for t in range(x.shape[1]):
        if layer.cell == "lstm":
            h, c = cell(x[:, t], (h, c))
        else:
            h = cell(x[:, t], h)
        h.retain_grad()
        states.append(h)
    loss = ((states[-1] @ readout - target) ** 2).sum()
    loss.backward()
    return torch.stack([s.grad.norm() for s in states])


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_norms_equal_an_independent_autograd_computation(cell):
    torch.manual_seed(0)
    layer = Recurrent(cell, 3, 5, backend="cells").double()
    x = torch.randn(2, 9, 3, dtype=torch.float64)
    readout = torch.randn(5, dtype=torch.float64)
    target = torch.randn(2, dtype=torch.float64)
    norms = state_gradient_norms(layer, x, lambda h: ((h @ readout - target) ** 2).sum())
    want = _reference_norms(layer, x, readout, target)
    assert norms.shape == (9,)
    torch.testing.assert_close(norms, want, atol=1e-12, rtol=1e-10)
    assert all(p.grad is None for p in layer.parameters())  # nothing accumulated


def test_a_contracting_plain_rnn_forgets_geometrically():
    """W_hh = 0.5 x an orthogonal matrix (every singular value 0.5), no biases and small
    inputs (tanh' ~ 1): each step back multiplies the gradient's norm by 0.5, so 20 steps
    back it is 0.5**20 of the last step's, to within the tanh slope."""
    torch.manual_seed(1)
    layer = Recurrent("rnn", 4, 8, backend="cells").double()
    with torch.no_grad():
        w = torch.linalg.qr(torch.randn(8, 8, dtype=torch.float64))[0] * 0.5  # all sigma 0.5
        layer.rnn.weight_hh_l0.copy_(w)
        layer.rnn.bias_ih_l0.zero_()  # states stay near 0, where tanh' = 1
        layer.rnn.bias_hh_l0.zero_()
    x = 0.01 * torch.randn(1, 30, 4, dtype=torch.float64)
    norms = state_gradient_norms(layer, x, lambda h: h.sum())
    assert norms[-21] <= norms[-1] * 0.5 ** 20 * 1.0001
    assert norms[-21] >= norms[-1] * 0.5 ** 20 * 0.9  # and not much less: tanh' ~ 1
    assert bool((norms[1:] > norms[:-1]).all())  # growing towards the last step


def test_norm_clipping_keeps_the_direction_and_value_clipping_turns_it():
    torch.manual_seed(2)
    layer = Recurrent("rnn", 3, 6, backend="cells")
    params = list(layer.parameters())
    loss = layer(torch.randn(4, 7, 3))[0].pow(2).sum() * 100
    loss.backward()
    before = flat_gradient(params).clone()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    by_norm = flat_gradient(params).clone()
    assert by_norm.norm() == pytest.approx(1.0, rel=1e-5)
    assert update_cosine(before, by_norm) == pytest.approx(1.0, abs=1e-6)
    for p, g in zip(params, before.split([p.numel() for p in params]), strict=True):
        p.grad = g.view_as(p).clone()
    torch.nn.utils.clip_grad_value_(params, 0.01)
    by_value = flat_gradient(params)
    assert update_cosine(before, by_value) < 0.99


def test_the_story_picture_has_one_panel_per_condition(tmp_path):
    from seqlab.plots import plot_state_gradients

    torch.manual_seed(3)
    x = torch.randn(2, 25, 3)
    lines = {}
    for cell in ("rnn", "lstm", "gru"):
        layer = Recurrent(cell, 3, 6, backend="cells")
        lines[cell.upper()] = state_gradient_norms(layer, x, lambda h: h.sum()).tolist()
    path = plot_state_gradients({"at initialisation": lines, "멀수록 잊혀진다": lines},
                                tmp_path / "g.png")
    from matplotlib.image import imread

    image = imread(path)
    height, width = image.shape[:2]
    assert width > 1.8 * height  # two panels side by side
    assert image[..., :3].std() > 0.05  # not blank
    with pytest.raises(ValueError):
        plot_state_gradients({}, tmp_path / "none.png")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_a_stack_is_measured_at_its_top_layer(cell):
    """Two layers: the top layer's ||dL/dh_t|| equals torch.nn's cells stacked by hand."""
    torch.manual_seed(4)
    layer = Recurrent(cell, 3, 5, num_layers=2, backend="cells").double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    readout = torch.randn(5, dtype=torch.float64)
    norms = state_gradient_norms(layer, x, lambda h: (h @ readout).pow(2).sum())
    cells = []
    for k, size in enumerate((3, 5)):
        cell_k = TORCH_CELLS[cell](size, 5).double()
        cell_k.load_state_dict({n: getattr(layer.rnn, f"{n}_l{k}") for n in
                                ("weight_ih", "weight_hh", "bias_ih", "bias_hh")})
        cells.append(cell_k)
    zeros = torch.zeros(2, 5, dtype=torch.float64)
    state = [(zeros, zeros) if cell == "lstm" else zeros for _ in cells]
    tops = []
    for t in range(7):
        inp = x[:, t]
        for k, cell_k in enumerate(cells):
            state[k] = cell_k(inp, state[k])
            inp = state[k][0] if cell == "lstm" else state[k]
        inp.retain_grad()
        tops.append(inp)
    (tops[-1] @ readout).pow(2).sum().backward()
    torch.testing.assert_close(norms, torch.stack([h.grad.norm() for h in tops]),
                               atol=1e-12, rtol=1e-10)


def test_plot_gradients_of_a_language_model_run(tmp_path, capsys):
    from matplotlib.image import imread

    from seqlab.cli import main
    from seqlab.config import config_from_dict
    from seqlab.train import train

    cfg = config_from_dict({
        "problem": "lm",
        "data": {"synthetic": "alphabet", "synthetic_train_size": 200, "synthetic_eval_size": 20},
        "tokenizer": {"kind": "char"},
        "model": {"bidirectional": False, "cell": "lstm", "embedding_size": 8,
                  "hidden_size": 16, "dropout": 0.0, "encoder_layers": 2},
        "train": {"batch_tokens": 256, "lr": 0.01, "max_steps": 40, "max_epochs": 1000,
                  "log_every": 20, "valid_every": 40, "valid_samples": 0},
        "lm": {"bptt": 16}})
    train(cfg, tmp_path / "lm", quiet=True)
    out = tmp_path / "g.png"
    assert main(["plot", "gradients", str(tmp_path / "lm"), "--text", "abcdefghijkl",
                 "-o", str(out)]) == 0
    height, width = imread(out).shape[:2]
    assert width > 1.8 * height  # two panels: freshly initialised, after training
    import json

    numbers = json.loads(out.with_suffix(".json").read_text())
    [norms] = numbers["norms"]["after training"].values()
    assert len(norms) == len("abcdefghijkl") - 1  # one per state read before the last token
    assert main(["plot", "gradients", str(tmp_path / "lm"), "-o", str(out)]) == 2
    assert "--text" in capsys.readouterr().err
