// The operators' console: reads the gateway's /console/api endpoints with the admin key, and streams the
// playground's answers. Plain script, no build step, no library.
"use strict";

const API = "/console/api/";
const KEY_ITEM = "agent-gateway-admin-key";
const KEPT_REQUESTS = 200;
const byId = (id) => document.getElementById(id);
let adminKey = "";
let seen = 0;
let polling = null;

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), authorization: "Bearer " + adminKey };
  const response = await fetch(API + path, { ...options, headers });
  if (!response.ok) {
    let message = String(response.status);
    try {
      message += " " + (await response.json()).error.message;
    } catch (ignored) {
      // not a JSON error: the status says it
    }
    throw new Error(message);
  }
  return response;
}

function text(value) {
  if (value === null || value === undefined) return "—";
  if (Array.isArray(value)) return value.length ? value.join(", ") : "—";
  if (typeof value === "boolean") return value ? "yes" : "no";
  return String(value);
}

function row(values) {
  const tr = document.createElement("tr");
  for (const value of values) {
    const td = document.createElement("td");
    td.textContent = text(value);
    if (typeof value === "number") td.className = "number";
    tr.append(td);
  }
  return tr;
}

function fill(id, rows) {
  byId(id).tBodies[0].replaceChildren(...rows.map(row));
}

async function loadRoutes() {
  const { routes } = await (await api("routes")).json();
  fill("routes", routes.map((r) => [r.name, r.providers, r.model, r.wire, r.rewrite, r.inner_thoughts, r.reasoning,
    r.think_tags, r.fallbacks, r.max_retries]));
  const select = byId("route");
  const chosen = select.value;
  select.replaceChildren(...routes.filter((r) => !r.name.includes("*")).map((r) => new Option(r.name, r.name)));
  if (chosen) select.value = chosen;
}

async function loadKeys() {
  const { keys } = await (await api("keys")).json();
  fill("keys", keys.map((k) => [k.name, k.models, k.rpm, k.requests_this_minute, k.tpm, k.tokens_this_minute,
    k.budget, k.budget_used, k.max_concurrency, k.in_flight, k.requests, k.tokens]));
}

async function loadDeployments() {
  const { deployments } = await (await api("deployments")).json();
  fill("deployments", deployments.map((d) => [d.name, d.base_url, d.in_flight, d.max_concurrency, d.max_failures,
    d.cooldown, d.cooling_down_s]));
}

async function loadRequests() {
  const { requests } = await (await api("requests?since=" + seen)).json();
  const body = byId("requests").tBodies[0];
  for (const r of requests) {
    seen = Math.max(seen, r.seq);
    const time = new Date(r.time * 1000).toISOString().slice(11, 23);
    body.prepend(row([time, r.key, r.route || r.model, r.door, r.status, r.duration_ms, r.ttft_ms, r.prompt_tokens,
      r.completion_tokens, r.retries]));
  }
  while (body.rows.length > KEPT_REQUESTS) body.lastElementChild.remove();
}

async function refresh() {
  await Promise.all([loadKeys(), loadDeployments(), loadRequests()]);
}

async function signIn(key) {
  adminKey = key;
  const status = byId("status");
  try {
    seen = 0;
    byId("requests").tBodies[0].replaceChildren();
    await loadRoutes();
    await refresh();
  } catch (error) {
    status.textContent = "Refused: " + error.message;
    byId("console").hidden = true;
    sessionStorage.removeItem(KEY_ITEM);
    clearInterval(polling);
    return;
  }
  sessionStorage.setItem(KEY_ITEM, key);
  status.textContent = "Signed in.";
  byId("console").hidden = false;
  clearInterval(polling);
  polling = setInterval(() => refresh().catch((error) => { status.textContent = "Refresh failed: " + error.message; }), 2000);
}

// What one decoded SSE event of a door says: pieces of answer, pieces of reasoning, or an error.
function pieces(door, event) {
  const out = [];
  if (door === "chat") {
    if (event.error) out.push(["error", event.error.message || JSON.stringify(event.error)]);
    for (const choice of event.choices || []) {
      const delta = choice.delta || {};
      if (delta.reasoning_content) out.push(["reasoning", delta.reasoning_content]);
      if (delta.content) out.push(["answer", delta.content]);
    }
  } else if (door === "responses") {
    if (event.type === "response.output_text.delta") out.push(["answer", event.delta]);
    if (event.type === "response.reasoning_summary_text.delta") out.push(["reasoning", event.delta]);
    if (event.type === "error") out.push(["error", event.message || JSON.stringify(event)]);
    if (event.type === "response.failed") out.push(["error", JSON.stringify(event.response.error)]);
  } else if (event.type === "content_block_delta") {
    if (event.delta.type === "text_delta") out.push(["answer", event.delta.text]);
    if (event.delta.type === "thinking_delta") out.push(["reasoning", event.delta.thinking]);
  } else if (event.type === "error") {
    out.push(["error", event.error.message || JSON.stringify(event.error)]);
  }
  return out;
}

async function play(event) {
  event.preventDefault();
  const door = byId("door").value;
  const status = byId("play-status");
  const answer = byId("answer");
  const thoughts = byId("thoughts");
  const chunks = byId("chunks").tBodies[0];
  answer.textContent = "";
  thoughts.textContent = "";
  chunks.replaceChildren();
  status.textContent = "Streaming…";
  byId("send").disabled = true;
  const started = performance.now();
  try {
    const response = await api("playground", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ route: byId("route").value, door, prompt: byId("prompt").value }),
    });
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let failed = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const arrived = Math.round(performance.now() - started);
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split(/\r?\n\r?\n/);
      buffer = events.pop();
      for (const raw of events) {
        const data = raw.split(/\r?\n/).filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart()).join("\n");
        if (!data || data === "[DONE]") continue;
        for (const [kind, piece] of pieces(door, JSON.parse(data))) {
          if (kind === "answer") answer.textContent += piece;
          else if (kind === "reasoning") thoughts.textContent += piece;
          else failed = piece;
          chunks.append(row([arrived, kind, piece]));
        }
      }
    }
    const total = Math.round(performance.now() - started);
    status.textContent = failed ? "The answer failed: " + failed : "Done in " + total + " ms.";
  } catch (error) {
    status.textContent = "Refused: " + error.message;
  } finally {
    byId("send").disabled = false;
  }
}

byId("signin").addEventListener("submit", (event) => {
  event.preventDefault();
  signIn(byId("key").value.trim());
});
byId("playground").addEventListener("submit", play);
const kept = sessionStorage.getItem(KEY_ITEM);
if (kept) signIn(kept);
