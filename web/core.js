// Diffuse playground: the shared helpers (the native API's fetch, DOM building,
// formatting) and the page's state.
// The playground's scripts are classic scripts loaded in order by index.html
// (core.js, editor.js, gallery.js, adapters.js, devices.js, controlnet.js, live.js, app.js) and share
// one global scope: each top-level name is declared once across them (core.js
// holds the helpers and the page state; app.js wires the page on DOMContentLoaded).
'use strict';

const $ = (id) => document.getElementById(id);
const kHistoryPage = 12;
const kChartSeconds = 60;
const kMaxGallery = 48;
const kTitle = document.title;

// Size presets per family (ECOSYSTEM.md §6.8: 512 for SD1, 768 for SD2-v, Fooocus' SDXL list).
const kPresets = {
  sd1: [[512, 512], [512, 768], [768, 512], [640, 512], [512, 640], [768, 768]],
  sd2_512: [[512, 512], [512, 768], [768, 512], [768, 768]],
  sd2_768: [[768, 768], [768, 1024], [1024, 768], [640, 960], [960, 640], [512, 512]],
  sdxl: [[1024, 1024], [1152, 896], [896, 1152], [1216, 832], [832, 1216], [1344, 768], [768, 1344],
         [1536, 640], [640, 1536]],
};


const state = {
  models: [],
  samplerAlias: {},    // any spelling (lower case) -> {name, schedule}: from GET /api/samplers
  schedules: [],       // the catalogue's schedules
  lastSeed: null,
  jobs: new Map(),     // id -> {id, request, es, state, finalized}
  activeId: null,      // the job the progress bar follows
  historyOffset: 0,
  historyTotal: 0,
  samples: [],         // device chart: [{a, b}] percentages
  chartLabels: ['', ''],
};

// ---------- helpers ----------
async function api(path, options = {}) {
  const init = Object.assign({ headers: {} }, options);
  if (init.body && typeof init.body !== 'string') {
    init.body = JSON.stringify(init.body);
    init.headers['Content-Type'] = 'application/json';
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (!res.ok) {
    const detail = data && (data.detail || data.error) ? (data.detail || data.error) : res.statusText;
    throw new Error(`${res.status}: ${detail}`);
  }
  return data;
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function fmtBytes(n) {
  if (!n && n !== 0) return '?';
  const gib = n / (1024 ** 3);
  if (gib >= 1) return `${gib.toFixed(gib >= 100 ? 0 : 1)} GiB`;
  return `${(n / (1024 ** 2)).toFixed(0)} MiB`;
}

function fmtSeconds(s) {
  if (!isFinite(s) || s <= 0) return '0s';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  const m = Math.floor(s / 60);
  return `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
}

function fmtDate(unix) {
  const d = new Date(unix * 1000);
  return isNaN(d) ? '' : d.toLocaleString();
}

function currentModel() {
  return state.models.find((m) => m.id === $('model').value) || null;
}

function showFormError(msg) { $('form-error').textContent = msg || ''; }

function flash(msg) {
  const t = $('topbar-status');
  t.textContent = msg;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { t.textContent = ''; }, 3000);
}
