// The page of `seqlab serve`: asks /model what the run is, shows the controls of its problem,
// sends the form to the problem's endpoint and draws the answer (text, n-best, label
// probabilities, attention heatmap). Every string from the model is set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
let model = null;

const PROMPTS = {
  seq2seq: ["Sentence to translate", "Ein Mann fährt Fahrrad."],
  classify: ["Text to classify", "정말 재밌게 봤어요"],
  tag: ["Line to tag (spacing: the spaces are removed first)", "아버지가방에들어가신다"],
  lm: ["Prime (the text to continue)", "ROMEO:"],
  forecast: ["History: numbers, oldest first, separated by spaces or commas", ""],
};

function describe(info) {
  const parts = [`${info.problem} model`, info.run, `${info.parameters.toLocaleString()} parameters`];
  const valid = info.results && info.results.valid;
  if (valid) {
    for (const key of ["bleu", "accuracy", "f1", "bpc", "mase"]) {
      if (key in valid) {
        const v = valid[key];
        parts.push(`validation ${key} ${key === "accuracy" ? (100 * v).toFixed(2) + "%" : v.toFixed(2)}`);
        break;
      }
    }
  }
  return parts.join(" · ");
}

function showControls() {  // the options of this problem, and of the chosen mode
  const p = model.problem, mode = $("mode").value;
  const visible = (c) => c === `for-${p}` ||
    (c === `for-${mode}` && (p === "seq2seq" || (p === "lm" && mode === "sample")));
  document.querySelectorAll("#options [class]").forEach((el) => {
    el.hidden = ![...el.classList].some(visible);
  });
  if (p === "lm") $("n_best").parentElement.hidden = true;  // one continuation per prime
}

function number(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

function request() {
  const text = $("input").value, problem = model.problem, mode = $("mode").value;
  if (problem === "seq2seq") {
    const body = { texts: [text], mode, attention: true };
    if (mode === "beam") Object.assign(body, { beam_size: number("beam_size"), n_best: number("n_best"),
                                               length_penalty: number("length_penalty") });
    if (mode === "sample") Object.assign(body, { n_best: number("n_best"), temperature: number("temperature"),
                                                 top_k: number("top_k"), top_p: number("top_p"),
                                                 seed: number("seed") });
    return body;
  }
  if (problem === "lm") {
    const body = { prime: text, length: number("length"), mode: mode === "greedy" ? "greedy" : "sample" };
    if (mode === "sample") Object.assign(body, { temperature: number("temperature"), top_k: number("top_k"),
                                                 top_p: number("top_p"), seed: number("seed") });
    return body;
  }
  if (problem === "forecast") {
    return { history: text.split(/[\s,;]+/).filter((s) => s).map(Number), horizon: number("horizon") };
  }
  return { texts: [text] };
}

function clean(body) {  // leave out the options left empty: the server's defaults apply
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null && !Number.isNaN(v)));
}

function cell(tag, text) {
  const el = document.createElement(tag);
  el.textContent = text;
  return el;
}

function drawHeatmap(att) {
  const table = $("heatmap");
  table.replaceChildren();
  const head = document.createElement("thead"), top = document.createElement("tr");
  top.appendChild(cell("th", ""));
  att.source_tokens.forEach((t) => top.appendChild(cell("th", t)));
  head.appendChild(top);
  const body = document.createElement("tbody");
  att.weights.forEach((row, i) => {
    const tr = document.createElement("tr");
    tr.appendChild(cell("th", att.output_tokens[i]));
    row.forEach((w, j) => {
      const td = document.createElement("td");
      td.dataset.weight = String(w);
      td.title = `${att.output_tokens[i]} → ${att.source_tokens[j]}: ${w.toFixed(3)}`;
      td.style.background = `rgba(33, 102, 172, ${Math.min(1, Math.max(0, w))})`;
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  table.append(head, body);
  $("attention").hidden = false;
}

function drawNbest(hyps) {
  const tbody = $("nbest").querySelector("tbody");
  tbody.replaceChildren();
  hyps.forEach((h, i) => {
    const tr = document.createElement("tr");
    tr.append(cell("td", String(i + 1)), cell("td", h.score.toFixed(3)),
              cell("td", h.log_prob.toFixed(3)), cell("td", h.text));
    tbody.appendChild(tr);
  });
  $("nbest").hidden = hyps.length < 2;
}

function drawLabels(result) {
  const box = $("labels");
  box.replaceChildren();
  Object.entries(result.probabilities).sort((a, b) => b[1] - a[1]).forEach(([label, p]) => {
    const bar = document.createElement("div"), fill = document.createElement("span");
    bar.className = "bar";
    bar.dataset.label = label;
    fill.className = "fill";
    fill.style.width = `${(12 * p).toFixed(2)}rem`;
    bar.append(cell("span", label), fill, cell("span", `${(100 * p).toFixed(1)}%`));
    box.appendChild(bar);
  });
  box.hidden = false;
}

function show(answer) {
  ["nbest", "labels", "attention"].forEach((id) => { $(id).hidden = true; });
  const problem = model.problem;
  let text;
  if (problem === "seq2seq") {
    const hyps = answer.results[0].hypotheses;
    text = hyps[0].text;
    drawNbest(hyps);
    if (hyps[0].attention) drawHeatmap(hyps[0].attention);
  } else if (problem === "classify") {
    const r = answer.results[0];
    text = `${r.label} (${(100 * r.probability).toFixed(1)}%)`;
    drawLabels(r);
  } else if (problem === "tag") {
    text = answer.results[0].text;
  } else if (problem === "lm") {
    text = $("input").value + answer.text;
  } else {
    text = answer.values.map((v) => v.toPrecision(6)).join(", ");
  }
  $("output").textContent = text;
  $("result").hidden = false;
}

async function submit(event) {
  event.preventDefault();
  $("error").hidden = true;
  $("status").textContent = "working…";
  $("submit").disabled = true;
  try {
    const response = await fetch(model.endpoint, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(clean(request())),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    show(answer);
    $("status").textContent = `${answer.milliseconds.toFixed(0)} ms`;
  } catch (err) {
    $("error").textContent = err.message;
    $("error").hidden = false;
    $("status").textContent = "";
  } finally {
    $("submit").disabled = false;
  }
}

async function start() {
  try {
    const response = await fetch("/model");
    model = await response.json();
  } catch (err) {
    $("about").textContent = `the server does not answer: ${err.message}`;
    return;
  }
  $("about").textContent = describe(model);
  const [label, example] = PROMPTS[model.problem];
  $("input-label").textContent = label;
  $("input").placeholder = example;
  $("submit").textContent = { seq2seq: "Translate", classify: "Classify", tag: "Tag",
                              lm: "Generate", forecast: "Forecast" }[model.problem];
  if (model.problem === "lm") $("mode").value = "sample";
  showControls();
  $("mode").addEventListener("change", showControls);
  $("form").addEventListener("submit", submit);
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("form").requestSubmit();
  });
  document.body.dataset.ready = "true";
}

start();
