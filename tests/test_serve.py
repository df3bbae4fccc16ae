"""`seqlab serve`: the API of every problem shape against its predictor, the batcher (requests
that arrive together share one call, each caller gets its own answer), every kind of bad
request as a 4xx with one line, the server process (a bad run, a taken port, Ctrl-C), and the
page in headless Chromium (tests/test_serve_page.py)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from fastapi.testclient import TestClient

from seqlab.cli import main
from seqlab.config import ConfigError, config_from_dict
from seqlab.serve.app import create_app
from seqlab.serve.batching import Batcher, Busy, RequestTimeout
from seqlab.serve.limits import Limits
from seqlab.train import train
from seqlab.translate import Translator

torch.set_num_threads(1)

SENTENCES = ["a b c", "d e", "c c a b", "e d c b a", "b", "a a"]


def _train(tmp_path_factory, name: str, raw: dict):
    out = tmp_path_factory.mktemp(name) / "run"
    train(config_from_dict(raw, environment=False), out, quiet=True)
    return out


@pytest.fixture(scope="module")
def seq2seq_run(tmp_path_factory):
    """A tiny seq2seq with attention (reverse a list of letters; seconds of training)."""
    return _train(tmp_path_factory, "serve_seq2seq", {
        "data": {"synthetic": "reverse", "synthetic_train_size": 300, "synthetic_eval_size": 20},
        "tokenizer": {"kind": "word"},
        "model": {"embedding_size": 16, "hidden_size": 32, "dropout": 0.0,
                  "attention": "general"},
        "train": {"batch_tokens": 400, "lr": 0.01, "max_steps": 40, "log_every": 20,
                  "valid_every": 40, "valid_samples": 0, "threads": 1},
        "search": {"beam_size": 3, "length_penalty": 1.0}})


@pytest.fixture(scope="module")
def client(seq2seq_run):
    with TestClient(create_app(seq2seq_run, device="cpu", batch_wait_ms=20)) as c:
        yield c


@pytest.fixture(scope="module")
def translator(seq2seq_run):
    return Translator.from_checkpoint(seq2seq_run, device="cpu")


def post(client, path: str, body) -> tuple[int, dict]:
    r = client.post(path, json=body)
    return r.status_code, r.json()


# ---------------------------------------------------------------------------------- translate
def test_greedy_translations_are_the_translators(client, translator):
    status, answer = post(client, "/translate", {"texts": SENTENCES, "mode": "greedy"})
    assert status == 200 and answer["mode"] == "greedy"
    expected = translator.translate(SENTENCES, beam_size=1, n_best=1, length_penalty=0.0)
    assert [r["hypotheses"][0]["text"] for r in answer["results"]] == expected
    assert [r["source"] for r in answer["results"]] == SENTENCES


def test_beam_nbest_scores_and_attention_are_the_translators(client, translator):
    status, answer = post(client, "/translate", {"texts": ["a b c d"], "mode": "beam",
                                                 "beam_size": 3, "n_best": 3,
                                                 "length_penalty": 1.0, "attention": True})
    assert status == 200
    hyps = answer["results"][0]["hypotheses"]
    expected = translator.translate_nbest(["a b c d"], with_attention=True, beam_size=3,
                                          n_best=3, length_penalty=1.0)[0]
    assert [h["text"] for h in hyps] == [t.text for t in expected]
    assert [h["score"] for h in hyps] == pytest.approx([t.score for t in expected], abs=1e-5)
    att = hyps[0]["attention"]
    assert att["source_tokens"] == ["a", "b", "c", "d", "<eos>"]
    assert att["output_tokens"] == hyps[0]["tokens"] + ["<eos>"]  # a row per output token
    weights = torch.tensor(att["weights"])
    assert weights.shape == expected[0].attention.shape
    assert torch.allclose(weights, expected[0].attention, atol=1e-4)
    assert torch.allclose(weights.sum(-1), torch.ones(len(weights)), atol=1e-3)


def test_the_runs_search_section_is_the_default_and_attention_is_on_request(client, translator):
    status, answer = post(client, "/translate", {"texts": ["c b a"]})
    assert status == 200 and answer["mode"] == "beam"  # the run's config: beam_size 3
    assert answer["results"][0]["hypotheses"][0]["text"] == translator.translate(["c b a"])[0]
    assert answer["results"][0]["hypotheses"][0]["attention"] is None


def test_server_wide_search_options_reach_every_request(seq2seq_run, translator):
    fast = {"precision": "int8", "stopping": "heuristic"}
    with TestClient(create_app(seq2seq_run, device="cpu", search=fast)) as c:
        status, answer = post(c, "/translate", {"texts": SENTENCES, "mode": "beam",
                                                "n_best": 2})
    expected = translator.translate_nbest(SENTENCES, beam_size=3, n_best=2, **fast)
    assert status == 200
    assert [[h["score"] for h in r["hypotheses"]] for r in answer["results"]] == \
        [[pytest.approx(t.score, abs=1e-5) for t in row] for row in expected]
    with pytest.raises(ConfigError, match="search precision int8 runs on the cpu only"):
        create_app(seq2seq_run, device="meta", search=fast)


def test_a_seeded_sample_is_the_same_whatever_arrives_with_it(client):
    body = {"texts": ["a b c d e"], "mode": "sample", "seed": 7, "n_best": 2,
            "temperature": 1.5}
    alone = post(client, "/translate", body)[1]["results"]
    with ThreadPoolExecutor(8) as pool:  # the same request among others sampled meanwhile
        others = {**body, "seed": None}
        answers = list(pool.map(lambda b: post(client, "/translate", b)[1]["results"],
                                [others, body, others, body, others]))
    assert answers[1] == alone and answers[3] == alone


def test_concurrent_callers_each_get_their_own_answer(seq2seq_run, translator):
    """24 requests at once through one server: each answer is that request's translation,
    and the batcher did share calls between them."""
    texts = [SENTENCES[i % len(SENTENCES)] + " " + "abcde"[i % 5] for i in range(24)]
    expected = translator.translate(texts, beam_size=1, n_best=1, length_penalty=0.0)
    with TestClient(create_app(seq2seq_run, device="cpu", batch_wait_ms=50)) as c:
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda t: post(c, "/translate", {"texts": [t],
                                                                     "mode": "greedy"}), texts))
        stats = c.get("/model").json()["batching"]
    assert [a[1]["results"][0]["source"] for a in answers] == texts
    assert [a[1]["results"][0]["hypotheses"][0]["text"] for a in answers] == expected
    assert stats["items"] == 24 and stats["calls"] < 24 and stats["largest_batch"] > 1


# ---------------------------------------------------------------------------------- the batcher
def _gather(batcher: Batcher, requests, timeout=None, linger: float = 0.0):
    """Submit every (items, key) at once; their answers (or errors), after `linger` more
    seconds of the batcher running."""
    async def go():
        batcher.start()
        try:
            answers = await asyncio.gather(*(batcher.submit(items, key, timeout)
                                             for items, key in requests),
                                           return_exceptions=True)
            await asyncio.sleep(linger)
            return answers
        finally:
            await batcher.stop()
    return asyncio.run(go())


def test_requests_arriving_together_share_one_call_per_key_in_order():
    calls = []

    def run(items, key):
        calls.append((key, list(items)))
        return [f"{key}:{x}" for x in items]

    requests = [(["a", "b"], "greedy"), (["c"], "beam"), (["d"], "greedy"), (["e", "f"], "beam")]
    answers = _gather(Batcher(run, max_items=64, wait_ms=50), requests)
    assert answers == [["greedy:a", "greedy:b"], ["beam:c"], ["greedy:d"], ["beam:e", "beam:f"]]
    assert calls == [("greedy", ["a", "b", "d"]), ("beam", ["c", "e", "f"])]


def test_a_lone_request_does_not_wait_but_one_after_a_busy_batch_does():
    calls = []

    def run(items, key):
        calls.append(list(items))
        return items

    async def go() -> float:
        batcher = Batcher(run, wait_ms=300)
        batcher.start()
        start = time.perf_counter()
        await batcher.submit([1], 0)  # alone: no company to wait for
        lone = time.perf_counter() - start
        await asyncio.gather(batcher.submit([2], 0), batcher.submit([3], 0))  # company

        async def later():
            await asyncio.sleep(0.1)
            return await batcher.submit([5], 0)

        await asyncio.gather(batcher.submit([4], 0), later())  # 5 comes within the wait
        await batcher.stop()
        return lone

    lone = asyncio.run(go())
    assert lone < 0.2 and calls == [[1], [2, 3], [4, 5]]


def test_max_items_one_is_one_call_per_request_and_a_full_batch_leaves_the_rest():
    calls = []

    def run(items, key):
        calls.append(len(items))
        return items

    assert _gather(Batcher(run, max_items=1, wait_ms=50), [([i], 0) for i in range(5)]) == \
        [[i] for i in range(5)]
    assert calls == [1] * 5
    calls.clear()
    _gather(Batcher(run, max_items=4, wait_ms=50), [([i, i], 0) for i in range(5)])
    assert calls == [4, 4, 2]


def test_an_error_reaches_only_its_callers_and_the_worker_goes_on():
    def run(items, key):
        if key == "bad":
            raise ValueError("broken")
        return items

    answers = _gather(Batcher(run, wait_ms=20), [([1], "bad"), ([2], "ok"), ([3], "bad")])
    assert isinstance(answers[0], ValueError) and isinstance(answers[2], ValueError)
    assert answers[1] == [2]


def test_a_late_request_times_out_and_a_full_queue_is_busy():
    calls = []

    def slow(items, key):
        calls.append(items)
        time.sleep(0.3)
        return items

    answers = _gather(Batcher(slow, max_items=1, wait_ms=0), [([1], 0), ([2], 0)],
                      timeout=0.15, linger=0.4)
    assert all(isinstance(a, RequestTimeout) for a in answers)
    assert calls == [[1]]  # the second had given up before its turn: it is not computed
    calls.clear()  # collected together, run one key after the other: the same
    answers = _gather(Batcher(slow, max_items=4, wait_ms=0), [([1], 0), ([2], 1)],
                      timeout=0.15, linger=0.4)
    assert all(isinstance(a, RequestTimeout) for a in answers)
    assert calls == [[1]]
    answers = _gather(Batcher(slow, max_items=1, wait_ms=0, max_queue=2),
                      [([1], 0), ([2, 3], 0)])
    assert answers[0] == [1] and isinstance(answers[1], Busy)


# ---------------------------------------------------------------------------------- bad requests
BAD = [  # body, status, words of the error line
    ('{"texts": [', 400, "not valid JSON"),
    ({"texts": ["a"], "beam": 3}, 422, "beam: Extra inputs are not permitted"),
    ({"texts": [1]}, 422, "texts.0: Input should be a valid string"),
    ({"texts": "a b"}, 422, "texts: Input should be a valid list"),
    ({"texts": []}, 422, "texts: List should have at least 1 item"),
    ({}, 422, "texts: Field required"),
    ([], 422, "body: Input should be a valid dictionary"),
    ({"texts": ["a", "  "]}, 422, "texts[1] is empty"),
    ({"texts": ["a"], "mode": "beam", "beam_size": "5"}, 422, "beam_size: Input should be a "
     "valid integer"),
    ({"texts": ["a"], "mode": "beam", "beam_size": 17}, 422, "beam_size 17: over this "
     "server's limit of 16 (--max-beam)"),
    ({"texts": ["a"], "mode": "beam", "beam_size": 2, "n_best": 3}, 422, "n_best <= beam_size"),
    ({"texts": ["a"], "mode": "greedy", "seed": 1}, 422, "seed does not apply to mode greedy"),
    ({"texts": ["a"], "mode": "sample", "temperature": 0}, 422, "temperature: Input should be "
     "greater than 0"),
    ('{"texts": ["a"], "mode": "sample", "temperature": 1e400}', 422, "temperature: Input "
     "should be a finite number"),
    ({"texts": ["a"], "mode": "nucleus"}, 422, "mode: Input should be 'greedy', 'beam'"),
    ({"texts": ["a"] * 65}, 422, "texts: 65 sentences, over this server's limit of 64"),
    ({"texts": ["a " * 600]}, 422, "texts[0]: 1200 characters, over this server's limit"),
    ({"texts": ["a " * 300]}, 422, "texts[0]: 300 tokens, over this server's limit of 250"),
    ({"texts": ["x" * (1 << 20)]}, 413, "over this server's limit of 1048576 bytes"),
]


@pytest.mark.parametrize("body, status, words", BAD, ids=[w[:30] for _, _, w in BAD])
def test_a_bad_request_is_a_4xx_with_one_line_and_the_server_goes_on(client, body, status,
                                                                      words):
    content = body if isinstance(body, str) else json.dumps(body)
    r = client.post("/translate", content=content,
                    headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert words in r.json()["error"] and "\n" not in r.json()["error"]
    assert client.get("/health").json() == {"status": "ok"}


def test_a_chunked_body_over_the_limit_is_a_413_too(client):
    def chunks():
        for _ in range(20):
            yield b"x" * 100_000
    r = client.post("/translate", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "1048576 bytes" in r.json()["error"]


def test_a_request_over_the_time_limit_is_a_504(seq2seq_run, monkeypatch):
    def slow(self, texts, **kwargs):
        time.sleep(0.5)
        return [[] for _ in texts]

    app = create_app(seq2seq_run, device="cpu", limits=Limits(timeout=0.1))
    monkeypatch.setattr(Translator, "translate_nbest", slow)
    with TestClient(app) as c:
        status, answer = post(c, "/translate", {"texts": ["a b"]})
        assert status == 504 and "time limit of 0.1 s" in answer["error"]
        assert c.get("/health").status_code == 200


# ---------------------------------------------------------------------------------- about
def test_model_describes_the_run_and_docs_describe_the_api(client, seq2seq_run, translator):
    info = client.get("/model").json()
    assert info["problem"] == "seq2seq" and info["endpoint"] == "/translate"
    assert info["vocabulary"] == {"source": len(translator.codec.src_vocab),
                                  "target": len(translator.codec.tgt_vocab)}
    assert info["parameters"] == sum(p.numel() for p in translator.model.parameters())
    results = json.loads((seq2seq_run / "results.json").read_text())
    assert info["results"]["valid"]["bleu"] == results["valid"]["bleu"]
    assert info["limits"]["max_beam"] == 16 and info["config"]["search"]["beam_size"] == 3
    schema = client.get("/openapi.json").json()
    assert set(schema["paths"]) == {"/translate", "/health", "/model"}
    request = schema["components"]["schemas"]["TranslateRequest"]
    assert request["additionalProperties"] is False and "texts" in request["required"]
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "<title>seqlab</title>" in page.text
    assert client.get("/static/page.js").status_code == 200
    assert client.get("/static/hangul.ttf").content[:4] == b"\x00\x01\x00\x00"  # a TrueType


# ---------------------------------------------------------------------------------- other shapes
@pytest.fixture(scope="module")
def other_runs(tmp_path_factory):
    small = {"train": {"batch_tokens": 200, "lr": 0.01, "max_steps": 4, "valid_every": 4,
                       "valid_samples": 0, "threads": 1}}
    return {
        "classify": _train(tmp_path_factory, "serve_classify", {
            "problem": "classify", "tokenizer": {"kind": "word"},
            "data": {"synthetic": "is_sorted", "synthetic_train_size": 48,
                     "synthetic_eval_size": 16},
            "model": {"embedding_size": 8, "hidden_size": 16}, **small}),
        "lm": _train(tmp_path_factory, "serve_lm", {
            "problem": "lm", "tokenizer": {"kind": "char"}, "lm": {"bptt": 8},
            "data": {"synthetic": "alphabet", "synthetic_train_size": 50,
                     "synthetic_eval_size": 10},
            "model": {"bidirectional": False, "embedding_size": 8, "hidden_size": 16}, **small}),
        "tag": _train(tmp_path_factory, "serve_tag", {
            "problem": "tag", "data": {"synthetic": "spacing", "synthetic_train_size": 60,
                                       "synthetic_eval_size": 10, "format": "text"},
            "model": {"embedding_size": 8, "hidden_size": 16}, **small}),
        "forecast": _train(tmp_path_factory, "serve_forecast", {
            "problem": "forecast", "forecast": {"series": "sine"},
            "model": {"bidirectional": False, "hidden_size": 8, "dropout": 0.0},
            "train": {**small["train"], "device": "cpu"}}),
    }


def test_each_problem_shape_has_its_endpoint_with_its_predictors_answer(other_runs):
    from seqlab.problems.classify import Classifier
    from seqlab.problems.forecast import Forecaster
    from seqlab.problems.lm import Generator
    from seqlab.problems.tag import Tagger

    runs = other_runs
    with TestClient(create_app(runs["classify"], device="cpu")) as c:
        status, answer = post(c, "/classify", {"texts": ["1 2 3", "3 1 2"]})
        expected = Classifier.from_checkpoint(runs["classify"], "cpu").predict(["1 2 3",
                                                                                "3 1 2"])
        assert status == 200 and [r["label"] for r in answer["results"]] == \
            [p.label for p in expected]
        assert answer["results"][0]["probability"] == pytest.approx(expected[0].probability)
        assert c.post("/translate", json={"texts": ["a"]}).status_code == 404
    with TestClient(create_app(runs["lm"], device="cpu")) as c:
        status, answer = post(c, "/generate", {"prime": "abc", "length": 12, "seed": 3})
        generator = Generator.from_checkpoint(runs["lm"], "cpu")
        assert status == 200 and answer["text"] == generator.generate("abc", 12, seed=3)
        status, answer = post(c, "/generate", {"prime": "한", "length": 5})
        assert status == 422 and "never saw in training" in answer["error"]
        assert post(c, "/generate", {"length": 2001})[0] == 422
    with TestClient(create_app(runs["tag"], device="cpu")) as c:
        status, answer = post(c, "/tag", {"texts": ["한남자가기타를친다"]})
        expected = Tagger.from_checkpoint(runs["tag"], "cpu").predict(["한남자가기타를친다"])[0]
        assert status == 200 and answer["results"][0]["text"] == expected.text
        assert answer["results"][0]["labels"] == expected.labels
    with TestClient(create_app(runs["forecast"], device="cpu")) as c:
        history = [float(i % 12) for i in range(60)]
        status, answer = post(c, "/forecast", {"history": history, "horizon": 5})
        expected = Forecaster.from_checkpoint(runs["forecast"], "cpu").predict(history, 5)
        assert status == 200 and answer["values"] == pytest.approx(expected.values)
        status, answer = post(c, "/forecast", {"history": [1.0, 2.0]})
        assert status == 422 and "fewer than the model's window" in answer["error"]


# ---------------------------------------------------------------------------------- the process
def test_a_bad_run_a_bad_option_and_a_taken_port_are_one_line_each(tmp_path, capsys,
                                                                    seq2seq_run):
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    assert main(["serve", str(seq2seq_run), "--max-batch", "0"]) == 2
    assert main(["serve", str(seq2seq_run), "--device", "cpu", "--port", "99999"]) == 2
    from seqlab.serve import bind

    taken = bind("127.0.0.1", 0)
    port = taken.getsockname()[1]
    assert main(["serve", str(seq2seq_run), "--port", str(port), "--device", "cpu"]) == 2
    taken.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("seqlab serve: error: ") for line in lines)
    assert "no such checkpoint or run directory" in lines[0]
    assert "--max-batch 0: must be > 0" in lines[1]
    assert "--port 99999: must be in 0..65535" in lines[2]
    assert f"--port {port}: cannot listen there" in lines[3]


def start_server(run, *options) -> tuple[subprocess.Popen, str]:
    """`seqlab serve RUN --port 0 OPTIONS` in a process of its own; (process, its URL)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "seqlab", "serve", str(run), "--port", "0",
                             "--device", "cpu", "--threads", "1", *options],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    if " at http://" not in line:
        proc.kill()
        raise AssertionError(f"the server did not start: {line}{proc.stderr.read()}")
    url = line.split(" at ")[1].split()[0]
    for _ in range(100):  # the socket is bound before the line: uvicorn starts right after
        try:
            urllib.request.urlopen(url + "health", timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the server did not answer /health")


def test_the_server_process_answers_and_stops_cleanly_on_ctrl_c(seq2seq_run):
    proc, url = start_server(seq2seq_run)
    try:
        request = urllib.request.Request(url + "translate", data=json.dumps(
            {"texts": ["a b c"], "mode": "greedy"}).encode(),
            headers={"content-type": "application/json"})
        answer = json.load(urllib.request.urlopen(request, timeout=30))
        assert answer["results"][0]["hypotheses"][0]["text"]
        assert url.startswith("http://127.0.0.1:")  # loopback by default
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130) and "Traceback" not in err


