/* The live dashboard (templates/exchange/dashboard.html): one market's book ladder,
 * depth chart, trades tape, ticker and candles, fed by /ws/stream/ and the public REST
 * market data. Plain JavaScript, no build step, nothing loaded from elsewhere.
 *
 * The book is kept exactly as the README's "Keeping a book in sync" asks: replace it
 * with each snapshot; apply a delta only when its first_sequence follows the last
 * sequence; on anything else subscribe again for a fresh snapshot and ignore deltas
 * until it comes. A dropped or silent connection is reopened with backoff.
 */
(() => {
  "use strict";

  const config = JSON.parse(document.getElementById("dashboard-config").textContent);
  const SYMBOL = config.symbol;
  const BOOK = `book.${SYMBOL}`;
  const TRADES = `trades.${SYMBOL}`;
  const TICKER = `ticker.${SYMBOL}`;
  const LADDER_LEVELS = 15;
  const DEPTH_LEVELS = 100;
  const TAPE_SIZE = 60;
  const CANDLE_HISTORY = 200;
  const PING_EVERY = 20000; // the server closes a socket silent for WS_IDLE_TIMEOUT (60 s)
  const SILENT_FOR = 45000; // no message (not even a pong) for this long: the link is dead
  const FATAL_CLOSES = new Set([4400, 4404]); // a bad request: retrying cannot help

  // --- decimal strings ------------------------------------------------------------------
  // Prices and sizes stay strings (numbers would round them); a map key is the canonical
  // form, so "100.00" and "100.00000000" are one price.

  function canon(text) {
    let s = String(text);
    // The stream writes decimals in fixed-point form; an exponent form ("0E-8") is still
    // read, as a client should: no price or size needs more than 8 places.
    if (/e/i.test(s)) s = Number(s).toFixed(8);
    if (s.includes(".")) s = s.replace(/0+$/, "").replace(/\.$/, "");
    return s === "-0" || s === "" ? "0" : s;
  }

  function fixed(text, places) {
    const [whole, frac = ""] = canon(text).split(".");
    if (places <= 0) return whole;
    return `${whole}.${(frac + "0".repeat(places)).slice(0, places)}`;
  }

  const price = (text) => fixed(text, config.priceDecimals);
  const size = (text) => fixed(text, config.quantityDecimals);
  const num = (value, places) => Number(value).toFixed(places);

  // --- state ----------------------------------------------------------------------------

  const state = {
    symbol: SYMBOL,
    bids: new Map(), // canonical price -> quantity string
    asks: new Map(),
    sequence: null, // null: no book yet, or waiting for a resync snapshot
    snapshots: 0,
    deltas: 0,
    gaps: 0,
    connects: 0,
    closes: [], // why each connection ended, latest last
    changed: new Set(), // "bids:100.5" levels to flash on the next render
    trades: [], // newest first
    ticker: null,
    interval: "1m",
    candles: new Map(), // open time (ms) -> candle
    ws: null,
    attempt: 0,
    lastHeard: 0,
  };
  window.dexDashboard = state; // for a look from the console (and the browser test)

  // --- the connection -------------------------------------------------------------------

  const statusEl = document.getElementById("status");
  let pingTimer = null;

  function setStatus(kind, text) {
    statusEl.dataset.state = kind;
    statusEl.textContent = text;
  }

  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  const candleChannel = (interval) => `candles.${SYMBOL}.${interval}`;

  function connect() {
    setStatus("connecting", state.attempt ? `reconnecting (try ${state.attempt + 1})…` : "connecting…");
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}${config.streamPath}`);
    state.ws = ws;
    ws.onopen = () => {
      state.connects += 1;
      state.lastHeard = Date.now();
      state.sequence = null;
      send({ type: "subscribe", channels: [BOOK, TRADES, TICKER, candleChannel(state.interval)] });
      loadTrades();
      loadCandles(state.interval);
      clearInterval(pingTimer);
      pingTimer = setInterval(() => {
        if (Date.now() - state.lastHeard > SILENT_FOR) drop(ws, "no answer from the server");
        else send({ type: "ping" });
      }, PING_EVERY);
    };
    ws.onmessage = (event) => {
      state.lastHeard = Date.now();
      handle(JSON.parse(event.data));
    };
    ws.onclose = (event) => {
      if (state.ws !== ws) return;
      state.closes.push(event.code);
      if (FATAL_CLOSES.has(event.code)) {
        state.ws = null;
        clearInterval(pingTimer);
        setStatus("closed", `closed by the server (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
        return;
      }
      drop(ws, `connection closed (${event.code})`);
    };
  }

  /** Forget ``ws`` (closing it if it is not closed yet) and reconnect after a backoff. */
  function drop(ws, why) {
    if (state.ws !== ws) return;
    state.ws = null;
    clearInterval(pingTimer);
    ws.onopen = ws.onmessage = ws.onclose = null;
    if (ws.readyState !== WebSocket.CLOSED) ws.close();
    state.sequence = null;
    const delay = Math.min(15000, 500 * 2 ** state.attempt) * (0.75 + Math.random() / 2);
    state.attempt += 1;
    setStatus("reconnecting", `${why}; retrying in ${Math.ceil(delay / 1000)} s`);
    setTimeout(connect, delay);
  }

  // --- messages -------------------------------------------------------------------------

  function handle(message) {
    switch (message.type) {
      case "book.snapshot":
        return onSnapshot(message);
      case "book.delta":
        return onDelta(message);
      case "trades":
        addTrades(message.trades);
        return schedule();
      case "ticker":
        state.ticker = message;
        return schedule();
      case "candle":
        if (message.interval === state.interval) addCandles([message]);
        return schedule();
      case "error":
        console.warn("stream error", message);
        return;
      default:
        return; // subscribed, pong…
    }
  }

  function onSnapshot(message) {
    for (const side of ["bids", "asks"]) {
      state[side] = new Map(message[side].map(([p, q]) => [canon(p), q]));
    }
    state.sequence = message.sequence;
    state.snapshots += 1;
    state.attempt = 0;
    setStatus("live", "live");
    schedule();
  }

  function onDelta(message) {
    if (state.sequence === null) return; // waiting for a snapshot
    if (message.first_sequence !== state.sequence + 1) {
      const last = state.sequence;
      state.gaps += 1;
      state.sequence = null;
      setStatus("resyncing", `gap after sequence ${last}: resyncing`);
      send({ type: "subscribe", channels: [BOOK] });
      return;
    }
    for (const side of ["bids", "asks"]) {
      for (const [p, q] of message[side]) {
        const key = canon(p);
        if (canon(q) === "0") state[side].delete(key);
        else state[side].set(key, q);
        state.changed.add(`${side}:${key}`);
      }
    }
    state.sequence = message.sequence;
    state.deltas += 1;
    schedule();
  }

  function addTrades(trades, fresh = true) {
    const known = new Set(state.trades.map((t) => t.id));
    for (const t of trades) {
      if (known.has(t.id)) continue;
      known.add(t.id);
      state.trades.push({
        id: t.id,
        sequence: t.sequence,
        price: t.price,
        quantity: t.quantity,
        side: t.side,
        time: t.time || t.executed_at,
        fresh,
      });
    }
    state.trades.sort((a, b) => b.sequence - a.sequence);
    state.trades.length = Math.min(state.trades.length, TAPE_SIZE);
  }

  function addCandles(candles) {
    for (const c of candles) {
      const at = Date.parse(c.open_time);
      const had = state.candles.get(at);
      // The stream and REST may both tell of the current candle: the later has more trades.
      if (!had || c.trade_count >= had.trade_count) state.candles.set(at, c);
    }
  }

  // --- REST history ---------------------------------------------------------------------

  async function getJSON(path) {
    const response = await fetch(config.apiBase + path, { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  async function loadTrades() {
    try {
      const trades = await getJSON("trades/?limit=" + TAPE_SIZE);
      addTrades(trades, false); // history does not flash
      schedule();
    } catch (error) {
      console.warn("trades history", error);
    }
  }

  async function loadCandles(interval) {
    try {
      const candles = await getJSON(`candles/?interval=${interval}&limit=${CANDLE_HISTORY}`);
      if (interval !== state.interval) return;
      addCandles(candles);
      schedule();
    } catch (error) {
      console.warn("candle history", error);
    }
  }

  function chooseInterval(interval) {
    if (interval === state.interval) return;
    send({ type: "unsubscribe", channels: [candleChannel(state.interval)] });
    state.interval = interval;
    state.candles = new Map();
    send({ type: "subscribe", channels: [candleChannel(interval)] });
    for (const button of document.querySelectorAll("#intervals button")) {
      button.setAttribute("aria-pressed", String(button.dataset.interval === interval));
    }
    loadCandles(interval);
    schedule();
  }

  // --- drawing --------------------------------------------------------------------------
  // Messages only change state; one animation frame draws whatever changed since.

  let frame = null;

  function schedule() {
    if (frame === null) frame = requestAnimationFrame(render);
  }

  function render() {
    frame = null;
    renderLadder();
    renderTape();
    renderTicker();
    drawDepth();
    drawCandles();
    state.changed.clear();
  }

  function sortedLevels(side, limit) {
    const levels = [...state[side].entries()].map(([p, q]) => ({ key: p, p: Number(p), q }));
    levels.sort(side === "bids" ? (a, b) => b.p - a.p : (a, b) => a.p - b.p);
    return levels.slice(0, limit);
  }

  function withTotals(levels) {
    let total = 0;
    return levels.map((level) => {
      total += Number(level.q);
      return { ...level, total };
    });
  }

  function ladderRows(side, levels, max) {
    return levels.map((level) => {
      const row = document.createElement("div");
      row.className = "row";
      if (state.changed.has(`${side}:${level.key}`)) row.classList.add("changed");
      row.dataset.price = level.key;
      row.dataset.quantity = canon(level.q);
      const fill = document.createElement("i");
      fill.className = "fill";
      fill.style.width = `${max ? (100 * level.total) / max : 0}%`;
      row.append(fill, span(price(level.key)), span(size(level.q)), span(num(level.total, config.quantityDecimals)));
      return row;
    });
  }

  function span(text) {
    const el = document.createElement("span");
    el.textContent = text;
    return el;
  }

  function renderLadder() {
    const bids = withTotals(sortedLevels("bids", LADDER_LEVELS));
    const asks = withTotals(sortedLevels("asks", LADDER_LEVELS));
    const max = Math.max(bids.at(-1)?.total || 0, asks.at(-1)?.total || 0);
    document.getElementById("asks").replaceChildren(...ladderRows("asks", asks, max).reverse());
    document.getElementById("bids").replaceChildren(...ladderRows("bids", bids, max));
    const spread = document.getElementById("spread");
    const last = state.trades[0]?.price ?? state.ticker?.last_price;
    const lastEl = document.createElement("strong");
    lastEl.textContent = last ? price(last) : "–";
    const gap = bids.length && asks.length ? asks[0].p - bids[0].p : null;
    spread.replaceChildren(lastEl, gap === null ? "no spread" : `spread ${num(gap, config.priceDecimals)}`);
    document.getElementById("book-sequence").textContent = state.sequence === null ? "" : `seq ${state.sequence}`;
  }

  function renderTape() {
    const rows = state.trades.map((t) => {
      const row = document.createElement("li");
      row.className = `row ${t.side === "BUY" ? "buy" : "sell"}${t.fresh ? " new" : ""}`;
      row.dataset.tradeId = t.id;
      row.dataset.price = canon(t.price);
      row.dataset.quantity = canon(t.quantity);
      const when = new Date(t.time);
      row.append(span(price(t.price)), span(size(t.quantity)), span(when.toLocaleTimeString([], { hour12: false })));
      t.fresh = false;
      return row;
    });
    document.getElementById("trades").replaceChildren(...rows);
  }

  function renderTicker() {
    const t = state.ticker;
    if (!t) return;
    const field = (name) => document.querySelector(`#ticker [data-field="${name}"]`);
    field("last_price").textContent = t.last_price ? price(t.last_price) : "–";
    const change = field("change");
    change.textContent = t.change === null ? "–" : `${price(t.change)} (${t.change_percent}%)`;
    change.className = t.change === null ? "" : Number(t.change) >= 0 ? "up" : "down";
    field("high").textContent = t.high ? price(t.high) : "–";
    field("low").textContent = t.low ? price(t.low) : "–";
    field("volume").textContent = size(t.volume);
    field("trade_count").textContent = String(t.trade_count);
  }

  const colors = () => {
    const css = getComputedStyle(document.documentElement);
    const v = (name) => css.getPropertyValue(name).trim();
    return { bid: v("--bid"), ask: v("--ask"), bidBg: v("--bid-bg"), askBg: v("--ask-bg"), muted: v("--muted"), line: v("--line") };
  };

  /** A canvas sized to its box in device pixels, and its context in CSS pixels. */
  function surface(id) {
    const canvas = document.getElementById(id);
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth;
    const height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px ui-monospace, monospace";
    return { ctx, width, height };
  }

  function drawDepth() {
    const { ctx, width, height } = surface("depth");
    const c = colors();
    const bids = withTotals(sortedLevels("bids", DEPTH_LEVELS));
    const asks = withTotals(sortedLevels("asks", DEPTH_LEVELS));
    if (!bids.length && !asks.length) {
      ctx.fillStyle = c.muted;
      ctx.fillText("empty book", 8, height / 2);
      return;
    }
    const prices = [...bids, ...asks].map((l) => l.p);
    let lo = Math.min(...prices);
    let hi = Math.max(...prices);
    if (bids.length && asks.length) {
      // Centre the mid price: both sides get the same width of price.
      const mid = (bids[0].p + asks[0].p) / 2;
      const half = Math.max(mid - lo, hi - mid);
      lo = mid - half;
      hi = mid + half;
    }
    if (hi === lo) {
      lo -= 1;
      hi += 1;
    }
    const pad = (hi - lo) * 0.04; // so the outermost steps are seen
    lo -= pad;
    hi += pad;
    const top = Math.max(bids.at(-1)?.total || 0, asks.at(-1)?.total || 0);
    const plotH = height - 18;
    const x = (p) => ((p - lo) / (hi - lo)) * width;
    const y = (total) => plotH - (total / top) * (plotH - 10);

    const side = (levels, line, fill, edge) => {
      if (!levels.length) return;
      ctx.beginPath();
      ctx.moveTo(x(levels[0].p), plotH);
      let total = 0;
      for (const level of levels) {
        ctx.lineTo(x(level.p), y(total));
        total = level.total;
        ctx.lineTo(x(level.p), y(total));
      }
      ctx.lineTo(edge, y(total));
      ctx.lineTo(edge, plotH);
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
      ctx.strokeStyle = line;
      ctx.stroke();
    };
    side(bids, c.bid, c.bidBg, 0);
    side(asks, c.ask, c.askBg, width);

    ctx.fillStyle = c.muted;
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    ctx.fillText(num(lo, config.priceDecimals), 2, height);
    ctx.textAlign = "center";
    ctx.fillText(num((lo + hi) / 2, config.priceDecimals), width / 2, height);
    ctx.textAlign = "right";
    ctx.fillText(num(hi, config.priceDecimals), width - 2, height);
    ctx.textBaseline = "top";
    ctx.fillText(`${num(top, config.quantityDecimals)} ${config.base}`, width - 2, 0);
    ctx.textAlign = "left";
  }

  function drawCandles() {
    const { ctx, width, height } = surface("candles");
    const c = colors();
    const axis = 70;
    const plotW = width - axis;
    const slot = 10;
    const shown = [...state.candles.entries()]
      .sort((a, b) => a[0] - b[0])
      .slice(-Math.max(1, Math.floor(plotW / slot)))
      .map(([at, candle]) => ({
        at,
        o: Number(candle.open),
        h: Number(candle.high),
        l: Number(candle.low),
        c: Number(candle.close),
        v: Number(candle.volume),
      }));
    if (!shown.length) {
      ctx.fillStyle = c.muted;
      ctx.fillText(`no trades in ${state.interval} candles yet`, 8, height / 2);
      return;
    }
    let lo = Math.min(...shown.map((k) => k.l));
    let hi = Math.max(...shown.map((k) => k.h));
    if (hi === lo) {
      lo -= lo * 0.001 || 1;
      hi += hi * 0.001 || 1;
    }
    const priceH = height * 0.75 - 16;
    const volTop = height * 0.78;
    const volH = height - 16 - volTop;
    const maxVol = Math.max(...shown.map((k) => k.v)) || 1;
    const y = (p) => 6 + ((hi - p) / (hi - lo)) * (priceH - 6);

    ctx.strokeStyle = c.line;
    ctx.fillStyle = c.muted;
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    for (let i = 0; i <= 4; i += 1) {
      const p = lo + ((hi - lo) * i) / 4;
      ctx.beginPath();
      ctx.moveTo(0, Math.round(y(p)) + 0.5);
      ctx.lineTo(plotW, Math.round(y(p)) + 0.5);
      ctx.stroke();
      ctx.fillText(num(p, config.priceDecimals), plotW + 6, y(p));
    }

    const start = plotW - shown.length * slot;
    shown.forEach((k, i) => {
      const mid = start + i * slot + slot / 2;
      const color = k.c >= k.o ? c.bid : c.ask;
      ctx.strokeStyle = color;
      ctx.fillStyle = color;
      ctx.beginPath();
      ctx.moveTo(Math.round(mid) + 0.5, y(k.h));
      ctx.lineTo(Math.round(mid) + 0.5, y(k.l));
      ctx.stroke();
      const top = y(Math.max(k.o, k.c));
      ctx.fillRect(mid - slot / 2 + 1, top, slot - 2, Math.max(1, y(Math.min(k.o, k.c)) - top));
      ctx.globalAlpha = 0.35;
      const vh = (k.v / maxVol) * volH;
      ctx.fillRect(mid - slot / 2 + 1, volTop + volH - vh, slot - 2, vh);
      ctx.globalAlpha = 1;
    });

    ctx.fillStyle = c.muted;
    ctx.textBaseline = "bottom";
    ctx.textAlign = "center";
    const daily = state.interval === "1d";
    const label = (at) => {
      const d = new Date(at);
      return daily ? d.toISOString().slice(5, 10) : d.toTimeString().slice(0, 5);
    };
    const every = Math.max(1, Math.ceil(70 / slot));
    for (let i = shown.length - 1; i >= 0; i -= every) {
      ctx.fillText(label(shown[i].at), start + i * slot + slot / 2, height);
    }
    ctx.textAlign = "left";
  }

  // --- controls -------------------------------------------------------------------------

  document.getElementById("market-picker").addEventListener("change", (event) => {
    const option = event.target.selectedOptions[0];
    if (option) location.href = option.dataset.url;
  });
  for (const button of document.querySelectorAll("#intervals button")) {
    button.addEventListener("click", () => chooseInterval(button.dataset.interval));
  }
  window.addEventListener("resize", schedule);

  schedule();
  connect();
})();
