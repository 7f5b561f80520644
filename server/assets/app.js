// The triggers dashboard: one page, no framework, no build step. Everything it shows
// comes from the HTTP API, called with the key the user enters (SPEC §6, §7, §10).
// Untrusted data (payloads, errors, stream names) only ever reaches the page through
// textContent, never innerHTML.
"use strict";

// ---------------------------------------------------------------- constants, state

const KEY_STORAGE = "triggers.apiKey"; // sessionStorage: gone when the tab closes
const REFRESH_STORAGE = "triggers.refreshMs"; // localStorage: a preference, not a secret
// 0 turns the periodic refresh off: the live stream alone updates the page (and the
// page still retries every 5 s while it shows an error, so it recovers by itself).
const REFRESH_CHOICES = [2000, 5000, 10000, 30000, 0];
const ERROR_RETRY_MS = 5000;
const INBOX_LIMIT = 25;
const ACTIVITY_LIMIT = 50; // entries kept in the debug panel's list
const CHARTS_EVERY_MS = 10000;
const CARDS_DEBOUNCE_MS = 300;
const STREAM_MAX_BACKOFF_MS = 10000;
const METRICS = ["total", "pending", "delivered", "failed", "queue_depth", "dlq_count",
  "last_processed_at", "processing_rate_per_min"];
const TABS = ["inbox", "dlq", "streams", "webhooks", "debug"];
const DELIVERIES_LIMIT = 50;
const DELETE_CONFIRM_MS = 6000; // how long "Really delete?" waits for its second click
const RECOVER_SINCE_MS = 24 * 3600 * 1000; // Recover queues again what failed in the last 24 h
const SVG_NS = "http://www.w3.org/2000/svg";

const state = {
  key: "",
  // Bumped whenever the key changes: answers to requests made with an older key are
  // dropped, so a slow answer never paints another tenant's data.
  generation: 0,
  refreshMs: 5000,
  timer: null,
  refreshing: false,
  again: false, // a refresh was asked for while one ran: run another right after
  backoffUntil: 0, // 429: no request before this time (ms since epoch)
  cardsTimer: null,
  metricsRequest: 0, // the last GET /metrics sent
  metricsShown: 0, // the last one whose answer is on the page
  chartsAt: 0,
  history: null,
  metrics: null,
  tab: "inbox",
  inbox: {
    status: "", stream: "", cursor: null, stack: [], nextCursor: null,
    events: [], selectedId: null, request: 0,
  },
  dlq: { letters: [], request: 0 },
  streams: { list: [], request: 0 },
  webhooks: newWebhooksState(),
  // Debug panel activity, newest first: {n, time, flag, eventId, status (queued, pending,
  // delivered, failed, refused), error, retried, note, node (its <li>)}
  activity: [],
  activitySeq: 0,
  // Events re-queued by Retry: id → the updated_at of the row as first seen after the
  // retry (the retry's own update). The row stays "failed" until processing stores it
  // again, so until updated_at moves past that, the page shows it as re-queued.
  requeued: new Map(),
  live: {
    controller: null, connected: false, lastId: null, retryMs: 1000, failures: 0,
    timer: null, parked: false,
  },
};

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- small helpers

/** An element with a class and optional text; children appended after. */
function el(tag, className, text, ...children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  for (const child of children) if (child) node.append(child);
  return node;
}

/** A button with a data-action. */
function button(label, action, className = "btn btn-small") {
  const b = el("button", className, label);
  b.type = "button";
  b.dataset.action = action;
  return b;
}

/** "CODE: message" for an API error. */
function errorText(error) {
  return `${error.code}: ${error.message}`;
}

/** A short local time for lists; the exact ISO string goes into datetime/title. */
function shortTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, {
    month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
  });
}

/** A <time> element: local text, ISO in datetime and title. */
function timeEl(iso) {
  const t = el("time", "", shortTime(iso));
  if (iso) {
    t.dateTime = iso;
    t.title = iso;
  }
  return t;
}

/** "3 s ago", "4 min ago": how old an ISO time is. */
function ago(iso) {
  const ms = Date.now() - new Date(iso).getTime();
  if (!Number.isFinite(ms)) return "";
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

const numberFormat = new Intl.NumberFormat("en-US");
const compactFormat = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });

/** Replaces a container's children. */
function replaceChildren(node, children) {
  node.replaceChildren(...children.filter(Boolean));
}

/** A status badge: text is exactly the status; the glyph comes from CSS. */
function badge(status, extraClass = "") {
  const b = el("span", `badge badge-${status} ${extraClass}`.trim(), status);
  return b;
}

// ---------------------------------------------------------------- page state

/** Sets html[data-state] (loading | ready | error): the tests' main hook. */
function setPageState(value) {
  document.documentElement.dataset.state = value;
}

function showError(error) {
  setPageState("error");
  $("error-code").textContent = error.code;
  $("error-message").textContent = error.message;
  const seconds = Math.round((state.refreshMs || ERROR_RETRY_MS) / 1000);
  $("error-hint").textContent = error.code === "INVALID_TOKEN" || error.code === "MISSING_AUTHORIZATION"
    ? "The key was refused: check it, or enter another one above."
    : `Trying again every ${seconds} s; the page recovers by itself when the server answers.`;
  $("error-panel").hidden = false;
}

function hideError() {
  $("error-panel").hidden = true;
}

/** One line in the page-wide notice (rate limit and the like); empty hides it. */
function notice(text) {
  $("notice").textContent = text;
}

/** A view's status line (role=status): what an action answered. */
function statusLine(view, text, kind = "ok") {
  const line = $(`${view}-status-line`);
  line.textContent = text;
  line.dataset.kind = kind;
}

// ---------------------------------------------------------------- the API

/**
 * Calls the API with the key. Never throws: resolves to
 * {ok, status, body, error?, stale} where error is the API's {code, message} (or
 * NETWORK_ERROR when the server cannot be reached) and stale is true when the key
 * changed meanwhile (the caller drops the answer).
 */
async function api(method, path, body) {
  const generation = state.generation;
  const headers = { Authorization: `Bearer ${state.key}`, Accept: "application/json" };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    return {
      ok: false, status: 0, stale: generation !== state.generation,
      error: { code: "NETWORK_ERROR", message: "the server cannot be reached" },
    };
  }
  let json = null;
  try {
    json = await response.json();
  } catch {
    // Not JSON (a proxy's error page, say): described by the status below.
  }
  const result = { ok: response.ok, status: response.status, body: json, stale: generation !== state.generation };
  if (!response.ok) {
    result.error = json && json.error && json.error.code
      ? json.error
      : { code: `HTTP_${response.status}`, message: response.statusText || "unexpected answer" };
    if (response.status === 429) rateLimited(response.headers.get("Retry-After"));
  }
  return result;
}

/** 429: hold every request until Retry-After has passed. */
function rateLimited(retryAfter) {
  const seconds = Math.min(300, Math.max(1, Number.parseInt(retryAfter, 10) || 5));
  state.backoffUntil = Date.now() + seconds * 1000;
  notice(`Rate limited by the server (RATE_LIMIT_EXCEEDED): waiting ${seconds} s before the next request.`);
}

// ---------------------------------------------------------------- the key

function loadKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled: the key lives in memory only
  }
}

function saveKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: nothing to do
  }
}

/** Starts over with another key (or none): drops everything shown for the old one. */
function useKey(key) {
  state.key = key;
  state.generation += 1;
  saveKey(key);
  stopLive();
  clearTimeout(state.timer);
  clearTimeout(state.cardsTimer);
  state.refreshing = false;
  state.again = false;
  state.backoffUntil = 0;
  state.chartsAt = 0;
  state.history = null;
  state.metrics = null;
  state.inbox.events = [];
  state.inbox.cursor = null;
  state.inbox.stack = [];
  state.inbox.nextCursor = null;
  state.inbox.selectedId = null;
  state.dlq.letters = [];
  state.streams.list = [];
  clearTimeout(state.webhooks.confirmTimer);
  state.webhooks = newWebhooksState();
  state.activity = [];
  state.requeued.clear();
  notice("");
  hideError();
  renderMetrics(null);
  renderInbox();
  renderDetail();
  renderDlq();
  renderStreams();
  renderWebhooks();
  renderActivity();
  renderCharts();
  $("forget-key").disabled = !key;
  $("no-key").hidden = Boolean(key);
  $("charts").hidden = !key;
  $("views").hidden = !key;
  if (!key) {
    $("tenant").textContent = "—";
    setPageState("ready"); // nothing to load: the key form is waiting
    renderLive();
    return;
  }
  setPageState("loading");
  refresh({ charts: true });
  startLive();
}

// ---------------------------------------------------------------- refresh loop

function scheduleRefresh(delay) {
  clearTimeout(state.timer);
  state.timer = setTimeout(() => refresh(), delay);
}

/**
 * One refresh: /metrics first (it decides ready or error), then the inbox, the visible
 * tab, the debug activity and, every 10 s or when asked, the charts. Runs every
 * refreshMs in both live and polling modes: the stream does not carry failures, acks
 * or queue depth.
 */
