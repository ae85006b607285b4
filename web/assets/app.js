// The local page: it polls the agent's JSON and draws the page with DOM
// nodes (text from devices is never parsed as HTML) and SVG plots.
"use strict";

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === undefined || k === null || k === false) continue;
    e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

function kv(pairs) {
  const dl = el("dl", { class: "kv" });
  for (const [k, v] of pairs) {
    if (v === undefined || v === null || v === "") continue;
    dl.append(el("dt", {}, k), el("dd", {}, v));
  }
  return dl;
}

function age(s) {
  if (s === undefined || s === null || !isFinite(s)) return "";
  s = Math.max(0, s);
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 60) return Math.floor(s) + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + String(Math.floor(s % 60)).padStart(2, "0") + " s";
  if (s < 48 * 3600) return Math.floor(s / 3600) + " h " + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}
const since = (ts, now) => ts ? age((now - Date.parse(ts)) / 1000) : "";

function num(v, unit) {
  if (v === undefined || v === null) return "";
  const a = Math.abs(v);
  let s;
  if (unit === "W" && a >= 10000) s = (v / 1000).toFixed(1) + " k";
  else if (a >= 1000 || Number.isInteger(v)) s = Math.round(v).toLocaleString("en-US") + " ";
  else if (a >= 100) s = v.toFixed(1) + " ";
  else s = (+v.toPrecision(4)) + " ";
  return (s + (unit || "")).trim();
}
function watts(v) {
  if (v === undefined || v === null) return "";
  const dir = v > 0 ? " (discharging)" : v < 0 ? " (charging)" : "";
  return num(v, "W") + dir;
}
function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return n.toFixed(i ? 1 : 0) + " " + u[i];
}
const clock = (t) => new Date(t).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });

let last = null;        // the last status
let lastAt = 0;         // when it came, by this browser's clock
let points = [];

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}

function drawVerdict(st) {
  const v = $("verdict");
  const ok = st.verdict === "OK";
  v.className = "verdict " + (ok ? "ok" : "degraded");
  v.querySelector(".word").textContent = ok ? "OK" : "DEGRADED";
  $("reasons").replaceChildren(...(st.reasons || []).map((r) => el("li", {}, r)));
}

function drawSafety(st, now) {
  const s = st.safety || {};
  const ok = s.state === "ok";
  const rows = [["mode", s.mode], ["commanding", s.applied_w !== undefined ? watts(s.applied_w) : ""],
    ["trips", (s.trips || []).join(", ") || "none"]];
  // Whatever else the agent says about safety (per device, per rule) is
  // shown as it comes.
  for (const [name, d] of Object.entries(s.devices || {})) {
    rows.push([name, d.safety === "ok" ? "ok" : d.safety + ((d.trips || []).length ? " (" + d.trips.join(", ") + ")" : "")]);
  }
  for (const [k, v] of Object.entries(s)) {
    if (["state", "mode", "applied_w", "trips", "devices"].includes(k)) continue;
    rows.push([k.replaceAll("_", " "), typeof v === "object" ? JSON.stringify(v) : String(v)]);
  }
  $("safety").replaceChildren(
    el("div", { class: "big" }, el("span", { class: "pill " + (ok ? "ok" : "bad") }, ok ? "ok" : "holding"), " ", ok ? "" : s.state),
    kv(rows));
}

