// Diffuse playground: a plain-JS client of the native API (src/server/api_native.cpp),
// for text-to-image and for editing an image (img2img, inpainting, outpainting).
// One SSE stream per running job we submitted (browsers allow ~6 connections per
// host, so queued jobs are followed through the 1 s /api/jobs poll instead).
// The playground's scripts are classic scripts loaded in order by index.html
// (core.js, editor.js, gallery.js, adapters.js, devices.js, live.js, app.js) and share
// one global scope: each top-level name is declared once across them (core.js
// holds the helpers and the page state; app.js wires the page on DOMContentLoaded).
'use strict';

// ---------- samplers ----------
// The sampler and schedule lists come from the server's catalogue (GET /api/samplers,
// src/sampling/sampler_catalog.h), as does the map from other spellings (A1111 names of
// history entries made through /sdapi, ComfyUI names, "DPM++ 2M Karras") to ours.
async function loadSamplers() {
  let cat;
  try {
    cat = await api('/api/samplers');
  } catch (e) {
    showFormError(`Cannot list samplers: ${e.message}`);
    return;
  }
  const sel = $('sampler');
  sel.replaceChildren(el('option', { value: '', text: 'Model default' }));
  state.samplerAlias = {};
  const karrasName = (cat.schedules.find((x) => x.name === 'karras') || {}).name;
  for (const s of cat.samplers) {
    sel.append(el('option', { value: s.name, text: s.label, title: s.summary }));
    const spellings = [s.name, s.label, s.a1111_name, s.comfyui, s.diffusers_class, ...s.a1111_aliases, ...s.aliases];
    for (const sp of spellings) {
      if (sp) state.samplerAlias[sp.toLowerCase()] = { name: s.name };
    }
    // A1111 before 1.9 put the schedule in the sampler's name.
    if (karrasName && s.schedules.includes(karrasName)) {
      state.samplerAlias[`${s.a1111_name} karras`.toLowerCase()] = { name: s.name, schedule: karrasName };
    }
  }
  state.schedules = cat.schedules;
  const sched = $('schedule');
  sched.replaceChildren(...cat.schedules.map((x) => el('option', { value: x.name, text: x.label })));
}

// Our schedule name from ours, A1111's name or its infotext label ("Karras"); the first (default) otherwise.
function scheduleName(v) {
  const s = String(v || '').toLowerCase();
  const hit = state.schedules.find((x) => [x.name, x.label, x.a1111_name, x.a1111_label]
    .some((n) => n && n.toLowerCase() === s));
  return hit ? hit.name : (state.schedules[0] ? state.schedules[0].name : 'default');
}

// The hires fix's upscalers, A1111's list (GET /sdapi/v1/upscalers): None, Lanczos, Nearest, ESRGAN models, latent modes.
async function loadUpscalers() {
  let list;
  try { list = await api('/sdapi/v1/upscalers'); } catch (_) { return; }
  const sel = $('hires-upscaler');
  const keep = sel.value;
  sel.replaceChildren();
  for (const u of list) sel.append(el('option', { value: u.name, text: u.name }));
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : 'Latent';
}

// The VAE picker: A1111's list of the server's VAE folders (GET /sdapi/v1/sd-vae); "" is Automatic.
async function loadVaes() {
  let list;
  try { list = await api('/sdapi/v1/sd-vae'); } catch (_) { return; }
  const sel = $('vae');
  const keep = sel.value || localStorage.getItem('diffuse.vae') || '';
  sel.replaceChildren(el('option', { value: '', text: 'Automatic' }), el('option', { value: 'None', text: 'None (the model\'s own)' }));
  for (const v of list) sel.append(el('option', { value: v.model_name, text: v.model_name }));
  sel.value = [...sel.options].some((o) => o.value === keep) ? keep : '';
}

// ---------- models ----------
async function loadModels() {
  try {
    state.models = await api('/api/models');
  } catch (e) {
    showFormError(`Cannot list models: ${e.message}`);
    return;
  }
  const sel = $('model');
  sel.replaceChildren();
  if (!state.models.length) {
    sel.append(el('option', { value: '', text: 'No models: start with --models DIR' }));
    $('generate').disabled = true;
  }
  for (const m of state.models) sel.append(el('option', { value: m.id, text: modelLabel(m) }));
  // The SDXL refiner picker: any model of the list (docs/refiner.md), none by default.
  const ref = $('refiner');
  ref.replaceChildren(el('option', { value: '', text: 'None' }));
  for (const m of state.models) ref.append(el('option', { value: m.id, text: m.name || m.id }));
  const saved = localStorage.getItem('diffuse.model');
  if (saved && state.models.some((m) => m.id === saved)) sel.value = saved;
  onModelChange(true);
}

