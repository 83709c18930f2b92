// Diffuse playground: the Image panel (img2img, inpainting, outpainting).
// The playground's scripts are classic scripts loaded in order by index.html
// (core.js, editor.js, gallery.js, adapters.js, devices.js, live.js, app.js) and share
// one global scope: each top-level name is declared once across them (core.js
// holds the helpers and the page state; app.js wires the page on DOMContentLoaded).
'use strict';

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
