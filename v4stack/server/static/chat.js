// v4stack chat page: posts the conversation to /v1/chat/completions with stream=true and renders the SSE
// deltas as they arrive (reasoning_content into a collapsible block, content into the answer). The tier
// switch picks the model name ("fast" or "expert"); the server maps it to thinking on/off.
"use strict";

// answer length per turn (the page's ?max_tokens= overrides it); the server refuses more than the context allows
const DEFAULT_MAX_TOKENS = 256;
const MAX_TOKENS = Number(new URLSearchParams(location.search).get("max_tokens")) || DEFAULT_MAX_TOKENS;
const history = []; // [{role, content, reasoning_content?}] sent back each turn (reasoning kept: the encoder drops it)
const $ = (id) => document.getElementById(id);

function addTurn(role) {
  const div = document.createElement("div");
  div.className = `turn ${role}`;
  $("conversation").appendChild(div);
  return div;
}

function selectedTier() {
  return document.querySelector('input[name="tier"]:checked').value;
}

async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ")) yield line.slice(6);
      }
    }
  }
}

async function send(text) {
  history.push({ role: "user", content: text });
  addTurn("user").textContent = text;
  const turn = addTurn("assistant");
  const answer = document.createElement("div");
  answer.className = "answer";
  const meta = document.createElement("div");
  meta.className = "meta";
  turn.append(answer, meta);
  let reasoningBox = null;
  let reasoning = "", content = "", tokens = 0, first = null;
  const started = performance.now();
  const headers = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  const tier = selectedTier();
  $("status").textContent = `generating (${tier})`;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers,
      body: JSON.stringify({ model: tier, messages: history, stream: true, max_tokens: MAX_TOKENS,
                             stream_options: { include_usage: true } }),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
    }
    for await (const data of sseEvents(response)) {
      if (data === "[DONE]") break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) tokens = chunk.usage.completion_tokens;
      for (const choice of chunk.choices || []) {
        const d = choice.delta || {};
        if (d.reasoning_content) {
          if (!reasoningBox) {
            reasoningBox = document.createElement("details");
            reasoningBox.className = "reasoning";
            reasoningBox.open = true;
            reasoningBox.innerHTML = "<summary>Reasoning</summary>";
            reasoningBox.appendChild(document.createElement("div"));
            turn.insertBefore(reasoningBox, answer);
          }
          reasoning += d.reasoning_content;
          reasoningBox.lastChild.textContent = reasoning;
        }
        if (d.content) {
          content += d.content;
          answer.textContent = content;
        }
        if ((d.content || d.reasoning_content) && first === null) first = performance.now();
        if (choice.finish_reason) meta.dataset.finish = choice.finish_reason;
      }
    }
    const seconds = (performance.now() - (first ?? started)) / 1000;
    const rate = tokens && seconds > 0 ? (tokens / seconds).toFixed(1) : "-";
    meta.textContent = `${tier} · ${tokens} tokens · ${rate} tok/s · ${meta.dataset.finish || ""}`;
    if (reasoningBox) reasoningBox.open = false;
    history.push({ role: "assistant", content, reasoning_content: reasoning || undefined });
    $("status").textContent = "ready";
  } catch (err) {
    answer.classList.add("error");
    answer.textContent = `error: ${err.message}`;
    history.pop();
    $("status").textContent = "error";
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text) return;
  $("prompt").value = "";
  $("send").disabled = true;
  send(text).finally(() => { $("send").disabled = false; });
});