// Family, hash, licence and defaults are known only once a model has been loaded:
// refresh the picker's labels after each run without touching the form.
async function refreshModels() {
  let list;
  try { list = await api('/api/models'); } catch (_) { return; }
  const before = currentModel();
  state.models = list;
  for (const o of $('model').options) {
    const m = list.find((x) => x.id === o.value);
    if (m) o.textContent = modelLabel(m);
  }
  const m = currentModel();
  renderModelInfo(m);
  if (m && (!before || before.family !== m.family)) buildPresets(m);
}

function modelLabel(m) {
  const hash = m.hash ? ` [${m.hash}]` : '';
  const fam = m.family ? ` · ${m.family.toUpperCase()}` : '';
  return `${m.name || m.id}${hash}${fam}`;
}

function familyPresets(m) {
  if (!m) return kPresets.sd1;
  if (m.family === 'sdxl') return kPresets.sdxl;
  if (m.family === 'sd2') return (m.defaults && m.defaults.width >= 768) ? kPresets.sd2_768 : kPresets.sd2_512;
  return kPresets.sd1;
}

// The family's list when the model's native size is in it; else (the built-in
// demo model draws at 128 x 128) sizes around its own: native first, then
// 3:2 and 2:3 of the same width, then twice the size.
function presetsFor(m) {
  const list = familyPresets(m);
  const d = (m && m.defaults) || {};
  if (!d.width || !d.height || list.some(([w, h]) => w === d.width && h === d.height)) return list;
  const r8 = (v) => Math.round(v / 8) * 8;
  return [[d.width, d.height], [d.width, r8(d.height * 1.5)], [r8(d.width * 1.5), d.height],
          [d.width * 2, d.height * 2]];
}

// A note under the size when it is not the model's native one.
function updateSizeNote() {
  const m = currentModel();
  const d = (m && m.defaults) || {};
  const w = Number($('width').value), h = Number($('height').value);
  const note = $('size-note');
  const off = d.width && d.height && (w !== d.width || h !== d.height);
  note.hidden = !off;
  note.textContent = off
    ? `This model was trained at ${d.width} × ${d.height}; other sizes take longer and may draw worse (repeated or broken shapes).`
    : '';
}

// The model's example prompts as chips: a click puts one in the prompt box.
function renderExamples(m) {
  const box = $('examples');
  box.replaceChildren();
  const list = (m && m.example_prompts) || [];
  $('prompt').placeholder = list.length ? `e.g. ${list[0]}` : 'Describe the image';
  if (!list.length) { box.hidden = true; return; }
  box.hidden = false;
  box.append(el('span', { class: 'muted small-text', text: 'Try: ' }));
  for (const text of list) {
    box.append(el('button', { type: 'button', class: 'chip example', 'data-testid': 'example-prompt', title: 'Use this prompt', text,
                              onclick: () => { $('prompt').value = text; onPromptEdited(); saveForm(); $('prompt').focus(); } }));
  }
}

function renderModelInfo(m) {
  const box = $('model-info');
  box.replaceChildren();
  if (!m) return;
  const chips = el('div', { class: 'chips' },
    el('span', { class: 'chip family', text: m.family ? m.family.toUpperCase() : 'unknown family' }),
    m.hash ? el('span', { class: 'chip mono', title: 'Short hash (A1111 "Model hash")', text: m.hash }) : null,
    m.size_bytes ? el('span', { class: 'chip', text: fmtBytes(m.size_bytes) }) : null,
    m.loaded ? el('span', { class: 'chip ok', text: 'loaded' }) : null);
  const lic = el('div', { class: 'license' },
    el('span', { class: 'muted', text: 'Licence: ' }),
    el('span', { 'data-testid': 'model-license', text: m.license || 'unknown (check the model card)' }));
  let card;
  if (m.model_card) {
    card = el('a', { href: m.model_card, target: '_blank', rel: 'noopener noreferrer', class: 'card-link',
                     'data-testid': 'model-card', text: 'Model card ↗' });
  } else if (m.readme) {
    // The folder's own README.md, shown in place (as text) when opened.
    const pre = el('pre', { class: 'model-readme', 'data-testid': 'model-readme' });
    card = el('details', { class: 'model-card', 'data-testid': 'model-card' }, el('summary', { text: 'Model card' }), pre);
    card.addEventListener('toggle', async () => {
      if (!card.open || pre.textContent) return;
      try {
        const res = await fetch(m.readme);
        pre.textContent = res.ok ? await res.text() : `Could not load the model card (${res.status}).`;
      } catch (e) {
        pre.textContent = `Could not load the model card: ${e.message}`;
      }
    });
  } else {
    card = el('span', { class: 'muted', text: 'No model card' });
  }
  box.append(chips, lic, el('div', {}, card, m.source ? el('span', { class: 'muted', text: ` · ${m.source}` }) : null));
  renderExamples(m);
}

