// The upload page: /classify, then /feedback and /explain, all on this server (no CDN).
"use strict";
const api = (path) => new URL(`../${path}`, window.location.href).toString();
const $ = (id) => document.getElementById(id);
let current = null; // {file, answer}

function show(id, visible) { $(id).hidden = !visible; }

function showError(message) {
  $("error").textContent = message;
  show("error", true);
}

async function answerOf(response) {
  const text = await response.text();
  let body = null;
  try { body = JSON.parse(text); } catch (_) { /* not JSON */ }
  if (!response.ok) {
    let message = body && (body.error || (Array.isArray(body) && body[0] && body[0].error));
    if (!message) message = `The server answered ${response.status} ${response.statusText}.`;
    const error = new Error(message);
    error.body = body;
    throw error;
  }
  return body;
}

async function post(path, form) {
  const response = await fetch(api(path), { method: "POST", body: form });
  return answerOf(response);
}

function renderBars(probabilities, best) {
  const bars = $("bars");
  bars.replaceChildren();
  const entries = Object.entries(probabilities).sort((a, b) => b[1] - a[1]);
  for (const [label, p] of entries) {
    const li = document.createElement("li");
    li.dataset.label = label;
    if (label === best) li.className = "best";
    const name = document.createElement("span");
    name.textContent = label;
    const bar = document.createElement("div");
    bar.className = "bar";
    const fill = document.createElement("span");
    fill.style.width = `${(100 * p).toFixed(1)}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = `${(100 * p).toFixed(1)} %`;
    li.append(name, bar, value);
    bars.append(li);
  }
  const select = $("correct-label");
  select.replaceChildren();
  for (const label of Object.keys(probabilities).sort()) {
    const option = document.createElement("option");
    option.value = label;
    option.textContent = label;
    select.append(option);
  }
  const other = Object.keys(probabilities).sort().find((l) => l !== best);
  if (other) select.value = other;
}

async function classify(file) {
  show("error", false);
  show("feedback-status", false);
  $("heatmap-toggle").checked = false;
  show("heatmap", false);
  show("heatmap-info", false);
  const form = new FormData();
  form.append("image", file, file.name || "photo");
  const started = performance.now();
  let answer;
  try {
    answer = await post("classify", form);
  } catch (error) {
    show("result", false);
    showError(error.message);
    return;
  }
  const elapsed = performance.now() - started;
  current = { file, answer };
  $("photo").src = URL.createObjectURL(file);
  $("label").textContent = answer.label;
  $("confidence").textContent = `(${(100 * answer.confidence).toFixed(1)} %)`;
  $("latency").textContent = `${Math.round(answer.latency_ms ?? elapsed)} ms`;
  $("model").textContent = answer.model;
  $("backend").textContent = answer.runtime || answer.backend || (window.runtimeInfo && window.runtimeInfo.backend) || "?";
  $("request-id").textContent = answer.request_id || "";
  renderBars(answer.probabilities, answer.label);
  show("result", true);
}

async function sendFeedback(event) {
  event.preventDefault();
  if (!current) return;
  const form = new FormData();
  form.append("label", $("correct-label").value);
  form.append("request_id", current.answer.request_id);
  if ($("note").value) form.append("note", $("note").value);
  const status = $("feedback-status");
  try {
    const answer = await post("feedback", form);
    status.textContent = `Thank you: stored as "${answer.label}" (feedback #${answer.feedback_id}).`;
    status.className = "status";
  } catch (error) {
    status.textContent = error.message;
    status.className = "status bad";
  }
  show("feedback-status", true);
}

async function toggleHeatmap() {
  if (!current) return;
  if (!$("heatmap-toggle").checked) { show("heatmap", false); show("heatmap-info", false); return; }
  if (current.explained) { show("heatmap", true); show("heatmap-info", true); return; }
  const form = new FormData();
  form.append("image", current.file, current.file.name || "photo");
  try {
    const answer = await post("explain", form);
    current.explained = answer;
    $("heatmap").src = `data:image/png;base64,${answer.overlay_png}`;
    $("heatmap-info").textContent =
      `Heatmap for "${answer.label}" by ${answer.method} in ${Math.round(answer.elapsed_ms)} ms.`;
    show("heatmap", true);
    show("heatmap-info", true);
  } catch (error) {
    $("heatmap-toggle").checked = false;
    showError(error.message);
  }
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) classify(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files[0]) classify(e.dataTransfer.files[0]);
});
$("feedback").addEventListener("submit", sendFeedback);
$("heatmap-toggle").addEventListener("change", toggleHeatmap);
fetch("info.json").then((r) => r.json()).then((info) => { window.runtimeInfo = info; }).catch(() => {});
