// The review page: pages of the queue from the server, keyboard decisions, each saved before it is shown.
"use strict";
const TOKEN = document.querySelector('meta[name="review-token"]').content;
const CLASSES = JSON.parse(document.getElementById("classes").textContent);
const $ = id => document.getElementById(id);
const FILTERS = {label: "f-label", suggested: "f-suggested", reason: "f-reason", status: "f-status", sort: "f-sort", size: "f-size"};
const S = {page: 0, cur: 0, items: [], pages: 1, busy: false};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
const pct = c => (c === null || c === undefined) ? "" : ` ${Math.round(100 * c)}%`;
function reviewer() { return $("reviewer").value.trim() || "reviewer"; }
function say(text) { $("msg").textContent = text || ""; }

// The view (filters, page) lives in the URL hash: a reload shows the same view.
function query() {
  const q = new URLSearchParams();
  for (const [k, id] of Object.entries(FILTERS)) if ($(id).value) q.set(k, $(id).value);
  q.set("page", S.page);
  return q;
}
function restore() {
  const q = new URLSearchParams(location.hash.slice(1));
  for (const [k, id] of Object.entries(FILTERS)) if (q.has(k)) $(id).value = q.get(k);
  S.page = Math.max(0, parseInt(q.get("page") || "0", 10) || 0);
  const saved = localStorage.getItem("prodcat-reviewer");
  if (saved) $("reviewer").value = saved;
}

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-Review-Token": TOKEN},
  };
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || r.status));
  return data;
}

async function load(cur) {
  const q = query();
  history.replaceState(null, "", "#" + q.toString());
  const data = await api("api/items?" + q.toString());
  if (data.items.length === 0 && S.page > 0 && S.page >= data.pages) { S.page = data.pages - 1; return load(cur); }
  S.items = data.items; S.pages = data.pages;
  S.cur = Math.min(cur || 0, Math.max(0, S.items.length - 1));
  $("pg").textContent = ` page ${data.page + 1} / ${data.pages} (${data.total} products) `;
  showCounts(data.counts);
  $("list").replaceChildren(...S.items.map(card));
  highlight();
}
function showCounts(c) {
  $("counts").textContent = `${c.pending} pending · ${c.decided} decided · ${c.skipped} skipped of ${c.total}`;
}

function decisionText(d) {
  if (!d) return null;
  const labels = {accept: `accepted → ${d.new_label}`, keep: `kept ${d.new_label}`, relabel: `relabelled → ${d.new_label}`, drop: "dropped", skip: "skipped", undo: "undone"};
  return `${labels[d.action] || d.action} (${d.reviewer})`;
}
function card(it, i) {
  const photo = it.has_image ? el("img", {src: "image?id=" + encodeURIComponent(it.id), alt: "photo of " + it.id, loading: "lazy"})
                             : el("span", {class: "small"}, "no image");
  const said = el("div", {class: "said"}, ...it.said.map(s => el("span", {}, `${s.source}: `, el("b", {}, s.label), pct(s.confidence))));
  const d = it.decision;
  const cls = !d ? "" : d.action === "drop" ? "drop" : d.action === "skip" ? "skip" : "done";
  return el("div", {class: "item", "data-id": it.id, "data-i": i},
    el("div", {class: "photo"}, photo),
    el("div", {class: "body"},
      el("div", {}, ...it.reasons.map(r => el("span", {class: "chip " + r}, r)), el("span", {class: "small"}, it.id)),
      el("div", {class: "t"}, it.title || "(no title)"),
      el("div", {class: "d"}, it.description),
      el("div", {}, "given: ", el("b", {class: "given"}, it.given_label ?? "(none)"), "   suggested: ",
         el("b", {class: it.suggestion === it.given_label ? "same" : "diff"}, it.suggestion), pct(it.confidence)),
      said,
      el("div", {class: "decision " + cls}, decisionText(d) || "")));
}
function highlight() {
  const cards = $("list").children;
  for (let i = 0; i < cards.length; i++) cards[i].classList.toggle("cur", i === S.cur);
  if (cards[S.cur]) cards[S.cur].scrollIntoView({block: "nearest"});
}
function replace(item) {
  const i = S.items.findIndex(x => x.id === item.id);
  if (i < 0) return -1;
  S.items[i] = item;
  $("list").children[i].replaceWith(card(item, i));
  return i;
}