function onModelChange(initial) {
  const m = currentModel();
  renderModelInfo(m);
  if (!m) return;
  localStorage.setItem('diffuse.model', m.id);
  const d = m.defaults || {};
  // Keep the user's values on first load only when they restored a form; otherwise use the model's defaults.
  if (!initial || !restoreForm()) {
    if (d.steps) $('steps').value = d.steps;
    if (d.cfg_scale !== undefined) $('cfg').value = d.cfg_scale;
    setSampler(d.sampler || '');
    if (d.width) $('width').value = d.width;
    if (d.height) $('height').value = d.height;
  }
  buildPresets(m);
}

function setSampler(name) {
  let key = String(name || '').toLowerCase();
  if (!state.samplerAlias[key] && key.startsWith('k_')) key = key.slice(2);  // k-diffusion style names
  const hit = state.samplerAlias[key];
  const s = hit ? hit.name : (name || '');
  const sel = $('sampler');
  sel.value = [...sel.options].some((o) => o.value === s) ? s : '';
  if (hit && hit.schedule) $('schedule').value = hit.schedule;
}

function buildPresets(m) {
  const sel = $('size-preset');
  sel.replaceChildren();
  for (const [w, h] of presetsFor(m)) {
    const r = w === h ? '1:1' : (w > h ? 'landscape' : 'portrait');
    sel.append(el('option', { value: `${w}x${h}`, text: `${w} × ${h} (${r})` }));
  }
  sel.append(el('option', { value: 'custom', text: 'Custom' }));
  syncPreset();
}

function syncPreset() {
  const key = `${$('width').value}x${$('height').value}`;
  const sel = $('size-preset');
  sel.value = [...sel.options].some((o) => o.value === key) ? key : 'custom';
  updateSizeNote();
}

// ---------- form ----------
function readForm() {
  const num = (id) => Number($(id).value);
  const req = {
    model: $('model').value,
    prompt: $('prompt').value,
    negative_prompt: $('negative').value,
    images: num('images'),
    seed: $('seed').value === '' ? -1 : num('seed'),
    steps: num('steps'),
    cfg_scale: num('cfg'),
    sampler: $('sampler').value,
    schedule: $('schedule').value,
    width: num('width'),
    height: num('height'),
    vae_tiling: $('vae-tiling').value,
    clip_skip: num('clip-skip'),
  };
  if ($('vae').value) req.vae = $('vae').value;
  if ($('refiner').value) req.refiner = { model: $('refiner').value, switch_at: Number($('refiner-switch').value) };
  if ($('hires-enable').checked) {
    req.hires = { scale: Number($('hires-scale').value), upscaler: $('hires-upscaler').value,
      steps: Number($('hires-steps').value), denoise: Number($('hires-denoise').value) };
    if (!(req.hires.scale > 1)) throw new Error('Hires: upscale by must be above 1.');
    if (!Number.isInteger(req.hires.steps) || req.hires.steps < 0) throw new Error('Hires steps must be a whole number ≥ 0.');
    if (!(req.hires.denoise > 0 && req.hires.denoise <= 1)) throw new Error('Hires denoising must be above 0 and at most 1.');
  }
  if (!req.model) throw new Error('Pick a model first.');
  if (!Number.isInteger(req.images) || req.images < 1 || req.images > 8) throw new Error('Images must be 1 to 8.');
  if (!Number.isInteger(req.seed) || req.seed < -1) throw new Error('Seed must be -1 (random) or a whole number ≥ 0.');
  if (!Number.isInteger(req.steps) || req.steps < 1) throw new Error('Steps must be a whole number ≥ 1.');
  if (!isFinite(req.cfg_scale) || req.cfg_scale < 0) throw new Error('CFG scale must be ≥ 0.');
  if (!Number.isInteger(req.clip_skip) || req.clip_skip < 1 || req.clip_skip > 12) throw new Error('Clip skip must be a whole number from 1 to 12.');
  for (const k of ['width', 'height']) {
    const v = req[k];
    if (!Number.isInteger(v) || v < 64 || v % 8 !== 0) throw new Error(`${k[0].toUpperCase() + k.slice(1)} must be a multiple of 8, at least 64.`);
  }
  return req;
}

