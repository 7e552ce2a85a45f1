// The live view's page: draws what the server pushes (server-sent events `device`, `live`,
// `capacitance`) and posts clicks. No polling, nothing loaded from elsewhere.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const TRACE_MS = 30000; // the capacitance trace shows the last 30 s of readings
const MAX_SAMPLES = 2000;

const $ = (id) => document.getElementById(id);
const chip = $('chip');
let pads = new Map(); // electrode id -> <path>
let dropletLayer = null;
let live = null;
let samples = []; // [host time ms, farads]
let traceQueued = false;

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function drawDevice(device) {
  chip.replaceChildren();
  pads = new Map();
  dropletLayer = null;
  if (!device || !device.bounds) return;
  const b = device.bounds;
  const m = Math.max(b.w, b.h) * 0.02;
  chip.setAttribute('viewBox', `${b.x - m} ${b.y - m} ${b.w + 2 * m} ${b.h + 2 * m}`);
  const layer = svg('g', { class: 'pads' });
  for (const e of device.electrodes) {
    const pad = svg('path', { d: e.d, class: 'pad', 'data-id': e.id });
    const title = svg('title');
    title.textContent = `${e.id}, channel ${e.channels.join(', ') || 'none'}`;
    pad.append(title);
    pad.addEventListener('click', () => toggle(e.id));
    layer.append(pad);
    pads.set(e.id, pad);
  }
  dropletLayer = svg('g', { class: 'droplets' });
  chip.append(layer, dropletLayer);
  if (live) showLive(live);
}

function badge(id, text, kind) {
  const node = $(id);
  node.textContent = text;
  node.className = 'badge' + (kind ? ' ' + kind : '');
}

function number(v, unit, digits) {
  return typeof v === 'number' ? `${v.toFixed(digits)} ${unit}` : `– ${unit}`;
}

function showLive(s) {
  live = s;
  const st = s.status || {};
  if (st.bus === 'offline') badge('board', 'plugin offline', 'bad');
  else if (st.board === 'connected') badge('board', 'board connected', 'ok');
  else if (st.board === 'halted') badge('board', 'board halted', 'bad');
  else if (st.board) badge('board', `board ${st.board}${st.detail ? ': ' + st.detail : ''}`, 'warn');
  else badge('board', 'plugin: no status', 'warn');
  if (s.hv === true) badge('hv', 'HV on', 'hot');
  else badge('hv', s.hv === false ? 'HV off' : 'HV –');
  $('volts').textContent = number(s.voltage, 'V', 0);
  $('freq').textContent = number(s.frequency, 'Hz', 0);
  $('chip-in').textContent = s.chip_inserted === false ? 'no chip in the board' : '';
  const halt = $('halt');
  halt.hidden = !s.halted;
  if (s.halted) {
    halt.textContent = `Halted (${s.halted.reason}): actuation is refused until HV is enabled ` +
      'again by a put of hv-output-enabled true.';
  }
  const mqtt = $('mqtt');
  mqtt.hidden = !s.bus;
  if (s.bus) mqtt.textContent = `The view has no MQTT connection: ${s.bus}`;

  const on = new Set(s.actuated);
  const requested = new Set(s.requested || []);
  for (const [id, pad] of pads) {
    pad.classList.toggle('on', on.has(id));
    pad.classList.toggle('requested', requested.has(id) && !on.has(id));
  }
  let hint = s.device_problem || (pads.size ? 'Click an electrode to toggle it.' : 'Waiting for the device…');
  if (s.stray_channels.length) hint += ` Channels on that no electrode uses: ${s.stray_channels.join(', ')}.`;
  $('hint').textContent = hint;
  showDroplets(s.droplets);
  const log = $('log');
  log.replaceChildren(...s.log.map((line) => {
    const li = document.createElement('li');
    li.textContent = `${new Date(line.t).toLocaleTimeString()} ${line.text}`;
    if (!line.text.startsWith('signal')) li.className = 'bad';
    return li;
  }));
  if (typeof s.stream_ms === 'number' && s.stream_ms === 0 && !samples.length) {
    $('cap-now').textContent = '(the board streams none)';
  }
}

function showDroplets(droplets) {
  if (!dropletLayer) return;
  const seen = new Set();
  for (const d of droplets) {
    const key = String(d.id);
    seen.add(key);
    let c = dropletLayer.querySelector(`circle[data-droplet="${key}"]`);
    if (!c) {
      c = svg('circle', { 'data-droplet': key, cx: 0, cy: 0 });
      dropletLayer.append(c);
    }
    c.setAttribute('r', d.r);
    c.setAttribute('data-electrode', d.electrode);
    c.style.transform = `translate(${d.x}px, ${d.y}px)`;
  }
  for (const c of [...dropletLayer.children]) {
    if (!seen.has(c.getAttribute('data-droplet'))) c.remove();
  }
}

function addSamples(fresh) {
  samples.push(...fresh);
  if (samples.length > MAX_SAMPLES) samples = samples.slice(-MAX_SAMPLES);
  if (!traceQueued) {
    traceQueued = true;
    requestAnimationFrame(drawTrace);
  }
}

// The right edge is the newest reading (the server's clock, whatever the browser's).
function drawTrace() {
  traceQueued = false;
  const canvas = $('cap');
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!samples.length) return;
  const end = samples[samples.length - 1][0];
  const shown = samples.filter(([t]) => t >= end - TRACE_MS);
  const pf = shown.map(([, f]) => f * 1e12);
  let lo = Math.min(...pf), hi = Math.max(...pf);
  if (hi - lo < 1e-3) { lo -= 0.5; hi += 0.5; }
  const x = (t) => canvas.width * (1 - (end - t) / TRACE_MS);
  const y = (v) => canvas.height - 8 - (canvas.height - 16) * (v - lo) / (hi - lo);
  ctx.strokeStyle = '#4ea3ff';
  ctx.lineWidth = 2;
  ctx.beginPath();
  shown.forEach(([t], i) => (i ? ctx.lineTo(x(t), y(pf[i])) : ctx.moveTo(x(t), y(pf[i]))));
  ctx.stroke();
  ctx.fillStyle = '#9fb0c0';
  ctx.font = '12px sans-serif';
  ctx.fillText(`${hi.toFixed(2)} pF`, 4, 14);
  ctx.fillText(`${lo.toFixed(2)} pF`, 4, canvas.height - 4);
  $('cap-now').textContent = `${pf[pf.length - 1].toFixed(2)} pF`;
}

async function toggle(id) {
  try {
    const r = await fetch('api/toggle', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ electrode: id }),
    });
    if (!r.ok) {
      const body = await r.json().catch(() => ({}));
      $('hint').textContent = `${id}: ${body.error || r.statusText}`;
    }
  } catch (e) {
    $('hint').textContent = `The view cannot be reached: ${e.message}`;
  }
}

const events = new EventSource('events');
// After a reconnection the server sends its whole capacitance ring again.
events.addEventListener('open', () => { samples = []; badge('link', 'live', 'ok'); });
events.addEventListener('error', () => badge('link', 'reconnecting…', 'warn'));
events.addEventListener('device', (e) => drawDevice(JSON.parse(e.data)));
events.addEventListener('live', (e) => showLive(JSON.parse(e.data)));
events.addEventListener('capacitance', (e) => addSamples(JSON.parse(e.data).samples));
