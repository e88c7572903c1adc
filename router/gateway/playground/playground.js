// FirstToken's voice playground: the microphone to /v1/realtime, the answer to the speakers.
//
//   microphone -> AudioWorklet (capture-worklet.js: 20 ms frames, PCM16 at 24 kHz)
//              -> input_audio_buffer.append over a WebSocket (subprotocol `realtime`, and
//                 `openai-insecure-api-key.<key>` when a key is given)
//   response.output_audio.delta -> AudioBuffers at 24 kHz, scheduled back to back
//   input_audio_buffer.speech_started while the answer plays -> barge-in: playback stops,
//                 conversation.item.truncate tells the server how much was heard
//
// Time to first audio is measured here, from the server's speech_stopped to the first
// audio delta; the server's own account (response.done -> response.firsttoken) gives
// voice-to-voice latency and its stages when the route is a cascade. `window.playground`
// exposes the state, for people in the console and for the browser test.

const RATE = 24000;
const $ = (id) => document.getElementById(id);

const state = {
  connected: false,
  userTranscripts: [], // completed transcripts of what the user said
  assistantTranscripts: [], // what the assistant said, one per response
  ttfaMs: [], // per answer: speech_stopped -> first audio delta
  audioReceivedMs: 0,
  audioPlayedMs: 0,
  bargeIns: 0,
  truncations: [], // {item_id, audio_end_ms}
  serverLatency: [], // response.firsttoken.latency_ms as the server sent it
  errors: [],
  events: {}, // count per event type
};
window.playground = state;

let socket = null;
let audio = null; // {context, stream, source, node, sink}
let player = null;
let turn = null; // the current answer: timings and its transcript element

// -- the page -------------------------------------------------------------------------------