async function refresh(options = {}) {
  if (!state.key) return;
  if (options.charts) state.chartsAt = 0;
  if (state.refreshing) {
    state.again = true;
    return;
  }
  clearTimeout(state.timer);
  const wait = state.backoffUntil - Date.now();
  if (wait > 0) {
    scheduleRefresh(wait);
    return;
  }
  if (state.backoffUntil) {
    state.backoffUntil = 0;
    notice("");
  }
  const generation = state.generation;
  state.refreshing = true;
  // Assistive technology (and tests) can tell a refresh under way from a settled page.
  $("app").setAttribute("aria-busy", "true");
  try {
    if (await refreshMetrics()) {
      const work = [loadInbox(), refreshActivity(), maybeLoadCharts()];
      if (state.tab === "dlq") work.push(loadDlq());
      if (state.tab === "streams") work.push(loadStreams());
      if (state.tab === "webhooks") work.push(loadWebhooks());
      await Promise.all(work);
    }
  } finally {
    if (generation === state.generation) {
      state.refreshing = false;
      if (state.again) {
        state.again = false;
        scheduleRefresh(0);
      } else if (state.refreshMs > 0) {
        scheduleRefresh(state.refreshMs);
      } else if (document.documentElement.dataset.state === "error") {
        scheduleRefresh(ERROR_RETRY_MS);
      }
    }
    if (!state.refreshing) $("app").setAttribute("aria-busy", "false");
  }
}

/** GET /metrics → cards, bar, tenant, and the page state. True when it answered. */
async function refreshMetrics() {
  // Two of these may overlap (the periodic one, and the one after a live event): an
  // answer older than the one already shown is dropped.
  const request = ++state.metricsRequest;
  const r = await api("GET", "/metrics");
  if (r.stale) return false;
  if (request < state.metricsShown) return r.ok;
  state.metricsShown = request;
  if (!r.ok) {
    // A 429 is not the server failing: keep what is shown and wait (see rateLimited).
    if (r.status === 429) return false;
    showError(r.error);
    return false;
  }
  state.metrics = r.body.data;
  renderMetrics(state.metrics);
  hideError();
  setPageState("ready");
  if (state.live.parked) startLive();
  return true;
}

/** After a stored event arrives live: refresh the cards once things settle. */
function scheduleCardsRefresh() {
  clearTimeout(state.cardsTimer);
  state.cardsTimer = setTimeout(() => {
    if (state.key && Date.now() >= state.backoffUntil) refreshMetrics();
  }, CARDS_DEBOUNCE_MS);
}

/** After the page's own actions: refresh now (and the charts too when asked). */
function refreshNow(charts = false) {
  refresh({ charts });
}

// ---------------------------------------------------------------- cards, bar

function renderMetrics(m) {
  for (const name of METRICS) {
    const node = document.querySelector(`[data-metric="${name}"]`);
    let text = "—";
    if (m) {
      const value = m[name];
      text = value === null || value === undefined ? "—" : String(value);
    }
    node.textContent = text;
  }
  $("tenant").textContent = m && m.tenant ? m.tenant : "—";
  $("note-queue").textContent = m && m.queue_depth > 0
    ? `waiting; oldest ${m.oldest_queued_age_s} s`
    : "messages waiting to be processed";
  $("note-dlq").textContent = m && (m.streams_halted || m.streams_waiting)
    ? `streams: ${m.streams_waiting} waiting, ${m.streams_halted} halted`
    : "messages that gave up";
  $("note-last").textContent = m && m.last_processed_at ? `UTC, ${ago(m.last_processed_at)}` : "ISO-8601, UTC";
  const p50 = m && m.latency_ms ? m.latency_ms.p50 : null;
  $("note-rate").textContent = p50 !== null && p50 !== undefined
    ? `events/min, last 5 min; p50 latency ${p50} ms`
    : "events per minute, last 5 minutes";
  $("tab-count-dlq").textContent = m && m.dlq_count ? `(${m.dlq_count})` : "";
  $("tab-count-streams").textContent = m && m.streams_halted ? `(${m.streams_halted} halted)` : "";
  renderWebhookCards(m);
  renderDelivery(m);
}

function renderDelivery(m) {
  const total = m ? m.total : 0;
  const delivered = m ? m.delivered : 0;
  const pct = total > 0 ? Math.round((delivered / total) * 100) : 0;
  const text = `${pct} % delivered (${delivered} of ${total})`;
  $("delivery-text").textContent = text;
  const bar = $("delivery-bar");
  bar.setAttribute("aria-valuenow", String(pct));
  bar.setAttribute("aria-valuetext", text);
  $("delivery-fill").style.width = `${pct}%`; // CSSOM, allowed by the CSP
}

// ---------------------------------------------------------------- charts

async function maybeLoadCharts() {
  if (Date.now() - state.chartsAt < CHARTS_EVERY_MS) return;
  state.chartsAt = Date.now();
  const r = await api("GET", "/metrics/history?minutes=60");
  if (r.stale || !r.ok) return; // keep the last charts; the cards show the error
  state.history = r.body.data;
  renderCharts();
}

function svg(tag, attrs = {}, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** A "nice" axis top at or above max: 1, 2, 5 × 10^n. */
function niceMax(max) {
  if (!(max > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(max));
  for (const m of [1, 2, 5, 10]) if (m * p >= max) return m * p;
  return 10 * p;
}

/** "HH:MM" in local time for an axis label. */
function hhmm(iso) {
  const d = new Date(iso);
  return d.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
}

/** The frame both charts share: size, plot box, y grid with labels, x labels. */
function chartFrame(box, rows, yMax, yUnit) {
  const width = Math.max(260, Math.floor(box.clientWidth || 600));
  const height = 200;
  const pad = { left: 48, right: 14, top: 22, bottom: 26 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart-svg" });
  const y = (v) => pad.top + plotH - (v / yMax) * plotH;
  for (let i = 0; i <= 4; i += 1) {
    const v = (yMax / 4) * i;
    root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(v), y2: y(v), class: "grid" }));
    const label = v >= 10000 ? compactFormat.format(v) : Number.isInteger(v) ? numberFormat.format(v) : v.toFixed(1);
    root.append(svg("text", { x: pad.left - 6, y: y(v) + 4, class: "axis-label", "text-anchor": "end" }, label));
  }
  root.append(svg("text", { x: 4, y: 11, class: "axis-label axis-unit" }, yUnit));
  const slot = plotW / Math.max(1, rows.length);
  const x = (i) => pad.left + slot * i + slot / 2;
  // About five time labels, the last one the current minute.
  const step = Math.max(1, Math.ceil(rows.length / 5));
  for (let i = rows.length - 1; i >= 0; i -= step) {
    // The last label ends at the plot's edge, so it is never cut off.
    const anchor = i === rows.length - 1 ? "end" : "middle";
    const at = i === rows.length - 1 ? width - pad.right : x(i);
    root.append(svg("text", { x: at, y: height - 8, class: "axis-label", "text-anchor": anchor }, hhmm(rows[i].minute)));
  }
  root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0), class: "axis" }));
  return { root, x, y, slot, plotH };
}

function renderThroughput(box, rows) {
  const total = rows.reduce((s, r) => s + r.processed, 0);
  const peak = rows.reduce((m, r) => Math.max(m, r.processed), 0);
  const f = chartFrame(box, rows, niceMax(peak), "events");
  f.root.setAttribute("aria-label",
    `Throughput, last ${rows.length} minutes: ${numberFormat.format(total)} events, peak ${numberFormat.format(peak)} per minute`);
  const w = Math.max(1, f.slot * 0.7);
  rows.forEach((r, i) => {
    if (r.processed <= 0) return;
    const top = f.y(r.processed);
    f.root.append(svg("rect", { x: f.x(i) - w / 2, y: top, width: w, height: Math.max(1, f.y(0) - top), class: "bar-rect" }));
  });
  box.replaceChildren(f.root);
}

function renderLatency(box, rows) {
  const keys = ["p50", "p95", "p99"];
  const values = rows.flatMap((r) => keys.map((k) => r.latency_ms[k])).filter((v) => v !== null && v !== undefined);
  const max = values.length ? Math.max(...values) : 0;
  // Past 10 s the axis reads in seconds: "120 s" says more than "120,000 ms".
  const scale = max >= 10000 ? 1000 : 1;
  const f = chartFrame(box, rows, niceMax(max / scale), scale === 1 ? "ms" : "s");
  const last = [...rows].reverse().find((r) => r.latency_ms.p50 !== null && r.latency_ms.p50 !== undefined);
  f.root.setAttribute("aria-label", last
    ? `Latency, last ${rows.length} minutes: latest minute with events p50 ${last.latency_ms.p50} ms, p95 ${last.latency_ms.p95} ms, p99 ${last.latency_ms.p99} ms; highest ${max} ms`
    : `Latency, last ${rows.length} minutes: no events processed`);
  for (const k of keys) {
    // A null minute ends the current segment: the line has a gap there.
    let d = "";
    let open = false;
    rows.forEach((r, i) => {
      const v = r.latency_ms[k];
      if (v === null || v === undefined) {
        open = false;
        return;
      }
      d += `${open ? "L" : "M"}${f.x(i).toFixed(1)} ${f.y(v / scale).toFixed(1)} `;
      open = true;
    });
    if (d) f.root.append(svg("path", { d, class: `line line-${k}` }));
    // Lone points (a minute between two gaps) would be invisible as a path: dot them.
    rows.forEach((r, i) => {
      const v = r.latency_ms[k];
      const before = i > 0 ? rows[i - 1].latency_ms[k] : null;
      const after = i < rows.length - 1 ? rows[i + 1].latency_ms[k] : null;
      if (v !== null && v !== undefined && (before === null || before === undefined) && (after === null || after === undefined)) {
        f.root.append(svg("circle", { cx: f.x(i), cy: f.y(v / scale), r: 2.5, class: `dot dot-${k}` }));
      }
    });
  }
  box.replaceChildren(f.root);
}

