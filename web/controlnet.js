// Diffuse playground: the ControlNet panel (docs/controlnet.md "Web page").
// A control image (drop, paste or choose; converted to PNG in the page), a
// preprocessor from GET /controlnet/module_list with its sliders, its result
// from POST /controlnet/detect, a model from GET /controlnet/model_list, weight,
// guidance start/end, control mode, resize mode and pixel perfect. The unit
// goes out with the job as A1111's alwayson_scripts.controlnet.args (app.js
// calls controlnetArgs()). Wrapped in an IIFE: the playground's scripts share
// one global scope, and only controlnetArgs is exported.
'use strict';

const controlnetArgs = (() => {
  const cn = {
    image: null,     // the control image as a PNG data URL
    detail: {},      // module_detail of /controlnet/module_list
    previewSeq: 0,   // a newer preview supersedes an older one still in flight
    loaded: false,
  };

  // Any image the browser decodes -> a PNG data URL (the server takes PNG only).
  function toPng(blob) {
    return new Promise((resolve, reject) => {
      const url = URL.createObjectURL(blob);
      const img = new Image();
      img.onload = () => {
        const c = document.createElement('canvas');
        c.width = img.naturalWidth;
        c.height = img.naturalHeight;
        c.getContext('2d').drawImage(img, 0, 0);
        URL.revokeObjectURL(url);
        resolve(c.toDataURL('image/png'));
      };
      img.onerror = () => {
        URL.revokeObjectURL(url);
        reject(new Error('ControlNet: the browser cannot read that file as an image.'));
      };
      img.src = url;
    });
  }

  function setStatus(text, isError) {
    const s = $('cn-status');
    s.textContent = text;
    s.classList.toggle('error', Boolean(isError));
  }

  function updateChip() {
    const chip = $('cn-chip');
    const on = $('cn-enable').checked;
    chip.hidden = !on;
    chip.textContent = on ? `${$('cn-module').value} · ${Number($('cn-weight').value).toFixed(2)}` : '';
  }

  async function setImage(blob) {
    try {
      cn.image = await toPng(blob);
    } catch (e) {
      setStatus(e.message, true);
      return;
    }
    $('cn-input-img').src = cn.image;
    $('cn-images').hidden = false;
    $('cn-empty').hidden = true;
    if (!$('cn-enable').checked) $('cn-enable').checked = true;
    updateChip();
    preview();
  }

  // Shows the sliders the module has (the extension's [resolution, threshold_a, threshold_b]).
  function showSliders() {
    const d = cn.detail[$('cn-module').value] || { sliders: [] };
    const s = d.sliders || [];
    const slots = [['cn-res', s[0]], ['cn-a', s[1]], ['cn-b', s[2]]];
    for (const [id, cfg] of slots) {
      const field = $(`${id}-field`);
      field.hidden = !cfg;
      if (!cfg) continue;
      $(`${id}-label`).textContent = cfg.name;
      const input = $(id);
      input.min = cfg.min;
      input.max = cfg.max;
      input.step = cfg.step || 1;
      if (input.dataset.module !== $('cn-module').value) {  // a new module: its defaults
        input.value = cfg.value;
        input.dataset.module = $('cn-module').value;
      }
    }
    $('cn-pixel-perfect-field').hidden = !s[0];
    $('cn-mask-note').hidden = !d.needs_mask;
  }

  function sliderValue(id) {
    return $(`${id}-field`).hidden ? -1 : Number($(id).value);
  }

  // The preprocessor's result for the current image (POST /controlnet/detect).
  async function preview() {
    const module = $('cn-module').value;
    const out = $('cn-result-img');
    if (!cn.image) return;
    if (module === 'none') {
      out.src = cn.image;
      setStatus('No preprocessor: the image is the control map.');
      return;
    }
    if ((cn.detail[module] || {}).needs_mask) {
      out.removeAttribute('src');
      setStatus('This preprocessor uses the Image panel\'s inpaint mask when generating.');
      return;
    }
    const seq = ++cn.previewSeq;
    setStatus('Running the preprocessor…');
    try {
      const r = await api('/controlnet/detect', {
        method: 'POST',
        body: {
          controlnet_module: module,
          controlnet_input_images: [cn.image],
          controlnet_processor_res: sliderValue('cn-res'),
          controlnet_threshold_a: sliderValue('cn-a'),
          controlnet_threshold_b: sliderValue('cn-b'),
        },
      });
      if (seq !== cn.previewSeq) return;
      out.src = `data:image/png;base64,${r.images[0]}`;
      setStatus(`Preprocessed with ${module}.`);
    } catch (e) {
      if (seq === cn.previewSeq) setStatus(`Preprocessor: ${e.message}`, true);
    }
  }

  async function load() {
    if (cn.loaded) return;
    cn.loaded = true;
    try {
      const [modules, models] = await Promise.all([api('/controlnet/module_list'), api('/controlnet/model_list')]);
      cn.detail = modules.module_detail || {};
      const sel = $('cn-module');
      sel.replaceChildren();
      // The usable ones in the server's order, then the unavailable ones (disabled, with the reason).
      const names = (modules.module_list || []).concat(
        Object.keys(cn.detail).filter((n) => !(modules.module_list || []).includes(n)));
      for (const name of names) {
        const d = cn.detail[name] || {};
        const o = el('option', { value: name, disabled: d.available === false, title: d.reason || d.label || '' },
                     d.available === false ? `${name} (not available)` : name);
        sel.append(o);
      }
      sel.value = 'none';
      const msel = $('cn-model');
      msel.replaceChildren();
      for (const m of models.model_list || []) msel.append(el('option', { value: m }, m));
      if (!msel.options.length) {
        msel.append(el('option', { value: '' }, '(no ControlNet in the server\'s ControlNet folder)'));
      }
      showSliders();
    } catch (e) {
      cn.loaded = false;
      setStatus(`ControlNet lists: ${e.message}`, true);
    }
  }

  function wire() {
    const panel = $('controlnet-panel');
    if (!panel) return;
    panel.addEventListener('toggle', () => { if (panel.open) load(); });
    $('cn-file').addEventListener('change', (e) => { if (e.target.files[0]) setImage(e.target.files[0]); });
    const zone = $('cn-drop');
    zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('dragover'); });
    zone.addEventListener('dragleave', () => zone.classList.remove('dragover'));
    zone.addEventListener('drop', (e) => {
      e.preventDefault();
      zone.classList.remove('dragover');
      const f = e.dataTransfer.files[0];
      if (f) setImage(f);
    });
    // Paste while the zone has focus (the Image panel takes page-wide pastes).
    zone.addEventListener('paste', (e) => {
      const item = [...(e.clipboardData || {}).items || []].find((i) => i.type.startsWith('image/'));
      if (!item) return;
      e.preventDefault();
      e.stopPropagation();
      setImage(item.getAsFile());
    });
    $('cn-module').addEventListener('change', () => { showSliders(); updateChip(); preview(); });
    for (const id of ['cn-res', 'cn-a', 'cn-b']) $(id).addEventListener('change', preview);
    $('cn-preview').addEventListener('click', preview);
    for (const id of ['cn-enable', 'cn-weight']) $(id).addEventListener('input', updateChip);
    $('cn-clear').addEventListener('click', () => {
      cn.image = null;
      $('cn-images').hidden = true;
      $('cn-empty').hidden = false;
      $('cn-file').value = '';
      $('cn-enable').checked = false;
      updateChip();
      setStatus('');
    });
  }
  document.addEventListener('DOMContentLoaded', wire);

  // The unit of the panel for alwayson_scripts.controlnet.args, or null when off.
  // Throws an Error with a message for the form when it cannot be sent.
  return function controlnetArgs() {
    if (!$('cn-enable') || !$('cn-enable').checked) return null;
    // Inpaint preprocessors work on the Image panel's picture and mask (a unit without its own image).
    const inpaint = Boolean((cn.detail[$('cn-module').value] || {}).needs_mask);
    if (!cn.image && !inpaint) throw new Error('ControlNet: add a control image (or turn the unit off).');
    const model = $('cn-model').value;
    if (!model) throw new Error('ControlNet: pick a model (none is in the server\'s ControlNet folder).');
    const weight = Number($('cn-weight').value);
    const start = Number($('cn-start').value), end = Number($('cn-end').value);
    if (!(weight >= 0 && weight <= 2)) throw new Error('ControlNet: weight must be from 0 to 2.');
    if (!(start >= 0 && end <= 1 && start < end)) throw new Error('ControlNet: start must be below end, both from 0 to 1.');
    const unit = {
      enabled: true,
      module: $('cn-module').value,
      model,
      weight,
      guidance_start: start,
      guidance_end: end,
      control_mode: $('cn-mode').value,
      resize_mode: $('cn-resize').value,
      pixel_perfect: $('cn-pixel-perfect').checked,
      processor_res: sliderValue('cn-res'),
      threshold_a: sliderValue('cn-a'),
      threshold_b: sliderValue('cn-b'),
    };
    if (!inpaint) unit.image = cn.image;
    return [unit];
  };
})();