# ---------------------------------------------------------------------------------- the page
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,1300",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                    reason="no chromium + chromedriver here (Debian: apt-get install -y "
                    "chromium chromium-driver; .ci/run installs them)")
def test_the_page_translates_hangul_and_draws_the_apis_attention(seq2seq_run, tmp_path):
    """Type a sentence with Hangul into the page in headless Chromium, choose beam search,
    submit: the output, the n-best list and every heatmap cell are the API's answer."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import Select, WebDriverWait

    text = "한국어 a b 문장 c"
    proc, url = start_server(seq2seq_run)
    browser = _browser()
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 30)
        wait.until(lambda b: b.find_element(By.TAG_NAME, "body").get_attribute("data-ready"))
        assert "seq2seq model" in browser.find_element(By.ID, "about").text
        browser.find_element(By.ID, "input").send_keys(text)
        Select(browser.find_element(By.ID, "mode")).select_by_value("beam")
        n_best = browser.find_element(By.ID, "n_best")
        n_best.clear()
        n_best.send_keys("3")
        browser.find_element(By.ID, "submit").click()
        wait.until(ready.visibility_of_element_located((By.ID, "attention")))
        wait.until(lambda b: b.find_element(By.ID, "status").text.endswith("ms"))
        output = browser.find_element(By.ID, "output").text
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "#nbest tbody tr")]
        heads = [th.get_attribute("textContent")
                 for th in browser.find_elements(By.CSS_SELECTOR, "#heatmap thead th")][1:]
        cells = [[float(td.get_attribute("data-weight")) for td in
                  tr.find_elements(By.TAG_NAME, "td")]
                 for tr in browser.find_elements(By.CSS_SELECTOR, "#heatmap tbody tr")]
        wait.until(lambda b: b.execute_script("return document.fonts.status") == "loaded")
        hangul = browser.execute_script(
            "return [...document.fonts].some(f => f.family === 'Hangul' && "
            "f.status === 'loaded')")  # NanumGothic, from the server: no system font needed
        shot = tmp_path / "page.png"
        browser.save_screenshot(str(shot))
        print(f"screenshot of the page: {shot}")

        # a refusal is shown as the server's line
        beam = browser.find_element(By.ID, "beam_size")
        beam.clear()
        beam.send_keys("100")
        browser.find_element(By.ID, "submit").click()
        wait.until(ready.visibility_of_element_located((By.ID, "error")))
        error = browser.find_element(By.ID, "error").text
        console = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"
                   and "422" not in e["message"]]
    finally:
        browser.quit()
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    body = {"texts": [text], "mode": "beam", "beam_size": 5, "n_best": 3,
            "length_penalty": 1.0, "attention": True}
    with TestClient(create_app(seq2seq_run, device="cpu")) as c:
        hyps = post(c, "/translate", body)[1]["results"][0]["hypotheses"]
    assert output == hyps[0]["text"]
    assert [r[3] for r in rows] == [h["text"] for h in hyps]
    assert [float(r[1]) for r in rows] == pytest.approx([h["score"] for h in hyps], abs=1e-3)
    att = hyps[0]["attention"]
    assert heads == att["source_tokens"] and heads[0] == "한국어"
    assert torch.allclose(torch.tensor(cells), torch.tensor(att["weights"]), atol=1e-4)
    assert "beam_size 100: over this server's limit of 16" in error
    assert console == [] and hangul
    assert shot.stat().st_size > 10_000


def test_each_run_is_read_once(seq2seq_run, other_runs, monkeypatch):
    """The problem, the model and /model's facts all come from one read of the checkpoint."""
    import seqlab.checkpoint as checkpoint

    reads = []
    load = checkpoint.load_checkpoint
    monkeypatch.setattr(checkpoint, "load_checkpoint",
                        lambda path, **kw: reads.append(path) or load(path, **kw))
    for run in [seq2seq_run, *other_runs.values()]:
        reads.clear()
        with TestClient(create_app(run, device="cpu")) as c:
            assert c.get("/model").json()["checkpoint"] == str(reads[0])
        assert reads == [run / "best.pt"]