function renderCharts() {
  const rows = state.history;
  for (const [id, draw] of [["throughput-chart", renderThroughput], ["latency-chart", renderLatency]]) {
    const box = $(id);
    if (!rows || rows.length === 0) {
      box.replaceChildren(el("p", "chart-empty", state.key ? "No data yet" : ""));
    } else {
      draw(box, rows);
    }
  }
}

// ---------------------------------------------------------------- inbox

/** GET /inbox with the filters and the current page (newest first). */
async function loadInbox() {
  const inbox = state.inbox;
  const request = ++inbox.request;
  const q = new URLSearchParams({ limit: String(INBOX_LIMIT), order: "desc" });
  if (inbox.status) q.set("status", inbox.status);
  if (inbox.stream) q.set("stream", inbox.stream);
  if (inbox.cursor) q.set("cursor", inbox.cursor);
  const r = await api("GET", `/inbox?${q}`);
  if (r.stale || request !== inbox.request) return;
  if (!r.ok) {
    if (r.status !== 429) statusLine("inbox", `Could not load the inbox — ${errorText(r.error)}`, "error");
    return;
  }
  inbox.events = r.body.data;
  inbox.nextCursor = r.body.next_cursor;
  for (const event of inbox.events) noteEvent(event);
  renderInbox();
  renderDetail();
}

/** True when a stored event belongs in the inbox as filtered now. */
function matchesInboxFilters(event) {
  const inbox = state.inbox;
  if (inbox.status && event.status !== inbox.status) return false;
  if (inbox.stream && event.stream !== inbox.stream) return false;
  return true;
}

/** Whether the page shows this failed event as re-queued (see state.requeued). */
function isRequeued(event) {
  if (!state.requeued.has(event.event_id)) return false;
  if (event.status !== "failed") {
    state.requeued.delete(event.event_id);
    return false;
  }
  const seen = state.requeued.get(event.event_id);
  // An answer from before the retry (its retry_count not yet raised by it): ignore.
  if (seen.minRetries !== null && event.retry_count < seen.minRetries) return true;
  if (seen.updatedAt === null) {
    seen.updatedAt = event.updated_at;
    return true;
  }
  // Processing wrote the row again (it failed again), or it is taking too long.
  if (seen.updatedAt !== event.updated_at || Date.now() - seen.at > 60000) {
    state.requeued.delete(event.event_id);
    return false;
  }
  return true;
}

/** One inbox row: badge, id, times, stream, retries, error, actions. */
function inboxRow(event) {
  const li = el("li", "row");
  li.dataset.eventId = event.event_id;
  li.dataset.status = event.status;
  li.dataset.updated = event.updated_at;
  const requeued = isRequeued(event);

  const body = el("div", "row-body");
  const main = el("div", "row-main", null, badge(event.status), el("code", "event-id", event.event_id));
  if (requeued) main.append(el("span", "pill", "re-queued, waiting for processing"));
  body.append(main);

  const meta = el("div", "row-meta");
  meta.append(el("span", "", "created ", timeEl(event.created_at)));
  if (event.stream !== null && event.stream !== undefined) {
    meta.append(el("span", "stream-ref", `stream ${event.stream} #${event.seq}`));
  }
  meta.append(el("span", "", `retries ${event.retry_count}`));
  body.append(meta);
  const preview = JSON.stringify(event.payload);
  body.append(el("p", "row-preview", preview.length > 140 ? `${preview.slice(0, 140)}…` : preview));
  if (event.error_message) body.append(el("p", "row-error", event.error_message));
  li.append(body);

  const actions = el("div", "row-actions");
  const details = button("Details", "details");
  details.setAttribute("aria-controls", "event-detail");
  details.setAttribute("aria-expanded", String(state.inbox.selectedId === event.event_id));
  actions.append(details);
  if (event.status === "pending") actions.append(button("Ack", "ack", "btn btn-small btn-primary"));
  if (event.status === "failed" && !requeued) actions.append(button("Retry", "retry", "btn btn-small btn-primary"));
  li.append(actions);
  if (state.inbox.selectedId === event.event_id) li.classList.add("selected");
  return li;
}

/**
 * Draws the inbox list, keeping the rows that did not change (so focus and the
 * selection survive the refresh every few seconds) and moving none needlessly.
 */
function renderInbox() {
  const inbox = state.inbox;
  const list = $("inbox-list");
  const old = new Map([...list.children].map((li) => [li.dataset.eventId, li]));
  const wanted = inbox.events.map((event) => {
    const existing = old.get(event.event_id);
    const selected = inbox.selectedId === event.event_id;
    const requeued = state.requeued.has(event.event_id);
    if (existing && existing.dataset.updated === event.updated_at && existing.dataset.status === event.status
      && existing.classList.contains("selected") === selected && !requeued && !existing.querySelector(".pill")) {
      return existing;
    }
    const fresh = inboxRow(event);
    if (existing && existing.contains(document.activeElement)) {
      // Keep keyboard focus in the row that replaces this one.
      queueMicrotask(() => fresh.querySelector("[data-action=details]").focus());
    }
    return fresh;
  });
  const keep = new Set(wanted);
  for (const li of [...list.children]) if (!keep.has(li)) li.remove();
  wanted.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  const filtered = inbox.status || inbox.stream;
  $("inbox-empty").textContent = filtered ? "No events match these filters" : "No events yet — send one from the Debug tab";
  $("inbox-empty").hidden = inbox.events.length > 0 || !state.key;
  $("inbox-older").disabled = !inbox.nextCursor;
  $("inbox-newest").disabled = inbox.cursor === null;
  $("inbox-page").textContent = `Page ${inbox.stack.length + 1}`;
}

/** A stored event from the live stream: insert or update its row on the first page. */
function liveInboxEvent(event) {
  const inbox = state.inbox;
  if (inbox.cursor !== null) return; // an older page: leave it as it is
  const i = inbox.events.findIndex((e) => e.event_id === event.event_id);
  if (i >= 0) {
    if (matchesInboxFilters(event)) inbox.events[i] = event;
    else inbox.events.splice(i, 1);
  } else if (matchesInboxFilters(event)) {
    inbox.events.unshift(event);
  } else {
    return;
  }
  renderInbox();
  renderDetail();
}

/** The detail region: the selected event's timeline, payload and metadata. */
function renderDetail() {
  const region = $("event-detail");
  const event = state.inbox.events.find((e) => e.event_id === state.inbox.selectedId);
  $("inbox-layout").classList.toggle("with-detail", Boolean(event));
  if (!event) {
    region.hidden = true;
    return;
  }
  region.hidden = false;
  const body = $("event-detail-body");
  // Skip the rebuild when nothing changed, so a reader's scroll position in <pre> stays.
  if (body.dataset.for === event.event_id && body.dataset.updated === event.updated_at) return;
  body.dataset.for = event.event_id;
  body.dataset.updated = event.updated_at;

  const summary = el("p", "detail-id", null, badge(event.status), el("code", "event-id", event.event_id));
  const timeline = el("ol", "timeline");
  const step = (label, iso, cls = "") => {
    const li = el("li", `step ${cls}`.trim(), null, el("span", "step-label", label));
    li.append(iso ? timeEl(iso) : el("span", "muted", "not yet"));
    if (iso) li.append(el("span", "muted iso", iso));
    return li;
  };
  timeline.append(step("Created (enqueued)", event.created_at, "done"));
  timeline.append(step("Processed (stored)", event.processed_at, event.processed_at ? "done" : ""));
  if (event.status === "failed") {
    timeline.append(step("Failed", event.updated_at, "bad"));
  } else {
    timeline.append(step("Delivered (acknowledged)", event.delivered_at, event.delivered_at ? "done" : ""));
  }
  timeline.append(el("li", "step", null, el("span", "step-label", "Retries"), el("span", "", String(event.retry_count))));
  if (event.error_message) {
    timeline.append(el("li", "step bad", null, el("span", "step-label", "Error"), el("span", "row-error", event.error_message)));
  }
  if (event.stream !== null && event.stream !== undefined) {
    timeline.append(el("li", "step", null, el("span", "step-label", "Stream"), el("span", "", `${event.stream}, seq ${event.seq}`)));
  }
  timeline.append(step("Last change", event.updated_at));

  const payload = el("pre", "json", JSON.stringify(event.payload, null, 2));
  const metadata = el("pre", "json", event.metadata === null ? "null" : JSON.stringify(event.metadata, null, 2));
  payload.tabIndex = 0; // scrollable regions must be reachable by keyboard
  metadata.tabIndex = 0;
  payload.setAttribute("aria-label", "Payload JSON");
  metadata.setAttribute("aria-label", "Metadata JSON");
  replaceChildren(body, [
    summary,
    el("h4", "", "Timeline"), timeline,
    el("h4", "", "Payload"), payload,
    el("h4", "", "Metadata"), metadata,
  ]);
}

function openDetail(id, focus) {
  state.inbox.selectedId = id;
  renderInbox();
  renderDetail();
  if (focus) $("event-detail-title").focus();
}

function closeDetail() {
  const id = state.inbox.selectedId;
  state.inbox.selectedId = null;
  renderInbox();
  renderDetail();
  const row = id && document.querySelector(`#inbox-list [data-event-id="${CSS.escape(id)}"] [data-action=details]`);
  if (row) row.focus();
}

