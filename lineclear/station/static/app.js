// lineclear station page: status and history from the JSON API, live updates from /api/events (SSE).
// No framework, no CDN: the station works offline. Every text goes in through textContent (no HTML injection).
"use strict";

const state = { last: 0, sets: new Map(), acks: false };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function fmtTime(iso) {
  if (!iso) return "-";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function fmtShift(start, end) {
  const a = new Date(start), b = new Date(end);
  const hm = { hour: "2-digit", minute: "2-digit", hourCycle: "h23" };
  return a.toLocaleDateString([], { weekday: "short" }) + " " +
    a.toLocaleTimeString([], hm) + "–" + b.toLocaleTimeString([], hm);
}

function fmtNum(x) {
  return x === null || x === undefined ? "-" : Number(x).toPrecision(4);
}

function renderTiles(set) {
  const tiles = $("tiles");
  tiles.replaceChildren();
  if (!set) return;
  for (const v of set.views) {
    const ratio = v.score !== null && v.threshold ? Math.min(v.score / v.threshold, 2) / 2 : 0;
    const bar = el("div", { class: "bar" }, el("div", { class: "fill " + v.verdict }), el("div", { class: "mark" }));
    bar.firstChild.style.width = (ratio * 100).toFixed(1) + "%";
    const img = v.overlay_url
      ? el("img", { src: v.overlay_url, alt: "overlay of view " + v.view, "data-testid": "overlay-" + v.view })
      : el("div", { class: "noimg", text: "no overlay" });
    const tile = el("article", { class: "tile " + v.verdict, "data-testid": "tile-" + v.view, "data-set": String(set.set) },
      el("h3", { text: "view " + v.view }),
      el("div", { class: "verdict", "data-testid": "verdict-" + v.view, text: v.verdict.toUpperCase() }),
      img,
      el("div", { class: "score", text: "score " + fmtNum(v.score) + " / threshold " + fmtNum(v.threshold) }),
      bar,
      el("div", { class: "reason", "data-testid": "reason-" + v.view, text: v.verdict === "clear" ? "" : (v.reason || "") }),
      el("div", { class: "small", text: "set " + set.set + " · " + fmtTime(set.checked_utc) }));
    tiles.append(tile);
  }
  const head = $("set-verdict");
  head.className = "set-verdict " + set.verdict;
  head.textContent = { clear: "LINE CLEAR", leftover: "LEFTOVER FOUND", undecided: "UNDECIDED: LOOK" }[set.verdict];
  $("set-label").textContent = "set " + set.set + " · exit " + set.exit_code + " · " + fmtTime(set.checked_utc) +
    (set.recorded ? "" : " · NOT RECORDED");
}

function ackText(set) {
  if (!set.acks || !set.acks.length) return "";
  const a = set.acks[set.acks.length - 1];
  return a.name + " · " + fmtTime(a.acknowledged_utc) + (a.comment ? " · " + a.comment : "");
}

function historyRow(set) {
  const pick = el("button", { type: "button", class: "pick", text: "ack…" });
  pick.addEventListener("click", () => { $("ack-set").value = set.set; $("ack-name").focus(); });
  return el("tr", { "data-testid": "history-" + set.set, class: set.verdict },
    el("td", { text: String(set.set) }), el("td", { text: fmtTime(set.checked_utc) }),
    el("td", { class: "v", text: set.verdict }),
    el("td", { text: set.views.map((v) => v.view + ":" + v.verdict).join(" ") }),
    el("td", { class: "ack", "data-testid": "ack-" + set.set, text: ackText(set) }), el("td", {}, pick));
}

function addSet(set) {
  state.sets.set(set.set, set);
  const body = $("history").tBodies[0];
  const row = historyRow(set);
  const old = body.querySelector(`[data-testid="history-${set.set}"]`);
  if (old) old.replaceWith(row);
  else {
    // newest first
    const after = [...body.rows].find((r) => Number(r.firstChild.textContent) < set.set);
    body.insertBefore(row, after || null);
    while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
  }
  if (set.set >= state.last) { state.last = set.set; renderTiles(set); }
}

function renderStatus(st) {
  state.acks = st.acknowledgements;
  const tb = $("shifts").tBodies[0];
  tb.replaceChildren(...st.shifts.map((s, i) => el("tr", i === 0 ? { class: "current" } : {},
    el("td", { text: fmtShift(s.start, s.end) }),
    el("td", { text: String(s.counts.clear) }), el("td", { text: String(s.counts.leftover) }),
    el("td", { text: String(s.counts.undecided) }))));
  $("totals").textContent = "recorded: clear " + st.counts.clear + " · leftover " + st.counts.leftover +
    " · undecided " + st.counts.undecided;
  const alerts = [];
  if (!st.watching) alerts.push("not watching" + (st.watch_error ? ": " + st.watch_error : ""));
  else if (st.watch_error) alerts.push(st.watch_error);
  if (st.record_error) alerts.push("record: " + st.record_error);
  $("alerts").replaceChildren(...alerts.map((a) => el("div", { class: "alert", text: a })));
  $("footer").textContent = "lineclear " + st.station.lineclear_version + " · bundle " + st.station.bundle.path +
    " (manifest " + st.station.bundle.manifest_sha256.slice(0, 12) + "…) · watching " + st.station.watch +
    " · record " + (st.station.record || "in memory only");
  if (!state.acks) $("ack-result").textContent = "acknowledgements are off (no --token-file)";
  if (st.latest && st.latest.set >= state.last) addSet(st.latest);
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

async function refreshStatus() {
  try { renderStatus(await getJSON("/api/status")); } catch (e) { console.error(e); }
}

async function catchUp() {
  // after (re)connecting: every set since the last one shown, so the page never misses a set
  let since = state.last ? state.last : 0;
  if (!since) {
    const st = await getJSON("/api/status");
    since = Math.max(0, (st.last_set || 0) - 50);
  }
  for (;;) {
    const page = await getJSON("/api/sets?since=" + since + "&limit=500");
    for (const s of page.sets) addSet(s);
    if (page.sets.length < 500) break;
    since = page.sets[page.sets.length - 1].set;
  }
  await refreshStatus();
}

function connect() {
  const es = new EventSource("/api/events");
  es.addEventListener("hello", () => {
    $("conn").textContent = "live"; $("conn").className = "conn live";
    catchUp().catch(console.error);
  });
  es.addEventListener("set", (ev) => { addSet(JSON.parse(ev.data)); refreshStatus(); });
  es.addEventListener("ack", (ev) => {
    const a = JSON.parse(ev.data);
    const s = state.sets.get(a.set);
    if (s) { s.acks = [...(s.acks || []), a]; addSet(s); }
  });
  es.onerror = () => { $("conn").textContent = "reconnecting…"; $("conn").className = "conn down"; };
}

async function submitAck(ev) {
  ev.preventDefault();
  const n = Number($("ack-set").value);
  const token = $("ack-token").value;
  if (token) sessionStorage.setItem("lineclear-token", token);
  const out = $("ack-result");
  out.textContent = "…";
  const body = JSON.stringify({ name: $("ack-name").value, comment: $("ack-comment").value });
  const r = await fetch("/api/sets/" + n + "/ack", {
    method: "POST", body,
    headers: { "Content-Type": "application/json", Authorization: "Bearer " + (token || sessionStorage.getItem("lineclear-token") || "") },
  });
  const j = await r.json().catch(() => ({}));
  if (r.ok) {
    out.textContent = "set " + n + " acknowledged by " + j.name + " (record row " + j.row.seq + ")";
    out.className = "small ok";
    $("ack-comment").value = "";
  } else {
    out.textContent = "not acknowledged: " + (typeof j.detail === "string" ? j.detail : "HTTP " + r.status);
    out.className = "small err";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const saved = sessionStorage.getItem("lineclear-token");
  if (saved) $("ack-token").value = saved;
  $("ack-form").addEventListener("submit", (ev) => submitAck(ev).catch((e) => { $("ack-result").textContent = String(e); }));
  connect();
  setInterval(refreshStatus, 30000); // shift boundaries pass without a set
});
