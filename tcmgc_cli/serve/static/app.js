// The search page: query box -> /api/search -> cards; a card plays its moment; a toggle shows the attention.
"use strict";

const form = document.getElementById("search");
const input = document.getElementById("q");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const template = document.getElementById("card");

const seconds = (s) => `${s.toFixed(1)} s`;
const thumbUrl = (id, t) => `/media/thumb/${encodeURIComponent(id)}?t=${t.toFixed(2)}`;

async function getJson(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) {
    const detail = Array.isArray(body.detail) ? body.detail.map((d) => d.msg).join("; ") : body.detail;
    throw new Error(detail || response.statusText);
  }
  return body;
}

async function search(query) {
  results.replaceChildren();
  if (!query.trim()) { statusLine.textContent = "Type what happens in the video."; return; }
  statusLine.textContent = "Searching...";
  const started = performance.now();
  try {
    const data = await getJson(`/api/search?q=${encodeURIComponent(query)}&top_k=12`);
    const how = data.scorer === "clip" ? "CLIP similarity (no trained checkpoint)" : "TC-MGC";
    statusLine.textContent = `${data.results.length} videos for “${query}” (${how}, ${Math.round(performance.now() - started)} ms)`;
    for (const hit of data.results) results.append(card(hit, query));
  } catch (err) {
    statusLine.textContent = `Error: ${err.message}`;
  }
}

function card(hit, query) {
  const node = template.content.firstElementChild.cloneNode(true);
  node.dataset.videoId = hit.video_id;
  node.dataset.start = hit.start_sec;
  node.dataset.end = hit.end_sec;
  const middle = (hit.start_sec + hit.end_sec) / 2;
  for (const t of [hit.start_sec, middle, Math.max(hit.start_sec, hit.end_sec - 0.05)]) {
    const img = document.createElement("img");
    img.src = thumbUrl(hit.video_id, t);
    img.alt = `${hit.video_id} at ${seconds(t)}`;
    img.loading = "lazy";
    node.querySelector(".thumbs").append(img);
  }
  node.querySelector(".rank").textContent = `#${hit.rank}`;
  node.querySelector(".name").textContent = hit.video_id;
  node.querySelector(".span").textContent = `${seconds(hit.start_sec)} – ${seconds(hit.end_sec)}`;
  node.querySelector(".score").textContent = `score ${hit.score.toFixed(3)}`;
  const others = hit.moments.slice(1).map((m) => `${m.start_sec.toFixed(1)}–${m.end_sec.toFixed(1)} s`);
  node.querySelector(".moments").textContent = others.length ? `also ${others.join(", ")}` : "";
  const play = () => playMoment(node, hit);
  node.addEventListener("click", (e) => { if (!e.target.closest("button, video, .attention")) play(); });
  node.addEventListener("keydown", (e) => { if ((e.key === "Enter" || e.key === " ") && e.target === node) { e.preventDefault(); play(); } });
  const toggle = node.querySelector(".toggle");
  toggle.addEventListener("click", () => toggleAttention(node, toggle, hit, query));
  return node;
}

function playMoment(node, hit) {
  const video = node.querySelector(".player");
  video.hidden = false;
  const start = () => { video.currentTime = hit.start_sec; video.play(); };
  if (!video.src) {
    video.src = `/media/video/${encodeURIComponent(hit.video_id)}`;
    video.preload = "auto";
    video.addEventListener("loadedmetadata", start, { once: true });
    video.addEventListener("timeupdate", () => { if (video.currentTime >= hit.end_sec) video.pause(); });
  } else {
    start();
  }
}

async function toggleAttention(node, toggle, hit, query) {
  const box = node.querySelector(".attention");
  const open = box.hidden;
  box.hidden = !open;
  toggle.setAttribute("aria-expanded", String(open));
  if (!open || box.childElementCount) return;
  box.textContent = "Loading...";
  try {
    const data = await getJson(`/api/explain?q=${encodeURIComponent(query)}&video_id=${encodeURIComponent(hit.video_id)}`);
    box.replaceChildren(attentionTable(data));
  } catch (err) {
    box.textContent = `Error: ${err.message}`;
  }
}

function attentionTable(data) {
  const table = document.createElement("table");
  const head = table.insertRow();
  head.append(document.createElement("th"));
  for (const t of data.times) { const th = document.createElement("th"); th.textContent = `${t.toFixed(1)}s`; head.append(th); }
  data.words.forEach((word, i) => {
    const row = table.insertRow();
    const th = document.createElement("th");
    th.textContent = word;
    row.append(th);
    const peak = Math.max(...data.weights[i]) || 1;
    for (const w of data.weights[i]) {
      const cell = row.insertCell();
      cell.textContent = w.toFixed(2);
      cell.style.background = `rgba(200, 40, 40, ${(w / peak).toFixed(3)})`;
    }
  });
  return table;
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const query = input.value;
  history.replaceState(null, "", query.trim() ? `/?q=${encodeURIComponent(query)}` : "/");
  search(query);
});

const initial = new URLSearchParams(location.search).get("q");
if (initial) { input.value = initial; search(initial); }