/** Ack or retry one event, then say what happened and refresh. */
async function inboxAction(kind, id, control) {
  control.disabled = true;
  const r = await api("POST", `/inbox/${encodeURIComponent(id)}/${kind}`);
  if (r.stale) return;
  if (r.ok) {
    const data = r.body.data;
    if (kind === "ack") {
      statusLine("inbox", `Acknowledged ${id}: now ${data.status} (${data.timestamp}).`);
      markActivity(id, "delivered");
    } else {
      statusLine("inbox", `Retry queued for ${id}: manual attempt ${data.new_attempt}; it shows here again once processing stores it.`);
      const row = state.inbox.events.find((e) => e.event_id === id);
      state.requeued.set(id, { updatedAt: null, at: Date.now(), minRetries: row ? row.retry_count + 1 : null });
      markActivity(id, "queued", { retried: data.new_attempt });
    }
  } else {
    statusLine("inbox", `${kind === "ack" ? "Ack" : "Retry"} of ${id} failed — ${errorText(r.error)}`, "error");
    control.disabled = false;
  }
  refreshNow();
}

function onInboxClick(e) {
  const row = e.target.closest("[data-event-id]");
  if (!row) return;
  const id = row.dataset.eventId;
  const control = e.target.closest("button");
  if (!control) {
    // A click anywhere else on the row opens its details (text selection aside).
    if (!String(window.getSelection() || "")) openDetail(id, false);
    return;
  }
  const action = control.dataset.action;
  if (action === "details") {
    if (state.inbox.selectedId === id) closeDetail();
    else openDetail(id, true);
  } else if (action === "ack" || action === "retry") {
    inboxAction(action, id, control);
  }
}

function applyInboxFilters() {
  const inbox = state.inbox;
  inbox.status = $("inbox-status-filter").value;
  inbox.stream = $("inbox-stream-filter").value.trim();
  inbox.cursor = null;
  inbox.stack = [];
  inbox.events = [];
  inbox.selectedId = null;
  renderInbox();
  renderDetail();
  loadInbox();
}

function olderPage() {
  const inbox = state.inbox;
  if (!inbox.nextCursor) return;
  inbox.stack.push(inbox.cursor);
  inbox.cursor = inbox.nextCursor;
  loadInbox();
}

function newestPage() {
  const inbox = state.inbox;
  inbox.cursor = null;
  inbox.stack = [];
  loadInbox();
}

// ---------------------------------------------------------------- dead letters

async function loadDlq() {
  const dlq = state.dlq;
  const request = ++dlq.request;
  const r = await api("GET", "/dlq?limit=100");
  if (r.stale || request !== dlq.request) return;
  if (!r.ok) {
    if (r.status !== 429) statusLine("dlq", `Could not load the dead letters — ${errorText(r.error)}`, "error");
    return;
  }
  dlq.letters = r.body.data;
  renderDlq();
}

function renderDlq() {
  const letters = state.dlq.letters;
  const rows = letters.map((d) => {
    const li = el("li", "row");
    li.dataset.msgId = String(d.msg_id);
    li.append(el("div", "row-main", null,
      el("span", "badge badge-failed", "dead letter"),
      el("code", "event-id", d.event_id || `message ${d.msg_id}`)));
    const meta = el("div", "row-meta");
    meta.append(el("span", "", "failed ", timeEl(d.failed_at)));
    meta.append(el("span", "", `attempts ${d.attempts === null ? "—" : d.attempts}`));
    meta.append(el("span", "", `message #${d.msg_id}`));
    li.append(meta);
    if (d.error) li.append(el("p", "row-error", d.error));
    if (d.payload !== null && d.payload !== undefined) {
      const pre = el("pre", "json json-small", JSON.stringify(d.payload, null, 2));
      pre.tabIndex = 0;
      pre.setAttribute("aria-label", `Payload of message ${d.msg_id}`);
      li.append(pre);
    }
    return li;
  });
  replaceChildren($("dlq-list"), rows);
  $("dlq-empty").hidden = letters.length > 0 || !state.key;
  $("dlq-redrive").disabled = letters.length === 0;
}

async function redrive(control) {
  control.disabled = true;
  const r = await api("POST", "/dlq/redrive");
  if (r.stale) return;
  if (r.ok) {
    const n = r.body.data.redriven;
    statusLine("dlq", n === 1 ? "Moved 1 message back to the queue." : `Moved ${n} messages back to the queue.`);
  } else {
    statusLine("dlq", `Redrive failed — ${errorText(r.error)}`, "error");
  }
  control.disabled = false;
  await loadDlq();
  refreshNow();
}

// ---------------------------------------------------------------- streams

const STREAM_STATES = {
  idle: "idle — nothing queued",
  active: "ok — processing",
  waiting: "waiting — its head is backing off after a failed attempt",
  halted: "halted — on a dead-lettered head",
};

async function loadStreams() {
  const streams = state.streams;
  const request = ++streams.request;
  const r = await api("GET", "/streams?limit=100");
  if (r.stale || request !== streams.request) return;
  if (!r.ok) {
    if (r.status !== 429) statusLine("streams", `Could not load the streams — ${errorText(r.error)}`, "error");
    return;
  }
  streams.list = r.body.data.streams;
  renderStreams();
}

function renderStreams() {
  const list = state.streams.list;
  const rows = list.map((s) => {
    const li = el("li", "row");
    li.dataset.stream = s.name;
    li.dataset.state = s.state;
    const stateClass = s.state === "halted" ? "failed" : s.state === "waiting" ? "pending" : s.state === "active" ? "delivered" : "idle";
    li.append(el("div", "row-main", null,
      el("span", `badge badge-${stateClass}`, s.state === "active" ? "ok" : s.state),
      el("strong", "stream-name", s.name)));
    const meta = el("div", "row-meta");
    meta.append(el("span", "", STREAM_STATES[s.state] || s.state));
    meta.append(el("span", "", `done ${s.done_seq} of ${s.last_seq}`));
    li.append(meta);
    if (s.blocking_event) {
      const block = el("div", "blocker");
      block.append(el("p", "", "blocked by event ", el("code", "event-id", s.blocking_event)));
      if (s.blocking_error) block.append(el("p", "row-error", s.blocking_error));
      if (s.state === "halted") {
        block.append(el("p", "muted", "dead-lettered — Retry it in the inbox, redrive it, or Resume to skip it"));
      } else if (s.next_attempt_at) {
        block.append(el("p", "muted", null, "next attempt ", timeEl(s.next_attempt_at),
          document.createTextNode(" (retried with backoff until its retries run out)")));
      }
      li.append(block);
    }
    if (s.state === "halted") {
      const actions = el("div", "row-actions");
      actions.append(button("Resume", "resume", "btn btn-small btn-primary"));
      li.append(actions);
    }
    return li;
  });
  replaceChildren($("streams-list"), rows);
  $("streams-empty").hidden = list.length > 0 || !state.key;
}

async function resumeStream(name, control) {
  control.disabled = true;
  const r = await api("POST", `/streams/${encodeURIComponent(name)}/resume`);
  if (r.stale) return;
  if (r.ok) {
    statusLine("streams", `Resumed ${name}: it goes on after seq ${r.body.data.done_seq}.`);
  } else {
    statusLine("streams", `Resume of ${name} failed — ${errorText(r.error)}`, "error");
    control.disabled = false;
  }
  await loadStreams();
  refreshNow();
}

// ---------------------------------------------------------------- webhooks

/** The webhooks view as it starts (and starts over after a key change). */
function newWebhooksState() {
  return {
    endpoints: [], loaded: false, failed: false, request: 0,
    // The endpoint whose recent deliveries are shown, and those deliveries (deliveriesFor
    // says which endpoint they are of: until its first answer they are loading).
    selectedId: null, deliveries: [], deliveriesFor: null, deliveriesFailed: false, deliveriesRequest: 0,
    // The attempt timeline shown: {eventId, deliveryId, deliveries (null while loading)}.
    attempts: null, attemptsRequest: 0,
    // "Really delete?": the endpoint waiting for its second click, and the timer that
    // puts the button back when none comes.
    confirmId: null, confirmTimer: null,
    // Rows with a request under way ("endpoint:<id>", "delivery:<id>"): their buttons
    // ignore clicks meanwhile but keep the focus (aria-disabled, not disabled).
    busy: new Set(),
    // A secret the API returned ({secret, url, rotatingUntil}): shown until dismissed;
    // the API never returns it again.
    secret: null,
  };
}

/** The two webhook cards and the tab's count, from /metrics → webhooks. */
function renderWebhookCards(m) {
  const w = m && m.webhooks ? m.webhooks : null;
  const figure = (v) => (v === null || v === undefined ? "—" : String(v));
  document.querySelector('[data-metric="webhooks_pending"]').textContent = figure(w ? w.pending : null);
  document.querySelector('[data-metric="webhooks_failed"]').textContent = figure(w ? w.failed : null);
  const p95 = w && w.latency_ms ? w.latency_ms.p95 : null;
  $("note-webhooks-pending").textContent = w
    ? `waiting for an attempt; ${w.succeeded} succeeded${p95 !== null && p95 !== undefined ? `, p95 ${Math.round(p95)} ms to arrive` : ""}`
    : "deliveries waiting for their next attempt";
  $("note-webhooks-failed").textContent = w && w.failed > 0
    ? "ran out of attempts — Recover queues them again"
    : "deliveries that ran out of attempts";
  $("tab-count-webhooks").textContent = w && w.failed ? `(${w.failed} failed)` : "";
}

/**
 * Fills `list` with one node per item, keeping the node already there for a key whose
 * signature did not change (so focus and text selection survive the periodic refresh)
 * and moving none needlessly. A rebuilt node that held the focus hands it on to its
 * control of the same data-action (Disable ↔ Enable count as the same control).
 */