function saveForm() {
  try {
    const f = readForm();
    localStorage.setItem('diffuse.form', JSON.stringify(f));
  } catch (_) { /* an invalid form is not worth keeping */ }
}

// Restores the last form of this model (survives reloads). Returns true when something was restored.
function restoreForm() {
  let f = null;
  try { f = JSON.parse(localStorage.getItem('diffuse.form') || 'null'); } catch (_) { f = null; }
  if (!f || f.model !== $('model').value) return false;
  applyParams(f, null, false);
  return true;
}

// Parses A1111 infotext ("prompt\nNegative prompt: ...\nSteps: 20, Sampler: Euler a, ...").
function parseInfotext(text) {
  const out = {};
  if (!text) return out;
  const lines = text.split('\n');
  let last = lines.length - 1;
  while (last > 0 && !/^Steps: /.test(lines[last])) last--;
  const body = lines.slice(0, last);
  const negIdx = body.findIndex((l) => l.startsWith('Negative prompt: '));
  if (negIdx >= 0) {
    out.prompt = body.slice(0, negIdx).join('\n');
    out.negative_prompt = body.slice(negIdx).join('\n').slice('Negative prompt: '.length);
  } else {
    out.prompt = body.join('\n');
  }
  const re = /\s*([^:,]+):\s*("(?:\\.|[^"])*"|[^,]*)(?:,|$)/g;
  let m;
  while ((m = re.exec(lines[last] || '')) !== null) {
    if (!m[0]) break;
    const k = m[1].trim(), v = m[2].trim();
    if (k === 'Steps') out.steps = Number(v);
    else if (k === 'Sampler') out.sampler = v;
    else if (k === 'Schedule type') out.schedule = scheduleName(v);
    else if (k === 'CFG scale') out.cfg_scale = Number(v);
    else if (k === 'Seed') out.seed = Number(v);
    else if (k === 'Size') { const [w, h] = v.split('x').map(Number); out.width = w; out.height = h; }
    else if (k === 'Clip skip') out.clip_skip = Number(v);
  }
  if (lines[last] && /^Steps: /.test(lines[last]) && out.clip_skip === undefined) out.clip_skip = 1;  // A1111 omits 1
  return out;
}

