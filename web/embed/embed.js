/*
 * mcustt embeddable live captions (contract §7-§8). Plain ES2020, no dependencies.
 *
 *   <iframe src="https://HOST/embed/SESSION_ID#t=EMBED_TOKEN"
 *           style="width:100%;height:320px;border:0"></iframe>
 *
 * The embed token rides in the URL #fragment, so it is never part of the page request
 * (nor of server logs or Referer headers). It is sent as "Authorization: Bearer" to
 * GET /api/sessions/:id, and as ?t= on the SSE feed (EventSource cannot set headers).
 *
 * Options (query string of the iframe src, all optional):
 *   theme=dark|light|auto  colour scheme (default dark; auto follows the viewer's OS)
 *   fontSize=N             caption text size in px, clamped to 12..64 (default 24)
 *   lines=N                final lines kept on screen / in scroll-back, 1..1000
 *                          (default 100); older lines are dropped from the page
 *   title=0                hide the header (brand, logo, session title, live status)
 *   interim=0              show finals only, no "being written" line
 *   logo=0                 do not show the tenant's logo
 *
 * Flow: read #t= -> GET /api/sessions/:id (tells expired / invalid token, unknown
 * session, network trouble apart, with a human message for each) -> EventSource on
 * /api/sessions/:id/stream?t=TOKEN&lastEventId=N. Events: ready, transcript,
 * language, speaker, session-end, error. Interims (isFinal=false) replace one "being
 * written" line per speaker (keyed by speaker id, "" for a session's single mixed
 * producer: two people talking at once are two live lines); finals are inserted in seq
 * order once each (duplicates by seq are ignored). A correction (a final with
 * revised=true) replaces the text of the line with its seq in place; it never adds a line.
 * The browser reconnects by itself (sending Last-Event-ID); when it gives up, or the
 * server drops us (error event, fatal), the page re-checks the session and opens a
 * new EventSource with &lastEventId=<last final seq> so nothing is lost or repeated.
 *
 * Speakers (participant tracks): a line with `speaker: {id, name}` starts with the name,
 * in a colour chosen by a stable hash of the id from a palette that meets WCAG AA on
 * both themes (embed.css, .spk-0 ... .spk-7). A `speaker` event renames that speaker's
 * lines already shown. Lines without a speaker look as they always did.
 */
"use strict";