function keyedRender(list, items, keyOf, signatureOf, build) {
  const old = new Map([...list.children].map((node) => [node.dataset.key, node]));
  const wanted = items.map((item) => {
    const key = keyOf(item);
    const signature = signatureOf(item);
    const existing = old.get(key);
    if (existing && existing.dataset.signature === signature) return existing;
    const fresh = build(item);
    fresh.dataset.key = key;
    fresh.dataset.signature = signature;
    if (existing && existing.contains(document.activeElement)) {
      const action = document.activeElement.dataset.action;
      const partner = { enable: "disable", disable: "enable", keep: "delete" }[action];
      queueMicrotask(() => {
        const target = fresh.querySelector(`[data-action="${action}"]`)
          || fresh.querySelector(`[data-action="${partner}"]`) || fresh.querySelector("button");
        if (target) target.focus();
      });
    }
    return fresh;
  });
  const keep = new Set(wanted);
  for (const node of [...list.children]) if (!keep.has(node)) node.remove();
  wanted.forEach((node, i) => {
    if (list.children[i] !== node) list.insertBefore(node, list.children[i] || null);
  });
}

/** What an endpoint's filter lets through, in words. */
function filterText(filter) {
  if (!filter || (filter.stream === undefined && filter.metadata === undefined)) return "every event";
  const parts = [];
  if (filter.stream !== undefined) parts.push(`stream ${filter.stream}`);
  if (filter.metadata !== undefined) parts.push(`metadata containing ${JSON.stringify(filter.metadata)}`);
  return parts.join(" and ");
}

const endpointPath = (id) => `/webhooks/endpoints/${encodeURIComponent(id)}`;

function findEndpoint(id) {
  return state.webhooks.endpoints.find((e) => e.endpoint_id === id) || null;
}

/**
 * The view's periodic load: the endpoints, and (at the same time) the selected
 * endpoint's deliveries and the open attempt timeline.
 */
async function loadWebhooks() {
  await Promise.all([loadEndpoints(), loadDeliveries(), loadAttempts()]);
}

async function loadEndpoints() {
  const w = state.webhooks;
  const request = ++w.request;
  const r = await api("GET", "/webhooks/endpoints");
  if (r.stale || request !== w.request) return;
  if (!r.ok) {
    if (r.status === 429) return;
    statusLine("webhooks", `Could not load the endpoints — ${errorText(r.error)}`, "error");
    w.loaded = true;
    w.failed = true;
    renderEndpoints();
    return;
  }
  w.endpoints = r.body.data;
  w.loaded = true;
  w.failed = false;
  // Deleted meanwhile (here or elsewhere): forget what was shown of it.
  if (w.selectedId && !findEndpoint(w.selectedId)) forgetSelection();
  if (w.confirmId && !findEndpoint(w.confirmId)) w.confirmId = null;
  renderWebhooks();
}

/** GET the selected endpoint's recent deliveries, newest first. */
async function loadDeliveries() {
  const w = state.webhooks;
  const id = w.selectedId;
  if (!id) return;
  const request = ++w.deliveriesRequest;
  const r = await api("GET", `${endpointPath(id)}/deliveries?limit=${DELIVERIES_LIMIT}`);
  if (r.stale || request !== w.deliveriesRequest || w.selectedId !== id) return;
  if (!r.ok) {
    if (r.status === 429) return;
    statusLine("webhooks", `Could not load the deliveries — ${errorText(r.error)}`, "error");
    if (w.deliveriesFor !== id) {
      w.deliveries = [];
      w.deliveriesFor = id;
    }
    w.deliveriesFailed = true;
    renderDeliveries();
    return;
  }
  w.deliveries = r.body.data;
  w.deliveriesFor = id;
  w.deliveriesFailed = false;
  renderDeliveries();
}

/** GET /events/{id}/deliveries for the open attempt timeline. */
async function loadAttempts() {
  const w = state.webhooks;
  const open = w.attempts;
  if (!open) return;
  const request = ++w.attemptsRequest;
  const r = await api("GET", `/events/${encodeURIComponent(open.eventId)}/deliveries`);
  if (r.stale || request !== w.attemptsRequest || w.attempts !== open) return;
  if (!r.ok) {
    if (r.status === 429) return;
    statusLine("webhooks", `Could not load the attempts of ${open.eventId} — ${errorText(r.error)}`, "error");
    if (open.deliveries === null) open.deliveries = [];
    open.failed = true;
    renderAttempts();
    return;
  }
  open.deliveries = r.body.data;
  open.failed = false;
  renderAttempts();
}

function renderWebhooks() {
  renderEndpoints();
  renderDeliveries();
  renderAttempts();
  renderSecret();
}

/** One endpoint: state, url, description, filter, rotation, reason, actions. */
function endpointRow(ep) {
  const w = state.webhooks;
  const li = el("li", "row endpoint-row");
  li.dataset.endpointId = ep.endpoint_id;
  li.dataset.enabled = String(ep.enabled);
  const selected = w.selectedId === ep.endpoint_id;
  if (selected) li.classList.add("selected");

  const body = el("div", "row-body");
  body.append(el("div", "row-main", null,
    el("span", `badge badge-${ep.enabled ? "enabled" : "disabled"}`, ep.enabled ? "enabled" : "disabled"),
    el("code", "endpoint-url", ep.url)));
  if (ep.description) body.append(el("p", "endpoint-description", ep.description));
  const meta = el("div", "row-meta");
  meta.append(el("span", "endpoint-filter", `filter: ${filterText(ep.filter)}`));
  meta.append(el("span", "", "created ", timeEl(ep.created_at)));
  if (ep.rotating_until) {
    meta.append(el("span", "endpoint-rotating", "previous secret also signs until ", timeEl(ep.rotating_until)));
  }
  body.append(meta);
  if (!ep.enabled) {
    body.append(el("p", "row-error endpoint-reason", `Disabled: ${ep.disabled_reason || "no reason recorded"}`));
  }
  li.append(body);

  const actions = el("div", "row-actions");
  const deliveries = button("Deliveries", "deliveries");
  deliveries.setAttribute("aria-controls", "endpoint-detail");
  deliveries.setAttribute("aria-expanded", String(selected));
  actions.append(deliveries);
  actions.append(ep.enabled ? button("Disable", "disable") : button("Enable", "enable", "btn btn-small btn-primary"));
  actions.append(button("Recover", "recover"));
  actions.append(button("Rotate secret", "rotate"));
  if (w.confirmId === ep.endpoint_id) {
    const really = button("Really delete?", "delete", "btn btn-small btn-danger");
    really.dataset.confirm = "true";
    actions.append(really, button("Keep", "keep"));
  } else {
    actions.append(button("Delete", "delete", "btn btn-small btn-danger-quiet"));
  }
  if (w.busy.has(`endpoint:${ep.endpoint_id}`)) {
    for (const b of actions.querySelectorAll("button:not([data-action=deliveries])")) b.setAttribute("aria-disabled", "true");
  }
  li.append(actions);
  return li;
}

/** What an endpoint row shows: a row is rebuilt only when this changes (not updated_at). */
function endpointSignature(ep) {
  const w = state.webhooks;
  return JSON.stringify([ep.url, ep.filter, ep.description, ep.enabled, ep.disabled_reason, ep.rotating_until,
    ep.created_at, w.selectedId === ep.endpoint_id, w.confirmId === ep.endpoint_id,
    w.busy.has(`endpoint:${ep.endpoint_id}`)]);
}

function renderEndpoints() {
  const w = state.webhooks;
  keyedRender($("endpoint-list"), w.endpoints, (ep) => ep.endpoint_id, endpointSignature, endpointRow);
  $("endpoint-loading").hidden = w.loaded || !state.key;
  $("endpoint-empty").hidden = !w.loaded || w.failed || w.endpoints.length > 0;
}

/** One delivery: status, event, attempts, last answer, next attempt, actions. */
function deliveryRow(d) {
  const w = state.webhooks;
  const li = el("li", "row delivery-row");
  li.dataset.deliveryId = String(d.delivery_id);
  // Not data-event-id: that names inbox rows (SPEC §7), page-wide.
  li.dataset.deliveryEvent = d.event_id;
  li.dataset.status = d.status;
  const open = Boolean(w.attempts) && w.attempts.deliveryId === String(d.delivery_id);
  if (open) li.classList.add("selected");

  const body = el("div", "row-body");
  body.append(el("div", "row-main", null, badge(d.status), el("code", "event-id", d.event_id)));
  const meta = el("div", "row-meta");
  meta.append(el("span", "", `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`));
  if (d.attempts > 0) {
    meta.append(el("span", "", d.last_status_code !== null && d.last_status_code !== undefined
      ? `last answer HTTP ${d.last_status_code}` : "last attempt: no answer"));
    if (d.last_latency_ms !== null && d.last_latency_ms !== undefined) meta.append(el("span", "", `${d.last_latency_ms} ms`));
  }
  if (d.status === "pending" && d.next_attempt_at) meta.append(el("span", "", "next attempt ", timeEl(d.next_attempt_at)));
  if (d.finished_at) meta.append(el("span", "", `${d.status} `, timeEl(d.finished_at)));
  else meta.append(el("span", "", "created ", timeEl(d.created_at)));
  body.append(meta);
  if (d.last_error) body.append(el("p", "row-error", d.last_error));
  li.append(body);

  const actions = el("div", "row-actions");
  const attempts = button("Attempts", "attempts");
  attempts.setAttribute("aria-controls", "attempts");
  attempts.setAttribute("aria-expanded", String(open));
  actions.append(attempts, button("Resend", "resend", "btn btn-small btn-primary"));
  if (w.busy.has(`delivery:${d.delivery_id}`)) {
    actions.querySelector("[data-action=resend]").setAttribute("aria-disabled", "true");
  }
  li.append(actions);
  return li;
}

