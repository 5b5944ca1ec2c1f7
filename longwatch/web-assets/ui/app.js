/* longwatch: the timeline page (plain JS, no build step, no dependencies).
 *
 * One lane per stream, one row per event in each lane. Narrow views draw the segments themselves
 * (GET /api/v1/events, one page of at most MAX_SEGMENTS); wide views, or views holding more segments
 * than that, draw the server's per-bucket counts (GET /api/v1/timeline). New segments come from the
 * live feed (EventSource on /api/v1/events/live). The view (range, axis, filters, selection) lives in
 * the URL's hash, so a link shows the same view.
 *
 * Hooks for tools and tests: every drawn segment carries data-segment-id, every lane data-stream-id,
 * every bucket cell data-bucket (with data-stream, data-event, data-count); body[data-mode] is
 * "segments" or "buckets", body[data-busy] is "1" while a load is pending; window.longwatch has
 * idle() (a promise: the view's data is drawn), view, mode, query (the last data request) and
 * setView/zoom/pan. Performance marks: "lw:input" (a zoom or pan asked for, at the event's time),
 * "lw:data" (its data arrived), "lw:painted" (drawn, after the next frame).
 *
 * Why no timeline library: vis-timeline 8.5.4 (standalone build, 536 KB minified) was measured against
 * this SVG in the same headless Chromium with the same 2,000 segments in 8 lanes: its first draw took
 * ~2.9 s (this page: ~0.1 s), a zoom redraw ~124 ms (~61 ms), it has no per-bucket mode, and its items
 * carry no attributes of ours (data-segment-id) without a template per item.
 */
