/*
 * mcustt try-it page (GET /try). Plain ES2020, no dependencies, no build step; served
 * under a CSP that allows only this file to run (no inline script, no other origin).
 *
 * The tenant key is held in one variable of this closure: never written to
 * localStorage, sessionStorage, a cookie or the URL. It is sent as the x-tenant-key
 * header to this page's own origin only. Reloading the page forgets it.
 *
 * Flow (all public API, contract §5-§11):
 *   key    -> GET /api/sessions (checks it; lists the tenant's sessions)
 *   create -> POST /api/sessions (ids, tokens, owner secret: kept in memory too)
 *   open   -> POST /api/sessions/:id/embed-token (fresh read tokens for an old session)
 *   mic    -> getUserMedia -> RTCPeerConnection -> POST /api/webrtc (WHIP, the ingest
 *             token as a Bearer header) -> DELETE Location to hang up (ends the session)
 *   file   -> decodeAudioData + OfflineAudioContext (16 kHz mono) -> PCM16 frames of
 *             100 ms over /ws/stt?token=INGEST (paced at 1x or 4x) -> {"type":"stop"}
 *   feed   -> /ws/subscribe?token=SUBSCRIBE&lastSeq=N: interims replace one line,
 *             finals are kept once per seq, a final with revised:true replaces its line
 *   after  -> transcript (json/srt/vtt/txt) as blob downloads, summary (202: poll),
 *             POST …/ask, PATCH …/lines/:seq
 * Every API error is shown with the envelope's message ({"error":{"code","message"}}).
 */
"use strict";