function renderDeliveries() {
  const w = state.webhooks;
  const ep = w.selectedId ? findEndpoint(w.selectedId) : null;
  $("webhooks-layout").classList.toggle("with-detail", Boolean(ep));
  $("endpoint-detail").hidden = !ep;
  const ready = Boolean(ep) && w.deliveriesFor === ep.endpoint_id;
  const shown = ready ? w.deliveries : [];
  keyedRender($("delivery-list"), shown, (d) => String(d.delivery_id),
    (d) => [JSON.stringify(d), Boolean(w.attempts) && w.attempts.deliveryId === String(d.delivery_id),
      w.busy.has(`delivery:${d.delivery_id}`)].join("|"),
    deliveryRow);
  $("deliveries-for").textContent = ep ? `to ${ep.url}` : "";
  $("delivery-loading").hidden = !ep || ready;
  $("delivery-empty").hidden = !ready || w.deliveriesFailed || shown.length > 0;
}

/** One attempt in the timeline: when, what came back (or why nothing did), how long. */
function attemptItem(a, deliveryId) {
  const ok = a.status_code >= 200 && a.status_code < 300;
  const li = el("li", `step ${ok ? "done" : "bad"}`);
  li.dataset.attempt = String(a.attempt);
  li.dataset.deliveryId = deliveryId;
  li.append(el("span", "step-label", `Attempt ${a.attempt}`), timeEl(a.attempted_at));
  li.append(el("span", ok ? "attempt-ok" : "row-error",
    a.status_code !== null && a.status_code !== undefined ? `HTTP ${a.status_code}` : "no answer"));
  if (a.latency_ms !== null && a.latency_ms !== undefined) li.append(el("span", "muted", `${a.latency_ms} ms`));
  if (a.error) li.append(el("span", "row-error attempt-error", a.error));
  if (a.response) {
    const text = a.response.length > 200 ? `${a.response.slice(0, 200)}…` : a.response;
    li.append(el("span", "attempt-response", `answered: ${text}`));
  }
  return li;
}

/** The attempt timeline of the open delivery (one event to the selected endpoint). */
function renderAttempts() {
  const w = state.webhooks;
  const open = w.attempts;
  const timeline = $("attempt-timeline");
  $("attempts").hidden = !open;
  if (!open) {
    timeline.replaceChildren();
    delete timeline.dataset.signature;
    return;
  }
  $("attempts-for").textContent = `event ${open.eventId}`;
  const other = $("attempts-other");
  if (open.deliveries === null) {
    timeline.replaceChildren(el("li", "step", null, el("span", "muted", "Loading attempts…")));
    delete timeline.dataset.signature;
    other.hidden = true;
    return;
  }
  const delivery = open.deliveries.find((d) => String(d.delivery_id) === open.deliveryId)
    || open.deliveries.find((d) => d.endpoint_id === w.selectedId);
  const signature = JSON.stringify(delivery || null) + (open.failed ? "|failed" : "");
  if (timeline.dataset.signature !== signature) {
    timeline.dataset.signature = signature;
    const items = [];
    if (!delivery) {
      items.push(el("li", "step", null, el("span", "muted",
        open.failed ? "The attempts could not be loaded." : "No delivery of this event to this endpoint.")));
    } else {
      const log = [...(delivery.attempt_log || [])].sort((a, b) => a.attempt - b.attempt);
      for (const a of log) items.push(attemptItem(a, String(delivery.delivery_id)));
      if (log.length === 0) items.push(el("li", "step", null, el("span", "muted", "Not attempted yet.")));
      if (delivery.status === "pending") {
        const next = el("li", "step", null, el("span", "step-label", "Next attempt"));
        next.append(delivery.next_attempt_at ? timeEl(delivery.next_attempt_at) : el("span", "muted", "under way"));
        items.push(next);
      } else {
        items.push(el("li", `step ${delivery.status === "succeeded" ? "done" : "bad"}`, null,
          el("span", "step-label", delivery.status === "succeeded" ? "Succeeded" : "Failed — no attempts left"),
          timeEl(delivery.finished_at)));
      }
    }
    timeline.replaceChildren(...items);
  }
  // The same event may also go to other endpoints: say how those stand.
  const others = open.deliveries.filter((d) => d !== delivery);
  other.hidden = others.length === 0;
  other.textContent = others.length === 0 ? "" : `Also delivered to ${others.map((d) => {
    const ep = findEndpoint(d.endpoint_id);
    return `${ep ? ep.url : d.endpoint_id} (${d.status}, ${d.attempts} attempt${d.attempts === 1 ? "" : "s"})`;
  }).join("; ")}.`;
}

/** The secret box: the secret the API returned once, until dismissed. */
function renderSecret() {
  const s = state.webhooks.secret;
  $("secret-box").hidden = !s;
  $("endpoint-secret").textContent = s ? s.secret : "";
  $("secret-for").textContent = s ? `For ${s.url}` : "";
  const until = s ? s.rotatingUntil : null;
  $("secret-rotation").hidden = !until;
  $("secret-rotation").replaceChildren(...(until
    ? ["The previous secret keeps signing beside it until ", timeEl(until), ": move receivers to the new one before then."]
    : []));
  $("secret-copied").textContent = "";
}

function showSecret(secret) {
  state.webhooks.secret = secret;
  renderSecret();
  $("secret-title").focus();
}

async function copySecret() {
  const code = $("endpoint-secret");
  try {
    await navigator.clipboard.writeText(code.textContent);
    $("secret-copied").textContent = "Copied.";
  } catch {
    // No clipboard here (a page not served over https or from localhost): select the
    // secret so that the usual shortcut copies it.
    const range = document.createRange();
    range.selectNodeContents(code);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    $("secret-copied").textContent = "Selected: copy it with Ctrl+C (⌘C).";
  }
}

function dismissSecret() {
  state.webhooks.secret = null;
  renderSecret();
  $("endpoint-url").focus();
}

function forgetSelection() {
  const w = state.webhooks;
  w.selectedId = null;
  w.deliveries = [];
  w.deliveriesFor = null;
  w.deliveriesFailed = false;
  w.attempts = null;
}

/** Shows an endpoint's recent deliveries (the one shown until now closes). */
function selectEndpoint(id, focus) {
  const w = state.webhooks;
  if (w.selectedId !== id) {
    forgetSelection();
    w.selectedId = id;
  }
  renderWebhooks();
  loadDeliveries();
  if (focus) $("deliveries-title").focus();
}

function closeDeliveries() {
  const id = state.webhooks.selectedId;
  forgetSelection();
  renderWebhooks();
  const control = id && document.querySelector(`#endpoint-list [data-endpoint-id="${CSS.escape(id)}"] [data-action=deliveries]`);
  if (control) control.focus();
}

/** Opens (or, open already, closes) the attempt timeline of one delivery. */
function toggleAttempts(eventId, deliveryId, focus) {
  const w = state.webhooks;
  if (w.attempts && w.attempts.deliveryId === deliveryId) {
    w.attempts = null;
  } else {
    w.attempts = { eventId, deliveryId, deliveries: null, failed: false };
    loadAttempts();
  }
  renderDeliveries();
  renderAttempts();
  if (focus && w.attempts) $("attempts-title").focus();
}

/** POST /webhooks/endpoints from the form; the answer's secret is shown this once. */
async function createEndpoint() {
  const w = state.webhooks;
  const url = $("endpoint-url").value.trim();
  if (!url) {
    $("endpoint-url").focus();
    return;
  }
  const body = { url };
  const description = $("endpoint-description").value.trim();
  const stream = $("endpoint-stream").value.trim();
  if (description) body.description = description;
  if (stream) body.filter = { stream };
  const submit = $("endpoint-create");
  submit.disabled = true;
  const r = await api("POST", "/webhooks/endpoints", body);
  submit.disabled = false;
  if (r.stale) return;
  if (!r.ok) {
    statusLine("webhooks", `Could not add the endpoint — ${errorText(r.error)}`, "error");
    $("endpoint-url").focus();
    return;
  }
  const { secret, ...endpoint } = r.body.data;
  w.endpoints = w.endpoints.filter((e) => e.endpoint_id !== endpoint.endpoint_id).concat([endpoint]);
  w.loaded = true;
  $("endpoint-form").reset();
  statusLine("webhooks", `Added ${endpoint.url}; events stored from now on that match its filter are sent to it.`);
  selectEndpoint(endpoint.endpoint_id, false);
  showSecret({ secret, url: endpoint.url, rotatingUntil: null });
  loadEndpoints();
}

