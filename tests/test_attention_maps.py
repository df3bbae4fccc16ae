"""Attention maps on demand: `seqlab translate RUN --attention DIR` writes one PNG and one SVG
per output (the beam's chosen hypothesis), and Translation.plot draws one from Python."""

import pytest

from seqlab.cli import main
from seqlab.config import load_config
from seqlab.train import train
from seqlab.translate import Translator

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run(tmp_path, tiny_config):
    out = tmp_path / "run"
    train(load_config(tiny_config), out, quiet=True)
    return out


def test_translate_draws_one_map_per_output(run, tmp_path, capsys):
    lines = tmp_path / "in.txt"
    lines.write_text("a b c\n\nd e f g\n")
    folder = tmp_path / "maps" / "new"
    assert main(["translate", str(run), "-i", str(lines), "--beam", "3",
                 "--attention", str(folder)]) == 0
    outputs = capsys.readouterr().out.splitlines()
    assert len(outputs) == 3
    assert sorted(p.name for p in folder.iterdir()) == ["0000.png", "0000.svg", "0002.png",
                                                        "0002.svg"]  # none for the empty line
    assert (folder / "0000.png").read_bytes()[:8] == PNG_MAGIC
    assert "<svg" in (folder / "0002.svg").read_text()[:500]
    # n-best: one map per hypothesis
    assert main(["translate", str(run), "-i", str(lines), "--beam", "3", "--n-best", "2",
                 "--attention", str(tmp_path / "nbest")]) == 0
    assert {p.name for p in (tmp_path / "nbest").glob("*.png")} == {
        "0000_0.png", "0000_1.png", "0002_0.png", "0002_1.png"}


def test_attention_folder_errors_come_before_decoding(run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["translate", str(run), "-i", str(blocker), "--attention", str(blocker)]) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_translation_plot_rows_are_the_output_and_its_eos(run, tmp_path):
    translator = Translator.from_checkpoint(run, device="cpu")
    [[t]] = translator.translate_nbest(["a b c"], beam_size=2, with_attention=True)
    assert t.attention.shape == (len(t.tokens) + 1, len(t.src_tokens))  # ended with <eos>
    path = t.plot(tmp_path / "one.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert path.with_suffix(".svg").exists()
    [[plain]] = translator.translate_nbest(["a b c"], beam_size=2)
    with pytest.raises(ValueError, match="with_attention=True"):
        plain.plot(tmp_path / "none.png")


def test_training_draws_the_alignment_as_it_emerges(tmp_path, tiny_config):
    """train.attention_maps 2: at each of the 3 validations (steps 10, 20, 30) the maps of
    the same 2 validation sentences, and a GIF per sentence with one frame per validation."""
    from PIL import Image

    out = tmp_path / "run"
    train(load_config(tiny_config, ["train.attention_maps=2"]), out, quiet=True)
    folder = out / "attention"
    assert sorted(p.name for p in folder.glob("*.png")) == [
        f"step-{s:06d}-{k}.png" for s in (10, 20, 30) for k in (0, 1)]
    for k in (0, 1):
        gif = Image.open(folder / f"sentence-{k}.gif")
        assert gif.n_frames == 3
    plain = tmp_path / "plain"
    train(load_config(tiny_config), plain, quiet=True)
    assert not (plain / "attention").exists()  # off by default