function drawLease(st) {
  const l = st.lease;
  if (!l) {
    $("lease").replaceChildren(el("div", { class: "big" }, "none"), el("div", { class: "muted" }, "The battery runs its fallback: " + ((st.safety || {}).mode || "?")));
    return;
  }
  const left = l.remaining_s - (Date.now() - lastAt) / 1000;
  $("lease").replaceChildren(
    el("div", { class: "big", id: "lease-left" }, age(left), " left"),
    kv([["id", l.id], ["version", l.version], ["from", l.source], ["until", new Date(l.valid_until).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" })], ["then", l.fallback], ["key", l.key_id]]));
}

function drawUplink(st, now) {
  const u = st.uplink || {};
  const state = u.connected ? el("span", { class: "pill ok" }, "connected") :
    u.boot_delay_until ? el("span", { class: "pill warn" }, "boot delay") : el("span", { class: "pill bad" }, "down");
  $("uplink").replaceChildren(el("div", { class: "big" }, state), kv([
    ["broker", u.broker],
    [u.connected ? "for" : "down for", u.connected ? since(u.connected_since, now) : since(u.down_since, now)],
    ["published", u.published], ["attempts", u.attempts], ["next try", u.next_attempt ? "in " + age((Date.parse(u.next_attempt) - now) / 1000) : ""],
    ["last error", u.last_error]]));
}

function drawBuffer(st, now) {
  const b = st.buffer || {};
  const pct = b.max_bytes ? Math.round(100 * b.file_bytes / b.max_bytes) : 0;
  $("buffer").replaceChildren(el("div", { class: "big" }, (b.pending_readings || 0).toLocaleString("en-US"), el("span", { class: "muted" }, " readings pending")), kv([
    ["oldest", b.oldest_pending ? since(b.oldest_pending, now) + " ago" : "none"],
    ["events", b.pending_events], ["aggregates", b.pending_aggregates],
    ["size", bytes(b.file_bytes) + " of " + bytes(b.max_bytes) + " (" + pct + " %)"],
    ["disk", b.disk_full ? "FULL" : ""], ["dropped", b.readings_dropped ? b.readings_dropped + " readings" : ""], ["error", b.error]]));
}

function drawDevices(st, now) {
  const byDev = {};
  for (const p of points) (byDev[p.device] = byDev[p.device] || []).push(p);
  const cards = (st.devices || []).map((d) => {
    const id = d.identity || {};
    const head = el("div", { class: "head" },
      el("span", { class: "name" }, d.name),
      el("span", { class: "pill " + (d.up ? "ok" : "bad") }, d.up ? "up" : "down"),
      ((st.safety || {}).devices || {})[d.name] ? el("span", { class: "pill " + (st.safety.devices[d.name].safety === "ok" ? "ok" : "bad") }, "safety " + st.safety.devices[d.name].safety) : "",
      el("span", { class: "muted" }, [id.manufacturer, id.model].filter(Boolean).join(" ")),
      el("span", { class: "muted" }, id.serial ? "serial " + id.serial : ""),
      el("span", { class: "muted" }, id.firmware ? "fw " + id.firmware : ""));
    const body = el("div", { class: "body" }, kv([
      ["link", d.transport + " " + d.address + " unit " + d.unit_id],
      ["last good poll", d.last_ok ? since(d.last_ok, now) + " ago" : "never"],
      ["polls", d.polls + " (" + d.failures + " failed), last took " + num(d.poll_ms, "ms")],
      ["down for", d.up ? "" : since(d.down_since, now)],
      ["error", d.last_error]]));
    if (!d.up && d.hint) body.append(el("div", { class: "hint" }, d.hint));
    const rows = (byDev[d.name] || []).map((p) => {
      const good = p.v !== undefined;
      let v = good ? num(p.v, p.unit) : "[" + (p.q || "no value") + "]";
      let extra = "";
      if (!good && p.last_good !== undefined) extra = "last good " + num(p.last_good, p.unit) + ", " + since(p.last_good_ts, now) + " ago";
      return el("tr", { class: good && !p.stale ? "" : "bad", "data-point": d.name + "/" + p.name },
        el("td", {}, p.name, extra ? el("div", { class: "muted" }, extra) : ""), el("td", { class: "v" }, v),
        el("td", { class: "age" }, age(p.age_s)));
    });
    if (rows.length) body.append(el("table", { class: "points" }, el("thead", {}, el("tr", {}, el("th", {}, "point"), el("th", { style: "text-align:right" }, "value"), el("th", { style: "text-align:right" }, "age"))), el("tbody", {}, rows)));
    return el("div", { class: "card device", "data-device": d.name }, head, body);
  });
  $("devices").replaceChildren(...cards);
}

function drawMode(st) {
  const can = st.can_change && (st.agent.local_modes || []).length > 0;
  $("mode-card").hidden = !can;
}

async function refresh() {
  try {
    const [st, pts] = await Promise.all([get("api/status"), get("api/points")]);
    last = st; lastAt = Date.now(); points = pts;
    $("offline").hidden = true;
  } catch (e) {
    $("offline").hidden = false;
    if (!last) return;
  }
  const now = Date.now();
  const st = last;
  $("gateway").textContent = st.agent.gateway_id;
  $("meta").textContent = "v" + st.agent.version + " · up " + age(st.agent.uptime_s) + " · clock " + st.agent.clock;
  document.title = (st.verdict === "OK" ? "OK" : "DEGRADED") + " · hearth " + st.agent.gateway_id;
  drawVerdict(st); drawSafety(st, now); drawLease(st); drawUplink(st, now); drawBuffer(st, now); drawDevices(st, now); drawMode(st);
  $("updated").textContent = "Updated " + new Date(lastAt).toLocaleTimeString() + ".";
}

async function refreshEvents() {
  let evs;
  try { evs = await get("api/events"); } catch (e) { return; }
  const items = evs.slice(-30).reverse().map((e) => {
    const d = e.data ? Object.entries(e.data).map(([k, v]) => k + "=" + (typeof v === "object" ? JSON.stringify(v) : v)).join(" ") : "";
    return el("li", {}, el("span", { class: "t" }, new Date(e.ts).toLocaleTimeString()), el("span", {}, el("b", {}, e.type), d ? el("div", { class: "d" }, d) : ""));
  });
  $("events").replaceChildren(...(items.length ? items : [el("li", { class: "muted" }, "No events in the last day.")]));
}

// axisLabel is a short label for an axis: kilowatts above 1 kW.
function axisLabel(v, unit) {
  if (unit === "W" && Math.abs(v) >= 1000) return (v / 1000).toFixed(1) + " kW";
  return Math.round(v) + " " + unit;
}

// plot draws series (each {name, color, values}) against t as SVG, with
// gaps where a minute has no data.
function plot(box, now, t, series, opts) {
  const W = 400, H = 170, L = 44, R = 6, T = 8, B = 18;
  const NS = "http://www.w3.org/2000/svg";
  const s = (tag, a) => { const e = document.createElementNS(NS, tag); for (const k in a) e.setAttribute(k, a[k]); return e; };
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": box.dataset.title });
  const t0 = now - 24 * 3600e3;
  let lo = opts.min, hi = opts.max;
  for (const se of series) for (const v of se.values) if (v !== null) { lo = lo === undefined ? v : Math.min(lo, v); hi = hi === undefined ? v : Math.max(hi, v); }
  if (lo === undefined) { lo = 0; hi = 1; }
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const pad = (hi - lo) * 0.08;
  if (opts.min === undefined) lo -= pad;
  if (opts.max === undefined) hi += pad;
  const x = (ms) => L + (W - L - R) * (ms - t0) / (now - t0);
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  for (let i = 0; i <= 4; i++) {
    const v = lo + (hi - lo) * i / 4;
    svg.append(s("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    const lab = s("text", { x: L - 4, y: y(v) + 4, "text-anchor": "end" }); lab.textContent = axisLabel(v, opts.unit); svg.append(lab);
  }
  if (lo < 0 && hi > 0) svg.append(s("line", { class: "zero", x1: L, x2: W - R, y1: y(0), y2: y(0) }));
  for (let h = 0; h <= 24; h += 6) {
    const ms = t0 + h * 3600e3;
    const lab = s("text", { x: x(ms), y: H - 4, "text-anchor": h === 0 ? "start" : h === 24 ? "end" : "middle" });
    lab.textContent = h === 24 ? "now" : clock(ms); svg.append(lab);
  }
  let drawn = 0;
  for (const se of series) {
    let d = "", prev = null;
    se.values.forEach((v, i) => {
      if (v === null || t[i] < t0) { prev = null; return; }
      // A gap of more than five minutes breaks the line.
      const jump = prev === null || t[i] - prev > 5 * 60e3;
      d += (jump ? "M" : "L") + x(t[i]).toFixed(1) + " " + y(v).toFixed(1);
      if (jump) d += "h0.01"; // a lone minute still shows
      prev = t[i]; drawn++;
    });
    svg.append(s("path", { d, stroke: se.color, "data-series": se.name }));
  }
  const title = el("div", { class: "ptitle" }, el("b", {}, box.dataset.title),
    series.map((se) => { const v = se.values.filter((x) => x !== null); return el("span", {}, el("span", { class: "key", style: "background:" + se.color }), se.label + (v.length ? " " + num(v[v.length - 1], opts.unit) : "")); }));
  if (!drawn) title.append(el("span", {}, "no data yet"));
  box.replaceChildren(title, svg);
}

async function refreshHistory() {
  let h;
  try { h = await get("api/history"); } catch (e) { return; }
  const css = getComputedStyle(document.documentElement);
  const color = (v) => css.getPropertyValue(v).trim();
  const sr = h.series || {};
  const now = Date.parse(h.now);
  plot($("plot-soc"), now, h.t, sr.soc_pct ? [{ name: "soc_pct", label: "SoC", color: color("--soc"), values: sr.soc_pct }] : [], { min: 0, max: 100, unit: "%" });
  const pw = [];
  if (sr.battery_w) pw.push({ name: "battery_w", label: "battery", color: color("--batt"), values: sr.battery_w });
  if (sr.grid_w) pw.push({ name: "grid_w", label: "grid", color: color("--grid"), values: sr.grid_w });
  if (sr.pv_w) pw.push({ name: "pv_w", label: "PV", color: color("--pv"), values: sr.pv_w });
  plot($("plot-power"), now, h.t, pw, { unit: "W" });
}

function setupMode() {
  const f = $("mode-form");
  const res = $("mode-result");
  $("mode-select").addEventListener("change", () => { $("power-label").hidden = $("mode-select").value !== "power"; });
  async function send(body) {
    res.className = ""; res.textContent = "…";
    body.password = f.password.value;
    try {
      const r = await fetch("api/mode", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      const j = await r.json();
      if (!r.ok) { res.className = "err"; res.textContent = "Refused: " + j.error; return; }
      res.className = "ok";
      res.textContent = j.result === "cleared" ? "Local mode ended." : j.result + (j.reason ? " (" + j.reason + ")" : "") + (j.applied_w !== undefined ? ", " + watts(j.applied_w) : "");
      f.password.value = "";
      refresh();
    } catch (e) { res.className = "err"; res.textContent = "No answer from the agent."; }
  }
  f.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const body = { mode: f.mode.value, for: f.for.value };
    if (body.mode === "power") body.power_w = Number(f.power_w.value);
    send(body);
  });
  $("mode-clear").addEventListener("click", () => send({ clear: true }));
}

setupMode();
refresh(); refreshEvents(); refreshHistory();
setInterval(refresh, 2000);
setInterval(refreshEvents, 10000);
setInterval(refreshHistory, 60000);
// The lease countdown ticks between polls.
setInterval(() => { if (last && last.lease) drawLease(last); }, 1000);