async function decide(action, newLabel) {
  const it = S.items[S.cur];
  if (!it || S.busy) return;
  S.busy = true;
  try {
    const r = await api("api/decide", {id: it.id, action, new_label: newLabel ?? null, reviewer: reviewer()});
    replace(r.item); showCounts(r.counts); say("");
    await refreshHistory();
    if (S.cur < S.items.length - 1) { S.cur += 1; highlight(); }
    else if ($("f-status").value === "pending") await load(0);  // decided rows left the pending list
    else if (S.page < S.pages - 1) { S.page += 1; await load(0); }
  } catch (e) { say("not saved: " + e.message); }
  finally { S.busy = false; }
}
async function undo() {
  if (S.busy) return;
  S.busy = true;
  try {
    const r = await api("api/undo", {reviewer: reviewer()});
    showCounts(r.counts);
    const i = r.item ? replace(r.item) : -1;
    if (i >= 0) { S.cur = i; highlight(); } else await load(S.cur);
    say(`undone: ${decisionText(r.undone)} on ${r.undone.id}`);
    await refreshHistory();
  } catch (e) { say("undo: " + e.message); }
  finally { S.busy = false; }
}
async function refreshHistory() {
  const r = await api("api/history?" + new URLSearchParams({reviewer: reviewer(), limit: 30}));
  $("history").replaceChildren(...r.decisions.map(d => el("li", {"data-id": d.id}, el("b", {}, d.id), " ", decisionText(d))));
}

// Relabel: type-ahead over the classes (prefix matches first, then substring), arrows pick, Enter saves.
const TA = {sel: 0, matches: []};
function openTypeahead() {
  if (!S.items[S.cur]) return;
  $("ta").hidden = false; $("ta-input").value = ""; filterTypeahead(); $("ta-input").focus();
}
function closeTypeahead() { $("ta").hidden = true; $("ta-input").blur(); }
function filterTypeahead() {
  const q = $("ta-input").value.trim().toLowerCase();
  const starts = [], contains = [];
  for (const c of CLASSES) {
    const l = c.toLowerCase();
    if (l.startsWith(q)) starts.push(c); else if (l.includes(q)) contains.push(c);
  }
  TA.matches = starts.concat(contains).slice(0, 50); TA.sel = 0; drawTypeahead();
}
function drawTypeahead() {
  $("ta-list").replaceChildren(...TA.matches.map((c, i) => el("li", {class: i === TA.sel ? "sel" : null}, c)));
  const s = $("ta-list").children[TA.sel];
  if (s) s.scrollIntoView({block: "nearest"});
}
$("ta-input").addEventListener("input", filterTypeahead);
$("ta-input").addEventListener("keydown", e => {
  if (e.key === "ArrowDown") TA.sel = Math.min(TA.sel + 1, TA.matches.length - 1);
  else if (e.key === "ArrowUp") TA.sel = Math.max(TA.sel - 1, 0);
  else if (e.key === "Escape") { closeTypeahead(); e.preventDefault(); return; }
  else if (e.key === "Enter") {
    const label = TA.matches[TA.sel];
    e.preventDefault();
    if (label !== undefined) { closeTypeahead(); decide("relabel", label); }
    return;
  } else return;
  e.preventDefault(); drawTypeahead();
});

const KEYS = {
  j: () => { S.cur = Math.min(S.cur + 1, S.items.length - 1); highlight(); },
  k: () => { S.cur = Math.max(S.cur - 1, 0); highlight(); },
  a: () => decide("accept"), c: () => decide("keep"), d: () => decide("drop"), s: () => decide("skip"),
  r: openTypeahead, u: undo,
  n: () => { if (S.page < S.pages - 1) { S.page += 1; load(0); } },
  p: () => { if (S.page > 0) { S.page -= 1; load(0); } },
};
KEYS.ArrowDown = KEYS.j; KEYS.ArrowUp = KEYS.k;
document.addEventListener("keydown", e => {
  if (!$("ta").hidden || e.altKey || e.metaKey) return;
  if (["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) return;
  const f = (e.ctrlKey && e.key === "z") ? undo : (!e.ctrlKey && KEYS[e.key]);
  if (f) { e.preventDefault(); f(); }
});
$("list").addEventListener("click", e => {
  const c = e.target.closest(".item");
  if (c) { S.cur = +c.dataset.i; highlight(); }
});
for (const id of Object.values(FILTERS)) $(id).addEventListener("change", () => { S.page = 0; load(0); $(id).blur(); });
$("reviewer").addEventListener("change", () => { localStorage.setItem("prodcat-reviewer", reviewer()); refreshHistory(); });
$("prev").onclick = KEYS.p; $("next").onclick = KEYS.n;

restore();
load(0).then(refreshHistory).catch(e => say(e.message));
