// DreamPRM-Code playground: calls the service's own API (same origin) and renders each function's score.
// One program -> POST v1/score; several (or "generate") -> POST v1/rerank. No external assets, no innerHTML
// of user or server text (textContent only).
"use strict";

const $ = (id) => document.getElementById(id);
const EXAMPLE = {
  problem: "Read two integers from one line of stdin and print their sum.",
  programs: [
    "import sys\n\n\ndef parse(line):\n    a, b = line.split()\n    return int(a), int(b)\n\n\n" +
      "def main():\n    a, b = parse(sys.stdin.readline())\n    print(a + b)\n\n\nmain()\n",
    "def main():\n    a, b = input().split()\n    print(a + b)\n\n\nmain()\n",
    "print(sum(map(int, input().split())))\n",
  ],
  tests: [{ input: "1 2\n", output: "3\n" }, { input: "-5 5\n", output: "0\n" }],
};

/** Background and edge colours of a score in [0, 1]: red (0) -> amber -> green (1). */
function scoreColours(score) {
  const hue = Math.round(120 * Math.min(1, Math.max(0, score)));
  return { background: `hsl(${hue} 75% 90%)`, edge: `hsl(${hue} 60% 45%)`, chip: `hsl(${hue} 65% 80%)` };
}

function fmt(score) {
  return score === null || score === undefined ? "—" : score.toFixed(3);
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function addProgram(code = "") {
  const node = $("program-template").content.firstElementChild.cloneNode(true);
  node.querySelector("textarea").value = code;
  node.querySelector(".remove").addEventListener("click", () => {
    if ($("programs").children.length > 1) node.remove();
    renumber();
  });
  $("programs").appendChild(node);
  renumber();
  return node;
}

function renumber() {
  const programs = [...$("programs").children];
  programs.forEach((p, i) => { p.querySelector(".program-title").textContent = `program ${i}`; });
  $("submit").textContent = programs.length > 1 ? `Rerank ${programs.length} programs` : "Score";
}

function addTest(input = "", output = "") {
  const node = $("test-template").content.firstElementChild.cloneNode(true);
  node.querySelector(".test-input").value = input;
  node.querySelector(".test-output").value = output;
  node.querySelector(".remove").addEventListener("click", () => node.remove());
  $("tests").appendChild(node);
  setTestKind();
}

function setTestKind() {
  const code = $("test-kind").value === "code";
  for (const t of $("tests").children) {
    t.classList.toggle("code", code);
    t.querySelector(".test-input").placeholder = code ? "assert add(1, 2) == 3" : "stdin input";
  }
}

function publicTests() {
  const code = $("test-kind").value === "code";
  const tests = [];
  for (const t of $("tests").children) {
    const input = t.querySelector(".test-input").value;
    const output = t.querySelector(".test-output").value;
    if (code && input.trim()) tests.push({ code: input });
    if (!code && (input || output)) tests.push({ input, output });
  }
  return tests;
}

function headers() {
  const h = { "content-type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers() }
    : { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const err = data && data.error ? data.error : { type: "http_error", message: response.statusText };
    const hint = response.status === 401 ? " Enter the server's API key above." : "";
    throw new Error(`${response.status} ${err.type}: ${err.message}${hint}`);
  }
  return data;
}

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
}

/** The program with each step as a coloured band: a head (name, kind, score) over its lines. */
function renderCode(code, steps) {
  const lines = code.split("\n");
  if (lines.length && lines[lines.length - 1] === "") lines.pop();
  const view = el("div", "code");
  for (const step of steps) {
    const band = el("div", step.score === null ? "step unscored" : "step");
    band.dataset.stepIndex = step.index;
    band.dataset.stepName = step.name;
    band.dataset.score = step.score === null ? "" : String(step.score);
    if (step.score !== null) {
      const c = scoreColours(step.score);
      band.style.setProperty("background", c.background);
      band.style.setProperty("border-left-color", c.edge);
    }
    const head = el("div", "step-head");
    head.append(el("span", "name", step.name), el("span", "kind",
      `${step.kind}${step.context ? " (context: not in the aggregate)" : ""} · lines ${step.start_line}–${step.end_line}`),
      el("span", "step-score", step.score === null ? "not scored (truncated)" : fmt(step.score)));
    band.appendChild(head);
    for (let n = step.start_line; n <= step.end_line && n <= lines.length; n++) {
      const line = el("div", "line");
      line.append(el("span", "no", String(n)), el("span", "src", lines[n - 1]));
      band.appendChild(line);
    }
    view.appendChild(band);
  }
  return view;
}

function chip(score) {
  const node = el("span", "score-chip", fmt(score));
  if (score !== null && score !== undefined) node.style.setProperty("background", scoreColours(score).chip);
  return node;
}

function aggregatesLine(aggregate, chosen) {
  const line = el("div", "aggregates");
  if (!aggregate) return line;
  for (const name of ["min", "mean", "last", "product", "logodds"]) {
    const part = el(name === chosen ? "b" : "span", "", `${name} ${fmt(aggregate[name])}`);
    part.dataset.aggregate = name;
    line.append(part, document.createTextNode("   "));
  }
  return line;
}

function renderScore(result, code, ms) {
  const card = el("div", "card result");
  card.dataset.score = String(result.score);
  const head = el("div", "card-head");
  head.append(el("span", "rank", "Score"), chip(result.score), el("span", "badge", `aggregation: ${result.aggregation}`));
  if (result.truncated) head.appendChild(el("span", "badge warn truncated", "truncated: some steps not scored"));
  if (!result.parsed) head.appendChild(el("span", "badge warn", "did not parse: tolerant split"));
  if (result.cached) head.appendChild(el("span", "badge", "cached"));
  head.appendChild(el("span", "badge", `${result.n_tokens} tokens · ${ms} ms`));
  card.append(head, aggregatesLine(result.aggregate, result.aggregation), renderCode(code, result.steps));
  $("results").replaceChildren(card);
}

function testsBadge(candidate) {
  if (!candidate.tests) return el("span", "badge", "no tests");
  const t = candidate.tests;
  return el("span", `badge tests ${t.passed ? "pass" : "fail"}`, `tests ${t.n_passed}/${t.n_tests} ${t.status}`);
}

function renderRerank(result) {
  const cards = result.ranking.map((c) => {
    const card = el("div", c.index === result.best_index ? "card candidate best" : "card candidate");
    card.dataset.index = c.index;
    card.dataset.rank = c.rank;
    card.dataset.score = c.score === null ? "" : String(c.score);
    const head = el("div", "card-head");
    head.append(el("span", "rank", `#${c.rank + 1}`), el("span", "", `${c.source === "policy" ? "generated" : "program"} ${c.index}`),
      chip(c.score), testsBadge(c));
    if (c.index === result.best_index) head.appendChild(el("span", "badge pass", "best"));
    if (c.finish_reason && c.finish_reason !== "stop") head.appendChild(el("span", "badge warn", `finish: ${c.finish_reason}`));
    card.append(head, aggregatesLine(c.aggregate, result.aggregation));
    if (c.error) card.appendChild(el("div", "error-text", c.error));
    if (c.steps.length) card.appendChild(renderCode(c.code, c.steps));
    return card;
  });
  $("results").replaceChildren(...cards);
}

function request() {
  const body = { problem: $("problem").value, language: $("language").value };
  if ($("aggregation").value) body.aggregation = $("aggregation").value;
  return body;
}

async function run(generate) {
  const programs = [...$("programs").querySelectorAll("textarea")].map((t) => t.value).filter((c) => c.trim());
  if (!$("problem").value.trim()) { setStatus("Write the problem statement first.", "error"); return; }
  if (!generate && !programs.length) { setStatus("Paste at least one program (or generate some).", "error"); return; }
  const buttons = document.querySelectorAll("form button");
  buttons.forEach((b) => { b.disabled = true; });
  const started = performance.now();
  try {
    const tests = publicTests();
    if (!generate && programs.length === 1 && !tests.length) {
      setStatus("Scoring…", "busy");
      const result = await api("v1/score", { ...request(), code: programs[0] });
      const ms = Math.round(performance.now() - started);
      renderScore(result, programs[0], ms);
      setStatus(`Scored ${result.steps.length} step(s) with ${result.model}: ${result.aggregation} = ${fmt(result.score)}.`);
    } else {
      const body = { ...request(), ...(generate ? { n: Number($("n").value) } : { candidates: programs }) };
      if (tests.length) body.public_tests = tests;
      setStatus(generate ? "Generating and ranking…" : `Ranking ${programs.length} program(s)…`, "busy");
      const result = await api("v1/rerank", body);
      renderRerank(result);
      const usage = result.policy_usage ? ` Policy: ${result.policy_usage.returned}/${result.policy_usage.requested} returned.` : "";
      setStatus(`Ranked ${result.ranking.length} candidate(s) with ${result.model} by ${result.aggregation}` +
        ` in ${Math.round(result.timings.total_ms)} ms; best: ${result.best_index === null ? "none" : result.best_index}.${usage}`);
    }
    $("legend").hidden = false;
  } catch (err) {
    setStatus(err.message, "error");
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

function loadExample() {
  $("problem").value = EXAMPLE.problem;
  $("language").value = "python";
  $("programs").replaceChildren();
  EXAMPLE.programs.forEach((p) => addProgram(p));
  $("tests").replaceChildren();
  $("test-kind").value = "stdin";
  EXAMPLE.tests.forEach((t) => addTest(t.input, t.output));
}

async function showModel() {
  try {
    const models = await api("v1/models");
    $("model").textContent = `model: ${models.data.map((m) => `${m.id} (${m.revision})`).join(", ")}`;
  } catch (err) {
    $("model").textContent = err.message.startsWith("401") ? "model: (API key needed)" : "model: not ready";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const key = sessionStorage.getItem("dreamprm-api-key");
  if (key) $("apikey").value = key;
  $("apikey").addEventListener("change", () => { sessionStorage.setItem("dreamprm-api-key", $("apikey").value); showModel(); });
  addProgram();
  $("add-program").addEventListener("click", () => addProgram().querySelector("textarea").focus());
  $("add-test").addEventListener("click", () => addTest());
  $("test-kind").addEventListener("change", setTestKind);
  $("example").addEventListener("click", loadExample);
  $("generate").addEventListener("click", () => run(true));
  $("form").addEventListener("submit", (e) => { e.preventDefault(); run(false); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); run(false); }
  });
  showModel();
  document.body.dataset.ready = "true";
});