// Fills the form from a request echo (history params) and/or an image; `seed` wins over params.seed.
function applyParams(params, image, announce = true) {
  const p = Object.assign({}, image ? parseInfotext(image.parameters) : {}, params || {});
  if (p.sampler_name && !p.sampler) p.sampler = p.sampler_name;
  if (p.model && state.models.some((m) => m.id === p.model) && $('model').value !== p.model) {
    $('model').value = p.model;
    renderModelInfo(currentModel());
    buildPresets(currentModel());
  }
  if (typeof p.prompt === 'string') $('prompt').value = p.prompt;
  if (typeof p.negative_prompt === 'string') $('negative').value = p.negative_prompt;
  if (p.images) $('images').value = p.images;
  else if (p.batch_size) $('images').value = Math.min(8, p.batch_size * (p.n_iter || 1));
  if (p.steps) $('steps').value = p.steps;
  if (p.cfg_scale !== undefined && p.cfg_scale !== null) $('cfg').value = p.cfg_scale;
  if (p.sampler !== undefined) setSampler(p.sampler);
  if (p.schedule) $('schedule').value = scheduleName(p.schedule);
  if (p.width) $('width').value = p.width;
  if (p.height) $('height').value = p.height;
  if (['auto', 'on', 'off'].includes(p.vae_tiling)) $('vae-tiling').value = p.vae_tiling;
  const clipSkip = Number(p.clip_skip ?? p['Clip skip'] ?? p.CLIP_stop_at_last_layers);
  if (Number.isInteger(clipSkip) && clipSkip >= 1 && clipSkip <= 12) $('clip-skip').value = clipSkip;
  $('vae').value = typeof p.vae === 'string' && [...$('vae').options].some((o) => o.value === p.vae) ? p.vae : '';
  const refiner = p.refiner && typeof p.refiner === 'object' ? p.refiner : null;
  $('refiner').value = refiner && [...$('refiner').options].some((o) => o.value === refiner.model) ? refiner.model : '';
  if (refiner && isFinite(refiner.switch_at)) $('refiner-switch').value = refiner.switch_at;
  $('refiner-switch-value').textContent = $('refiner-switch').value;
  const hires = p.hires && typeof p.hires === 'object' ? p.hires : null;
  $('hires-enable').checked = !!hires;
  if (hires) {
    if ([...$('hires-upscaler').options].some((o) => o.value === hires.upscaler)) $('hires-upscaler').value = hires.upscaler;
    if (isFinite(hires.scale)) $('hires-scale').value = hires.scale;
    if (Number.isInteger(hires.steps)) $('hires-steps').value = hires.steps;
    if (isFinite(hires.denoise)) $('hires-denoise').value = hires.denoise;
    $('hires-panel').open = true;
  }
  if (typeof p.strength === 'number') $('strength').value = p.strength;
  if (typeof p.mask_blur === 'number') $('mask-blur').value = p.mask_blur;
  if (image && image.seed !== undefined) $('seed').value = image.seed;
  else if (p.seed !== undefined && p.seed !== null) $('seed').value = p.seed;
  syncPreset();
  updateEditUi();
  onPromptEdited();
  if (announce) {
    saveForm();
    $('prompt').focus();
    flash('Parameters loaded into the form.');
  }
}

// ---------- jobs ----------
async function generate() {
  showFormError('');
  let req, edits, cnUnits;
  try {
    req = readForm();
    edits = editFields();
    cnUnits = controlnetArgs();  // the ControlNet panel's unit (controlnet.js), or null
  } catch (e) {
    showFormError(e.message);
    return;
  }
  saveForm();
  const body = Object.assign({}, req, edits || {});
  if (cnUnits) body.alwayson_scripts = { controlnet: { args: cnUnits } };
  // Outpainting works at the grown canvas's size (0 = the server's choice).
  if (edits && edits.outpaint) body.width = body.height = 0;
  const btn = $('generate');
  btn.disabled = true;
  try {
    const r = await api('/api/jobs', { method: 'POST', body });
    state.lastSeed = r.seed;
    // What the gallery's "Reuse" gets: the form and the edit settings, not the images.
    const kept = Object.assign({}, body, { seed: r.seed });
    delete kept.init_image;
    delete kept.mask;
    delete kept.alwayson_scripts;
    const job = { id: r.id, request: kept, es: null, state: 'queued',
                  finalized: false, lastStep: 0, totalSteps: req.steps };
    state.jobs.set(r.id, job);
    if (!state.activeId || !isLive(state.jobs.get(state.activeId))) {
      state.activeId = r.id;
      clearPreview();
    }
    setProgress(job, r.position > 1 ? `Queued (position ${r.position})` : 'Starting…', 0);
    // One column (phones): the output is below the form; show it.
    if (window.matchMedia('(max-width: 760px)').matches) $('output-title').scrollIntoView({ block: 'start' });
    follow(job);
    refreshQueue();
  } catch (e) {
    showFormError(`Could not start: ${e.message}`);
  } finally {
    btn.disabled = false;
  }
}

function clearPreview() {
  $('preview').hidden = true;
  $('preview').removeAttribute('src');
  delete $('preview').dataset.final;
  $('preview-empty').hidden = false;
}

// After the run the final image replaces the live preview (the first of a batch).
function showFinal(job, img) {
  if (!img || state.activeId !== job.id) return;
  const p = $('preview');
  p.src = img.url;
  p.dataset.final = img.file || img.url;
  p.dataset.step = '';
  p.alt = `Result, seed ${img.seed}`;
  p.hidden = false;
  $('preview-empty').hidden = true;
}

function isLive(job) { return job && !job.finalized; }

function openStreams() { return [...state.jobs.values()].filter((j) => j.es).length; }

