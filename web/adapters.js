// Diffuse playground: the LoRA & embeddings panel, and Ctrl+Up/Down prompt weights.
// The playground's scripts are classic scripts loaded in order by index.html
// (core.js, editor.js, gallery.js, adapters.js, devices.js, live.js, app.js) and share
// one global scope: each top-level name is declared once across them (core.js
// holds the helpers and the page state; app.js wires the page on DOMContentLoaded).
'use strict';

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