function defaultUrl() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.host}/v1/realtime`;
}

function setStatus(text, error = false) {
  const el = $("status");
  el.textContent = text;
  el.className = error ? "error" : "";
  if (error) state.errors.push(text);
}

function addTurn(who, text = "") {
  const el = document.createElement("div");
  el.className = `turn ${who}`;
  el.innerHTML = `<div class="who">${who === "user" ? "You" : "Assistant"}</div><div class="text"></div>`;
  el.querySelector(".text").textContent = text;
  $("conversation").appendChild(el);
  $("conversation").scrollTop = $("conversation").scrollHeight;
  return el;
}

function showStages(rows, source) {
  const body = $("stages").querySelector("tbody");
  body.innerHTML = "";
  const total = Math.max(1, ...rows.map(([, ms]) => ms));
  for (const [name, ms] of rows) {
    const tr = document.createElement("tr");
    tr.innerHTML = `<td>${name}</td><td class="ms">${Math.round(ms)} ms</td><td style="width:45%"><div class="bar"></div></td>`;
    tr.querySelector(".bar").style.width = `${(100 * ms) / total}%`;
    body.appendChild(tr);
  }
  $("stage-source").textContent = source;
}

// -- playback -------------------------------------------------------------------------------

class Player {
  constructor(context) {
    this.context = context;
    this.head = 0; // when the next chunk starts, in the context's time
    this.chunks = []; // scheduled and not yet over: {node, start, duration, itemId}
    this.doneByItem = new Map(); // seconds played of chunks that are over, per item
    this.doneTotal = 0;
  }

  play(pcm16, itemId) {
    const samples = new Int16Array(pcm16.buffer, pcm16.byteOffset, pcm16.byteLength >> 1);
    if (!samples.length) return;
    const buffer = this.context.createBuffer(1, samples.length, RATE);
    const data = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) data[i] = samples[i] / 0x8000;
    const node = this.context.createBufferSource();
    node.buffer = buffer;
    node.connect(this.context.destination);
    const start = Math.max(this.context.currentTime + 0.03, this.head);
    node.start(start);
    this.head = start + buffer.duration;
    this.chunks.push({ node, start, duration: buffer.duration, itemId });
    node.onended = () => this.tick();
  }

  heard(chunk, now) {
    return Math.min(Math.max(now - chunk.start, 0), chunk.duration);
  }

  // move chunks that are over into the totals
  prune() {
    const now = this.context.currentTime;
    this.chunks = this.chunks.filter((c) => {
      if (c.start + c.duration > now) return true;
      this.doneByItem.set(c.itemId, (this.doneByItem.get(c.itemId) || 0) + c.duration);
      this.doneTotal += c.duration;
      return false;
    });
  }

  // milliseconds of an item's audio played so far
  playedMs(itemId) {
    this.prune();
    const now = this.context.currentTime;
    let seconds = this.doneByItem.get(itemId) || 0;
    for (const c of this.chunks) if (c.itemId === itemId) seconds += this.heard(c, now);
    return Math.round(seconds * 1000);
  }

  get playing() {
    return this.head > this.context.currentTime;
  }

  tick() {
    this.prune();
    const now = this.context.currentTime;
    let seconds = this.doneTotal;
    for (const c of this.chunks) seconds += this.heard(c, now);
    state.audioPlayedMs = Math.round(seconds * 1000);
    $("played").textContent = state.audioPlayedMs;
  }

  // barge-in: silence now; returns {itemId, ms} of what was heard of the current item
  stop() {
    this.prune();
    const last = this.chunks.length ? this.chunks[this.chunks.length - 1].itemId : null;
    const heard = last === null ? null : { itemId: last, ms: this.playedMs(last) };
    const now = this.context.currentTime;
    for (const c of this.chunks) {
      const part = this.heard(c, now);
      this.doneByItem.set(c.itemId, (this.doneByItem.get(c.itemId) || 0) + part);
      this.doneTotal += part;
      c.node.onended = null;
      try { c.node.stop(); } catch (_) { /* already ended */ }
    }
    this.chunks = [];
    this.head = now;
    this.tick();
    return heard;
  }
}

// -- the protocol ---------------------------------------------------------------------------

function send(event) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(event));
}

function base64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function unbase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function sessionUpdate() {
  const session = {
    type: "realtime",
    output_modalities: ["audio"],
    audio: {
      input: {
        format: { type: "audio/pcm", rate: RATE },
        transcription: { model: "whisper-1" },
        turn_detection: { type: "server_vad", create_response: true, interrupt_response: true },
      },
      output: { format: { type: "audio/pcm", rate: RATE }, voice: $("voice").value || "alloy" },
    },
  };
  const instructions = $("instructions").value.trim();
  if (instructions) session.instructions = instructions;
  return { type: "session.update", session };
}

const handlers = {
  "session.created": () => setStatus("Connected: speak now."),
  "input_audio_buffer.speech_started": () => {
    if (player && (player.playing || (turn && !turn.done))) bargeIn();
    turn = { speechStarted: performance.now(), done: false };
    setStatus("Listening…");
  },
  "input_audio_buffer.speech_stopped": () => {
    if (!turn) turn = { done: false };
    turn.speechStopped = performance.now();
    setStatus("Thinking…");
  },
  "input_audio_buffer.committed": (e) => {
    if (turn) turn.committed = performance.now();
    if (turn) turn.userEl = addTurn("user", "…");
    if (turn) turn.userItem = e.item_id;
  },
  "conversation.item.input_audio_transcription.completed": (e) => {
    state.userTranscripts.push(e.transcript || "");
    if (turn && !turn.transcribed) turn.transcribed = performance.now();
    const el = turn && turn.userItem === e.item_id ? turn.userEl : addTurn("user");
    el.querySelector(".text").textContent = e.transcript || "(nothing heard)";
  },
  "response.created": () => {
    if (!turn) turn = { done: false };
    turn.responseCreated = performance.now();
    turn.text = "";
  },
  "response.output_audio_transcript.delta": (e) => appendText(e),
  "response.output_text.delta": (e) => appendText(e),
  "response.output_audio.delta": (e) => {
    const pcm = unbase64(e.delta);
    state.audioReceivedMs += (pcm.length / 2 / RATE) * 1000;
    if (turn && !turn.firstAudio) {
      turn.firstAudio = performance.now();
      turn.itemId = e.item_id;
      if (turn.speechStopped) {
        const ttfa = turn.firstAudio - turn.speechStopped;
        state.ttfaMs.push(ttfa);
        $("ttfa").textContent = Math.round(ttfa);
      }
      setStatus("Speaking…");
    }
    if (player) player.play(pcm, e.item_id);
  },
  "response.done": (e) => {
    const response = e.response || {};
    if (turn) {
      turn.done = true;
      if (turn.text !== undefined) state.assistantTranscripts.push(turn.text);
      if (response.status && response.status !== "completed" && turn.assistantEl) {
        const mark = document.createElement("span");
        mark.className = "interrupted";
        mark.textContent = response.status;
        turn.assistantEl.querySelector(".who").appendChild(mark);
      }
      showLatency(response);
    }
    setStatus("Connected: speak now.");
  },
  error: (e) => setStatus(`Error: ${(e.error && e.error.message) || JSON.stringify(e)}`, true),
};

function appendText(e) {
  if (!turn) turn = { done: false };
  if (!turn.assistantEl) {
    turn.assistantEl = addTurn("assistant");
    turn.firstText = performance.now();
    turn.text = turn.text || "";
  }
  turn.text += e.delta || "";
  turn.assistantEl.querySelector(".text").textContent = turn.text;
}

function showLatency(response) {
  const server = response.firsttoken && response.firsttoken.latency_ms;
  if (server) {
    state.serverLatency.push(server);
    if (server.voice_to_voice != null) $("v2v").textContent = Math.round(server.voice_to_voice);
    const names = ["vad_hangover", "stt", "llm_ttft", "tts_first_audio", "overhead"];
    showStages(
      names.filter((n) => server[n] != null).map((n) => [n, server[n]]),
      "Stages as the router measured them (one clock per turn).",
    );
    return;
  }
  if (!turn || !turn.speechStopped) return;
  const rows = [];
  const step = (name, from, to) => { if (from && to) rows.push([name, Math.max(0, to - from)]); };
  step("end of speech → committed (VAD)", turn.speechStopped, turn.committed);
  step("committed → transcript (STT)", turn.committed, turn.transcribed);
  step("transcript → first audio (LLM, TTS)", turn.transcribed || turn.committed, turn.firstAudio);
  showStages(rows, "Stages as this page saw the events arrive (the target sent no breakdown).");
}

function bargeIn() {
  const heard = player ? player.stop() : null;
  state.bargeIns += 1;
  $("barge-ins").textContent = state.bargeIns;
  if (heard && heard.itemId) {
    const event = {
      type: "conversation.item.truncate",
      item_id: heard.itemId,
      content_index: 0,
      audio_end_ms: heard.ms,
    };
    state.truncations.push({ item_id: heard.itemId, audio_end_ms: heard.ms });
    send(event);
  }
  if (turn && turn.assistantEl) {
    const mark = document.createElement("span");
    mark.className = "interrupted";
    mark.textContent = "interrupted";
    turn.assistantEl.querySelector(".who").appendChild(mark);
  }
}

// -- start and stop -------------------------------------------------------------------------

async function start() {
  $("start").disabled = true;
  const url = new URL($("url").value || defaultUrl());
  url.searchParams.set("model", $("model").value || "voice");
  const key = $("key").value.trim();
  const protocols = key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
  try {
    const context = new AudioContext();
    await context.resume();
    await context.audioWorklet.addModule(new URL("capture-worklet.js", import.meta.url));
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    const source = context.createMediaStreamSource(stream);
    const node = new AudioWorkletNode(context, "pcm-capture");
    const sink = context.createGain();
    sink.gain.value = 0; // the worklet runs only when pulled: through a silent gain
    source.connect(node).connect(sink).connect(context.destination);
    audio = { context, stream, source, node, sink };
    player = new Player(context);
    audio.ticker = setInterval(() => player && player.tick(), 100);
  } catch (err) {
    setStatus(`Microphone: ${err.message || err}`, true);
    $("start").disabled = false;
    return;
  }
  setStatus("Connecting…");
  socket = new WebSocket(url.toString(), protocols);
  socket.onopen = () => {
    state.connected = true;
    $("stop").disabled = false;
    send(sessionUpdate());
    audio.node.port.onmessage = ({ data }) => {
      $("meter").firstElementChild.style.width = `${Math.min(100, data.rms * 400)}%`;
      send({ type: "input_audio_buffer.append", audio: base64(new Uint8Array(data.pcm)) });
    };
  };
  socket.onmessage = (message) => {
    let event;
    try { event = JSON.parse(message.data); } catch (_) { return; }
    state.events[event.type] = (state.events[event.type] || 0) + 1;
    const handle = handlers[event.type];
    if (handle) handle(event);
  };
  socket.onclose = (e) => {
    state.connected = false;
    const why = e.reason ? `: ${e.reason}` : e.code === 1006 ? " (refused: check the URL, route and key)" : "";
    setStatus(`Disconnected (${e.code})${why}`, e.code !== 1000);
    stop(false);
  };
}

function stop(closeSocket = true) {
  if (closeSocket && socket) socket.close(1000, "done");
  socket = null;
  if (audio) {
    audio.node.port.onmessage = null;
    clearInterval(audio.ticker);
    audio.stream.getTracks().forEach((t) => t.stop());
    audio.context.close();
    audio = null;
  }
  player = null;
  $("start").disabled = false;
  $("stop").disabled = true;
}

const params = new URLSearchParams(location.search);
$("url").value = params.get("url") || defaultUrl();
if (params.get("model")) $("model").value = params.get("model");
if (params.get("voice")) $("voice").value = params.get("voice");
$("start").addEventListener("click", start);
$("stop").addEventListener("click", () => { stop(); setStatus("Stopped."); });