// Opens the SSE stream of a job (at most 2 at a time; the poll opens the rest when they run).
function follow(job) {
  if (job.es || job.finalized || openStreams() >= 2) return;
  const es = new EventSource(`/api/jobs/${job.id}/events`);
  job.es = es;
  es.addEventListener('open', () => setConnected(true));
  es.addEventListener('state', (ev) => {
    setConnected(true);
    const s = JSON.parse(ev.data);
    job.state = s.state;
    if (s.state === 'queued' && state.activeId === job.id) {
      setProgress(job, s.label || `Queued (position ${s.position})`, 0);
    } else if (s.state === 'running' && state.activeId === job.id && s.phase !== 'denoising' && s.label) {
      // Named phases (loading, encoding, decoding, saving): never "Step 0/0".
      setProgress(job, `${s.label}…`, s.total_steps ? (100 * s.step) / s.total_steps : 0);
    }
    updateStopButton();
  });
  es.addEventListener('progress', (ev) => {
    const p = JSON.parse(ev.data);
    job.state = 'running';
    job.lastStep = p.step;
    job.totalSteps = p.total_steps;
    if (state.activeId !== job.id) clearPreview();
    state.activeId = job.id;
    const pct = p.total_steps ? (100 * p.step) / p.total_steps : 0;
    const ips = p.it_per_s >= 1 || p.it_per_s === 0 ? `${p.it_per_s.toFixed(2)} it/s` : `${(1 / p.it_per_s).toFixed(2)} s/it`;
    if (p.phase && p.phase !== 'denoising') setProgress(job, `${p.label}…`, pct);
    else setProgress(job, `${p.label || `Denoising step ${p.step}/${p.total_steps}`} · ${ips} · ETA ${fmtSeconds(p.eta_s)}`, pct);
    updateStopButton();
  });
  es.addEventListener('preview', (ev) => {
    const p = JSON.parse(ev.data);
    if (state.activeId !== job.id || job.finalized) return;
    const img = $('preview');
    delete img.dataset.final;
    img.alt = 'Live preview of the running generation';
    img.src = p.image;
    img.dataset.step = p.step;
    img.hidden = false;
    $('preview-empty').hidden = true;
  });
  es.addEventListener('done', (ev) => finalize(job, JSON.parse(ev.data)));
  es.addEventListener('error', (ev) => {
    // Both our `error` event (failed/cancelled, with data) and transport errors (no data) land here.
    if (ev.data) {
      const e = JSON.parse(ev.data);
      finalize(job, { id: job.id, state: e.state, error: e.error, images: [] });
    } else if (es.readyState === EventSource.CONNECTING) {
      setConnected(false);  // the browser retries by itself; the notice goes once it is back
    } else if (es.readyState === EventSource.CLOSED) {
      closeStream(job);
      pollJob(job);
    }
  });
}

function closeStream(job) {
  if (job.es) { job.es.close(); job.es = null; }
}

async function pollJob(job) {
  try {
    const s = await api(`/api/jobs/${job.id}`);
    if (['done', 'failed', 'cancelled'].includes(s.state)) finalize(job, s);
  } catch (e) {
    // 404: the server no longer knows the job (restarted); anything else: the next poll retries.
    if (/^404:/.test(e.message)) finalize(job, { id: job.id, state: 'failed', error: 'the server lost this job (restarted?)' });
  }
}

function finalize(job, snap) {
  if (job.finalized) return;
  job.finalized = true;
  job.state = snap.state;
  closeStream(job);
  if (snap.state === 'done') {
    const n = (snap.images || []).length;
    const t = snap.elapsed_s ? ` in ${fmtSeconds(snap.elapsed_s)}` : '';
    // What the server adapted (an edit's size rounded to multiples of 8, a resized mask, ...).
    const warnings = (snap.warnings || []).length ? ` · note: ${snap.warnings.join('; ')}` : '';
    const stopped = snap.stopped_at_step > 0
      ? `Stopped at step ${snap.stopped_at_step}/${job.totalSteps}: partial image${n === 1 ? '' : 's'} kept`
      : `Done: ${n} image${n === 1 ? '' : 's'}${t}`;
    setProgress(job, `${stopped} · seed ${snap.seed}${warnings}`, 100, 'done');
    job.ordinal = state.historyTotal + 1;  // A1111-style download names (00012-<seed>.png)
    addToGallery(job, snap.images || []);
    showFinal(job, (snap.images || [])[0]);
    if (state.historyOffset === 0) loadHistory(0);
    refreshModels();
  } else if (snap.state === 'cancelled') {
    // A queued job cancelled while another runs must not take over the progress bar.
    const other = state.jobs.get(state.activeId);
    if (state.activeId !== job.id && isLive(other) && other.state === 'running') flash('Queued job cancelled.');
    else setProgress(job, `Cancelled at step ${job.lastStep}/${job.totalSteps}`, progressPct(job), 'cancelled');
  } else {
    setProgress(job, `Failed: ${snap.error || 'unknown error'}`, 0, 'failed');
  }
  // Follow the next job of ours, if one waits.
  for (const j of state.jobs.values()) {
    if (!j.finalized) { follow(j); break; }
  }
  updateStopButton();
  refreshQueue();
}

