// Paging, sorting and filtering of the review page's server-rendered rows (no network, no CDN).
"use strict";
const body = document.getElementById("body");
const ALL = Array.from(body.rows);
const RANK = Array.from(document.getElementById("head").cells).findIndex(th => th.textContent === "rank");
const S = {col: RANK, dir: 1, page: 0};
const q = document.getElementById("q"), dis = document.getElementById("dis"), ps = document.getElementById("ps");
for (const tr of ALL) tr.dataset.search = tr.textContent.toLowerCase();
function value(tr, col, num) {
  const td = tr.cells[col], v = td.dataset.v !== undefined ? td.dataset.v : td.textContent;
  return num ? parseFloat(v) : v.toLowerCase();
}
function rows() {
  const f = q.value.trim().toLowerCase();
  const r = ALL.filter(tr => (!dis.checked || tr.dataset.disagree === "1") && (!f || tr.dataset.search.includes(f)));
  const num = document.getElementById("head").cells[S.col].dataset.type === "num";
  const rank = tr => value(tr, RANK, true);
  return r.sort((a, b) => {
    const x = value(a, S.col, num), y = value(b, S.col, num);
    return (x < y ? -1 : x > y ? 1 : rank(a) - rank(b)) * S.dir;
  });
}
function render() {
  const head = document.getElementById("head").cells;
  for (let i = 0; i < head.length; i++) head[i].className = i === S.col ? (S.dir > 0 ? "sorted-asc" : "sorted-desc") : "";
  const all = rows(), n = +ps.value, pages = Math.max(1, Math.ceil(all.length / n));
  S.page = Math.min(S.page, pages - 1);
  document.getElementById("pg").textContent = `page ${S.page + 1} / ${pages} (${all.length} rows)`;
  body.replaceChildren(...all.slice(S.page * n, S.page * n + n));
}
Array.from(document.getElementById("head").cells).forEach((th, i) => {
  th.onclick = () => { S.dir = S.col === i ? -S.dir : 1; S.col = i; S.page = 0; render(); };
});
q.oninput = dis.onchange = ps.onchange = () => { S.page = 0; render(); };
document.getElementById("prev").onclick = () => { S.page = Math.max(0, S.page - 1); render(); };
document.getElementById("next").onclick = () => { S.page += 1; render(); };
render();