(() => {
  const DEFAULTS = { fontSize: 24, lines: 100 };
  const THEMES = {
    // Backgrounds the accent is checked against (keep in sync with embed.css).
    dark: { bg: "#0f1115", panel: "#1a1d24", accent: "#7cc4ff" },
    light: { bg: "#ffffff", panel: "#f3f5f8", accent: "#0a58a8" },
  };
  const AA_TEXT = 4.5;
  const SPEAKER_COLOURS = 8; // .spk-0 ... .spk-7 in embed.css
  const RETRY_MIN_MS = 2000;
  const RETRY_MAX_MS = 30000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    root: document.documentElement,
    app: $("app"),
    bar: $("bar"),
    logo: $("logo"),
    brand: $("brand"),
    title: $("title"),
    langBadge: $("lang-badge"),
    stateText: $("state-text"),
    scroller: $("scroller"),
    placeholder: $("placeholder"),
    finals: $("finals"),
    interim: $("interim"),
    jump: $("jump"),
    notice: $("notice"),
    noticeTitle: $("notice-title"),
    noticeText: $("notice-text"),
  };

  // -- options ----------------------------------------------------------------------

  const query = new URLSearchParams(location.search);
  const fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
  const token = (fragment.get("t") || fragment.get("token") || "").trim();
  const sessionId = decodeURIComponent(
    (location.pathname.match(/\/embed\/([^/]+)\/?$/) || [])[1] || ""
  );

  function intOption(name, lo, hi, fallback) {
    const raw = query.get(name);
    if (raw === null || raw.trim() === "") return fallback;
    const n = Number.parseInt(raw, 10);
    return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : fallback;
  }

  const flagOff = (name) => ["0", "false", "no", "off"].includes((query.get(name) || "").toLowerCase());

  const opts = {
    theme: resolveTheme(query.get("theme")),
    fontSize: intOption("fontSize", 12, 64, DEFAULTS.fontSize),
    lines: intOption("lines", 1, 1000, DEFAULTS.lines),
    header: !flagOff("title"),
    interim: !flagOff("interim"),
    logo: !flagOff("logo"),
  };

  function resolveTheme(raw) {
    const t = (raw || "").toLowerCase();
    if (t === "light" || t === "dark") return t;
    if (t === "auto" && window.matchMedia) {
      return window.matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark";
    }
    return "dark";
  }

  // -- colour: WCAG contrast --------------------------------------------------------

  function parseHex(value) {
    const m = /^#([0-9a-f]{3,4}|[0-9a-f]{6}|[0-9a-f]{8})$/i.exec((value || "").trim());
    if (!m) return null;
    let h = m[1];
    if (h.length <= 4) h = [...h].map((c) => c + c).join("");
    return [0, 2, 4].map((i) => Number.parseInt(h.slice(i, i + 2), 16)); // alpha ignored
  }

  const toHex = (rgb) => "#" + rgb.map((c) => Math.round(c).toString(16).padStart(2, "0")).join("");

  function luminance(rgb) {
    const [r, g, b] = rgb.map((c) => {
      const s = c / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  }

  function contrast(a, b) {
    const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
    return (hi + 0.05) / (lo + 0.05);
  }

  /**
   * The tenant accent if it reads as text (AA, 4.5:1) on both surfaces it is used on;
   * otherwise the same hue moved towards white (dark theme) or black (light theme)
   * until it does; the theme's own accent if the value is unusable.
   */
  function legibleAccent(accent, theme) {
    const t = THEMES[theme];
    const surfaces = [parseHex(t.bg), parseHex(t.panel)];
    const ok = (rgb) => surfaces.every((s) => contrast(rgb, s) >= AA_TEXT);
    const rgb = parseHex(accent);
    if (!rgb) return { color: t.accent, source: "default" };
    if (ok(rgb)) return { color: toHex(rgb), source: "tenant" };
    const target = theme === "dark" ? [255, 255, 255] : [0, 0, 0];
    for (let step = 1; step <= 20; step += 1) {
      const k = step / 20;
      const mixed = rgb.map((c, i) => c + (target[i] - c) * k);
      if (ok(mixed)) return { color: toHex(mixed), source: "adjusted" };
    }
    return { color: t.accent, source: "default" };
  }

  function applyAccent(accent) {
    const { color, source } = legibleAccent(accent, opts.theme);
    const rgb = parseHex(color);
    ui.root.style.setProperty("--accent", color);
    ui.root.style.setProperty(
      "--on-accent",
      contrast(rgb, [0, 0, 0]) >= contrast(rgb, [255, 255, 255]) ? "#000" : "#fff"
    );
    ui.root.dataset.accent = color;
    ui.root.dataset.accentSource = source;
  }

  // -- layout -----------------------------------------------------------------------

  ui.root.dataset.theme = opts.theme;
  ui.root.style.setProperty("--font", opts.fontSize + "px");
  ui.bar.hidden = !opts.header;
  applyAccent(null);

  function setConn(state, text) {
    ui.app.dataset.conn = state;
    ui.stateText.textContent = text;
  }

  function showNotice(title, text, { kind = "error", full = false } = {}) {
    ui.noticeTitle.textContent = title;
    ui.noticeText.textContent = text || "";
    ui.notice.dataset.kind = kind;
    ui.notice.setAttribute("role", kind === "error" ? "alert" : "status");
    ui.notice.classList.toggle("full", full);
    ui.scroller.hidden = full;
    ui.notice.hidden = false;
  }

  function hideNotice() {
    ui.notice.hidden = true;
    ui.scroller.hidden = false;
  }

  function setLanguage(code, name) {
    if (!code) return;
    // The page chrome stays English; the captions are in the spoken language.
    ui.scroller.lang = code;
    ui.interim.lang = code;
    ui.langBadge.textContent = code.toUpperCase();
    ui.langBadge.title = name || code;
    ui.langBadge.hidden = false;
  }

  function applyState(doc) {
    const brand = doc.brand || {};
    const brandName = (brand.brandName || "").trim();
    ui.brand.textContent = brandName;
    ui.title.textContent = (doc.title || "").trim();
    document.title = [brandName, doc.title, "Live captions"].filter(Boolean).join(" · ");
    applyAccent(brand.accentColor);
    const logo = (brand.logoUrl || "").trim();
    if (opts.logo && /^https?:\/\//i.test(logo)) {
      ui.logo.alt = brandName ? brandName + " logo" : "Logo";
      if (ui.logo.getAttribute("src") !== logo) {
        // Shown once it loads: a logo that fails (or is blocked) leaves no broken icon.
        ui.logo.hidden = true;
        ui.logo.onload = () => { ui.logo.hidden = false; };
        ui.logo.onerror = () => { ui.logo.hidden = true; };
        ui.logo.src = logo;
      }
    } else {
      ui.logo.hidden = true;
    }
    setLanguage(doc.detectedLang || doc.sourceLang, doc.detectedLangName);
    if (typeof doc.lastSeq === "number") knownLastSeq = Math.max(knownLastSeq, doc.lastSeq);
  }

  // -- captions ---------------------------------------------------------------------

  const finals = new Map(); // seq -> <p>
  let lastFinalSeq = null; // highest final seq shown (or skipped as empty)
  let floorSeq = 0; // finals at or below this were dropped from the page
  // Live lines by speaker id ("": the mixed producer, shown in #interim as always).
  const interimSeqs = new Map(); // key -> seq of the line shown
  const lastFinalOf = new Map(); // key -> highest final seq of that speaker
  const speakerInterims = new Map(); // speaker id -> its <p> live line
  let knownLastSeq = 0; // the session's last seq per the state document
  let stick = true; // follow the newest line unless the viewer scrolled up

  function nearBottom() {
    const s = ui.scroller;
    return s.scrollHeight - s.scrollTop - s.clientHeight < 24;
  }

  ui.scroller.addEventListener("scroll", () => {
    stick = nearBottom();
    if (stick) ui.jump.hidden = true;
  }, { passive: true });

  ui.jump.addEventListener("click", () => {
    stick = true;
    ui.jump.hidden = true;
    scrollToEnd();
  });

  function scrollToEnd() {
    ui.scroller.scrollTop = ui.scroller.scrollHeight;
  }

  function anyInterim() {
    if (!ui.interim.hidden) return true;
    for (const el of speakerInterims.values()) if (!el.hidden) return true;
    return false;
  }

  function contentChanged() {
    ui.placeholder.hidden = finals.size > 0 || anyInterim();
    if (stick) scrollToEnd();
    else ui.jump.hidden = false;
  }

  // -- speakers --------------------------------------------------------------------

  const speakerNames = new Map(); // id -> name shown
  const speakerColours = new Map(); // id -> palette index

  /** The speaker of an event ({id, name}), or null for the mixed producer. */
  function speakerOf(m) {
    const s = m && m.speaker;
    if (!s || typeof s !== "object" || typeof s.id !== "string" || !s.id) return null;
    const name = typeof s.name === "string" && s.name.trim() ? s.name.trim() : s.id;
    return { id: s.id, name };
  }

  /** FNV-1a over the id: a speaker gets the same colour on every viewer (unless two
   * ids hash alike, see colourOf). */
  function hashIndex(id) {
    let h = 0x811c9dc5;
    for (let i = 0; i < id.length; i += 1) {
      h ^= id.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    return h % SPEAKER_COLOURS;
  }

  function colourOf(id) {
    let index = speakerColours.get(id);
    if (index !== undefined) return index;
    // Two speakers whose ids hash alike would look like one: the next free colour
    // (while there are free ones).
    index = hashIndex(id);
    const taken = new Set(speakerColours.values());
    for (let i = 0; i < SPEAKER_COLOURS && taken.has(index); i += 1) {
      index = (index + 1) % SPEAKER_COLOURS;
    }
    speakerColours.set(id, index);
    return index;
  }

  /** The name to show for a speaker: a transcript event names an unknown speaker; a
   * `speaker` event (authoritative: a rename) renames one already shown. */
  function learnSpeaker(sp, { rename = false } = {}) {
    const known = speakerNames.get(sp.id);
    if (known === undefined || (rename && known !== sp.name)) {
      speakerNames.set(sp.id, sp.name);
      if (known !== undefined) {
        for (const label of ui.scroller.querySelectorAll(".speaker")) {
          if (label.dataset.speaker === sp.id) label.textContent = sp.name;
        }
      }
    }
    return speakerNames.get(sp.id);
  }

  /** Put a line's text (and its speaker's name, if any) into <p>. */
  function fillLine(p, text, sp) {
    if (!sp) {
      p.textContent = text;
      return;
    }
    const label = document.createElement("span");
    label.className = "speaker spk-" + colourOf(sp.id);
    label.dataset.speaker = sp.id;
    label.textContent = learnSpeaker(sp);
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    p.dataset.speaker = sp.id;
    p.replaceChildren(label, " ", body);
  }

  function addFinal(m) {
    const seq = m.seq;
    if (finals.has(seq) || seq <= floorSeq) return; // duplicate (replay / reconnect)
    const sp = speakerOf(m);
    const key = sp ? sp.id : "";
    lastFinalSeq = lastFinalSeq === null ? seq : Math.max(lastFinalSeq, seq);
    lastFinalOf.set(key, Math.max(lastFinalOf.get(key) ?? seq, seq));
    const live = interimSeqs.get(key);
    if (live !== undefined && live <= seq) clearInterim(key);
    const text = (m.text || "").trim();
    if (!text) return;
    const p = document.createElement("p");
    p.className = "line final";
    p.dataset.seq = String(seq);
    if (m.lang) p.lang = m.lang;
    fillLine(p, text, sp);
    // In seq order: normally the end; a late replayed line goes before larger seqs.
    let before = null;
    for (const [s, el] of finals) {
      if (s > seq && (before === null || s < Number(before.dataset.seq))) before = el;
    }
    ui.finals.insertBefore(p, before);
    finals.set(seq, p);
    while (finals.size > opts.lines) {
      const oldest = Math.min(...finals.keys());
      finals.get(oldest).remove();
      finals.delete(oldest);
      floorSeq = Math.max(floorSeq, oldest);
    }
    contentChanged();
  }

  function interimLine(key) {
    if (key === "") return ui.interim;
    let el = speakerInterims.get(key);
    if (!el) {
      el = document.createElement("p");
      el.className = "line interim";
      el.setAttribute("aria-hidden", "true"); // like #interim: finals are what AT reads
      el.hidden = true;
      speakerInterims.set(key, el);
    }
    return el;
  }

  function reviseFinal(m) {
    // A correction of a line already shown. One that is not on the page was dropped as
    // old (or was never shown, being empty): nothing to replace, and no line to add.
    const p = finals.get(m.seq);
    const text = (m.text || "").trim();
    if (!p || !text) return;
    // The speaker label stays: only the words are corrected.
    const body = p.querySelector(".text");
    if (body) body.textContent = text;
    else p.textContent = text;
    p.dataset.revised = "true";
  }

  function showInterim(m) {
    if (!opts.interim) return;
    const seq = m.seq;
    const sp = speakerOf(m);
    const key = sp ? sp.id : "";
    // Another speaker's final may take the seq this interim carries: only this
    // speaker's own finals and live line tell whether it is old.
    const done = lastFinalOf.get(key);
    if (done !== undefined && seq <= done) return; // already final
    const shown = interimSeqs.get(key);
    if (shown !== undefined && seq < shown) return; // stale
    const text = (m.text || "").trim();
    interimSeqs.set(key, seq);
    const el = interimLine(key);
    if (sp && el.hidden && text) {
      // A speaker who starts talking goes below the lines already being written.
      ui.interim.parentNode.appendChild(el);
    }
    fillLine(el, text, sp);
    el.hidden = !text;
    if (m.lang) el.lang = m.lang;
    contentChanged();
  }

  function clearInterim(key) {
    const keys = key === undefined ? ["", ...speakerInterims.keys()] : [key];
    for (const k of keys) {
      interimSeqs.delete(k);
      const el = interimLine(k);
      el.textContent = "";
      el.hidden = true;
    }
  }

  // -- session state (REST) ---------------------------------------------------------

  const MESSAGES = {
    TOKEN_EXPIRED: ["This caption link has expired", "Ask the organiser for a fresh embed link."],
    INVALID_TOKEN: [
      "This caption link is not valid",
      "Its access token was not accepted for this session. Check that the embed code was copied in full.",
    ],
    WRONG_TOKEN_SCOPE: [
      "This caption link is not valid",
      "It carries a token that cannot be used to view captions.",
    ],
    UNAUTHORIZED: [
      "This caption link is not valid",
      "Its access token was not accepted. Check that the embed code was copied in full.",
    ],
    SESSION_NOT_FOUND: [
      "Caption session not found",
      "There is no live caption session with this ID. It may have been removed.",
    ],
    ORIGIN_FORBIDDEN: [
      "Captions are not available on this site",
      "The caption provider does not allow this page to show these captions.",
    ],
    TENANT_DISABLED: ["Captions are unavailable", "This caption service account is disabled."],
  };

  class Problem extends Error {
    constructor(kind, code, message) {
      super(message || code);
      this.kind = kind; // "fatal" (show and stop) | "retry" (show and try again)
      this.code = code;
    }
  }

  async function fetchState() {
    let res;
    try {
      res = await fetch("/api/sessions/" + encodeURIComponent(sessionId), {
        headers: { Authorization: "Bearer " + token, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (err) {
      throw new Problem("retry", "NETWORK", String(err && err.message ? err.message : err));
    }
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (res.ok && body && typeof body === "object") return body;
    const code = (body && body.error && body.error.code) || "HTTP_" + res.status;
    const message = body && body.error && body.error.message;
    if (res.status === 404) throw new Problem("fatal", "SESSION_NOT_FOUND", message);
    if (res.status === 401 || res.status === 403) throw new Problem("fatal", code, message);
    throw new Problem("retry", code, message); // 429, 5xx, proxies: try again later
  }

  function showProblem(p) {
    const haveCaptions = finals.size > 0;
    if (p.kind === "fatal") {
      const [title, text] = MESSAGES[p.code] || (
        p.code.startsWith("HTTP_4") || p.code === "UNAUTHORIZED"
          ? MESSAGES.UNAUTHORIZED
          : ["Captions are unavailable", p.message || ""]
      );
      setConn("error", "Offline");
      showNotice(title, text, { full: !haveCaptions });
      ui.root.dataset.problem = p.code;
      return;
    }
    const secs = Math.round(retryDelay() / 1000);
    const network = p.code === "NETWORK";
    setConn("reconnecting", "Reconnecting…");
    showNotice(
      network ? "Can't reach the caption server" : "Captions are temporarily unavailable",
      (network ? "Check your connection. " : "") + `Retrying in ${secs} s…`,
      { full: !haveCaptions }
    );
    ui.root.dataset.problem = p.code;
  }

  // -- the SSE feed -------------------------------------------------------------------

  let es = null;
  let ended = false;
  let attempts = 0;
  let retryTimer = null;

  const retryDelay = () => Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** Math.max(0, attempts - 1));

  function streamUrl() {
    // Resume after the last final we hold; on the first connect, back-fill the last
    // `lines` finals of a session already under way (and close the race between the
    // state request and the stream). The browser's own reconnects send Last-Event-ID,
    // which the server prefers over this query parameter.
    const after = lastFinalSeq !== null
      ? lastFinalSeq
      : Math.max(0, knownLastSeq - opts.lines);
    return "/api/sessions/" + encodeURIComponent(sessionId) + "/stream?t="
      + encodeURIComponent(token) + "&lastEventId=" + after;
  }

  function closeStream() {
    if (es) {
      es.close();
      es = null;
    }
  }

  function parse(e) {
    try {
      return JSON.parse(e.data);
    } catch {
      return null;
    }
  }

  function openStream() {
    closeStream();
    const source = new EventSource(streamUrl());
    es = source;
    const live = (fn) => (e) => { if (es === source) fn(e); };

    source.addEventListener("ready", live((e) => {
      const doc = parse(e);
      if (doc) applyState(doc);
      attempts = 0;
      hideNotice();
      delete ui.root.dataset.problem;
      if (doc && doc.status === "ended") setConn("ended", "Ended");
      else setConn("live", "Live");
    }));

    source.addEventListener("transcript", live((e) => {
      const m = parse(e);
      if (!m || typeof m.seq !== "number") return;
      if (m.revised === true) reviseFinal(m);
      else if (m.isFinal) addFinal(m);
      else showInterim(m);
    }));

    source.addEventListener("language", live((e) => {
      const m = parse(e);
      if (m && m.code) setLanguage(m.code);
    }));

    source.addEventListener("speaker", live((e) => {
      const sp = speakerOf(parse(e));
      if (sp) learnSpeaker(sp, { rename: true });
    }));

    source.addEventListener("session-end", live(() => {
      sessionEnded();
    }));

    // One listener gets both the server's "error" events (MessageEvent with data) and
    // the EventSource's own connection errors (plain Event).
    source.addEventListener("error", live((e) => {
      if (typeof e.data === "string" && e.data) {
        const m = parse(e) || {};
        if (m.fatal) {
          // e.g. SLOW_CONSUMER: the server drops this stream; resume from our last final.
          closeStream();
          attempts += 1;
          setConn("reconnecting", "Catching up…");
          scheduleReconnect(1000);
        }
        return;
      }
      if (ended) return;
      if (source.readyState === EventSource.CONNECTING) {
        setConn("reconnecting", "Reconnecting…"); // the browser retries by itself
        return;
      }
      // CLOSED: the browser gave up (an HTTP error such as 401 or 404). Ask the REST
      // endpoint why, then show it or come back later.
      closeStream();
      attempts += 1;
      setConn("reconnecting", "Reconnecting…");
      recheck(retryDelay());
    }));
  }

  function scheduleReconnect(ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(() => { if (!ended) recheck(); }, ms);
  }

  /** Ask the REST endpoint how the session is; reopen the stream after openDelayMs. */
  async function recheck(openDelayMs = 0) {
    try {
      const doc = await fetchState();
      applyState(doc);
      if (ended) return;
      clearTimeout(retryTimer);
      // Also right for an ended session: the stream replays, then sends session-end.
      if (openDelayMs > 0) retryTimer = setTimeout(() => { if (!ended) openStream(); }, openDelayMs);
      else openStream();
    } catch (p) {
      if (!(p instanceof Problem)) throw p;
      attempts += 1;
      showProblem(p);
      if (p.kind === "retry") scheduleReconnect(retryDelay());
    }
  }

  function sessionEnded() {
    ended = true;
    closeStream();
    clearTimeout(retryTimer);
    clearInterim();
    setConn("ended", "Ended");
    showNotice("The session has ended", finals.size ? "" : "No captions were received.", {
      kind: "info",
    });
    ui.placeholder.hidden = true;
    if (stick) scrollToEnd();
  }

  // -- start ----------------------------------------------------------------------------

  async function start() {
    if (!sessionId) {
      setConn("error", "Offline");
      showNotice("This caption link is incomplete", "It does not name a caption session.", {
        full: true,
      });
      ui.root.dataset.problem = "NO_SESSION";
      return;
    }
    if (!token) {
      setConn("error", "Offline");
      showNotice(
        "This caption link is incomplete",
        "It is missing its access token (the #t=… part). Ask the organiser for the full embed code.",
        { full: true }
      );
      ui.root.dataset.problem = "NO_TOKEN";
      return;
    }
    attempts = 1;
    try {
      const doc = await fetchState();
      applyState(doc);
      attempts = 0;
      openStream();
    } catch (p) {
      if (!(p instanceof Problem)) throw p;
      showProblem(p);
      if (p.kind === "retry") scheduleReconnect(retryDelay());
    }
  }

  window.addEventListener("pagehide", closeStream);
  // A host that swaps the token by changing only the #fragment does not reload the
  // frame by itself: start over with the new token.
  window.addEventListener("hashchange", () => location.reload());
  start();
})();
