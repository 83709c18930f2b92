// Diffuse playground: the images of this session (Results), the lightbox, and the history.
// The playground's scripts are classic scripts loaded in order by index.html
// (core.js, editor.js, gallery.js, adapters.js, devices.js, live.js, app.js) and share
// one global scope: each top-level name is declared once across them (core.js
// holds the helpers and the page state; app.js wires the page on DOMContentLoaded).
'use strict';

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
