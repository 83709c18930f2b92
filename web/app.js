// Diffuse playground: a plain-JS client of the native API (src/server/api_native.cpp),
// for text-to-image and for editing an image (img2img, inpainting, outpainting).
// One SSE stream per running job we submitted (browsers allow ~6 connections per
// host, so queued jobs are followed through the 1 s /api/jobs poll instead).
'use strict';

(() => {
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

  function flash(msg) {
    const t = $('topbar-status');
    t.textContent = msg;
    clearTimeout(flash.timer);
    flash.timer = setTimeout(() => { t.textContent = ''; }, 3000);
  }

  // ---------- image editing (img2img / inpaint / outpaint) ----------
  // The init image is drawn at its own resolution into #init-canvas; the mask
  // is #mask-canvas at the same resolution, painted in one colour whose alpha
  // says how much a pixel is repainted, and shown over the image as a
  // semi-transparent overlay. Both are displayed scaled to the panel. When an
  // image is loaded, Generate sends it (and the mask in inpaint mode) with the
  // job: init_image, mask, strength, ... of POST /api/jobs.
  const kMaxUploadSide = 4096;        // the server's pixel limit (ServerOptions::max_upload_side)
  const kMaskRgb = [255, 59, 92];
  const kStageMaxHeight = 360;
  const edit = { loaded: false, width: 0, height: 0, tool: 'brush', painting: false, last: null };

  function editMode() { return $('edit-mode').value; }

  async function loadInitBlob(blob, origin) {
    if (!blob) return;
    if (blob.type && !blob.type.startsWith('image/')) {
      showFormError(`${blob.name || 'That file'} is not an image.`);
      return;
    }
    let bmp;
    try {
      // Pixel values as stored (no colour conversion), so unmasked pixels come back unchanged.
      bmp = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    } catch (_) {
      showFormError(`Cannot read ${blob.name || 'that image'}: not a picture the browser can decode.`);
      return;
    }
    if (bmp.width > kMaxUploadSide || bmp.height > kMaxUploadSide) {
      showFormError(`The image is ${bmp.width}×${bmp.height}; the limit is ${kMaxUploadSide}×${kMaxUploadSide}.`);
      return;
    }
    showFormError('');
    const c = $('init-canvas');
    c.width = bmp.width;
    c.height = bmp.height;
    c.getContext('2d').drawImage(bmp, 0, 0);
    const m = $('mask-canvas');
    m.width = bmp.width;   // resizing clears the mask
    m.height = bmp.height;
    edit.loaded = true;
    edit.width = bmp.width;
    edit.height = bmp.height;
    $('edit-stage').hidden = false;
    $('init-empty').hidden = true;
    $('edit-panel').open = true;
    fitStage();
    useImageSize();
    updateEditUi();
    flash(`Image ${bmp.width}×${bmp.height} loaded${origin ? ` from ${origin}` : ''}.`);
  }

  function clearInitImage() {
    edit.loaded = false;
    $('init-file').value = '';
    $('edit-stage').hidden = true;
    $('init-empty').hidden = false;
    updateEditUi();
  }

  // Width and height from the image (multiples of 8, as the latents need).
  function useImageSize() {
    if (!edit.loaded) return;
    const round8 = (v) => Math.min(kMaxUploadSide, Math.max(64, Math.round(v / 8) * 8));
    $('width').value = round8(edit.width);
    $('height').value = round8(edit.height);
    syncPreset();
    saveForm();
  }

  // Shows both canvases at the panel's width (or kStageMaxHeight), keeping the aspect ratio.
  function fitStage() {
    if (!edit.loaded) return;
    const maxW = Math.max(120, $('init-drop').clientWidth - 22);
    const scale = Math.min(maxW / edit.width, kStageMaxHeight / edit.height);
    const w = `${Math.round(edit.width * scale)}px`, h = `${Math.round(edit.height * scale)}px`;
    for (const id of ['init-canvas', 'mask-canvas']) {
      $(id).style.width = w;
      $(id).style.height = h;
    }
  }

  function updateEditUi() {
    const inpaint = editMode() === 'inpaint';
    $('mask-tools').hidden = !inpaint;
    $('edit-stage').classList.toggle('img2img', !inpaint);
    $('strength-value').textContent = Number($('strength').value).toFixed(2);
    $('brush-size-value').textContent = $('brush-size').value;
    $('mask-opacity-value').textContent = $('mask-opacity').value;
    $('mask-canvas').style.opacity = String(Number($('mask-opacity').value) / 100);
    const chip = $('edit-chip');
    chip.hidden = !edit.loaded;
    chip.textContent = edit.loaded ? `${inpaint ? 'inpaint' : 'img2img'} · ${Number($('strength').value).toFixed(2)}` : '';
    for (const t of ['brush', 'eraser']) $(`tool-${t}`).setAttribute('aria-pressed', String(edit.tool === t));
  }

  // A pointer event -> mask pixel coordinates, and mask pixels per CSS pixel.
  function maskPoint(ev) {
    const c = $('mask-canvas');
    const r = c.getBoundingClientRect();
    const scale = c.width / r.width;
    return { x: (ev.clientX - r.left) * scale, y: (ev.clientY - r.top) * scale, scale };
  }

  // One brush (or eraser) segment from the last point to `p`; the brush size is in screen pixels.
  function paintTo(p) {
    const ctx = $('mask-canvas').getContext('2d');
    ctx.globalCompositeOperation = edit.tool === 'eraser' ? 'destination-out' : 'source-over';
    ctx.fillStyle = ctx.strokeStyle = `rgb(${kMaskRgb.join(',')})`;
    const width = Number($('brush-size').value) * p.scale;
    if (!edit.last) {
      ctx.beginPath();
      ctx.arc(p.x, p.y, width / 2, 0, 2 * Math.PI);
      ctx.fill();
    } else {
      ctx.lineWidth = width;
      ctx.lineCap = 'round';
      ctx.lineJoin = 'round';
      ctx.beginPath();
      ctx.moveTo(edit.last.x, edit.last.y);
      ctx.lineTo(p.x, p.y);
      ctx.stroke();
    }
    edit.last = p;
  }

  function maskPixels() {
    return $('mask-canvas').getContext('2d').getImageData(0, 0, edit.width, edit.height);
  }

  function maskHasPaint() {
    const d = maskPixels().data;
    for (let i = 3; i < d.length; i += 4) if (d[i] !== 0) return true;
    return false;
  }

  function invertMask() {
    const ctx = $('mask-canvas').getContext('2d');
    const img = maskPixels();
    const d = img.data;
    for (let i = 0; i < d.length; i += 4) {
      [d[i], d[i + 1], d[i + 2]] = kMaskRgb;
      d[i + 3] = 255 - d[i + 3];
    }
    ctx.putImageData(img, 0, 0);
  }

  // The mask as the server reads it: an opaque grey PNG, white = repaint.
  function maskDataUrl() {
    const src = maskPixels().data;
    const out = document.createElement('canvas');
    out.width = edit.width;
    out.height = edit.height;
    const ctx = out.getContext('2d');
    const img = ctx.createImageData(edit.width, edit.height);
    for (let i = 0; i < src.length; i += 4) {
      img.data[i] = img.data[i + 1] = img.data[i + 2] = src[i + 3];
      img.data[i + 3] = 255;
    }
    ctx.putImageData(img, 0, 0);
    return out.toDataURL('image/png');
  }

  // The edit fields of the next job, or null without an image. Throws a message for the form.
  function editFields() {
    if (!edit.loaded) return null;
    const int = (id, lo, hi, name) => {
      const v = Number($(id).value);
      if (!Number.isInteger(v) || v < lo || v > hi) throw new Error(`${name} must be a whole number from ${lo} to ${hi}.`);
      return v;
    };
    const f = {
      init_image: $('init-canvas').toDataURL('image/png'),
      strength: Number($('strength').value),
      resize_mode: $('resize-mode').value,
    };
    if (editMode() === 'inpaint') {
      if (!maskHasPaint()) throw new Error('Paint the area to repaint on the image first (or switch the mode to img2img).');
      f.mask = maskDataUrl();
      f.mask_blur = int('mask-blur', 0, 64, 'Mask blur');
      f.masked_content = $('masked-content').value;
      f.inpaint_area = $('inpaint-area').value;
      f.padding = int('inpaint-padding', 0, 1024, 'Padding');
    }
    const out = {};
    for (const side of ['left', 'right', 'top', 'bottom']) out[side] = int(`outpaint-${side}`, 0, 2048, `Outpaint ${side}`);
    if (Object.values(out).some((v) => v > 0)) f.outpaint = out;
    return f;
  }

  // "Send to img2img / inpaint" on a gallery or history image.
  async function sendToEditor(url, mode) {
    try {
      const res = await fetch(url);
      if (!res.ok) throw new Error(`${res.status}`);
      await loadInitBlob(await res.blob(), 'the gallery');
    } catch (e) {
      flash(`Cannot load the image: ${e.message}`);
      return;
    }
    $('edit-mode').value = mode;
    updateEditUi();
    $('edit-panel').scrollIntoView({ behavior: 'smooth', block: 'start' });
  }

  function wireEditor() {
    $('init-file').addEventListener('change', () => loadInitBlob($('init-file').files[0], 'the file'));
    const drop = $('init-drop');
    drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('dragover'); });
    drop.addEventListener('dragleave', () => drop.classList.remove('dragover'));
    drop.addEventListener('drop', (e) => {
      e.preventDefault();
      drop.classList.remove('dragover');
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) loadInitBlob(file, 'the drop');
    });
    drop.addEventListener('keydown', (e) => {
      if ((e.key === 'Enter' || e.key === ' ') && e.target === drop && !edit.loaded) { e.preventDefault(); $('init-file').click(); }
    });
    // A pasted image (Ctrl+V anywhere on the page) becomes the init image; pasted text is left alone.
    document.addEventListener('paste', (e) => {
      const items = (e.clipboardData && e.clipboardData.items) || [];
      for (const it of items) {
        if (it.kind === 'file' && it.type.startsWith('image/')) {
          e.preventDefault();
          loadInitBlob(it.getAsFile(), 'the clipboard');
          return;
        }
      }
    });
    const m = $('mask-canvas');
    m.addEventListener('pointerdown', (e) => {
      if (!edit.loaded || editMode() !== 'inpaint' || e.button !== 0) return;
      e.preventDefault();
      m.setPointerCapture(e.pointerId);
      edit.painting = true;
      edit.last = null;
      paintTo(maskPoint(e));
    });
    m.addEventListener('pointermove', (e) => { if (edit.painting) paintTo(maskPoint(e)); });
    const end = () => { edit.painting = false; edit.last = null; };
    m.addEventListener('pointerup', end);
    m.addEventListener('pointercancel', end);
    $('tool-brush').addEventListener('click', () => { edit.tool = 'brush'; updateEditUi(); });
    $('tool-eraser').addEventListener('click', () => { edit.tool = 'eraser'; updateEditUi(); });
    $('mask-clear').addEventListener('click', () => $('mask-canvas').getContext('2d').clearRect(0, 0, edit.width, edit.height));
    $('mask-invert').addEventListener('click', () => { if (edit.loaded) invertMask(); });
    $('init-clear').addEventListener('click', clearInitImage);
    $('init-use-size').addEventListener('click', useImageSize);
    for (const id of ['edit-mode', 'strength', 'brush-size', 'mask-opacity']) $(id).addEventListener('input', updateEditUi);
    window.addEventListener('resize', fitStage);
    $('edit-panel').addEventListener('toggle', fitStage);
    updateEditUi();
  }

  // ---------- jobs ----------
  async function generate() {
    showFormError('');
    let req, edits;
    try {
      req = readForm();
      edits = editFields();
    } catch (e) {
      showFormError(e.message);
      return;
    }
    saveForm();
    const body = Object.assign({}, req, edits || {});
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

  // ---------- images (gallery + history) ----------
  // A1111's file names: a 5-digit number, then the seed ("00012-1234567890.png").
  function downloadName(img, ordinal) {
    if (!ordinal) return img.file || img.url.split('/').pop();
    return `${String(ordinal).padStart(5, '0')}-${img.seed}.png`;
  }

  // The stored PNG, served as an attachment under the A1111-style name.
  function downloadUrl(img) { return `${img.url}?download=${encodeURIComponent(img.downloadName)}`; }

  function imageCard(img, params, cls, ordinal) {
    const title = `Seed ${img.seed} · ${img.width}×${img.height}`;
    img.downloadName = downloadName(img, ordinal);
    const reuse = el('button', { type: 'button', class: 'small', 'data-action': 'reuse', title: 'Fill the form with these parameters and this seed',
                                  text: 'Reuse', onclick: () => applyParams(params, img) });
    const seedBtn = el('button', { type: 'button', class: 'small', 'data-action': 'seed', title: 'Use only this seed',
                                    text: 'Seed', onclick: () => { $('seed').value = img.seed; flash(`Seed ${img.seed} set.`); } });
    const dl = el('a', { class: 'button small', href: downloadUrl(img), download: img.downloadName,
                         'data-action': 'download', title: 'Download the PNG (with its metadata)', text: 'Download' });
    const copy = el('button', { type: 'button', class: 'small', 'data-action': 'copy', title: 'Copy the A1111 parameters text', text: 'Copy',
                                 onclick: () => copyText(img.parameters || '') });
    const toImg2img = el('button', { type: 'button', class: 'small', 'data-action': 'send-img2img', title: 'Load this image into the Image panel for img2img',
                                     text: '→ img2img', onclick: () => sendToEditor(img.url, 'img2img') });
    const toInpaint = el('button', { type: 'button', class: 'small', 'data-action': 'send-inpaint', title: 'Load this image into the Image panel and paint a mask',
                                     text: '→ inpaint', onclick: () => sendToEditor(img.url, 'inpaint') });
    const info = el('details', { class: 'params' }, el('summary', { text: 'Parameters' }),
                    el('pre', { text: img.parameters || JSON.stringify(params, null, 1) }));
    // A click on the thumbnail opens the lightbox (a middle click still opens the PNG).
    const thumb = el('a', { href: img.url, target: '_blank', rel: 'noopener', class: 'thumb', 'data-testid': 'thumb' },
      el('img', { src: img.url, alt: `Generated image, seed ${img.seed}`, loading: 'lazy', width: img.width, height: img.height }));
    const fig = el('figure', { class: cls, 'data-seed': img.seed }, thumb,
      el('figcaption', {},
        el('div', { class: 'seed mono', 'data-testid': 'image-seed', text: title }),
        el('div', { class: 'btns' }, reuse, seedBtn, copy, dl, toImg2img, toInpaint),
        info));
    fig.imageData = img;
    thumb.addEventListener('click', (e) => {
      if (e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey) return;
      e.preventDefault();
      const box = fig.closest('#gallery, #history') || fig.parentNode;
      const list = [...box.querySelectorAll('figure')].map((f) => f.imageData).filter(Boolean);
      openLightbox(list, Math.max(0, list.indexOf(img)));
    });
    return fig;
  }

  // ---------- lightbox ----------
  const lightbox = { list: [], index: 0 };

  function openLightbox(list, index) {
    lightbox.list = list;
    const d = $('lightbox');
    if (!d.open) d.showModal();
    showLightbox(index);
  }

  function showLightbox(index) {
    const n = lightbox.list.length;
    if (!n) return;
    lightbox.index = (index + n) % n;
    const img = lightbox.list[lightbox.index];
    $('lightbox-img').src = img.url;
    $('lightbox-img').alt = `Image ${lightbox.index + 1} of ${n}, seed ${img.seed}`;
    $('lightbox-title').textContent = `${lightbox.index + 1}/${n} · seed ${img.seed} · ${img.width}×${img.height}`;
    img.downloadName = img.downloadName || downloadName(img, 0);
    $('lightbox-download').href = downloadUrl(img);
    $('lightbox-download').download = img.downloadName;
    $('lightbox-info').textContent = img.parameters || '';
    $('lightbox-prev').disabled = $('lightbox-next').disabled = n < 2;
  }

  function setZoom(on) {
    $('lightbox-stage').classList.toggle('zoomed', on);
    $('lightbox-zoom').setAttribute('aria-pressed', String(on));
  }

  function wireLightbox() {
    const d = $('lightbox');
    $('lightbox-prev').addEventListener('click', () => showLightbox(lightbox.index - 1));
    $('lightbox-next').addEventListener('click', () => showLightbox(lightbox.index + 1));
    $('lightbox-close').addEventListener('click', () => d.close());
    $('lightbox-zoom').addEventListener('click', () => setZoom(!$('lightbox-stage').classList.contains('zoomed')));
    $('lightbox-img').addEventListener('click', () => setZoom(!$('lightbox-stage').classList.contains('zoomed')));
    d.addEventListener('click', (e) => { if (e.target === d) d.close(); });  // the backdrop
    d.addEventListener('close', () => setZoom(false));
    d.addEventListener('keydown', (e) => {
      if (e.key === 'ArrowLeft') { e.preventDefault(); showLightbox(lightbox.index - 1); }
      else if (e.key === 'ArrowRight') { e.preventDefault(); showLightbox(lightbox.index + 1); }
      else if (e.key === 'z' || e.key === 'Z') setZoom(!$('lightbox-stage').classList.contains('zoomed'));
    });
  }

  async function copyText(text) {
    try {
      await navigator.clipboard.writeText(text);
      flash('Parameters copied.');
    } catch (_) {
      flash('Copy failed (clipboard needs https or localhost).');
    }
  }

  function addToGallery(job, images) {
    const g = $('gallery');
    for (const img of images.slice().reverse()) g.prepend(imageCard(img, job.request, 'gallery-item', job.ordinal));
    while (g.children.length > kMaxGallery) g.lastChild.remove();
    $('gallery-empty').hidden = g.children.length > 0;
  }

  async function loadHistory(offset) {
    let data;
    try {
      data = await api(`/api/history?limit=${kHistoryPage}&offset=${offset}`);
    } catch (e) {
      $('history').replaceChildren(el('p', { class: 'form-error', text: `History unavailable: ${e.message}` }));
      return;
    }
    state.historyOffset = offset;
    state.historyTotal = data.total;
    const box = $('history');
    box.replaceChildren();
    for (const item of data.items) {
      const p = item.params || {};
      const kind = p.init_image || p.init_images ? `${p.mask ? 'inpaint' : 'img2img'} ${p.strength ?? p.denoising_strength ?? ''}`.trim() : null;
      const meta = [item.model, kind, p.steps ? `${p.steps} steps` : null, p.sampler || p.sampler_name || null,
                    p.cfg_scale !== undefined ? `CFG ${p.cfg_scale}` : null].filter(Boolean).join(' · ');
      const head = el('div', { class: 'history-meta' },
        el('div', { class: 'history-prompt', title: item.prompt, text: item.prompt || '(empty prompt)' }),
        el('div', { class: 'muted small-text', text: `${fmtDate(item.created)} · ${meta}` }),
        el('button', { type: 'button', class: 'small', text: 'Reuse all', title: 'Fill the form with this job\'s parameters',
                       onclick: () => applyParams(p, null) }));
      // Jobs of this session are in Results above: not repeated here in full.
      const ordinal = data.total - offset - data.items.indexOf(item);
      const shown = state.jobs.has(item.id);
      const imgs = el('div', { class: 'history-images' });
      if (shown) {
        imgs.append(el('span', { class: 'muted small-text', 'data-testid': 'history-in-results',
                                 text: `${item.images.length} image${item.images.length === 1 ? '' : 's'}: in Results above` }));
      } else {
        for (const im of item.images) imgs.append(imageCard(im, p, 'history-image', ordinal));
      }
      box.append(el('article', { class: `history-item${shown ? ' compact' : ''}`, 'data-id': item.id }, head, imgs));
    }
    const pages = Math.max(1, Math.ceil(data.total / kHistoryPage));
    const page = Math.floor(offset / kHistoryPage) + 1;
    $('history-page').textContent = `Page ${page} of ${pages} · ${data.total} job${data.total === 1 ? '' : 's'}`;
    $('history-prev').disabled = offset === 0;
    $('history-next').disabled = offset + kHistoryPage >= data.total;
    $('history-empty').hidden = data.total > 0;
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

  // ---------- LoRA & embeddings ----------
  // The server's LoRA and embedding folders (GET /api/loras, /api/embeddings),
  // listed when the panel is first opened. Clicking a LoRA adds <lora:name:1> to
  // the prompt, or removes its tag when the prompt has it (A1111's cards toggle
  // the same way); clicking an embedding adds its name to the prompt box used
  // last. The weight slider rewrites the selected tag: the one the prompt's
  // cursor is in, else the one added last.
  const adapters = { loras: [], embeddings: [], loaded: false, error: '', selected: null, lastBox: 'prompt' };
  const kLoraTagRe = /<(lora|lyco):([^>]+)>/g;

  // The <lora:...> / <lyco:...> tags of a prompt: {start, end, text, network, name, weight, extras}.
  function loraTags(text) {
    const out = [];
    for (const m of text.matchAll(kLoraTagRe)) {
      const positional = [], named = [];
      for (const a of m[2].split(':')) (a.split('=').length === 2 ? named : positional).push(a);
      const te = named.find((a) => a.split('=')[0].trim() === 'te');
      const w = te ? Number(te.split('=')[1]) : positional.length > 1 ? Number(positional[1]) : 1;
      out.push({ start: m.index, end: m.index + m[0].length, text: m[0], network: m[1], name: (positional[0] || '').trim(),
                 weight: Number.isFinite(w) ? w : 1,
                 extras: named.filter((a) => !['te', 'unet'].includes(a.split('=')[0].trim())) });
    }
    return out;
  }

  function fmtWeight(w) { return String(Math.round(w * 100) / 100); }

  // Appends with A1111's separator (a space) unless the text ends in white space.
  function appendToBox(box, text) {
    const v = box.value;
    box.value = !v || /\s$/.test(v) ? v + text : `${v} ${text}`;
    const pos = box.value.length;
    box.setSelectionRange(pos, pos);
  }

  // The selected tag (by name): the one the prompt's cursor is in, else the first.
  function selectedTag() {
    if (!adapters.selected) return null;
    const box = $('prompt');
    const tags = loraTags(box.value).filter((t) => t.name === adapters.selected);
    const caret = box.selectionStart;
    return tags.find((t) => caret > t.start && caret < t.end) || tags[0] || null;
  }

  function toggleLora(l) {
    const box = $('prompt');
    const tags = loraTags(box.value).filter((t) => t.name === l.name || t.name === l.alias);
    if (tags.length) {
      let v = box.value;
      for (const t of tags.reverse()) {  // the tag and the separator next to it (the one before, else after)
        const before = v.slice(0, t.start);
        const after = v.slice(t.end);
        v = before.endsWith(' ') ? before.slice(0, -1) + after : before + (after.startsWith(' ') ? after.slice(1) : after);
      }
      box.value = v;
      if (tags.some((t) => t.name === adapters.selected)) adapters.selected = null;
      flash(`Removed ${l.name} from the prompt.`);
    } else {
      const tag = `<lora:${l.name}:1>`;
      appendToBox(box, tag);
      const at = box.value.length - 1;  // inside the new tag: the slider edits it
      box.setSelectionRange(at, at);
      adapters.selected = l.name;
      flash(`Added ${tag} to the prompt.`);
    }
    saveForm();
    onPromptEdited();
  }

  function insertEmbedding(e) {
    const box = $(adapters.lastBox) || $('prompt');
    appendToBox(box, e.name);
    saveForm();
    onPromptEdited();
    flash(`Added ${e.name} to the ${adapters.lastBox === 'negative' ? 'negative prompt' : 'prompt'}.`);
  }

  // Rewrites the selected tag with the slider's weight (both weights; named extras kept).
  function setSelectedWeight(w) {
    const t = selectedTag();
    if (!t) return;
    const box = $('prompt');
    const tag = `<${t.network}:${[t.name, fmtWeight(w), ...t.extras].join(':')}>`;
    box.value = box.value.slice(0, t.start) + tag + box.value.slice(t.end);
    const at = t.start + tag.length - 1;
    box.setSelectionRange(at, at);
    $('lora-weight-value').textContent = fmtWeight(w);
    saveForm();
    onPromptEdited(true);
  }

  // The prompt changed or its cursor moved: select the tag under the cursor,
  // then refresh the chip, the list's pressed states and the weight slider.
  function onPromptEdited(keepSlider) {
    const box = $('prompt');
    const tags = loraTags(box.value);
    const caret = box.selectionStart;
    const under = tags.find((t) => caret > t.start && caret < t.end);
    if (under) adapters.selected = under.name;
    const chip = $('adapters-chip');
    chip.hidden = tags.length === 0;
    chip.textContent = tags.length ? `${tags.length} LoRA` : '';
    const names = new Set(tags.map((t) => t.name));
    for (const b of document.querySelectorAll('#lora-list [data-testid=lora-item]')) {
      b.setAttribute('aria-pressed', String(names.has(b.dataset.name) || names.has(b.dataset.alias)));
    }
    const sel = selectedTag();
    $('lora-weight-box').hidden = !sel;
    if (sel) {
      $('lora-weight-name').textContent = sel.name;
      $('lora-weight-value').textContent = fmtWeight(sel.weight);
      if (!keepSlider) $('lora-weight').value = sel.weight;
    }
  }

  function renderAdapters() {
    const q = $('adapters-search').value.trim().toLowerCase();
    const hit = (...fields) => !q || fields.some((f) => f && String(f).toLowerCase().includes(q));
    const note = (text) => el('li', { class: 'muted small-text', text });
    const loras = adapters.loras.filter((l) => hit(l.name, l.alias, l.relative, ...(l.trained_words || [])));
    const loraItems = loras.map((l) => {
      const sub = l.error ? `unreadable: ${l.error}`
        : [l.relative, (l.trained_words || []).slice(0, 4).join(', ')].filter(Boolean).join(' · ');
      return el('li', {}, el('button', {
        type: 'button', class: `adapter-item${l.error ? ' broken' : ''}`, 'data-testid': 'lora-item', 'data-name': l.name,
        'data-alias': l.alias, 'aria-pressed': 'false', title: `${l.path}\nClick to add <lora:${l.name}:1> to the prompt (again: remove it)`,
        onclick: () => toggleLora(l) },
      el('span', { class: 'adapter-name' }, el('span', { text: l.name }),
        l.alias && l.alias !== l.name ? el('span', { class: 'muted', text: `(${l.alias})` }) : null,
        l.family ? el('span', { class: 'chip', text: l.family.toUpperCase() }) : null),
      el('span', { class: 'adapter-sub', text: sub })));
    });
    if (adapters.error) loraItems.push(note(adapters.error));
    else if (!adapters.loras.length) loraItems.push(note(adapters.loaded ? 'No LoRA files in the server\'s LoRA folder (diffuse serve --lora-dir DIR).' : 'Loading…'));
    else if (!loras.length) loraItems.push(note('No LoRA matches.'));
    $('lora-list').replaceChildren(...loraItems);
    $('lora-count').textContent = adapters.loaded ? (q ? `${loras.length} of ${adapters.loras.length}` : `${adapters.loras.length}`) : '';

    const embs = adapters.embeddings.filter((e) => hit(e.name));
    const embItems = embs.map((e) => el('li', {}, el('button', {
      type: 'button', class: `adapter-item${e.error ? ' broken' : ''}`, 'data-testid': 'embedding-item', 'data-name': e.name,
      title: `${e.path}\nClick to add "${e.name}" to the prompt box used last`, onclick: () => insertEmbedding(e) },
    el('span', { class: 'adapter-name' }, el('span', { text: e.name })),
    el('span', { class: 'adapter-sub', text: e.error ? `unreadable: ${e.error}` : `${e.vectors} vector${e.vectors === 1 ? '' : 's'} · width ${e.shape}` }))));
    if (!adapters.error && !adapters.embeddings.length && adapters.loaded) embItems.push(note('No embeddings in the server\'s embeddings folder (diffuse serve --embeddings-dir DIR).'));
    else if (adapters.embeddings.length && !embs.length) embItems.push(note('No embedding matches.'));
    $('embedding-list').replaceChildren(...embItems);
    $('embedding-count').textContent = adapters.loaded ? (q ? `${embs.length} of ${adapters.embeddings.length}` : `${adapters.embeddings.length}`) : '';
    onPromptEdited();
  }

  async function loadAdapters(rescan) {
    try {
      if (rescan) await api('/api/adapters/refresh', { method: 'POST' });
      const [loras, embeddings] = await Promise.all([api('/api/loras'), api('/api/embeddings')]);
      adapters.loras = loras;
      adapters.embeddings = embeddings;
      adapters.error = '';
    } catch (e) {
      adapters.error = `Cannot list LoRAs and embeddings: ${e.message}`;
    }
    adapters.loaded = true;
    renderAdapters();
  }

  function wireAdapters() {
    $('adapters-panel').addEventListener('toggle', () => {
      if ($('adapters-panel').open && !adapters.loaded) { renderAdapters(); loadAdapters(false); }
    });
    $('adapters-refresh').addEventListener('click', () => loadAdapters(true));
    $('adapters-search').addEventListener('input', renderAdapters);
    $('lora-weight').addEventListener('input', () => setSelectedWeight(Number($('lora-weight').value)));
    for (const id of ['prompt', 'negative']) $(id).addEventListener('focus', () => { adapters.lastBox = id; });
    for (const ev of ['input', 'click', 'keyup', 'select']) $('prompt').addEventListener(ev, () => onPromptEdited());
  }

  // Ctrl+Up/Down in a prompt box, as A1111's edit-attention: the selection (or
  // the word at the caret) becomes "(words:1.1)"; inside "(words:w)" the weight
  // steps by 0.1, and at 1 the parentheses go. Returns false when nothing was edited.
  function editAttention(box, delta) {
    let t = box.value, a = box.selectionStart, b = box.selectionEnd;
    if (a === b) {  // the word at the caret
      const stop = /[\s,()[\]:]/;
      while (a > 0 && !stop.test(t[a - 1])) a--;
      while (b < t.length && !stop.test(t[b])) b++;
    }
    if (a === b) return false;
    const m = /^:(-?\d+(?:\.\d+)?)\)/.exec(t.slice(b));
    if (t[a - 1] === '(' && m) {
      const w = Number((Number(m[1]) + delta).toFixed(2));
      if (w === 1) {
        t = t.slice(0, a - 1) + t.slice(a, b) + t.slice(b + m[0].length);
        a -= 1;
        b -= 1;
      } else {
        t = `${t.slice(0, b)}:${w})${t.slice(b + m[0].length)}`;
      }
    } else {
      t = `${t.slice(0, a)}(${t.slice(a, b)}:${Number((1 + delta).toFixed(2))})${t.slice(b)}`;
      a += 1;
      b += 1;
    }
    box.value = t;
    box.setSelectionRange(a, b);
    box.dispatchEvent(new Event('input', { bubbles: true }));
    saveForm();
    return true;
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
})();
