// The line dashboard: one EventSource, state rendered into plain DOM. No external code.
"use strict";
const $ = (id) => document.getElementById(id);
const last = {};
let state = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c);
  return node;
}

function sparkline(values, threshold) {
  const w = 240, h = 40;
  const all = values.concat(threshold == null ? [] : [threshold]);
  const lo = Math.min(...all, 0), hi = Math.max(...all, 1e-9);
  const y = (v) => (h - 2 - (v - lo) / (hi - lo || 1) * (h - 4)).toFixed(1);
  const pts = values.map((v, i) => `${(i / Math.max(values.length - 1, 1) * w).toFixed(1)},${y(v)}`).join(" ");
  const line = threshold == null ? "" : `<line x1="0" x2="${w}" y1="${y(threshold)}" y2="${y(threshold)}" stroke="#e05050" stroke-dasharray="4 3"/>`;
  return `<svg class="spark" viewBox="0 0 ${w} ${h}" preserveAspectRatio="none">${line}<polyline fill="none" stroke="#6cb6ff" points="${pts}"/></svg>`;
}

function cameraCard(id) {
  let card = document.querySelector(`.camera[data-camera="${id}"]`);
  if (card) return card;
  card = el("div", {class: "card camera", "data-camera": id});
  card.innerHTML = `<h2>${id} <span class="badge verdict">-</span> <span class="badge drift" title="drift">drift -</span></h2>
    <img alt="latest frame of ${id}">
    <div class="spark-box"></div>
    <div class="counters">
      <span>produced <b data-counter="produced">0</b></span><span>processed <b data-counter="processed">0</b></span>
      <span>dropped <b data-counter="dropped">0</b></span><span>failed <b data-counter="failed">0</b></span>
      <span>fps <b data-counter="fps">0</b></span><span>health <b data-counter="health">-</b></span>
      <span>p50 <b data-counter="p50">-</b> ms</span><span>p99 <b data-counter="p99">-</b> ms</span>
    </div>`;
  $("cameras").append(card);
  return card;
}

function renderCameras(s) {
  for (const [id, cam] of Object.entries(s.summary.cameras)) {
    const card = cameraCard(id);
    const set = (k, v) => { card.querySelector(`[data-counter="${k}"]`).textContent = v; };
    for (const k of ["produced", "processed", "dropped", "failed"]) set(k, cam[k]);
    set("fps", cam.fps.toFixed(1));
    set("health", cam.health);
    set("p50", cam.latency_p50_ms == null ? "-" : cam.latency_p50_ms.toFixed(0));
    set("p99", cam.latency_p99_ms == null ? "-" : cam.latency_p99_ms.toFixed(0));
    const latest = s.latest[id];
    const verdict = card.querySelector(".verdict");
    if (latest) {
      const t = s.thresholds[id];
      const bad = t == null ? latest.label === true : latest.score >= t;
      verdict.textContent = `${bad ? "anomalous" : "normal"} ${latest.score.toFixed(3)}`;
      verdict.className = `badge verdict ${bad ? "reject" : "accept"}`;
      if (last[id] !== latest.frame) {
        last[id] = latest.frame;
        card.querySelector("img").src = `/api/frame/${encodeURIComponent(id)}.jpg?f=${latest.frame}`;
      }
    }
    card.querySelector(".spark-box").innerHTML = sparkline(s.sparklines[id] || [], s.thresholds[id]);
    const drift = (s.summary.drift || {})[id];
    const badge = card.querySelector(".drift");
    badge.textContent = drift ? `drift ${drift.state}` : "drift off";
    badge.className = `badge drift ${drift ? drift.state : ""}`;
  }
}

function renderStations(s) {
  const rejectedOnly = $("rejected-only").checked;
  const box = $("stations");
  box.textContent = "";
  for (const [sid, st] of Object.entries(s.summary.stations)) {
    const rows = (s.parts[sid] || []).slice().reverse()
      .filter((p) => !rejectedOnly || p.decision === "reject")
      .map((p) => `<tr class="part ${p.decision}" data-part="${p.part}"><td>${p.part_id}</td>
        <td><span class="badge ${p.decision}">${p.decision}</span></td><td>${p.score == null ? "-" : p.score.toFixed(3)}</td>
        <td>${p.late ? "late " : ""}${p.degraded ? "degraded" : ""}</td></tr>`).join("");
    const div = el("div", {class: "card station", "data-station": sid});
    div.innerHTML = `<h2>${sid} <span class="badge">${(s.summary.health.stations || {})[sid] || ""}</span></h2>
      <div class="counters"><span>triggered <b data-counter="triggered">${st.triggered}</b></span>
      <span>accepted <b data-counter="accepted">${st.accepted}</b></span><span>rejected <b data-counter="rejected">${st.rejected}</b></span>
      <span>late <b data-counter="late">${st.late}</b></span><span>fail-safe <b data-counter="fail_safe">${st.fail_safe}</b></span></div>
      <table><tr><th>part</th><th>decision</th><th>score</th><th></th></tr>${rows}</table>`;
    box.append(div);
  }
}

async function openPart(seq) {
  const res = await fetch(`/api/part/${seq}`);
  if (!res.ok) return;
  const p = await res.json();
  $("part-view").hidden = false;
  $("part-title").textContent = `Part ${p.part_id} (${p.station}): ${p.decision}`;
  $("part-facts").textContent = JSON.stringify({decision: p.decision, verdict: p.verdict, score: p.score, rule: p.rule,
    threshold: p.threshold, late: p.late, degraded: p.degraded, missing_cameras: p.missing_cameras}, null, 1);
  const frames = $("part-frames");
  frames.textContent = "";
  for (const f of p.frames) {
    const card = el("div", {class: "card part-frame"});
    card.innerHTML = `<div>${f.camera} #${f.frame}: ${f.status} ${f.score == null ? "" : f.score.toFixed(3)}</div>`;
    if (f.status === "ok") card.append(el("img", {src: `/api/part/${p.part}/${encodeURIComponent(f.camera)}/${f.frame}.jpg`, alt: `${f.camera} ${f.frame}`}));
    frames.append(card);
  }
  $("part-view").scrollIntoView();
}

function render(s) {
  state = s;
  $("line-name").textContent = s.summary.line;
  for (const k of ["produced", "processed", "dropped", "failed"]) $(`total-${k}`).textContent = s.summary[k];
  $("fps").textContent = s.summary.fps.toFixed(1);
  $("status").textContent = s.finished ? `finished: ${s.summary.exit_reason}` : "live";
  $("status").className = `badge ${s.finished ? "" : "ok"}`;
  document.body.dataset.finished = s.finished ? "yes" : "no";
  renderCameras(s);
  renderStations(s);
}

$("stations").addEventListener("click", (e) => {
  const row = e.target.closest("tr.part");
  if (row) openPart(row.dataset.part);
});
$("rejected-only").addEventListener("change", () => state && renderStations(state));
$("part-close").addEventListener("click", () => { $("part-view").hidden = true; });

const source = new EventSource("/api/events");
let updates = 0;
source.addEventListener("state", (e) => { updates += 1; document.body.dataset.updates = updates; render(JSON.parse(e.data)); });
source.addEventListener("end", () => source.close());
source.onerror = () => { if (!state || !state.finished) $("status").textContent = "reconnecting"; };