/** An endpoint's buttons: deliveries, enable/disable, recover, rotate, delete. */
async function endpointAction(action, id) {
  const w = state.webhooks;
  const ep = findEndpoint(id);
  if (!ep) return;
  if (action === "deliveries") {
    if (w.selectedId === id) closeDeliveries();
    else selectEndpoint(id, true);
    return;
  }
  if (action === "keep") {
    w.confirmId = null;
    statusLine("webhooks", `Kept ${ep.url}.`);
    renderEndpoints();
    return;
  }
  if (action === "delete" && w.confirmId !== id) {
    // The first click only asks: a second one on the same button deletes.
    w.confirmId = id;
    clearTimeout(w.confirmTimer);
    w.confirmTimer = setTimeout(() => {
      if (w.confirmId !== id) return;
      w.confirmId = null;
      renderEndpoints();
    }, DELETE_CONFIRM_MS);
    statusLine("webhooks", `Delete ${ep.url} and its delivery history? Press “Really delete?” to confirm, or Keep.`, "warn");
    renderEndpoints();
    return;
  }
  const busyKey = `endpoint:${id}`;
  if (w.busy.has(busyKey)) return;
  w.busy.add(busyKey);
  renderEndpoints();
  let r;
  if (action === "enable" || action === "disable") {
    r = await api("PATCH", endpointPath(id), { enabled: action === "enable" });
  } else if (action === "recover") {
    r = await api("POST", `${endpointPath(id)}/recover`, { since: new Date(Date.now() - RECOVER_SINCE_MS).toISOString() });
  } else if (action === "rotate") {
    r = await api("POST", `${endpointPath(id)}/rotate-secret`);
  } else if (action === "delete") {
    w.confirmId = null;
    r = await api("DELETE", endpointPath(id));
  }
  w.busy.delete(busyKey);
  if (r === undefined || r.stale) return;
  const what = {
    enable: "Enabling", disable: "Disabling", recover: "Recover of", rotate: "Rotating the secret of", delete: "Deleting",
  }[action];
  if (!r.ok) {
    statusLine("webhooks", `${what} ${ep.url} failed — ${errorText(r.error)}`, "error");
    renderEndpoints();
    return;
  }
  const data = r.body.data;
  let refocus = false;
  if (action === "enable" || action === "disable") {
    w.endpoints = w.endpoints.map((e) => (e.endpoint_id === id ? data : e));
    statusLine("webhooks", data.enabled ? `Enabled ${data.url}.` : `Disabled ${data.url}: ${data.disabled_reason || "no reason recorded"}.`);
  } else if (action === "recover") {
    const n = data.recovered;
    const later = !ep.enabled && n > 0 ? "; they go out once it is enabled again" : "";
    statusLine("webhooks", `Recover: queued ${n} failed ${n === 1 ? "delivery" : "deliveries"} of the last 24 h to ${ep.url} again${later}.`);
  } else if (action === "rotate") {
    showSecret({ secret: data.secret, url: ep.url, rotatingUntil: data.previous_valid_until || null });
    statusLine("webhooks", `New secret for ${ep.url}.`);
  } else if (action === "delete") {
    const gone = document.querySelector(`#endpoint-list [data-endpoint-id="${CSS.escape(id)}"]`);
    refocus = Boolean(gone) && gone.contains(document.activeElement);
    w.endpoints = w.endpoints.filter((e) => e.endpoint_id !== id);
    if (w.selectedId === id) forgetSelection();
    statusLine("webhooks", `Deleted ${ep.url}.`);
  }
  renderWebhooks();
  // The focused row is gone: keep the focus in the view rather than on <body>.
  if (refocus) $("panel-webhooks").focus();
  refreshNow(); // the cards and the view, with what the action changed
}

/** A delivery's buttons: its attempts, and Resend. */
async function deliveryAction(action, row) {
  const w = state.webhooks;
  const deliveryId = row.dataset.deliveryId;
  const eventId = row.dataset.deliveryEvent;
  if (action === "attempts") {
    toggleAttempts(eventId, deliveryId, true);
    return;
  }
  if (action !== "resend") return;
  const ep = findEndpoint(w.selectedId);
  const busyKey = `delivery:${deliveryId}`;
  if (!ep || w.busy.has(busyKey)) return;
  w.busy.add(busyKey);
  renderDeliveries();
  const r = await api("POST", `/events/${encodeURIComponent(eventId)}/resend`, { endpoint_id: ep.endpoint_id });
  w.busy.delete(busyKey);
  if (r.stale) return;
  if (r.ok) {
    statusLine("webhooks", `Resent ${eventId} to ${ep.url}: delivery ${r.body.data.delivery_id} is due now.`);
  } else {
    statusLine("webhooks", `Resend of ${eventId} failed — ${errorText(r.error)}`, "error");
  }
  renderDeliveries();
  refreshNow();
}

function wireWebhooks() {
  $("endpoint-form").addEventListener("submit", (e) => {
    e.preventDefault();
    if (state.key) createEndpoint();
  });
  $("endpoint-list").addEventListener("click", (e) => {
    const row = e.target.closest("[data-endpoint-id]");
    if (!row) return;
    const control = e.target.closest("button");
    if (!control) {
      // A click elsewhere on the row shows its deliveries (text selection aside).
      if (!String(window.getSelection() || "")) selectEndpoint(row.dataset.endpointId, false);
      return;
    }
    if (control.getAttribute("aria-disabled") === "true") return;
    endpointAction(control.dataset.action, row.dataset.endpointId);
  });
  $("delivery-list").addEventListener("click", (e) => {
    const row = e.target.closest("[data-delivery-id]");
    if (!row) return;
    const control = e.target.closest("button");
    if (!control) {
      if (!String(window.getSelection() || "")) {
        const open = state.webhooks.attempts;
        if (!open || open.deliveryId !== row.dataset.deliveryId) toggleAttempts(row.dataset.deliveryEvent, row.dataset.deliveryId, false);
      }
      return;
    }
    if (control.getAttribute("aria-disabled") === "true") return;
    deliveryAction(control.dataset.action, row);
  });
  $("deliveries-close").addEventListener("click", closeDeliveries);
  $("endpoint-detail").addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeDeliveries();
  });
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", dismissSecret);
}

// ---------------------------------------------------------------- debug panel

const FLAG_HINTS = {
  none: { queued: "in the queue; processing stores it within moments", pending: "stored; Ack it in the inbox to deliver it", delivered: "acknowledged", failed: "processing gave up" },
  processing_error: { queued: "in the queue; each attempt fails and is retried with backoff", failed: "retries exhausted: failed and dead-lettered — Retry it in the inbox", pending: "stored after a manual retry", delivered: "acknowledged" },
  queue_delay: { queued: "held back in the queue (5 s by default)", pending: "stored after its delay; Ack it in the inbox", delivered: "acknowledged", failed: "processing gave up" },
  dlq_routing: { queued: "in the queue; processing will route it to the dead-letter queue", failed: "dead-lettered without retries — redrive it or Retry it in the inbox", pending: "stored after a retry or redrive", delivered: "acknowledged" },
};

/** Sends one debug event and records it in the activity list. */
async function sendDebug(flag, control) {
  control.disabled = true;
  const stream = $("debug-stream").value.trim();
  const body = {
    payload: { source: "dashboard", flag, sent_at: new Date().toISOString() },
    metadata: { sent_from: "dashboard" },
  };
  if (stream) body.stream = stream;
  const path = flag === "none" ? "/events" : `/events?debug=${encodeURIComponent(flag)}`;
  const r = await api("POST", path, body);
  control.disabled = false;
  if (r.stale) return;
  const entry = { n: ++state.activitySeq, time: new Date().toISOString(), flag, eventId: null, status: "", error: null };
  if (r.ok) {
    entry.eventId = r.body.data.event_id;
    entry.status = "queued";
    if (r.body.data.duplicate) entry.note = "duplicate of an earlier event";
  } else {
    entry.status = "refused";
    entry.error = r.error;
  }
  state.activity.unshift(entry);
  state.activity.length = Math.min(state.activity.length, ACTIVITY_LIMIT);
  renderActivity();
  if (r.ok) refreshNow();
}

/** Sets an activity entry's status (queued → pending / failed / delivered). */
function markActivity(eventId, status, extra = {}) {
  let changed = false;
  for (const entry of state.activity) {
    if (entry.eventId !== eventId) continue;
    if (entry.status !== status) {
      entry.status = status;
      changed = true;
    }
    if (extra.retried) {
      entry.retried = extra.retried;
      changed = true;
    }
  }
  if (changed) renderActivity();
}

/** What a stored event (from a list or the stream) tells the activity list. */
function noteEvent(event) {
  if (!state.activity.some((a) => a.eventId === event.event_id)) return;
  markActivity(event.event_id, isRequeued(event) ? "queued" : event.status);
}

/** Entries whose status can still change by processing. */
function unresolvedActivity() {
  return state.activity.filter((a) => a.eventId && (a.status === "queued" || a.status === "pending"));
}

/**
 * Resolves the activity's statuses from the newest stored events. Queued events are
 * not stored yet (GET /events/{id} would answer 404), so the first inbox page is
 * asked instead; an event not in it is still queued.
 */
async function refreshActivity() {
  if (unresolvedActivity().length === 0) return;
  const r = await api("GET", "/inbox?limit=50&order=desc");
  if (r.stale || !r.ok) return;
  for (const event of r.body.data) noteEvent(event);
}

/** The contents of one activity entry: time, flag, id or error, status, what it means. */
function activityContent(a) {
  const parts = [];
  const head = el("div", "row-main", null,
    el("span", "muted", null, timeEl(a.time)),
    el("code", "flag", a.flag === "none" ? "plain event" : a.flag));
  const statusClass = a.status === "refused" ? "failed" : a.status;
  head.append(badge(a.status, statusClass !== a.status ? `badge-${statusClass}` : ""));
  parts.push(head);
  if (a.eventId) {
    parts.push(el("p", "activity-id", null, el("span", "muted", "event "), el("code", "event-id", a.eventId)));
    const hints = FLAG_HINTS[a.flag] || FLAG_HINTS.none;
    let hint = hints[a.status] || "";
    if (a.retried && a.status === "queued") hint = `re-queued by Retry (manual attempt ${a.retried}); waiting for processing`;
    if (a.note) hint = `${a.note}; ${hint}`;
    if (hint) parts.push(el("p", "muted", hint));
  } else if (a.error) {
    parts.push(el("p", "row-error", `${a.error.code}: ${a.error.message}`));
    parts.push(el("p", "muted", "refused before anything was stored or queued"));
  }
  return parts;
}