function progressPct(job) { return job.totalSteps ? (100 * job.lastStep) / job.totalSteps : 0; }

function setProgress(job, text, pct, kind) {
  if (job && state.activeId && state.activeId !== job.id && !kind) return;
  if (job) state.activeId = job.id;
  const bar = $('progress');
  $('progress-text').textContent = text;
  $('progress-fill').style.width = `${Math.max(0, Math.min(100, pct))}%`;
  bar.setAttribute('aria-valuenow', String(Math.round(pct)));
  bar.dataset.state = kind || 'running';
  $('progress-text').dataset.state = kind || (job ? job.state : 'idle');
  // The tab title shows the progress (another tab stays informed).
  const live = !kind && job && !job.finalized;
  document.title = live ? `[${Math.round(pct)}%] ${text} · Diffuse` : (kind === 'done' ? `Done · Diffuse playground` : kTitle);
}

// "Disconnected, retrying" while the server cannot be reached (an SSE stream
// or the 1 s queue poll failed); cleared by the next answer.
function setConnected(ok) {
  const box = $('conn-notice');
  if (ok) {
    if (!box.hidden) flash('Connection restored.');
    box.hidden = true;
    return;
  }
  if (!box.hidden) return;
  box.textContent = 'Disconnected from the server, retrying…';
  box.hidden = false;
}

function runningJobId() {
  for (const j of state.jobs.values()) if (!j.finalized && j.state === 'running') return j.id;
  return state.serverRunning || null;
}

function updateStopButton() { $('stop').disabled = !runningJobId(); }

// Stop (the button, Esc): the running job ends after its current step and
// keeps that step's image, as A1111's Interrupt; Cancel in the queue keeps nothing.
async function stopRunning() {
  const id = runningJobId();
  if (!id) return;
  try {
    await api('/sdapi/v1/interrupt', { method: 'POST' });
    const j = state.jobs.get(id);
    if (j && !j.finalized) setProgress(j, `Stopping after step ${j.lastStep}/${j.totalSteps}…`, progressPct(j));
  } catch (e) {
    flash(`Stop failed: ${e.message}`);
  }
}

async function cancelJob(id) {
  try {
    await api(`/api/jobs/${id}/cancel`, { method: 'POST' });
    const j = state.jobs.get(id);
    if (j && !j.finalized && j.state === 'running') setProgress(j, `Stopping at step ${j.lastStep}/${j.totalSteps}…`, progressPct(j));
    refreshQueue();
  } catch (e) {
    flash(`Cancel failed: ${e.message}`);
  }
}

// ---------- queue ----------
async function refreshQueue() {
  let jobs;
  try {
    jobs = await api('/api/jobs');
  } catch (e) {
    if (!/^\d{3}:/.test(e.message)) setConnected(false);  // no HTTP answer at all
    return;
  }
  setConnected(true);
  const live = jobs.filter((j) => j.state === 'queued' || j.state === 'running');
  state.serverRunning = (live.find((j) => j.state === 'running') || {}).id || null;
  const q = $('queue');
  q.replaceChildren();
  for (const j of live) {
    const label = j.state === 'running'
      ? `running · ${j.label || `step ${j.step}/${j.total_steps}`}`
      : `queued · position ${j.position}`;
    q.append(el('li', { class: `queue-item ${j.state}`, 'data-id': j.id, 'data-state': j.state },
      el('span', { class: 'queue-pos', text: j.state === 'running' ? '▶' : `#${j.position}` }),
      el('span', { class: 'queue-prompt', title: j.prompt, text: j.prompt || '(empty prompt)' }),
      el('span', { class: 'muted small-text', text: `${j.model} · ${label}` }),
      el('button', { type: 'button', class: 'small danger', 'data-action': 'cancel', text: 'Cancel',
                     'aria-label': `Cancel job ${j.id}`, onclick: () => cancelJob(j.id) })));
  }
  $('queue-empty').hidden = live.length > 0;
  // Our jobs: open streams for those now running; finalize those that ended while unfollowed.
  for (const job of state.jobs.values()) {
    if (job.finalized) continue;
    const s = jobs.find((j) => j.id === job.id);
    if (!s) { pollJob(job); continue; }
    if (s.state !== job.state && !job.es) job.state = s.state;
    if (['done', 'failed', 'cancelled'].includes(s.state) && !job.es) finalize(job, s);
    else if (s.state === 'running') follow(job);
  }
  updateStopButton();
}