(() => {
  "use strict";

  const API = "/api/v1";
  const TOKEN_KEY = "longwatch_token";
  const MAX_SEGMENTS = 2000; // a view holding more is drawn as buckets
  const SEGMENT_MAX_SPAN = 6 * 3600; // wider views are drawn as buckets without asking for segments
  const MIN_SPAN = 1;
  const MAX_SPAN = 3 * 365 * 86400;
  const BUCKET_PX = 4; // about one bucket per 4 px
  const CACHE_TTL_MS = 15000;
  const STEPS = [0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
    43200, 86400, 172800, 604800, 1209600, 2592000, 7776000, 15552000, 31536000];
  const PALETTE = ["#2f6fdd", "#e8710a", "#1e9e4a", "#d93025", "#8e44c9", "#8c5a3c", "#e052a5", "#5f6b7a",
    "#a9a216", "#12a4b6", "#6d4dff", "#b5474d"];
  // the shipped events get fixed colours; others a stable hash (the same colour in every view and link)
  const FIXED = ["person_present", "car_present", "truck_present", "bus_present", "bicycle_present",
    "motorbike_present", "dog_present"];

  const $ = (sel) => document.querySelector(sel);
  const el = {
    body: document.body, svg: $("#svg"), timeline: $("#timeline"), tooltip: $("#tooltip"), legend: $("#legend"),
    range: $("#range-label"), modeLabel: $("#mode-label"), message: $("#message"),
    eventFilter: $("#event-filter"), scoreFilter: $("#score-filter"), streamOptions: $("#stream-options"),
    streamAll: $("#stream-all"), streamFilterLabel: $("#stream-filter-label"), streamFilter: $("#stream-filter"),
    detail: $("#detail"), detailFields: $("#detail-fields"), thumb: $("#thumb"), thumbMissing: $("#thumb-missing"),
    clip: $("#clip-link"), strip: $("#strip-link"), clipNote: $("#clip-note"), rows: $("#stream-rows"), liveState: $("#live-state"), addForm: $("#add-form"),
    addResult: $("#add-result"), dialog: $("#token-dialog"), tokenInput: $("#token-input"),
    tokenReason: $("#token-reason"),
  };

  let token = "";
  try {
    token = localStorage.getItem(TOKEN_KEY) || "";
  } catch (_e) {
    token = "";
  }

  const view = { axis: "utc", t0: NaN, t1: NaN, streams: [], event: "", minScore: null, sel: null };
  let axisFromURL = false;
  let streamsInfo = new Map(); // id → stream JSON (GET /streams)
  const seenStreams = new Set(); // streams met in data
  const knownEvents = new Set();
  let mode = ""; // "segments" | "buckets"
  const segs = new Map(); // id → segment of the view (segments mode)
  let buckets = null; // the last /timeline answer, with after/before/key
  let lastQuery = null;
  let layoutCache = null;
  let booted = false;
  let needAdmin = false;

  // ---- small helpers --------------------------------------------------------------------------------

  const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
  const r3 = (x) => Math.round(x * 1000) / 1000;
  const pad2 = (n) => String(n).padStart(2, "0");

  function colour(event) {
    const i = FIXED.indexOf(event);
    if (i >= 0) return PALETTE[i];
    let h = 2166136261;
    for (const c of event) h = Math.imul(h ^ c.charCodeAt(0), 16777619);
    return PALETTE[FIXED.length + ((h >>> 0) % (PALETTE.length - FIXED.length))];
  }

  function isoOf(t) {
    return new Date(Math.round(t * 1000)).toISOString();
  }
  function paramOf(t) {
    // a time as it goes in the URL and to the API: ISO UTC (whole seconds without ".000") or stream seconds
    if (view.axis === "s") return String(r3(t));
    const s = isoOf(t);
    return s.endsWith(".000Z") ? s.slice(0, -5) + "Z" : s;
  }
  function parseTime(text) {
    if (text == null || text === "") return { t: NaN, axis: null };
    if (/^-?\d+(\.\d+)?$/.test(text)) return { t: Number(text), axis: "s" };
    const ms = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : text + "Z");
    return { t: ms / 1000, axis: "utc" };
  }
  function fmtUTC(t, withMs) {
    const d = new Date(Math.round(t * 1000));
    const base = `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}`;
    return withMs ? `${base}.${String(d.getUTCMilliseconds()).padStart(3, "0")}` : base;
  }
  function hms(t, decimals) {
    const neg = t < 0;
    let x = Math.abs(t);
    const h = Math.floor(x / 3600);
    x -= h * 3600;
    const m = Math.floor(x / 60);
    x -= m * 60;
    const s = decimals ? x.toFixed(decimals).padStart(3 + decimals, "0") : pad2(Math.floor(x));
    return `${neg ? "-" : ""}${h ? `${h}:${pad2(m)}` : m}:${s}`;
  }
  function fmtSpan(s) {
    if (s < 1) return `${Math.round(s * 1000)} ms`;
    if (s < 90) return `${+s.toFixed(1)} s`;
    if (s < 5400) return `${+(s / 60).toFixed(1)} min`;
    if (s < 2 * 86400) return `${+(s / 3600).toFixed(1)} h`;
    return `${+(s / 86400).toFixed(1)} d`;
  }
  function fmtTick(t, step) {
    if (view.axis === "s") return hms(t, step < 1 ? 1 : 0);
    const d = new Date(Math.round(t * 1000));
    const date = `${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
    if (step >= 86400 || (d.getUTCHours() === 0 && d.getUTCMinutes() === 0 && d.getUTCSeconds() === 0 && step >= 1)) {
      return date;
    }
    const hm = `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}`;
    if (step >= 60) return hm;
    if (step >= 1) return `${hm}:${pad2(d.getUTCSeconds())}`;
    return `${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}.${Math.floor(d.getUTCMilliseconds() / 100)}`;
  }
  function niceStep(x) {
    for (const s of STEPS) if (s >= x) return s;
    return Math.ceil(x / 31536000) * 31536000;
  }
  function qs(params) {
    const parts = [];
    for (const [k, v] of Object.entries(params)) {
      if (v === undefined || v === null || v === "") continue;
      parts.push(`${k}=${encodeURIComponent(v).replace(/%3A/gi, ":").replace(/%2C/gi, ",")}`);
    }
    return parts.join("&");
  }
  // segment times on the current axis (null where the stream has no known epoch and the axis is UTC)
  function segA(seg) {
    if (view.axis === "s") return [seg.start_s, seg.end_s];
    if (!seg.start_utc) return null;
    return [Date.parse(seg.start_utc) / 1000, Date.parse(seg.end_utc) / 1000];
  }

  // ---- the API ----------------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message || `HTTP ${status}`);
      this.status = status;
      this.code = code || "";
    }
  }

  async function api(path, { method = "GET", body, signal } = {}) {
    const headers = { Accept: "application/json" };
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let r;
    try {
      r = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "network", "the service does not answer");
    }
    let data = null;
    try {
      data = await r.json();
    } catch (_e) {
      data = null;
    }
    if (!r.ok) {
      const err = new ApiError(r.status, data && data.code, data && data.message);
      if (r.status === 401) askToken(token ? "The token is not valid (or was revoked)." : "This service needs an API token.");
      throw err;
    }
    return data;
  }
  function withToken(url) {
    // <img>, <a> and EventSource send no Authorization header: the read-only routes take ?token=
    return token ? `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}` : url;
  }

  // ---- messages, busy state, idle() -------------------------------------------------------------------

  function say(text, kind) {
    if (!text) {
      el.message.hidden = true;
      return;
    }
    el.message.textContent = text;
    el.message.className = kind || "";
    el.message.hidden = false;
  }
  function errorText(e) {
    if (e.status === 403) return "This needs an admin token.";
    return e.code ? `${e.code}: ${e.message}` : e.message;
  }

  let loadTimer = null;
  let inflight = null;
  let loadSeq = 0;
  let paintedSeq = 0;
  let waiters = [];
  function setBusy(on) {
    el.body.dataset.busy = on ? "1" : "0";
    if (!on) {
      const w = waiters;
      waiters = [];
      for (const fn of w) fn();
    }
  }
  function idle() {
    if (el.body.dataset.busy !== "1") return Promise.resolve();
    return new Promise((res) => waiters.push(res));
  }
  function painted(seq, detail) {
    requestAnimationFrame(() =>
      setTimeout(() => {
        performance.mark("lw:painted", { detail });
        paintedSeq = Math.max(paintedSeq, seq);
        if (paintedSeq === loadSeq && loadTimer === null && inflight === null) setBusy(false);
      }, 0),
    );
  }

  // ---- the view: URL, filters, range -------------------------------------------------------------------

  function readURL() {
    const p = new URLSearchParams(location.hash.replace(/^#/, ""));
    const from = parseTime(p.get("from"));
    const to = parseTime(p.get("to"));
    const axis = p.get("axis");
    axisFromURL = axis === "s" || axis === "utc" || (from.axis !== null && from.axis === to.axis);
    view.axis = axis === "s" || axis === "utc" ? axis : from.axis || "utc";
    if (Number.isFinite(from.t) && Number.isFinite(to.t) && to.t > from.t && from.axis === to.axis) {
      view.t0 = from.t;
      view.t1 = to.t;
    } else {
      view.t0 = view.t1 = NaN;
    }
    view.streams = (p.get("streams") || "").split(",").map((s) => s.trim()).filter(Boolean);
    view.event = p.get("event") || "";
    const ms = parseFloat(p.get("min_score"));
    view.minScore = Number.isFinite(ms) && ms > 0 ? ms : null;
    view.sel = p.get("sel") || null;
    if (view.event) knownEvents.add(view.event);
    for (const s of view.streams) seenStreams.add(s);
  }
  function writeURL() {
    if (!Number.isFinite(view.t0)) return;
    const h = "#" + qs({
      axis: view.axis,
      from: paramOf(view.t0),
      to: paramOf(view.t1),
      streams: view.streams.join(","),
      event: view.event,
      min_score: view.minScore,
      sel: view.sel,
    });
    if (location.hash !== h) history.replaceState(null, "", h);
  }
  function filterKey() {
    return `${view.axis}|${view.streams.join(",")}|${view.event}|${view.minScore ?? ""}`;
  }
  function setView(t0, t1, ev) {
    let span = clamp(t1 - t0, MIN_SPAN, MAX_SPAN);
    const mid = (t0 + t1) / 2;
    if (!Number.isFinite(mid) || !Number.isFinite(span)) return;
    t0 = mid - span / 2;
    t1 = mid + span / 2;
    view.t0 = r3(t0);
    view.t1 = r3(t1);
    if (ev) performance.mark("lw:input", { startTime: ev.timeStamp || performance.now() });
    writeURL();
    scheduleRender();
    // drags and wheels come in bursts: wait for a pause; a click or a key asks at once
    scheduleLoad(ev && ev.type === "wheel" ? 180 : ev && ev.type === "pointermove" ? 150 : 0);
  }
  function zoom(factor, anchor, ev) {
    const a = anchor ?? (view.t0 + view.t1) / 2;
    setView(a - (a - view.t0) * factor, a + (view.t1 - a) * factor, ev);
  }
  function pan(fraction, ev) {
    const d = (view.t1 - view.t0) * fraction;
    setView(view.t0 + d, view.t1 + d, ev);
  }
  function laneIds() {
    if (view.streams.length) return [...view.streams];
    const ids = new Set([...streamsInfo.keys(), ...seenStreams]);
    return [...ids].sort();
  }
  function rowEvents() {
    if (view.event) return [view.event];
    const evs = [...knownEvents].sort();
    return evs.length ? evs : [""];
  }
  function addEvent(ev) {
    if (!ev || knownEvents.has(ev)) return false;
    knownEvents.add(ev);
    updateEventOptions();
    return true;
  }

  // ---- loading data -----------------------------------------------------------------------------------

  function scheduleLoad(delay) {
    setBusy(true);
    clearTimeout(loadTimer);
    loadTimer = setTimeout(() => {
      loadTimer = null;
      load();
    }, delay || 0);
  }
  function eventsParams() {
    return {
      stream: view.streams.join(","),
      event: view.event,
      min_score: view.minScore,
      after: view.axis === "s" ? r3(view.t0) : isoOf(view.t0),
      before: view.axis === "s" ? r3(view.t1) : isoOf(view.t1),
    };
  }
  function estimateFromBuckets() {
    // segments in the view according to the last buckets (an over-estimate: a long one counts in each bucket)
    const b = buckets;
    if (!b || b.key !== filterKey() || b.a0 > view.t0 || b.a1 < view.t1) return 0;
    const i0 = Math.max(0, Math.floor((view.t0 - b.a0) / b.bucket_s));
    const i1 = Math.min(b.buckets - 1, Math.floor((view.t1 - b.a0) / b.bucket_s));
    let n = 0;
    for (const lane of b.lanes) for (let i = i0; i <= i1; i++) n += lane.counts[i];
    return n;
  }
  const cache = new Map();
  async function fetchTimeline(signal) {
    const plotW = layoutCache ? layoutCache.plotW : 800;
    const span = view.t1 - view.t0;
    const b = niceStep(span / Math.max(40, plotW / BUCKET_PX));
    const a0 = Math.floor(view.t0 / b) * b;
    let a1 = Math.ceil(view.t1 / b) * b;
    if (a1 <= a0) a1 = a0 + b;
    const params = {
      streams: view.streams.join(","),
      event: view.event,
      min_score: view.minScore,
      bucket: b,
      after: view.axis === "s" ? r3(a0) : isoOf(a0),
      before: view.axis === "s" ? r3(a1) : isoOf(a1),
    };
    const path = `/timeline?${qs(params)}`;
    const hit = cache.get(path);
    let data;
    if (hit && Date.now() - hit.at < CACHE_TTL_MS) {
      data = hit.data;
    } else {
      data = await api(path, { signal });
      cache.set(path, { at: Date.now(), data });
      if (cache.size > 40) cache.delete(cache.keys().next().value);
    }
    lastQuery = { kind: "timeline", path: `${API}${path}`, params };
    return { ...data, a0, a1: a0 + data.buckets * data.bucket_s, key: filterKey() };
  }

  async function load() {
    const seq = ++loadSeq;
    if (inflight) inflight.abort();
    const ctl = new AbortController();
    inflight = ctl;
    const span = view.t1 - view.t0;
    try {
      let want = span > SEGMENT_MAX_SPAN || estimateFromBuckets() > 3 * MAX_SEGMENTS ? "buckets" : "segments";
      if (want === "segments") {
        const params = { ...eventsParams(), order: "asc", limit: MAX_SEGMENTS };
        const page = await api(`/events?${qs(params)}`, { signal: ctl.signal });
        if (seq !== loadSeq) return;
        if (page.next_cursor) {
          want = "buckets";
        } else {
          lastQuery = { kind: "events", path: `${API}/events?${qs(params)}`, params };
          segs.clear();
          for (const s of page.items) {
            segs.set(s.id, s);
            seenStreams.add(s.stream);
            addEvent(s.event);
          }
          mode = "segments";
        }
      }
      if (want === "buckets") {
        const tl = await fetchTimeline(ctl.signal);
        if (seq !== loadSeq) return;
        for (const lane of tl.lanes) {
          seenStreams.add(lane.stream);
          addEvent(lane.event);
        }
        buckets = tl;
        segs.clear();
        mode = "buckets";
      }
      performance.mark("lw:data");
      if (!el.message.classList.contains("sticky")) say("");
      renderNow();
      painted(seq, { mode, segments: segs.size });
    } catch (e) {
      if (e.name === "AbortError") return;
      if (seq !== loadSeq) return;
      if (e.status !== 401) say(`Could not load the timeline: ${errorText(e)}`, "error");
      renderNow();
      painted(seq, { mode, error: true });
    } finally {
      if (inflight === ctl) inflight = null;
    }
  }

  async function initialRange() {
    // the extent of the data on the axis: first and last segment of each lane (at most 24 lanes)
    const ids = laneIds().slice(0, 24);
    const base = { event: view.event, min_score: view.minScore, limit: 1 };
    const jobs = [];
    for (const id of ids.length ? ids : [""]) {
      for (const order of ["asc", "desc"]) jobs.push(api(`/events?${qs({ ...base, stream: id, order })}`).catch(() => null));
    }
    const items = (await Promise.all(jobs)).filter(Boolean).flatMap((p) => p.items);
    if (!axisFromURL) view.axis = items.some((s) => s.start_utc) || !items.length ? "utc" : "s";
    let lo = Infinity;
    let hi = -Infinity;
    for (const s of items) {
      const a = segA(s);
      if (!a) continue;
      lo = Math.min(lo, a[0]);
      hi = Math.max(hi, a[1]);
    }
    if (!Number.isFinite(lo)) {
      const now = view.axis === "utc" ? Date.now() / 1000 : 3600;
      lo = now - 3600;
      hi = now;
    }
    const span = Math.max(hi - lo, 60);
    const mid = (lo + hi) / 2;
    view.t0 = r3(mid - span * 0.51);
    view.t1 = r3(mid + span * 0.51);
    if (view.axis === "s" && view.t0 < 0 && lo >= 0) {
      // stream seconds start at 0: show from there
      view.t1 = r3(view.t1 - view.t0);
      view.t0 = 0;
    }
    if (view.t1 - view.t0 > MAX_SPAN) view.t0 = view.t1 - MAX_SPAN;
  }

  // ---- drawing ----------------------------------------------------------------------------------------

  let renderQueued = false;
  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => {
      renderQueued = false;
      renderNow();
    });
  }

  function computeLayout() {
    const W = Math.max(200, el.timeline.clientWidth);
    const narrow = W < 520;
    const labelW = narrow ? 76 : 128;
    const rowH = narrow ? 11 : 13;
    const axisH = 22;
    const plotX = labelW;
    const plotW = Math.max(60, W - labelW - 8);
    const events = rowEvents();
    const lanes = laneIds();
    const lanePad = 4;
    const laneH = Math.max(24, events.length * rowH + lanePad * 2);
    const H = axisH + Math.max(1, lanes.length) * laneH + 6;
    return { W, H, labelW, rowH, axisH, plotX, plotW, events, lanes, lanePad, laneH, narrow };
  }

  function renderNow() {
    const L = (layoutCache = computeLayout());
    const { W, H, plotX, plotW, axisH, rowH, lanePad, laneH, events } = L;
    const t0 = view.t0;
    const t1 = view.t1;
    if (!Number.isFinite(t0)) return;
    const k = plotW / (t1 - t0);
    const X = (t) => plotX + (t - t0) * k;
    const right = plotX + plotW;
    const rowOf = new Map(events.map((e, i) => [e, i]));
    const out = [];

    // lane backgrounds (under the grid), then the time axis and grid
    out.push(`<g class="bgs">`);
    for (let i = 0; i < L.lanes.length; i++) {
      out.push(`<rect class="lane-bg${i % 2 ? " alt" : ""}" x="${plotX}" y="${axisH + i * laneH}" width="${W - plotX}" height="${laneH}"/>`);
    }
    out.push(`</g>`);
    const step = niceStep((t1 - t0) / Math.max(2, plotW / (L.narrow ? 70 : 110)));
    out.push(`<g class="ticks">`);
    for (let t = Math.ceil(t0 / step) * step, n = 0; t <= t1 && n < 200; t += step, n++) {
      const x = X(t).toFixed(1);
      const anchor = X(t) > W - 24 ? "end" : X(t) < plotX + 18 ? "start" : "middle";
      out.push(`<g class="tick"><line x1="${x}" x2="${x}" y1="${axisH - 4}" y2="${H}"/><text x="${x}" y="13" text-anchor="${anchor}">${esc(fmtTick(t, step))}</text></g>`);
    }
    out.push(`</g><line class="axis-line" x1="0" x2="${W}" y1="${axisH - 0.5}" y2="${axisH - 0.5}"/>`);

    // lanes
    const laneIndex = new Map(L.lanes.map((id, i) => [id, i]));
    const body = L.lanes.map(() => []);
    if (mode === "segments") {
      for (const s of segs.values()) {
        const li = laneIndex.get(s.stream);
        const ri = rowOf.get(s.event);
        if (li === undefined || ri === undefined) continue;
        const a = segA(s);
        if (!a) continue;
        let x0 = X(a[0]);
        let x1 = X(a[1]);
        if (x1 < plotX - 1 || x0 > right + 1) continue;
        x0 = clamp(x0, plotX, right);
        x1 = clamp(x1, plotX, right);
        let w = x1 - x0;
        if (w < 2) {
          w = 2;
          x0 = Math.min(x0, right - 2);
        }
        const y = lanePad + ri * rowH;
        const cls = `seg${s.state === "open" ? " open" : ""}${s.id === view.sel ? " sel" : ""}`;
        const op = clamp(0.45 + 0.55 * s.score, 0.45, 1).toFixed(2);
        body[li].push(`<rect class="${cls}" data-segment-id="${esc(s.id)}" data-event="${esc(s.event)}" x="${x0.toFixed(1)}" y="${y + 1}" width="${w.toFixed(1)}" height="${rowH - 2}" fill="${colour(s.event)}" fill-opacity="${op}"/>`);
      }
    } else if (mode === "buckets" && buckets) {
      const b = buckets;
      let max = 1;
      for (const lane of b.lanes) for (const c of lane.counts) if (c > max) max = c;
      const lmax = Math.log1p(max);
      for (const lane of b.lanes) {
        const li = laneIndex.get(lane.stream);
        const ri = rowOf.get(lane.event);
        if (li === undefined || ri === undefined) continue;
        const y = lanePad + ri * rowH + 1;
        const fill = colour(lane.event);
        for (let i = 0; i < lane.counts.length; i++) {
          const c = lane.counts[i];
          if (!c) continue;
          let x0 = X(b.a0 + i * b.bucket_s);
          let x1 = X(b.a0 + (i + 1) * b.bucket_s);
          if (x1 < plotX || x0 > right) continue;
          x0 = clamp(x0, plotX, right);
          x1 = clamp(x1, plotX, right);
          const w = Math.max(1, x1 - x0 - 0.4);
          const op = (0.22 + 0.78 * (Math.log1p(c) / lmax)).toFixed(2);
          body[li].push(`<rect data-bucket="${i}" data-stream="${esc(lane.stream)}" data-event="${esc(lane.event)}" data-count="${c}" data-covered="${lane.covered_s[i]}" x="${x0.toFixed(1)}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 2}" fill="${fill}" fill-opacity="${op}"/>`);
        }
      }
    }
    out.push(`<g class="lanes">`);
    L.lanes.forEach((id, i) => {
      const y0 = axisH + i * laneH;
      const info = streamsInfo.get(id);
      const state = info ? info.state || "" : "";
      out.push(`<g class="lane" data-stream-id="${esc(id)}" transform="translate(0,${y0})">`);
      out.push(body[i].join(""));
      out.push(`<circle class="dot dot-${esc(state)}" cx="9" cy="${laneH / 2}" r="3.5"><title>${esc(state || "no status")}</title></circle>`);
      const label = id.length > (L.narrow ? 9 : 17) ? id.slice(0, L.narrow ? 8 : 16) + "…" : id;
      out.push(`<text x="17" y="${laneH / 2 + 4}"><title>${esc(id)}</title>${esc(label)}</text>`);
      out.push(`<line class="lane-sep" x1="0" x2="${W}" y1="${laneH - 0.5}" y2="${laneH - 0.5}"/></g>`);
    });
    out.push(`</g>`);
    if (!L.lanes.length) {
      out.push(`<text class="empty" x="${plotX + 10}" y="${axisH + 18}">no streams yet</text>`);
    }
    if (view.axis === "utc") {
      const now = Date.now() / 1000;
      if (now >= t0 && now <= t1) {
        const x = X(now).toFixed(1);
        out.push(`<line class="now" x1="${x}" x2="${x}" y1="${axisH}" y2="${H}"><title>now</title></line>`);
      }
    }
    el.svg.setAttribute("width", W);
    el.svg.setAttribute("height", H);
    el.svg.innerHTML = out.join("");
    el.body.dataset.mode = mode;
    renderHeader();
  }

  function renderHeader() {
    const span = view.t1 - view.t0;
    if (view.axis === "utc") {
      const a = fmtUTC(view.t0);
      const b = fmtUTC(view.t1);
      el.range.textContent = `${a} → ${a.slice(0, 10) === b.slice(0, 10) ? b.slice(11) : b} UTC · ${fmtSpan(span)}`;
    } else {
      el.range.textContent = `${hms(view.t0, 1)} → ${hms(view.t1, 1)} stream time · ${fmtSpan(span)}`;
    }
    if (mode === "segments") {
      el.modeLabel.textContent = `${segs.size} segment${segs.size === 1 ? "" : "s"}`;
    } else if (mode === "buckets" && buckets) {
      el.modeLabel.textContent = `buckets of ${fmtSpan(buckets.bucket_s)} (zoom in for segments)`;
    }
    for (const b of document.querySelectorAll("[data-axis]")) b.classList.toggle("on", b.dataset.axis === view.axis);
    renderLegend();
  }

  function renderLegend() {
    const evs = [...knownEvents].sort();
    const html = evs.map((e) => {
      const off = view.event && view.event !== e ? " off" : "";
      return `<button type="button" class="${off.trim()}" data-legend="${esc(e)}" title="show only ${esc(e)} (again: all)"><i style="background:${colour(e)}"></i>${esc(e)}</button>`;
    });
    const text = html.join("") || `<span class="muted small">no events in view</span>`;
    if (el.legend.innerHTML !== text) el.legend.innerHTML = text;
  }

  function updateEventOptions() {
    const cur = view.event;
    const evs = [...knownEvents].sort();
    el.eventFilter.innerHTML = `<option value="">all events</option>` + evs.map((e) => `<option value="${esc(e)}">${esc(e)}</option>`).join("");
    el.eventFilter.value = cur;
  }

  function updateStreamOptions() {
    const ids = [...new Set([...streamsInfo.keys(), ...seenStreams, ...view.streams])].sort();
    el.streamOptions.innerHTML = ids.map((id) => `<label><input type="checkbox" value="${esc(id)}"${view.streams.includes(id) ? " checked" : ""}> ${esc(id)}</label>`).join("");
    el.streamAll.checked = view.streams.length === 0;
    el.streamFilterLabel.textContent = view.streams.length ? view.streams.join(", ") : "all";
  }

  function applyControls() {
    updateEventOptions();
    updateStreamOptions();
    el.scoreFilter.value = view.minScore == null ? "" : String(view.minScore);
  }

  // ---- selection: the detail panel ---------------------------------------------------------------------

  let detailSeq = 0;
  async function select(id, { scroll } = {}) {
    view.sel = id;
    writeURL();
    scheduleRender();
    if (!id) {
      el.detail.hidden = true;
      return;
    }
    const seq = ++detailSeq;
    let seg = segs.get(id);
    if (!seg) {
      try {
        seg = await api(`/events/${encodeURIComponent(id)}`);
      } catch (e) {
        if (seq === detailSeq) say(`Segment ${id}: ${errorText(e)}`, "error");
        return;
      }
    }
    if (seq !== detailSeq) return;
    showDetail(seg);
    loadMedia(seg, seq);
    if (scroll) el.detail.scrollIntoView({ block: "nearest" });
  }

  async function loadMedia(seg, seq) {
    // what the segment has (GET …/media): only existing pictures are asked for (no 404s in the console)
    el.thumb.hidden = true;
    el.thumb.removeAttribute("src");
    el.thumbMissing.hidden = false;
    el.thumbMissing.textContent = "…";
    el.clip.hidden = el.strip.hidden = true;
    el.clipNote.textContent = "";
    const base = `${API}/events/${encodeURIComponent(seg.id)}`;
    let m;
    try {
      m = await api(`/events/${encodeURIComponent(seg.id)}/media?${qs({ stream: seg.stream })}`);
    } catch (e) {
      if (e.status === 401 || seq !== detailSeq) return;
      m = { thumbnail: `${base}/thumbnail.jpg`, clip: `${base}/clip.mp4`, strip: null };
    }
    if (seq !== detailSeq) return;
    if (m.thumbnail) {
      el.thumb.src = withToken(m.thumbnail);
    } else {
      el.thumbMissing.textContent = "no thumbnail";
    }
    if (m.clip) {
      el.clip.href = withToken(m.clip);
      el.clip.hidden = false;
    } else {
      el.clipNote.textContent = m.clip_unavailable
        ? `no clip: ${m.clip_unavailable}`
        : m.recording === "none"
          ? "no clip: a camera's or URL's footage is not recorded"
          : "no clip";
    }
    if (m.strip) {
      el.strip.href = withToken(m.strip);
      el.strip.hidden = false;
    }
  }

  function showDetail(seg) {
    el.detail.hidden = false;
    el.detail.dataset.segmentFor = seg.id;
    const dur = seg.end_s - seg.start_s;
    const utc = seg.start_utc
      ? `${fmtUTC(Date.parse(seg.start_utc) / 1000, true)} → ${fmtUTC(Date.parse(seg.end_utc) / 1000, true).slice(11)} UTC`
      : "— (the stream has no known start time)";
    const rows = [
      ["stream", esc(seg.stream)],
      ["event", `<span class="swatch" style="background:${colour(seg.event)}"></span>${esc(seg.event)}`],
      ["UTC", esc(utc)],
      ["stream time", `${esc(seg.start_s.toFixed(3))} → ${esc(seg.end_s.toFixed(3))} s <span class="muted">(${esc(hms(seg.start_s, 1))} → ${esc(hms(seg.end_s, 1))})</span>`],
      ["duration", esc(fmtSpan(dur))],
      ["score", esc(seg.score.toFixed(3))],
      ["state", esc(seg.state)],
      ["id", `<code>${esc(seg.id)}</code>`],
    ];
    el.detailFields.innerHTML = rows.map(([k, v]) => `<dt>${k}</dt><dd data-field="${k}">${v}</dd>`).join("");
    el.detail.dataset.start = String(seg.start_s);
    el.detailSeg = seg;
  }

  // ---- streams panel -----------------------------------------------------------------------------------

  async function refreshStreams() {
    const list = await api("/streams");
    const before = laneIds().join(",");
    streamsInfo = new Map(list.map((s) => [s.id, s]));
    renderStreams();
    updateStreamOptions();
    if (laneIds().join(",") !== before || booted) scheduleRender();
    return list;
  }

  const num = (x, d) => (typeof x === "number" && Number.isFinite(x) ? x.toFixed(d) : "—");
  let confirming = null;
  function renderStreams() {
    const html = [];
    for (const s of streamsInfo.values()) {
      const state = s.state || "—";
      const lag = typeof s.lag_s !== "number" ? "—" : s.lag_s < 60 ? `${Math.max(0, s.lag_s).toFixed(1)} s` : fmtSpan(s.lag_s);
      const fps = `${num(s.decode_fps ?? s.fps, 0)}/${num(s.sampled_fps, 1)}`;
      const foot = typeof s.footage_s === "number" ? `footage ${hms(s.footage_s)}` : "";
      const title = [s.source, foot, s.last_frame_utc ? `last frame ${s.last_frame_utc}` : "", s.error].filter(Boolean).join("\n");
      let acts = "";
      if (s.desired && confirming === s.id) {
        acts = `<span class="small">remove?</span> <button type="button" data-remove="${esc(s.id)}" data-purge="0" title="stop it, keep its segments">keep segments</button> <button type="button" data-remove="${esc(s.id)}" data-purge="1" title="stop it and delete its segments">delete segments</button> <button type="button" data-cancel="1">cancel</button>`;
      } else if (s.desired && s.desired !== "removed") {
        const paused = s.desired === "paused";
        acts = `<button type="button" data-state="${paused ? "running" : "paused"}" data-id="${esc(s.id)}" ${needAdmin ? 'disabled title="needs an admin token"' : ""}>${paused ? "resume" : "pause"}</button> <button type="button" data-confirm="${esc(s.id)}" aria-label="remove ${esc(s.id)}" ${needAdmin ? 'disabled title="needs an admin token"' : 'title="remove"'}>✕</button>`;
      }
      html.push(`<tr data-stream-row="${esc(s.id)}" title="${esc(title)}"><td class="id">${esc(s.id)}</td><td><span class="state state-${esc(state)}" data-state-of="${esc(s.id)}">${esc(state)}</span>${s.reason ? `<span class="reason">${esc(s.reason)}</span>` : ""}</td><td data-lag>${esc(lag)}</td><td data-fps>${esc(fps)}</td><td class="acts">${acts}</td></tr>`);
    }
    el.rows.innerHTML = html.join("") || `<tr><td colspan="5" class="muted">no streams</td></tr>`;
    el.addForm.querySelector("button[type=submit]").disabled = needAdmin;
  }

  async function adminCall(fn, where) {
    try {
      await fn();
      where.textContent = "";
      where.className = "muted";
      return true;
    } catch (e) {
      if (e.status === 403) {
        needAdmin = true;
        renderStreams();
        say("Adding, pausing and removing streams needs an admin token.", "error");
      }
      where.textContent = errorText(e);
      where.className = "error";
      return false;
    } finally {
      refreshStreams().catch(() => {});
    }
  }

  // ---- live feed ---------------------------------------------------------------------------------------

  let es = null;
  let lastEventId = "";
  let liveRetry = null;
  let bucketRefresh = null;
  function setLive(stateText) {
    el.liveState.textContent = stateText === "open" ? "● live" : `○ ${stateText}`;
    el.liveState.dataset.live = stateText;
  }
  function connectLive(resume) {
    // a new feed starts from now (its data was just loaded); only a reconnect of the same feed replays
    // what it missed (since=), as the browser's own reconnects do with Last-Event-ID
    if (es) es.close();
    clearTimeout(liveRetry);
    if (!resume) lastEventId = "";
    const params = { stream: view.streams.join(","), event: view.event, min_score: view.minScore, since: lastEventId, token };
    es = new EventSource(`${API}/events/live?${qs(params)}`);
    const mine = es;
    setLive("connecting");
    es.onopen = () => setLive("open");
    es.onerror = () => {
      if (mine !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        // refused (the browser gives up on an answer that is not a feed): reconnect once the API
        // answers again with this token (a 401 there opens the token prompt instead)
        setLive("offline");
        const retry = () => {
          liveRetry = setTimeout(() => {
            api("/streams").then(
              () => connectLive(true),
              (e) => e.status !== 401 && retry(),
            );
          }, 5000);
        };
        retry();
      } else {
        setLive("reconnecting");
      }
    };
    const onSeg = (ev) => {
      if (ev.lastEventId) lastEventId = ev.lastEventId;
      let seg;
      try {
        seg = JSON.parse(ev.data);
      } catch (_e) {
        return;
      }
      liveSegment(seg);
    };
    for (const name of ["segment.open", "segment.update", "segment.close"]) es.addEventListener(name, onSeg);
    es.addEventListener("stream.state", (ev) => {
      if (ev.lastEventId) lastEventId = ev.lastEventId;
      let st;
      try {
        st = JSON.parse(ev.data);
      } catch (_e) {
        return;
      }
      const info = streamsInfo.get(st.stream);
      if (info) {
        info.state = st.state;
        info.reason = st.reason;
        renderStreams();
        scheduleRender();
      } else {
        refreshStreams().catch(() => {});
      }
    });
  }
  function liveSegment(seg) {
    if (view.streams.length && !view.streams.includes(seg.stream)) return;
    if (view.event && seg.event !== view.event) return;
    if (view.minScore != null && seg.score < view.minScore) return;
    const newEvent = addEvent(seg.event);
    if (!seenStreams.has(seg.stream)) {
      seenStreams.add(seg.stream);
      updateStreamOptions();
    }
    const a = segA(seg);
    const inView = a && a[1] >= view.t0 && a[0] <= view.t1;
    if (mode === "segments") {
      if (inView || segs.has(seg.id)) {
        segs.set(seg.id, seg);
        scheduleRender();
      } else if (newEvent) {
        scheduleRender();
      }
    } else if (mode === "buckets" && inView && !bucketRefresh) {
      bucketRefresh = setTimeout(() => {
        bucketRefresh = null;
        cache.clear();
        scheduleLoad(0);
      }, 1500);
    }
    if (seg.id === view.sel) {
      const was = el.detailSeg;
      showDetail(seg);
      if (was && was.state !== seg.state) loadMedia(seg, detailSeq); // a closed segment's pictures are final
    }
  }

  // ---- token ---------------------------------------------------------------------------------------------

  function askToken(reason) {
    el.tokenReason.textContent = reason || "This service needs an API token.";
    el.tokenInput.value = "";
    if (!el.dialog.open) el.dialog.showModal();
    setBusy(false);
  }
  function useToken(value) {
    token = value || "";
    try {
      if (token) localStorage.setItem(TOKEN_KEY, token);
      else localStorage.removeItem(TOKEN_KEY);
    } catch (_e) {
      /* storage unavailable: the token lasts for this page */
    }
    needAdmin = false;
    cache.clear();
    start();
  }

  // ---- interactions -------------------------------------------------------------------------------------

  function timeAt(clientX) {
    const L = layoutCache;
    const rect = el.svg.getBoundingClientRect();
    const x = clientX - rect.left;
    return view.t0 + ((x - L.plotX) / L.plotW) * (view.t1 - view.t0);
  }

  function bindUI() {
    document.addEventListener("click", (e) => {
      const t = e.target.closest("button, a");
      if (!t) return;
      if (t.dataset.act) {
        const act = t.dataset.act;
        if (act === "zoom-in") zoom(0.5, null, e);
        else if (act === "zoom-out") zoom(2, null, e);
        else if (act === "pan-left") pan(-0.25, e);
        else if (act === "pan-right") pan(0.25, e);
        else if (act === "fit") {
          performance.mark("lw:input", { startTime: e.timeStamp });
          setBusy(true);
          initialRange().then(() => setView(view.t0, view.t1));
        }
      } else if (t.dataset.span) {
        const mid = (view.t0 + view.t1) / 2;
        const span = Number(t.dataset.span);
        setView(mid - span / 2, mid + span / 2, e);
      } else if (t.dataset.axis && t.dataset.axis !== view.axis) {
        view.axis = t.dataset.axis;
        axisFromURL = true;
        segs.clear();
        buckets = null;
        setBusy(true);
        initialRange().then(() => {
          connectLive();
          setView(view.t0, view.t1);
        });
      } else if (t.dataset.legend !== undefined) {
        setEvent(view.event === t.dataset.legend ? "" : t.dataset.legend);
      } else if (t.dataset.state) {
        const id = t.dataset.id;
        const cell = t.closest("td");
        cell.textContent = t.dataset.state === "paused" ? "pausing…" : "resuming…";
        adminCall(() => api(`/streams/${encodeURIComponent(id)}`, { method: "PATCH", body: { state: t.dataset.state } }), cell);
      } else if (t.dataset.confirm) {
        confirming = t.dataset.confirm;
        renderStreams();
      } else if (t.dataset.cancel) {
        confirming = null;
        renderStreams();
      } else if (t.dataset.remove) {
        const id = t.dataset.remove;
        confirming = null;
        const cell = t.closest("td");
        cell.textContent = "removing…";
        adminCall(() => api(`/streams/${encodeURIComponent(id)}?purge=${t.dataset.purge === "1"}`, { method: "DELETE" }), cell);
      }
    });
    $("#detail-close").addEventListener("click", () => select(null));
    $("#detail-zoom").addEventListener("click", (e) => {
      const seg = el.detailSeg;
      const a = seg && segA(seg);
      if (!a) return;
      const padding = Math.max(a[1] - a[0], 10);
      setView(a[0] - padding, a[1] + padding, e);
    });
    el.thumb.addEventListener("load", () => {
      el.thumb.hidden = false;
      el.thumbMissing.hidden = true;
    });
    el.thumb.addEventListener("error", () => {
      if (!el.thumb.getAttribute("src")) return;
      el.thumb.hidden = true;
      el.thumbMissing.hidden = false;
      el.thumbMissing.textContent = "no thumbnail";
    });
    $("#copy-link").addEventListener("click", async (e) => {
      writeURL();
      const b = e.currentTarget;
      try {
        await navigator.clipboard.writeText(location.href);
        b.textContent = "copied";
      } catch (_e) {
        b.textContent = "link in the address bar";
      }
      setTimeout(() => (b.textContent = "copy link"), 1500);
    });

    // filters
    el.eventFilter.addEventListener("change", () => setEvent(el.eventFilter.value));
    let scoreTimer = null;
    el.scoreFilter.addEventListener("input", () => {
      clearTimeout(scoreTimer);
      setBusy(true);
      scoreTimer = setTimeout(() => {
        const v = parseFloat(el.scoreFilter.value);
        const next = Number.isFinite(v) && v > 0 ? v : null;
        if (next === view.minScore) {
          scheduleLoad(0);
          return;
        }
        view.minScore = next;
        filtersChanged();
      }, 250);
    });
    el.streamOptions.addEventListener("change", () => {
      view.streams = [...el.streamOptions.querySelectorAll("input:checked")].map((i) => i.value);
      filtersChanged();
    });
    el.streamAll.addEventListener("change", () => {
      view.streams = [];
      filtersChanged();
    });
    document.addEventListener("click", (e) => {
      if (el.streamFilter.open && !el.streamFilter.contains(e.target)) el.streamFilter.open = false;
    });

    // add a stream
    el.addForm.addEventListener("submit", (e) => {
      e.preventDefault();
      const f = new FormData(el.addForm);
      const body = { source: String(f.get("source") || "").trim(), validate: f.get("validate") === "on" };
      const id = String(f.get("id") || "").trim();
      if (id) body.id = id;
      el.addResult.textContent = "adding…";
      el.addResult.className = "muted";
      adminCall(async () => {
        const s = await api("/streams", { method: "POST", body });
        el.addForm.reset();
        setTimeout(() => (el.addResult.textContent = `added ${s.id}`), 0);
      }, el.addResult);
    });

    // token dialog
    $("#token-button").addEventListener("click", () => askToken(token ? "Change or forget the token this page uses." : "Give an API token."));
    $("#token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const v = el.tokenInput.value.trim();
      el.dialog.close();
      if (v) useToken(v);
    });
    $("#token-forget").addEventListener("click", () => {
      el.dialog.close();
      useToken("");
    });
    $("#token-cancel").addEventListener("click", () => el.dialog.close());

    // zoom and pan on the timeline: wheel, drag, pinch, keys; click a segment or a bucket
    const tl = el.timeline;
    tl.addEventListener(
      "wheel",
      (e) => {
        if (!layoutCache || !Number.isFinite(view.t0)) return;
        e.preventDefault();
        const unit = e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 400 : 1;
        const dx = e.deltaX * unit;
        const dy = e.deltaY * unit;
        if (Math.abs(dx) > Math.abs(dy) || e.shiftKey) {
          pan(((Math.abs(dx) > Math.abs(dy) ? dx : dy) / layoutCache.plotW), e);
        } else {
          zoom(Math.exp(clamp(dy, -300, 300) * 0.002), timeAt(e.clientX), e);
        }
      },
      { passive: false },
    );
    const pointers = new Map();
    let drag = null;
    tl.addEventListener("pointerdown", (e) => {
      if (e.button !== 0 || !layoutCache) return;
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      drag = { x: e.clientX, t0: view.t0, t1: view.t1, moved: false, pinch: null, target: e.target };
      if (pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        drag.pinch = { d: Math.abs(a.x - b.x) || 1, mid: timeAt((a.x + b.x) / 2), t0: view.t0, t1: view.t1 };
        drag.moved = true;
      }
    });
    window.addEventListener("pointermove", (e) => {
      if (!drag || !pointers.has(e.pointerId)) {
        if (!drag) hover(e);
        return;
      }
      pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
      const perPx = (drag.t1 - drag.t0) / layoutCache.plotW;
      if (drag.pinch && pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        const f = drag.pinch.d / (Math.abs(a.x - b.x) || 1);
        const m = drag.pinch.mid;
        setView(m - (m - drag.pinch.t0) * f, m + (drag.pinch.t1 - m) * f, e);
        return;
      }
      const dx = e.clientX - drag.x;
      if (!drag.moved && Math.abs(dx) < 4) return;
      drag.moved = true;
      tl.classList.add("dragging");
      el.tooltip.hidden = true;
      setView(drag.t0 - dx * perPx, drag.t1 - dx * perPx, e);
    });
    const end = (e) => {
      if (!pointers.has(e.pointerId)) return;
      pointers.delete(e.pointerId);
      if (pointers.size > 0) return;
      const d = drag;
      drag = null;
      tl.classList.remove("dragging");
      if (!d || d.moved || e.type === "pointercancel") return;
      activate(d.target, e);
    };
    window.addEventListener("pointerup", end);
    window.addEventListener("pointercancel", end);
    tl.addEventListener("pointerleave", () => (el.tooltip.hidden = true));
    tl.addEventListener("keydown", (e) => {
      if (e.key === "ArrowLeft") pan(-0.1, e);
      else if (e.key === "ArrowRight") pan(0.1, e);
      else if (e.key === "+" || e.key === "=") zoom(0.5, null, e);
      else if (e.key === "-" || e.key === "_") zoom(2, null, e);
      else return;
      e.preventDefault();
    });
    if ("ResizeObserver" in window) {
      // the drawing is made for the timeline's width in px: draw again when that changes
      new ResizeObserver(() => {
        if (layoutCache && Math.abs(Math.max(200, el.timeline.clientWidth) - layoutCache.W) > 0.5) scheduleRender();
      }).observe(el.timeline);
    }
    window.addEventListener("resize", () => {
      const w = layoutCache ? layoutCache.W : 0;
      scheduleRender();
      if (Math.abs(el.timeline.clientWidth - w) > 80 && mode === "buckets") scheduleLoad(200);
    });
    window.addEventListener("hashchange", () => {
      const before = filterKey();
      readURL();
      applyControls();
      if (!Number.isFinite(view.t0)) return;
      if (filterKey() !== before) connectLive();
      scheduleLoad(0);
      if (view.sel) select(view.sel);
      else el.detail.hidden = true;
    });
  }

  function activate(target, e) {
    el.tooltip.hidden = true;
    const seg = target.closest && target.closest("[data-segment-id]");
    if (seg) {
      select(seg.getAttribute("data-segment-id"), { scroll: layoutCache && layoutCache.narrow });
      return;
    }
    const cell = target.closest && target.closest("[data-bucket]");
    if (cell && buckets) {
      const i = Number(cell.getAttribute("data-bucket"));
      const a = buckets.a0 + i * buckets.bucket_s;
      setView(a, a + buckets.bucket_s, e);
    }
  }

  function hover(e) {
    const t = e.target;
    if (!t || !t.closest || !el.timeline.contains(t)) {
      el.tooltip.hidden = true;
      return;
    }
    let text = "";
    const segEl = t.closest("[data-segment-id]");
    const cell = t.closest("[data-bucket]");
    if (segEl) {
      const s = segs.get(segEl.getAttribute("data-segment-id"));
      if (s) {
        const when = s.start_utc ? `${fmtUTC(Date.parse(s.start_utc) / 1000)} UTC` : `${hms(s.start_s, 1)} stream time`;
        text = `${s.stream} · ${s.event}\n${when}, ${fmtSpan(s.end_s - s.start_s)}\nscore ${s.score.toFixed(2)}${s.state === "open" ? " · open" : ""}`;
      }
    } else if (cell && buckets) {
      const i = Number(cell.getAttribute("data-bucket"));
      const a = buckets.a0 + i * buckets.bucket_s;
      const when = view.axis === "utc" ? `${fmtUTC(a)} UTC` : `${hms(a)} stream time`;
      text = `${cell.getAttribute("data-stream")} · ${cell.getAttribute("data-event")}\n${when} + ${fmtSpan(buckets.bucket_s)}\n${cell.getAttribute("data-count")} segments, ${fmtSpan(Number(cell.getAttribute("data-covered")))} covered\n(click to zoom in)`;
    }
    if (!text) {
      el.tooltip.hidden = true;
      return;
    }
    const wrap = el.timeline.parentElement.getBoundingClientRect();
    el.tooltip.textContent = text;
    el.tooltip.hidden = false;
    const tw = el.tooltip.offsetWidth;
    el.tooltip.style.left = `${clamp(e.clientX - wrap.left + 12, 0, wrap.width - tw - 4)}px`;
    el.tooltip.style.top = `${e.clientY - wrap.top + 14}px`;
  }

  function setEvent(ev) {
    view.event = ev || "";
    if (ev) knownEvents.add(ev);
    el.eventFilter.value = view.event;
    filtersChanged();
  }
  function filtersChanged() {
    el.streamAll.checked = view.streams.length === 0;
    el.streamFilterLabel.textContent = view.streams.length ? view.streams.join(", ") : "all";
    if (!view.streams.length) for (const i of el.streamOptions.querySelectorAll("input")) i.checked = false;
    writeURL();
    connectLive();
    segs.clear();
    scheduleRender();
    scheduleLoad(0);
  }

  // ---- start ----------------------------------------------------------------------------------------------

  let streamsTimer = null;
  async function start() {
    setBusy(true);
    clearInterval(streamsTimer);
    if (es) {
      es.close();
      es = null;
    }
    try {
      // who we are (read or admin) and the events the service scores, before anything is drawn
      const info = await api("/info");
      needAdmin = info.scope !== "admin";
      for (const ev of info.events || []) knownEvents.add(ev.event);
      await refreshStreams();
    } catch (e) {
      if (e.status !== 401) say(`The service: ${errorText(e)}`, "error");
      setBusy(false);
      return;
    }
    say("");
    if (!Number.isFinite(view.t0)) await initialRange();
    booted = true;
    writeURL();
    applyControls();
    connectLive();
    streamsTimer = setInterval(() => {
      if (!document.hidden) refreshStreams().catch(() => {});
    }, 5000);
    scheduleLoad(0);
    if (view.sel) select(view.sel);
  }

  window.longwatch = {
    idle,
    get view() {
      return { ...view, streams: [...view.streams] };
    },
    get mode() {
      return mode;
    },
    get query() {
      return lastQuery;
    },
    get live() {
      return el.liveState.dataset.live || "";
    },
    setView: (t0, t1) => setView(t0, t1, { timeStamp: performance.now(), type: "api" }),
    zoom: (f) => zoom(f, null, { timeStamp: performance.now(), type: "api" }),
    pan: (f) => pan(f, { timeStamp: performance.now(), type: "api" }),
  };

  readURL();
  bindUI();
  applyControls();
  start();
})();