/**
 * Draws the activity list. Entries are kept and changed in place, newest on top, so
 * the polite live region announces what is new or changed, not the whole list again.
 */
function renderActivity() {
  const list = $("debug-activity");
  const wanted = state.activity.map((a) => {
    const signature = `${a.status}|${a.retried || ""}`;
    if (!a.node) a.node = el("li", "activity-item");
    if (a.node.dataset.signature !== signature) {
      a.node.dataset.signature = signature;
      a.node.dataset.activityFlag = a.flag;
      if (a.eventId) a.node.dataset.activityEvent = a.eventId;
      a.node.dataset.activityStatus = a.status;
      a.node.replaceChildren(...activityContent(a));
    }
    return a.node;
  });
  const keep = new Set(wanted);
  for (const li of [...list.children]) if (!keep.has(li)) li.remove();
  wanted.forEach((li, i) => {
    if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
  });
  $("debug-empty").hidden = state.activity.length > 0;
}

// ---------------------------------------------------------------- live stream

/** The header's indicator: "live" when the stream is connected, else polling. */
function renderLive() {
  const live = state.live.connected && Boolean(state.key);
  $("live-status").dataset.live = String(live);
  let text = "live";
  if (!live) text = state.refreshMs > 0 ? `polling every ${Math.round(state.refreshMs / 1000)} s` : "not live; refresh off";
  $("live-text").textContent = text;
}

function stopLive() {
  const live = state.live;
  clearTimeout(live.timer);
  live.timer = null;
  live.parked = false;
  if (live.controller) live.controller.abort();
  live.controller = null;
  live.connected = false;
  live.lastId = null;
  live.failures = 0;
  renderLive();
}

/**
 * Follows GET /inbox/stream with fetch (EventSource cannot send the Authorization
 * header), parsing the SSE frames by hand, and reconnects after `retry:` plus a
 * backoff, resuming after the last id so nothing is missed or repeated.
 */
async function startLive() {
  const live = state.live;
  if (!state.key || live.controller) return;
  clearTimeout(live.timer);
  live.timer = null;
  live.parked = false;
  let status = 0;
  const controller = new AbortController();
  live.controller = controller;
  const generation = state.generation;
  const path = live.lastId ? `/inbox/stream?after=${encodeURIComponent(live.lastId)}` : "/inbox/stream";
  try {
    const response = await fetch(path, {
      headers: { Authorization: `Bearer ${state.key}`, Accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    });
    status = response.status;
    if (!response.ok || !response.body) {
      if (status === 429) rateLimited(response.headers.get("Retry-After"));
      throw new Error(`stream answered ${status}`);
    }
    live.connected = true;
    live.failures = 0;
    renderLive();
    await readStream(response.body, controller.signal);
  } catch {
    // Aborted (key changed or forgotten), refused, or the connection dropped: below.
  }
  if (controller.signal.aborted || generation !== state.generation) return;
  live.controller = null;
  live.connected = false;
  renderLive();
  if (status === 401) {
    // The key is refused: wait until /metrics accepts it again (see refreshMetrics)
    // rather than knocking every few seconds.
    live.parked = true;
    return;
  }
  // A position this server does not know (another database behind it): start from now.
  if (status === 400) live.lastId = null;
  live.failures += 1;
  // The server's retry (1 s), doubled per failure in a row, at most 10 s.
  const delay = Math.min(STREAM_MAX_BACKOFF_MS, live.retryMs * 2 ** Math.min(4, live.failures - 1));
  const wait = Math.max(delay, state.backoffUntil - Date.now());
  live.timer = setTimeout(startLive, wait);
}

/** Reads SSE frames off the body until it ends. */
async function readStream(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let frame = { id: null, event: "", data: [] };
  signal.addEventListener("abort", () => reader.cancel().catch(() => {}), { once: true });
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    // Lines end in \n, \r\n or \r; the last piece may be a partial line. A trailing
    // \r could be half of \r\n, so it waits for the next chunk.
    const lines = buffer.split(/\r\n|\n|\r(?!$)/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        dispatchFrame(frame);
        frame = { id: null, event: "", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: the keep-alive
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") frame.data.push(value);
      else if (field === "event") frame.event = value;
      else if (field === "id" && !value.includes("\0")) frame.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) state.live.retryMs = Number(value);
    }
  }
}

/** One complete SSE frame: remember its id, and hand a stored event to the page. */
function dispatchFrame(frame) {
  if (frame.id !== null) state.live.lastId = frame.id;
  if (frame.data.length === 0) return;
  if ((frame.event || "message") !== "event") return;
  let event;
  try {
    event = JSON.parse(frame.data.join("\n"));
  } catch {
    return; // not ours to show
  }
  if (!event || !event.event_id) return;
  noteEvent(event);
  liveInboxEvent(event);
  scheduleCardsRefresh();
}

// ---------------------------------------------------------------- tabs

function selectTab(name, focus) {
  state.tab = name;
  for (const tab of TABS) {
    const tabButton = $(`tab-${tab}`);
    const selected = tab === name;
    tabButton.setAttribute("aria-selected", String(selected));
    tabButton.tabIndex = selected ? 0 : -1;
    $(`panel-${tab}`).hidden = !selected;
  }
  if (focus) $(`tab-${name}`).focus();
  if (!state.key) return;
  if (name === "dlq") loadDlq();
  if (name === "streams") loadStreams();
  if (name === "webhooks") loadWebhooks();
  if (name === "inbox") loadInbox();
}

/** Arrow keys, Home and End move between tabs (the ARIA tabs pattern). */
function onTabKey(e) {
  const current = TABS.indexOf(state.tab);
  let next = null;
  if (e.key === "ArrowRight" || e.key === "ArrowDown") next = (current + 1) % TABS.length;
  else if (e.key === "ArrowLeft" || e.key === "ArrowUp") next = (current - 1 + TABS.length) % TABS.length;
  else if (e.key === "Home") next = 0;
  else if (e.key === "End") next = TABS.length - 1;
  if (next === null) return;
  e.preventDefault();
  selectTab(TABS[next], true);
}

// ---------------------------------------------------------------- wiring

function loadRefreshChoice() {
  let ms = 5000;
  try {
    const saved = localStorage.getItem(REFRESH_STORAGE);
    if (saved !== null) ms = Number(saved);
  } catch {
    // storage disabled: the default
  }
  return REFRESH_CHOICES.includes(ms) ? ms : 5000;
}

function onRefreshChange() {
  const value = $("refresh-interval").value;
  const ms = Number(value);
  state.refreshMs = value !== "" && REFRESH_CHOICES.includes(ms) ? ms : 5000;
  try {
    localStorage.setItem(REFRESH_STORAGE, String(state.refreshMs));
  } catch {
    // storage disabled: the choice lasts until reload
  }
  renderLive();
  if (state.key && !state.refreshing) {
    if (state.refreshMs > 0) scheduleRefresh(state.refreshMs);
    else clearTimeout(state.timer);
  }
}

let resizeTimer = null;

function wire() {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) useKey(key);
  });
  $("forget-key").addEventListener("click", () => {
    $("api-key").value = "";
    useKey("");
    $("api-key").focus();
  });
  $("refresh-interval").addEventListener("change", onRefreshChange);
  $("error-panel").addEventListener("click", (e) => {
    if (e.target.closest("[data-action=reload]")) {
      // Reconnect the stream now too, rather than after its backoff.
      if (!state.live.controller) startLive();
      refreshNow(true);
    }
  });
  $("charts-refresh").addEventListener("click", () => refreshNow(true));

  const tablist = document.querySelector("[role=tablist]");
  tablist.addEventListener("click", (e) => {
    const tab = e.target.closest("[role=tab]");
    if (tab) selectTab(tab.dataset.tab, false);
  });
  tablist.addEventListener("keydown", onTabKey);

  $("inbox-filters").addEventListener("submit", (e) => {
    e.preventDefault();
    applyInboxFilters();
  });
  $("inbox-status-filter").addEventListener("change", applyInboxFilters);
  $("inbox-list").addEventListener("click", onInboxClick);
  $("inbox-older").addEventListener("click", olderPage);
  $("inbox-newest").addEventListener("click", newestPage);
  $("detail-close").addEventListener("click", closeDetail);
  $("event-detail").addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeDetail();
  });

  $("dlq-redrive").addEventListener("click", (e) => redrive(e.currentTarget));
  $("streams-list").addEventListener("click", (e) => {
    const control = e.target.closest("[data-action=resume]");
    if (control) resumeStream(control.closest("[data-stream]").dataset.stream, control);
  });
  wireWebhooks();
  $("panel-debug").addEventListener("click", (e) => {
    const control = e.target.closest("[data-debug]");
    if (!control) return;
    if (!state.key) return;
    sendDebug(control.dataset.debug, control);
  });

  // Charts are drawn to the pixel width of their box: redraw when it changes.
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(renderCharts, 150);
  });
  // Back to a hidden tab: refresh at once instead of waiting for the next tick.
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible" && state.key) refreshNow();
  });
}

function start() {
  state.refreshMs = loadRefreshChoice();
  $("refresh-interval").value = String(state.refreshMs);
  wire();
  const key = loadKey();
  $("api-key").value = key;
  useKey(key);
}

start();