// ---------- wiring ----------
function wire() {
  wireEditor();
  wireAdapters();
  $('gen-form').addEventListener('submit', (e) => { e.preventDefault(); generate(); });
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) { e.preventDefault(); generate(); }
    // Esc stops the running job (A1111's Interrupt), unless a dialog takes it.
    else if (e.key === 'Escape' && !$('lightbox').open && !e.defaultPrevented && runningJobId()) { e.preventDefault(); stopRunning(); }
  });
  for (const id of ['prompt', 'negative']) {
    $(id).addEventListener('keydown', (e) => {
      if ((e.ctrlKey || e.metaKey) && (e.key === 'ArrowUp' || e.key === 'ArrowDown')) {
        if (editAttention($(id), e.key === 'ArrowUp' ? 0.1 : -0.1)) e.preventDefault();
      }
    });
  }
  wireLightbox();
  $('stop').addEventListener('click', stopRunning);
  $('model').addEventListener('change', () => onModelChange(false));
  $('vae').addEventListener('change', () => localStorage.setItem('diffuse.vae', $('vae').value));
  $('seed-random').addEventListener('click', () => { $('seed').value = -1; saveForm(); });
  $('seed-reuse').addEventListener('click', () => {
    if (state.lastSeed === null) { flash('No seed yet: generate once first.'); return; }
    $('seed').value = state.lastSeed;
    saveForm();
  });
  $('size-preset').addEventListener('change', () => {
    const v = $('size-preset').value;
    if (v === 'custom') { $('width').focus(); return; }
    const [w, h] = v.split('x');
    $('width').value = w;
    $('height').value = h;
    updateSizeNote();
    saveForm();
  });
  $('refiner-switch').addEventListener('input', () => { $('refiner-switch-value').textContent = $('refiner-switch').value; });
  $('size-swap').addEventListener('click', () => {
    const w = $('width').value;
    $('width').value = $('height').value;
    $('height').value = w;
    syncPreset();
    saveForm();
  });
  for (const id of ['width', 'height']) {
    $(id).addEventListener('input', syncPreset);
    $(id).addEventListener('change', () => {
      const v = Math.round(Number($(id).value) / 8) * 8;  // latents are 1/8 of the image
      if (v >= 64) $(id).value = v;
      syncPreset();
    });
  }
  for (const id of ['prompt', 'negative', 'images', 'seed', 'steps', 'cfg', 'sampler', 'schedule', 'width', 'height',
    'hires-enable', 'hires-upscaler', 'hires-scale', 'hires-steps', 'hires-denoise', 'clip-skip']) {
    $(id).addEventListener('change', saveForm);
  }
  $('history-prev').addEventListener('click', () => loadHistory(Math.max(0, state.historyOffset - kHistoryPage)));
  $('history-next').addEventListener('click', () => loadHistory(state.historyOffset + kHistoryPage));
  window.addEventListener('resize', drawChart);
  wireLive();  // live.js; last: its model listener runs after onModelChange's defaults
}

async function main() {
  wire();
  await loadSamplers();  // before the models: their defaults and saved forms pick a sampler
  await loadUpscalers();  // before the saved form picks one
  await loadVaes();  // before a saved form picks one
  await loadModels();
  loadHistory(0);
  refreshQueue();
  refreshDevices();
  setInterval(refreshDevices, 1000);
  setInterval(refreshQueue, 1000);
}

document.addEventListener('DOMContentLoaded', main);