(() => {
  const RATE = 16000; // Hz: the ingest contract (§4)
  const FRAME_SAMPLES = 1600; // 100 ms per binary message, the contract's largest frame
  const MIN_FRAME_SAMPLES = 320; // 20 ms: a shorter last frame is padded with silence
  const MAX_BUFFERED = 256 * 1024; // bytes queued in the socket before sending waits
  const MAX_FILE_BYTES = 500 * 1024 * 1024;
  const MAX_FILE_SECONDS = 4 * 3600;
  const MAX_LINES = 5000; // finals kept on the page
  const FEED_RETRY_MIN_MS = 1000;
  const FEED_RETRY_MAX_MS = 30000;
  const SUMMARY_WAIT_MS = 10 * 60 * 1000;

  const $ = (id) => document.getElementById(id);
  const ui = {
    alert: $("alert"),
    alertText: $("alert-text"),
    alertClose: $("alert-close"),
    keyEntry: $("key-entry"),
    key: $("key"),
    keyUse: $("key-use"),
    keyHeld: $("key-held"),
    keyMasked: $("key-masked"),
    keyForget: $("key-forget"),
    title: $("title"),
    lang: $("lang"),
    create: $("create"),
    existing: $("existing"),
    open: $("open"),
    refresh: $("refresh"),
    info: $("session-info"),
    sid: $("sid"),
    sstatus: $("sstatus"),
    embedLink: $("embed-link"),
    copyEmbed: $("copy-embed"),
    ingestNote: $("ingest-note"),
    end: $("end"),
    micStart: $("mic-start"),
    micStop: $("mic-stop"),
    file: $("file"),
    pace: $("pace"),
    fileSend: $("file-send"),
    fileStop: $("file-stop"),
    fileProgress: $("file-progress"),
    audioStatus: $("audio-status"),
    feedStatus: $("feed-status"),
    captions: $("captions"),
    placeholder: $("placeholder"),
    finals: $("finals"),
    interim: $("interim"),
    downloads: [...document.querySelectorAll("button.dl")],
    summaryGet: $("summary-get"),
    summaryStatus: $("summary-status"),
    summary: $("summary"),
    summaryTldr: $("summary-tldr"),
    question: $("question"),
    ask: $("ask"),
    answerBox: $("answer-box"),
    answer: $("answer"),
    answerKind: $("answer-kind"),
    citations: $("citations"),
  };

  // -- state (memory only) ------------------------------------------------------------

  let tenantKey = null; // the pasted key: this variable is its only home
  let session = null; // {sessionId, status, embedUrl, subscribeToken, ingestToken, ingestUsed, ownerSecret}
  let producer = null; // {kind: "mic"|"file", ...}
  let busy = false; // a create / open / end request is in flight

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const errText = (e) => String((e && e.message) || e);
  const wsUrl = (path) => (location.protocol === "https:" ? "wss://" : "ws://") + location.host + path;
  const sessionPath = (suffix = "") => "/api/sessions/" + encodeURIComponent(session.sessionId) + suffix;

  // -- errors -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  async function errorOf(res) {
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    const e = body && typeof body === "object" ? body.error : null;
    return new ApiError(
      res.status,
      (e && e.code) || "HTTP_" + res.status,
      (e && e.message) || res.statusText || "the request failed"
    );
  }

  function showError(context, err) {
    let text = context + ": " + errText(err);
    if (err instanceof ApiError && err.code) {
      text += " (" + err.code + (err.status ? ", HTTP " + err.status : "") + ")";
    }
    ui.alertText.textContent = text;
    ui.alert.hidden = false;
  }

  function clearError() {
    ui.alert.hidden = true;
    ui.alertText.textContent = "";
  }

  ui.alertClose.addEventListener("click", clearError);

  /** fetch() on this origin with the tenant key (unless withKey is false); throws
   * ApiError with the envelope's code and message on any non-2xx answer. */
  async function api(method, path, { body, accept = "application/json", withKey = true } = {}) {
    const headers = { Accept: accept };
    if (withKey) {
      if (!tenantKey) throw new ApiError(0, "NO_KEY", "paste your tenant key first");
      headers["x-tenant-key"] = tenantKey;
    }
    if (body !== undefined) headers["content-type"] = "application/json";
    let res;
    try {
      res = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (e) {
      throw new ApiError(0, "NETWORK", "cannot reach the server (" + errText(e) + ")");
    }
    if (!res.ok) throw await errorOf(res);
    return res;
  }

  // -- buttons follow the state ----------------------------------------------------------

  function render() {
    const haveKey = tenantKey !== null;
    const live = session !== null && session.status === "live";
    const canIngest = live && (session.ownerSecret || (session.ingestToken && !session.ingestUsed));
    ui.keyEntry.hidden = haveKey;
    ui.keyHeld.hidden = !haveKey;
    ui.create.disabled = !haveKey || busy || producer !== null;
    ui.existing.disabled = !haveKey || busy || producer !== null;
    ui.open.disabled = ui.existing.disabled || !ui.existing.value;
    ui.refresh.disabled = !haveKey || busy;
    ui.end.disabled = !haveKey || !live || busy;
    ui.micStart.disabled = !canIngest || producer !== null || busy;
    ui.micStop.disabled = !(producer && producer.kind === "mic") || producer.stopping;
    ui.fileSend.disabled = !canIngest || producer !== null || busy || !ui.file.files.length;
    ui.fileStop.disabled = !(producer && producer.kind === "file") || producer.stopping;
    for (const b of ui.downloads) b.disabled = !haveKey || session === null;
    ui.summaryGet.disabled = !haveKey || session === null;
    ui.ask.disabled = !haveKey || session === null;
    for (const b of ui.finals.querySelectorAll("button.fix")) b.disabled = !haveKey;
    ui.info.hidden = session === null;
    if (session) {
      ui.sstatus.textContent = session.status;
      ui.sstatus.dataset.status = session.status;
      ui.ingestNote.textContent = !live
        ? "The session has ended: no more audio."
        : canIngest
          ? "Ready: send the microphone or a file below."
          : producer
            ? "Audio is being sent."
            : "This page has no ingest credential for this session (only sessions created here can take audio).";
    }
  }

  ui.existing.addEventListener("change", render);
  ui.file.addEventListener("change", render);

  // -- 1. the key ---------------------------------------------------------------------

  async function useKey() {
    const given = ui.key.value.trim();
    if (!given) {
      showError("Tenant key", new Error("paste a key first"));
      return;
    }
    tenantKey = given;
    try {
      await loadSessions(); // checks it
    } catch (e) {
      tenantKey = null;
      showError("The key was not accepted", e);
      render();
      return;
    }
    ui.key.value = "";
    clearError();
    ui.keyMasked.textContent = given.length > 16 ? given.slice(0, 10) + "…" + given.slice(-4) : "…";
    render();
    ui.create.focus();
  }

  function forgetKey() {
    // Audio already flowing keeps flowing (its ingest token was spent on connecting);
    // everything that needs the key is disabled until one is pasted again.
    tenantKey = null;
    ui.existing.replaceChildren(new Option("—", ""));
    render();
    ui.key.focus();
  }

  ui.keyUse.addEventListener("click", useKey);
  ui.key.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      useKey();
    }
  });
  ui.keyForget.addEventListener("click", forgetKey);

  // -- 2. sessions --------------------------------------------------------------------

  async function loadSessions() {
    const res = await api("GET", "/api/sessions");
    const doc = await res.json();
    const keep = ui.existing.value;
    ui.existing.replaceChildren(new Option("—", ""));
    for (const s of doc.sessions || []) {
      const when = s.createdAt ? new Date(s.createdAt * 1000).toLocaleString() : ""; // unix s
      const label = [s.title || s.sessionId, s.status, when].filter(Boolean).join(" · ");
      ui.existing.append(new Option(label, s.sessionId));
    }
    ui.existing.value = keep;
  }

  ui.refresh.addEventListener("click", async () => {
    try {
      await loadSessions();
    } catch (e) {
      showError("Listing sessions", e);
    }
    render();
  });

  async function withBusy(fn) {
    busy = true;
    render();
    try {
      await fn();
    } finally {
      busy = false;
      render();
    }
  }

  ui.create.addEventListener("click", () =>
    withBusy(async () => {
      const body = {};
      const title = ui.title.value.trim();
      const lang = ui.lang.value.trim();
      if (title) body.title = title;
      if (lang) body.sourceLang = lang;
      try {
        const doc = await (await api("POST", "/api/sessions", { body })).json();
        clearError();
        setSession({
          sessionId: doc.sessionId,
          status: "live",
          embedUrl: doc.embedUrl,
          subscribeToken: doc.subscribeToken,
          ingestToken: doc.ingestToken,
          ingestUsed: false,
          ownerSecret: doc.ownerSecret,
        });
        loadSessions().catch(() => {});
      } catch (e) {
        showError("Creating the session", e);
      }
    })
  );

  ui.open.addEventListener("click", () =>
    withBusy(async () => {
      const id = ui.existing.value;
      if (!id) return;
      try {
        const path = "/api/sessions/" + encodeURIComponent(id);
        const doc = await (await api("GET", path)).json();
        const tokens = await (await api("POST", path + "/embed-token", { body: {} })).json();
        clearError();
        setSession({
          sessionId: id,
          status: doc.status,
          embedUrl: tokens.embedUrl,
          subscribeToken: tokens.subscribeToken,
          ingestToken: null,
          ingestUsed: true,
          ownerSecret: null,
        });
      } catch (e) {
        showError("Opening the session", e);
      }
    })
  );

  ui.end.addEventListener("click", () =>
    withBusy(async () => {
      try {
        // Hanging up / stop ends the session; otherwise (or still connecting) DELETE.
        const ended = producer ? await stopProducer(true) : false;
        if (!ended) await api("DELETE", sessionPath());
        markEnded();
      } catch (e) {
        showError("Ending the session", e);
      }
    })
  );

  ui.copyEmbed.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(ui.embedLink.href);
      ui.copyEmbed.textContent = "Copied";
    } catch (e) {
      showError("Copying the link", e);
    }
  });

  function setSession(s) {
    stopProducer(false);
    closeFeed();
    session = s;
    ui.sid.textContent = s.sessionId;
    ui.embedLink.href = s.embedUrl;
    ui.copyEmbed.textContent = "Copy";
    resetCaptions();
    resetAfter();
    render();
    openFeed();
    if (s.status !== "live") getSummary();
  }

  function markEnded() {
    if (!session || session.status === "ended") return;
    session.status = "ended";
    clearInterim();
    render();
    getSummary();
  }

  // -- 3a. the microphone over WHIP ----------------------------------------------------------

  /** A fresh single-use ingest token: the one from creation first, then minted with
   * the owner secret (a dropped producer reconnects so). */
  async function ingestToken() {
    if (session.ingestToken && !session.ingestUsed) {
      session.ingestUsed = true;
      return session.ingestToken;
    }
    if (!session.ownerSecret) throw new ApiError(0, "NO_OWNER_SECRET", "no ingest credential for this session");
    const doc = await (
      await api("POST", sessionPath("/ingest-token"), {
        body: { ownerSecret: session.ownerSecret },
        withKey: false, // this endpoint takes the owner secret only
      })
    ).json();
    return doc.ingestToken;
  }

  function setAudio(text) {
    ui.audioStatus.textContent = text;
  }

  function iceGathered(pc, timeoutMs) {
    // WHIP without trickle ICE: the offer carries every candidate.
    return new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      const timer = setTimeout(resolve, timeoutMs); // send what we have
      pc.addEventListener("icegatheringstatechange", () => {
        if (pc.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function startMic() {
    if (!session || producer) return;
    const mine = { kind: "mic", pc: null, stream: null, resource: null, stopping: false };
    producer = mine;
    render();
    setAudio("Asking for the microphone…");
    try {
      if (!navigator.mediaDevices || !window.RTCPeerConnection) {
        throw new Error("this browser cannot capture the microphone here (it needs https or localhost)");
      }
      mine.stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
      if (producer !== mine) throw new Error("cancelled");
      // No ICE server: nothing is fetched from another host. The server answers with
      // its own candidates and learns ours from the connectivity checks.
      const pc = new RTCPeerConnection({ iceServers: [] });
      mine.pc = pc;
      for (const t of mine.stream.getAudioTracks()) pc.addTrack(t, mine.stream);
      pc.addEventListener("connectionstatechange", () => {
        if (producer !== mine) return;
        const st = pc.connectionState;
        if (st === "connected") setAudio("Microphone live: speak, captions appear below.");
        else if (st === "failed") {
          setAudio("The WebRTC connection failed.");
          showError("Microphone", new Error("the WebRTC connection to the server failed"));
          stopProducer(false);
        } else if (st === "connecting") setAudio("Connecting the microphone…");
      });
      await pc.setLocalDescription(await pc.createOffer());
      await iceGathered(pc, 5000);
      const token = await ingestToken();
      setAudio("Connecting the microphone…");
      let res;
      try {
        res = await fetch("/api/webrtc", {
          method: "POST",
          headers: { "content-type": "application/sdp", Authorization: "Bearer " + token },
          body: pc.localDescription.sdp,
          cache: "no-store",
          credentials: "omit",
          referrerPolicy: "no-referrer",
        });
      } catch (e) {
        throw new ApiError(0, "NETWORK", "cannot reach the server (" + errText(e) + ")");
      }
      if (res.status !== 201) throw await errorOf(res);
      mine.resource = new URL(res.headers.get("location"), location.href).href;
      const answer = await res.text();
      if (producer !== mine) {
        // Stopped while the offer was answered: hang up what the server set up.
        releaseMic(mine);
        await fetch(mine.resource, { method: "DELETE", credentials: "omit" }).catch(() => {});
        return;
      }
      await pc.setRemoteDescription({ type: "answer", sdp: answer });
      render();
    } catch (e) {
      releaseMic(mine);
      if (producer === mine) {
        showError("Microphone", e);
        setAudio("No audio is being sent.");
        producer = null;
        render();
      }
    }
  }

  function releaseMic(p) {
    if (p.stream) for (const t of p.stream.getTracks()) t.stop();
    if (p.pc) p.pc.close();
  }

  /** Hang up; true if the server had the call (and so ends the session). */
  async function stopMic(p) {
    if (!p.resource) {
      releaseMic(p); // still negotiating: startMic() hangs up what the server set up
      return false;
    }
    setAudio("Hanging up…");
    // DELETE first: the server drains the last audio, persists the last final and ends
    // the session, then answers 204. Our side is closed afterwards.
    try {
      const res = await fetch(p.resource, { method: "DELETE", credentials: "omit", cache: "no-store" });
      if (!res.ok && res.status !== 404) throw await errorOf(res);
    } catch (e) {
      if (e instanceof ApiError) throw e;
      throw new ApiError(0, "NETWORK", "cannot reach the server (" + errText(e) + ")");
    } finally {
      releaseMic(p);
    }
    return true;
  }

  ui.micStart.addEventListener("click", startMic);
  ui.micStop.addEventListener("click", () => stopProducer(true).catch((e) => showError("Stopping", e)));

  // -- 3b. a file over /ws/stt ------------------------------------------------------------

  /** The file as PCM16 16 kHz mono: decoded by the browser, mixed down and resampled
   * by an OfflineAudioContext (no library, nothing uploaded but the samples). */
  async function decodeFile(file) {
    const Offline = window.OfflineAudioContext || window.webkitOfflineAudioContext;
    if (!Offline) throw new Error("this browser has no Web Audio");
    const bytes = await file.arrayBuffer();
    let decoded;
    try {
      // decodeAudioData converts to its context's rate: 16 kHz already.
      decoded = await new Offline(1, 1, RATE).decodeAudioData(bytes);
    } catch (e) {
      throw new Error("the browser cannot decode this file (" + errText(e) + ")");
    }
    if (decoded.duration > MAX_FILE_SECONDS) throw new Error("the file is longer than 4 hours");
    const length = Math.max(1, Math.ceil(decoded.duration * RATE));
    const ctx = new Offline(1, length, RATE); // one channel: stereo is mixed down (L+R)/2
    const src = ctx.createBufferSource();
    src.buffer = decoded;
    src.connect(ctx.destination);
    src.start();
    const mono = (await ctx.startRendering()).getChannelData(0);
    const pcm = new Int16Array(mono.length);
    for (let i = 0; i < mono.length; i += 1) {
      const v = Math.max(-1, Math.min(1, mono[i]));
      pcm[i] = v < 0 ? v * 0x8000 : v * 0x7fff;
    }
    return pcm;
  }

  function openSocket(url) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      const fail = () => reject(new Error("the server refused the audio socket (the session may be busy, ended or over its limits)"));
      ws.addEventListener("error", fail, { once: true });
      ws.addEventListener("open", () => {
        ws.removeEventListener("error", fail);
        resolve(ws);
      }, { once: true });
    });
  }

  async function sendFile() {
    if (!session || producer) return;
    const file = ui.file.files[0];
    if (!file) return;
    const mine = { kind: "file", ws: null, stopping: false, closed: null };
    producer = mine;
    render();
    try {
      if (file.size > MAX_FILE_BYTES) throw new Error("the file is over 500 MB");
      setAudio("Decoding " + file.name + "…");
      const pcm = await decodeFile(file);
      if (producer !== mine) return;
      const pace = Number(ui.pace.value) || 1;
      const token = await ingestToken();
      const ws = await openSocket(wsUrl("/ws/stt?token=" + encodeURIComponent(token)));
      mine.ws = ws;
      mine.closed = new Promise((resolve) => ws.addEventListener("close", resolve, { once: true }));
      ws.addEventListener("close", (e) => {
        // 1000 is a normal end (our stop, the session ended, idle); anything else is a
        // refusal or failure (the reason starts with its code: 1008 DAILY_CAP_REACHED).
        if (producer === mine && !mine.stopping && e.code !== 1000) {
          showError("Audio socket", new Error("closed by the server (" + e.code + (e.reason ? " " + e.reason : "") + ")"));
        }
      });
      ws.addEventListener("message", (e) => {
        if (typeof e.data !== "string") return;
        let m;
        try {
          m = JSON.parse(e.data);
        } catch {
          return;
        }
        // Captions come from the subscribe socket; here only what concerns the producer.
        if (m.type === "error") showError("Audio socket", new ApiError(0, m.code, m.message));
        if (m.type === "session-end") markEnded();
      });
      if (producer !== mine) {
        ws.close(1000);
        return;
      }
      const seconds = (pcm.length / RATE).toFixed(1);
      setAudio("Sending " + file.name + " (" + seconds + " s of audio" + (pace > 1 ? ", " + pace + "× faster" : "") + ")…");
      ui.fileProgress.hidden = false;
      ui.fileProgress.value = 0;
      const started = performance.now();
      let sent = 0;
      while (sent < pcm.length) {
        if (producer !== mine || mine.stopping || ws.readyState !== WebSocket.OPEN) return;
        // Paced on the wall clock: sample N leaves at N / (16000 * pace) seconds.
        const due = started + ((sent / RATE) * 1000) / pace;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
        if (ws.bufferedAmount > MAX_BUFFERED) {
          await sleep(20); // the network is slower than the pace: let it drain
          continue;
        }
        let frame = pcm.subarray(sent, sent + FRAME_SAMPLES);
        if (frame.length < MIN_FRAME_SAMPLES) {
          const padded = new Int16Array(MIN_FRAME_SAMPLES);
          padded.set(frame);
          frame = padded;
        }
        ws.send(frame);
        sent += FRAME_SAMPLES;
        ui.fileProgress.value = Math.min(1, sent / pcm.length);
      }
      await finishFile(mine);
    } catch (e) {
      if (producer === mine) showError("Sending the file", e);
    } finally {
      // A stop from the button owns the cleanup (it waits for the server's close).
      if (producer === mine && !mine.stopping) {
        if (mine.ws) mine.ws.close(1000);
        producer = null;
        ui.fileProgress.hidden = true;
        setAudio(session && session.status === "ended" ? "Done: the session has ended." : "No audio is being sent.");
        render();
      }
    }
  }

  /** {"type":"stop"}: the server finalizes the last line, ends the session and closes. */
  async function finishFile(p) {
    const ws = p.ws;
    if (!ws) return false;
    if (!p.stopSent) {
      if (ws.readyState !== WebSocket.OPEN) return false;
      p.stopSent = true;
      setAudio("Finishing: the last line is being recognized…");
      ws.send(JSON.stringify({ type: "stop" }));
    }
    await Promise.race([p.closed, sleep(120000)]);
    return true;
  }

  ui.fileSend.addEventListener("click", () => sendFile());
  ui.fileStop.addEventListener("click", () => stopProducer(true).catch((e) => showError("Stopping", e)));

  /** Stop sending. gracefully=true ends the session (hang up / stop); false just drops
   * the connection (the session stays live, as a dropped producer). */
  async function stopProducer(gracefully) {
    const p = producer;
    if (!p || p.stopping) return false;
    p.stopping = gracefully ? true : "abandon";
    render();
    let ended = false;
    try {
      if (p.kind === "mic") {
        if (gracefully) ended = await stopMic(p);
        else releaseMic(p);
      } else if (p.ws) {
        if (gracefully) ended = await finishFile(p);
        else p.ws.close(1000);
      }
      if (ended) markEnded();
      return ended;
    } finally {
      if (producer === p) {
        producer = null;
        ui.fileProgress.hidden = true;
        setAudio(session && session.status === "ended" ? "Done: the session has ended." : "No audio is being sent.");
        render();
      }
    }
  }

  // -- 4. live captions over /ws/subscribe --------------------------------------------------

  const lines = new Map(); // seq -> <li>
  let lastFinalSeq = 0;
  let interimSeq = null;
  let feed = null; // the current subscribe socket
  let feedRetries = 0;
  let feedTimer = null;

  function resetCaptions() {
    lines.clear();
    lastFinalSeq = 0;
    ui.finals.replaceChildren();
    ui.captions.removeAttribute("lang");
    clearInterim();
    ui.placeholder.hidden = false;
  }

  function closeFeed() {
    clearTimeout(feedTimer);
    feedTimer = null;
    const old = feed;
    feed = null;
    if (old) old.close(1000);
    ui.feedStatus.textContent = "Not connected.";
  }

  function openFeed() {
    if (!session) return;
    const mine = session;
    const url = wsUrl(
      "/ws/subscribe?token=" + encodeURIComponent(mine.subscribeToken) + "&lastSeq=" + lastFinalSeq
    );
    const ws = new WebSocket(url);
    feed = ws;
    let ended = false;
    ui.feedStatus.textContent = "Connecting to the captions…";
    ws.addEventListener("open", () => {
      if (feed !== ws) return;
      feedRetries = 0;
      ui.feedStatus.textContent = mine.status === "live" ? "Connected: captions appear as they are recognized." : "Connected.";
    });
    ws.addEventListener("message", (e) => {
      if (feed !== ws || typeof e.data !== "string") return;
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m.type === "transcript") {
        if (m.isFinal) addFinal(m);
        else showInterim(m);
      } else if (m.type === "language" && m.code) {
        ui.captions.lang = m.code;
      } else if (m.type === "session-end") {
        ended = true;
        markEnded();
      } else if (m.type === "error" && m.message) {
        ui.feedStatus.textContent = "The caption feed reported: " + m.message;
      }
    });
    ws.addEventListener("close", (e) => {
      if (feed !== ws) return;
      feed = null;
      if (ended || e.reason === "SESSION_ENDED") {
        markEnded();
        ui.feedStatus.textContent = "The session has ended: every line is below.";
        return;
      }
      feedRetries += 1;
      const delay = Math.min(FEED_RETRY_MAX_MS, FEED_RETRY_MIN_MS * 2 ** (feedRetries - 1));
      ui.feedStatus.textContent =
        "The caption feed closed" + (e.reason ? " (" + e.reason + ")" : "") +
        "; reconnecting in " + Math.round(delay / 1000) + " s…";
      feedTimer = setTimeout(() => reconnectFeed(mine), delay);
    });
  }

  async function reconnectFeed(mine) {
    if (session !== mine) return;
    if (feedRetries > 1 && tenantKey) {
      // Read tokens expire (~8 h): mint fresh ones rather than retry a dead one.
      try {
        const tokens = await (await api("POST", sessionPath("/embed-token"), { body: {} })).json();
        mine.subscribeToken = tokens.subscribeToken;
      } catch {
        // keep the old one; the next attempt says more
      }
    }
    if (session === mine && feed === null) openFeed();
  }

  function speakerName(m) {
    const s = m.speaker;
    if (!s) return "";
    if (typeof s === "string") return s;
    return String(s.name || s.label || s.id || "");
  }

  function fillLine(li, m) {
    const speaker = li.querySelector(".speaker");
    if (m.speaker !== undefined) speaker.textContent = speakerName(m); // kept when absent
    speaker.hidden = !speaker.textContent;
    li.querySelector(".text").textContent = (m.text || "").trim();
    if (m.lang) li.lang = m.lang;
    if (m.revised) {
      li.dataset.revised = "true";
      li.querySelector(".revised").hidden = false;
    }
  }

  function addFinal(m) {
    const seq = Number(m.seq);
    if (!Number.isFinite(seq)) return;
    const have = lines.get(seq);
    if (have) {
      // A correction (revised:true) replaces the line in place; a replayed one is a duplicate.
      if (m.revised && !have.querySelector("input")) fillLine(have, m);
      else if (m.revised) have.dataset.pending = JSON.stringify({ text: m.text, speaker: m.speaker });
      return;
    }
    lastFinalSeq = Math.max(lastFinalSeq, seq);
    if (interimSeq !== null && interimSeq <= seq) clearInterim();
    if (!(m.text || "").trim()) return;
    const li = document.createElement("li");
    li.className = "line";
    li.dataset.seq = String(seq);
    li.id = "line-" + seq;
    const speaker = document.createElement("span");
    speaker.className = "speaker";
    const text = document.createElement("span");
    text.className = "text";
    const revised = document.createElement("span");
    revised.className = "revised";
    revised.textContent = "corrected";
    revised.hidden = true;
    const fix = document.createElement("button");
    fix.type = "button";
    fix.className = "fix link";
    fix.textContent = "Fix";
    fix.setAttribute("aria-label", "Fix line " + seq);
    fix.disabled = tenantKey === null;
    fix.addEventListener("click", () => editLine(li));
    li.append(speaker, text, " ", revised, " ", fix);
    fillLine(li, m);
    let before = null; // in seq order: a late replayed line goes before larger seqs
    for (const [s, el] of lines) {
      if (s > seq && (before === null || s < Number(before.dataset.seq))) before = el;
    }
    ui.finals.insertBefore(li, before);
    lines.set(seq, li);
    while (lines.size > MAX_LINES) {
      const oldest = Math.min(...lines.keys());
      lines.get(oldest).remove();
      lines.delete(oldest);
    }
    contentChanged();
  }

  function showInterim(m) {
    const seq = Number(m.seq);
    if (seq <= lastFinalSeq) return; // already final
    if (interimSeq !== null && seq < interimSeq) return; // stale
    const text = (m.text || "").trim();
    const who = speakerName(m);
    interimSeq = seq;
    ui.interim.textContent = (who ? who + ": " : "") + text;
    ui.interim.hidden = !text;
    contentChanged();
  }

  function clearInterim() {
    interimSeq = null;
    ui.interim.textContent = "";
    ui.interim.hidden = true;
  }

  function contentChanged() {
    ui.placeholder.hidden = lines.size > 0 || !ui.interim.hidden;
    const c = ui.captions;
    if (c.scrollHeight - c.scrollTop - c.clientHeight < 80) c.scrollTop = c.scrollHeight;
  }

  // -- fix a line: PATCH /api/sessions/:id/lines/:seq ---------------------------------------

  function editLine(li) {
    if (li.querySelector("input")) return;
    const seq = Number(li.dataset.seq);
    const textEl = li.querySelector(".text");
    const fixBtn = li.querySelector("button.fix");
    const input = document.createElement("input");
    input.type = "text";
    input.maxLength = 2000;
    input.value = textEl.textContent;
    input.className = "edit";
    input.setAttribute("aria-label", "Corrected text of line " + seq);
    const save = document.createElement("button");
    save.type = "button";
    save.textContent = "Save";
    const cancel = document.createElement("button");
    cancel.type = "button";
    cancel.className = "link";
    cancel.textContent = "Cancel";
    const box = document.createElement("span");
    box.className = "editor";
    box.append(input, " ", save, " ", cancel);
    textEl.hidden = true;
    fixBtn.hidden = true;
    li.insertBefore(box, fixBtn);
    input.focus();
    input.select();

    const close = () => {
      box.remove();
      textEl.hidden = false;
      fixBtn.hidden = false;
      const pending = li.dataset.pending;
      if (pending) {
        delete li.dataset.pending;
        fillLine(li, { ...JSON.parse(pending), revised: true });
      }
      fixBtn.focus();
    };
    const submit = async () => {
      const text = input.value.trim();
      if (!text) {
        showError("Fixing line " + seq, new Error("the text cannot be empty"));
        return;
      }
      save.disabled = true;
      try {
        const res = await api("PATCH", sessionPath("/lines/" + seq), { body: { text } });
        let doc = null;
        try {
          doc = await res.json();
        } catch {
          doc = null;
        }
        const fixed = doc && typeof doc.text === "string" ? doc.text : text;
        delete li.dataset.pending; // ours is the newest
        box.remove();
        textEl.hidden = false;
        fixBtn.hidden = false;
        fillLine(li, { text: fixed, revised: true });
        clearError();
        fixBtn.focus();
      } catch (e) {
        save.disabled = false;
        showError("Fixing line " + seq, e);
      }
    };
    save.addEventListener("click", submit);
    cancel.addEventListener("click", close);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        submit();
      } else if (e.key === "Escape") {
        e.preventDefault();
        close();
      }
    });
  }

  // -- 5. after: downloads, summary, ask -------------------------------------------------------

  function resetAfter() {
    summaryRun += 1;
    ui.summary.hidden = true;
    ui.summaryStatus.textContent = "";
    ui.answerBox.hidden = true;
    ui.citations.replaceChildren();
  }

  const EXTENSIONS = { json: "json", srt: "srt", vtt: "vtt", txt: "txt" };

  async function download(format) {
    if (!session) return;
    try {
      const res = await api("GET", sessionPath("/transcript?format=" + format), { accept: "*/*" });
      const blob = await res.blob();
      const url = URL.createObjectURL(blob);
      const a = document.createElement("a");
      a.href = url;
      a.download = "transcript-" + session.sessionId + "." + EXTENSIONS[format];
      a.hidden = true;
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
    } catch (e) {
      showError("Downloading the " + format + " transcript", e);
    }
  }

  for (const b of ui.downloads) b.addEventListener("click", () => download(b.dataset.format));

  let summaryRun = 0; // bumps on every new poll (or session): an old loop stops
  let pollingRun = 0; // the run polling now (0: none)

  async function getSummary() {
    if (!session || !tenantKey) return;
    if (pollingRun !== 0 && pollingRun === summaryRun) return; // already at it
    const run = (summaryRun += 1);
    pollingRun = run;
    const mine = session;
    const deadline = Date.now() + SUMMARY_WAIT_MS;
    let delay = 1000;
    try {
      while (run === summaryRun && session === mine) {
        const res = await api("GET", sessionPath("/summary"));
        const doc = await res.json();
        if (run !== summaryRun || session !== mine) return;
        if (res.status === 200 && doc.status === "ready") {
          showSummary(doc);
          return;
        }
        if (doc.status === "failed") {
          ui.summaryStatus.textContent = "The summary failed" + (doc.error ? ": " + doc.error : ".");
          return;
        }
        if (mine.status === "live") {
          ui.summaryStatus.textContent = "The summary is written when the session ends.";
          return; // the session-end event asks again
        }
        if (Date.now() > deadline) {
          ui.summaryStatus.textContent = "The summary is still being written: try again later.";
          return;
        }
        ui.summaryStatus.textContent = "The summary is being written…";
        await sleep(delay);
        delay = Math.min(5000, delay * 1.5);
      }
    } catch (e) {
      ui.summaryStatus.textContent = "";
      showError("Reading the summary", e);
    } finally {
      if (pollingRun === run) pollingRun = 0;
    }
  }

  function fillList(id, items, format) {
    const ul = $(id);
    ul.replaceChildren();
    for (const item of items || []) {
      const li = document.createElement("li");
      li.textContent = format(item);
      ul.append(li);
    }
    $(id + "-box").hidden = !ul.children.length;
  }

  function showSummary(doc) {
    const c = doc.content || {};
    ui.summaryTldr.textContent = c.tldr || "(no summary text)";
    fillList("summary-decisions", c.decisions, String);
    fillList("summary-actions", c.actionItems, (a) => (a.owner ? a.owner + ": " : "") + a.task);
    fillList("summary-qa", c.qa, String);
    ui.summary.hidden = false;
    ui.summaryStatus.textContent = "Summary ready" + (doc.model ? " (" + doc.model + ")" : "") + ".";
  }

  ui.summaryGet.addEventListener("click", () => getSummary());

  async function ask() {
    if (!session) return;
    const question = ui.question.value.trim();
    if (!question) {
      showError("Asking", new Error("type a question first"));
      return;
    }
    ui.ask.disabled = true;
    try {
      const doc = await (await api("POST", sessionPath("/ask"), { body: { question } })).json();
      clearError();
      ui.answer.textContent = doc.answer || "(no answer)";
      ui.answerKind.textContent = doc.extractive
        ? "Extractive answer: the transcript lines that best match the question, quoted as spoken (no language model)."
        : "Written by a language model from the transcript: check it against the cited lines.";
      ui.citations.replaceChildren();
      for (const c of doc.citations || []) {
        const li = document.createElement("li");
        const jump = document.createElement("button");
        jump.type = "button";
        jump.className = "link";
        jump.textContent = "Line " + c.seq;
        jump.addEventListener("click", () => {
          const line = lines.get(Number(c.seq));
          if (!line) return;
          line.scrollIntoView({ block: "center" });
          line.classList.add("flash");
          setTimeout(() => line.classList.remove("flash"), 2000);
        });
        const who = speakerName(c);
        li.append(jump, " " + (who ? who + ": " : "") + (c.text || ""));
        li.dataset.seq = String(c.seq);
        ui.citations.append(li);
      }
      ui.answerBox.hidden = false;
    } catch (e) {
      showError("Asking", e);
    } finally {
      render();
    }
  }

  ui.ask.addEventListener("click", ask);
  ui.question.addEventListener("keydown", (e) => {
    if (e.key === "Enter") {
      e.preventDefault();
      ask();
    }
  });

  // Leaving the page hangs up the microphone (the server would time it out otherwise).
  window.addEventListener("pagehide", () => {
    if (producer && producer.kind === "mic" && producer.resource) {
      fetch(producer.resource, { method: "DELETE", keepalive: true, credentials: "omit" }).catch(() => {});
    }
  });

  render();
})();
