// Diffuse playground: the Devices panel (telemetry and its 60 s chart).
// The playground's scripts are classic scripts loaded in order by index.html
// (core.js, editor.js, gallery.js, adapters.js, devices.js, live.js, app.js) and share
// one global scope: each top-level name is declared once across them (core.js
// holds the helpers and the page state; app.js wires the page on DOMContentLoaded).
'use strict';

// ---------- devices ----------
async function refreshDevices() {
  let d;
  try { d = await api('/api/devices'); } catch (_) { return; }
  const body = $('device-body');
  const rows = [];
  const meter = (label, pct, text, testid) => el('div', { class: 'meter-row', 'data-testid': testid },
    el('div', { class: 'meter-label' }, el('span', { text: label }), el('span', { class: 'mono', text })),
    el('div', { class: 'meter' }, el('div', { class: 'meter-fill', style: `width:${Math.max(0, Math.min(100, pct || 0))}%` })));
  const num = (v, unit, digits = 0) => (v === null || v === undefined || !isFinite(v)) ? '–' : `${Number(v).toFixed(digits)}${unit}`;
  let a = 0, b = 0;
  if (d.gpus && d.gpus.length) {
    for (const g of d.gpus) {
      const memPct = g.mem_total ? (100 * g.mem_used) / g.mem_total : 0;
      rows.push(el('div', { class: 'gpu' },
        el('div', { class: 'gpu-name', text: `GPU ${g.index}: ${g.name}` }),
        meter('Utilisation', g.gpu_util, num(g.gpu_util, '%'), 'gpu-util'),
        meter('Memory', memPct, `${fmtBytes(g.mem_used)} / ${fmtBytes(g.mem_total)}`, 'gpu-mem'),
        el('div', { class: 'stats' },
          el('span', { 'data-testid': 'gpu-temp', text: `Temp ${num(g.temperature_c, ' °C')}` }),
          el('span', { 'data-testid': 'gpu-power', text: `Power ${num(g.power_w, ' W')}${g.power_limit_w ? ` / ${num(g.power_limit_w, ' W')}` : ''}` }),
          g.sm_clock_mhz ? el('span', { text: `${g.sm_clock_mhz} MHz` }) : null)));
    }
    a = d.gpus[0].gpu_util || 0;
    b = d.gpus[0].mem_total ? (100 * d.gpus[0].mem_used) / d.gpus[0].mem_total : 0;
    state.chartLabels = ['GPU util', 'VRAM'];
  } else {
    // No GPU: what runs the model is the CPU, as /api/devices describes it. The
    // loader's own reason ("libnvidia-ml.so.1: cannot open ...") is only a tooltip.
    const cpu = (d.devices && d.devices.cpu) || {};
    const isa = (cpu.isa || []).filter((x) => !/^(sse|avx$)/.test(x)).join(' ');
    rows.push(el('div', { class: 'no-gpu', 'data-testid': 'no-gpu', title: d.gpu_status || '' },
      el('div', { class: 'gpu-name', 'data-testid': 'cpu-model', text: `CPU: ${cpu.model || 'unknown'}` }),
      el('div', { class: 'stats' },
        el('span', { 'data-testid': 'cpu-cores', text: `${cpu.cores || '?'} cores · ${cpu.threads || '?'} threads` }),
        isa ? el('span', { 'data-testid': 'cpu-isa', class: 'mono', text: isa }) : null,
        el('span', { text: 'No NVIDIA GPU' }))));
    state.chartLabels = ['CPU', 'RAM'];
  }
  const c = d.cpu || {};
  const ramPct = c.ram_total ? (100 * c.ram_used) / c.ram_total : 0;
  rows.push(el('div', { class: 'cpu' },
    meter('CPU', c.util, num(c.util, '%'), 'cpu-util'),
    meter('RAM', ramPct, `${fmtBytes(c.ram_used)} / ${fmtBytes(c.ram_total)}`, 'ram'),
    el('div', { class: 'stats' },
      el('span', { text: `Server RSS ${fmtBytes(c.process_rss)}` }),
      el('span', { text: `Queue ${d.queue ?? 0}` }))));
  if (!(d.gpus && d.gpus.length)) { a = c.util || 0; b = ramPct; }
  body.replaceChildren(...rows);
  state.samples.push({ a, b });
  while (state.samples.length > kChartSeconds) state.samples.shift();
  drawChart();
}

function drawChart() {
  const cv = $('device-chart');
  const dpr = window.devicePixelRatio || 1;
  const cssW = cv.clientWidth || 320, cssH = cv.clientHeight || 110;
  if (cv.width !== Math.round(cssW * dpr)) { cv.width = Math.round(cssW * dpr); cv.height = Math.round(cssH * dpr); }
  const ctx = cv.getContext('2d');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, cssW, cssH);
  const styles = getComputedStyle(document.documentElement);
  const grid = styles.getPropertyValue('--line').trim() || '#333';
  const colA = styles.getPropertyValue('--accent').trim() || '#7c6cff';
  const colB = styles.getPropertyValue('--accent-2').trim() || '#2fd0a0';
  ctx.strokeStyle = grid;
  ctx.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    const y = 4 + (cssH - 8) * f;
    ctx.beginPath(); ctx.moveTo(0, y); ctx.lineTo(cssW, y); ctx.stroke();
  }
  const plot = (key, color) => {
    const n = state.samples.length;
    if (n < 1) return;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    state.samples.forEach((s, i) => {
      const x = cssW - (n - 1 - i) * (cssW / (kChartSeconds - 1));
      const y = 4 + (cssH - 8) * (1 - Math.max(0, Math.min(100, s[key])) / 100);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  };
  plot('b', colB);
  plot('a', colA);
  const last = state.samples[state.samples.length - 1] || { a: 0, b: 0 };
  $('chart-legend').replaceChildren(
    el('span', { class: 'legend a', text: `${state.chartLabels[0]} ${last.a.toFixed(0)}%` }),
    el('span', { class: 'legend b', text: `${state.chartLabels[1]} ${last.b.toFixed(0)}%` }),
    el('span', { class: 'muted', text: 'last 60 s' }));
}
