// Diffuse playground: the live (real-time) mode (issue 23; docs/playground.md "Live mode").
// With Live on, each edit of the prompt (debounced by kLiveDebounceMs) or of the
// seed slider sends a new job. A newer job supersedes the one in flight: the
// page cancels it on the server (POST /api/jobs/{id}/cancel), which ends it at
// its next step and frees the worker, instead of only ignoring its image. The
// page shows each image's latency, from the request to the image on the page.
// The playground's scripts are classic scripts loaded in order by index.html
// and share one global scope; this file wraps its own names and exports
// wireLive() (called by app.js's wire()).
'use strict';

const wireLive = (() => {
  const kLiveDebounceMs = 100;
  const kLiveSteps = 4;          // a model without few-step defaults: 1-4 steps keep it interactive
  const kFewStepMax = 8;         // default steps at most this: the model's own (Turbo, LCM, Lightning...)
  const kFewStepKinds = ['turbo', 'lcm', 'lightning', 'hyper', 'tcd'];
  const kKeepLatencies = 50;     // the median shown is over the last 50 images

  const live = {
    on: false,
    timer: null,
    gen: 0,           // bumps with each request; only the newest request's image is shown
    shownGen: 0,      // the request whose image is on screen
    current: null,    // {id, gen, t0, es}: the job in flight
    saved: null,      // {steps, cfg} of the form before Live was turned on
    latencies: [],    // ms, newest last
    superseded: 0,    // jobs cancelled because a newer edit came
  };

  // Few-step defaults of a model: its own steps and CFG when the server says it is a
  // few-step kind or its default steps are few; else null.
  function fewStepDefaults(m) {
    const d = (m && m.defaults) || {};
    const kind = String((m && (m.kind || d.kind)) || '').toLowerCase();
    if (!(d.steps > 0) || (!kFewStepKinds.includes(kind) && d.steps > kFewStepMax)) return null;
    return { steps: d.steps, cfg: d.cfg_scale };
  }

  // The form's steps and CFG for live use: the model's few-step defaults, else kLiveSteps (CFG kept).
  function applyLiveDefaults() {
    const few = fewStepDefaults(currentModel());
    if (few) {
      $('steps').value = few.steps;
      if (few.cfg !== undefined && few.cfg !== null) $('cfg').value = few.cfg;
    } else if (Number($('steps').value) > kLiveSteps) {
      $('steps').value = kLiveSteps;
    }
    $('live-defaults').textContent = few
      ? `${few.steps} step${few.steps === 1 ? '' : 's'}, CFG ${few.cfg}: the model's few-step defaults`
      : `${$('steps').value} steps: this model has no few-step defaults (a Turbo / LCM model draws better)`;
  }

  function median(v) {
    const s = [...v].sort((a, b) => a - b);
    return s.length ? s[Math.floor((s.length - 1) / 2)] : 0;
  }

  function showLatency(ms) {
    live.latencies.push(ms);
    if (live.latencies.length > kKeepLatencies) live.latencies.shift();
    $('live-latency').textContent = `${Math.round(ms)} ms`;
    $('live-latency').dataset.ms = String(Math.round(ms));
    renderStats();
  }

  function renderStats() {
    const n = live.latencies.length;
    const parts = [];
    if (n) parts.push(`median ${Math.round(median(live.latencies))} ms over ${n} image${n === 1 ? '' : 's'}`);
    if (live.superseded) parts.push(`${live.superseded} superseded (cancelled on the server)`);
    $('live-stats').textContent = parts.join(' · ');
  }

  function setLiveStatus(text) { $('live-status').textContent = text; }

  // Cancels a job in flight on the server (it ends at its next step) and stops following it.
  function supersede(job) {
    if (!job) return;
    if (job.es) job.es.close();
    job.es = null;
    live.superseded += 1;
    renderStats();
    api(`/api/jobs/${job.id}/cancel`, { method: 'POST' }).catch(() => {});  // already finished: nothing to do
  }

  // The image of request `gen` is ready at `url`: show it once loaded, unless a newer one is shown.
  function showImage(gen, t0, job, url) {
    const img = new Image();
    img.onload = () => {
      if (gen < live.shownGen) return;
      live.shownGen = gen;
      const shown = $('live-image');
      shown.src = url;
      shown.dataset.jobId = job.id;
      shown.dataset.seed = String(job.seed);
      shown.hidden = false;
      $('live-empty').hidden = true;
      showLatency(performance.now() - t0);
      if (gen === live.gen) setLiveStatus('');
    };
    img.onerror = () => setLiveStatus(`Could not load ${url}`);
    img.src = url;
  }

  async function request() {
    live.timer = null;
    if (!live.on) return;
    let body;
    try {
      body = readForm();
    } catch (e) {
      showFormError(e.message);
      return;
    }
    showFormError('');
    body.images = 1;
    body.seed = Number($('live-seed').value);
    delete body.hires;  // live images are single passes
    const gen = ++live.gen;
    const t0 = performance.now();
    // Cancel first: the worker is freed while the new job is on its way.
    supersede(live.current);
    live.current = null;
    setLiveStatus('Generating…');
    let r;
    try {
      r = await api('/api/jobs', { method: 'POST', body });
    } catch (e) {
      if (gen === live.gen) setLiveStatus(`Could not start: ${e.message}`);
      return;
    }
    const job = { id: r.id, gen, seed: r.seed, es: null };
    if (gen !== live.gen || !live.on) {  // a newer edit came while this one was submitted
      supersede(job);
      return;
    }
    live.current = job;
    $('live-image').dataset.pendingId = job.id;
    job.es = new EventSource(`/api/jobs/${job.id}/events`);
    job.es.addEventListener('done', (ev) => {
      job.es.close();
      job.es = null;
      if (live.current === job) live.current = null;
      const s = JSON.parse(ev.data);
      if (s.images && s.images.length) showImage(gen, t0, job, s.images[0].url);
    });
    job.es.addEventListener('error', (ev) => {
      // A server-sent `error` event (failed / cancelled) carries data; a dropped stream does not.
      if (ev.data) {
        const d = JSON.parse(ev.data);
        if (gen === live.gen && d.state === 'failed') setLiveStatus(`Failed: ${d.error}`);
      } else if (gen === live.gen) {
        setLiveStatus('Lost the connection to the server');
      }
      if (job.es) job.es.close();
      job.es = null;
      if (live.current === job) live.current = null;
    });
  }

  // An edit: a new request kLiveDebounceMs after the last one.
  function schedule() {
    if (!live.on) return;
    clearTimeout(live.timer);
    live.timer = setTimeout(request, kLiveDebounceMs);
  }

  function setLive(on) {
    live.on = on;
    $('live-toggle').checked = on;
    $('live-panel').hidden = !on;
    document.body.classList.toggle('live-on', on);
    if (on) {
      live.saved = { steps: $('steps').value, cfg: $('cfg').value };
      const seed = Number($('seed').value);
      $('live-seed').value = seed >= 0 ? Math.min(seed, Number($('live-seed').max)) : $('live-seed').value;
      $('live-seed-value').textContent = $('live-seed').value;
      applyLiveDefaults();
      schedule();
    } else {
      clearTimeout(live.timer);
      live.gen += 1;  // an answer still on its way is not shown
      supersede(live.current);
      live.current = null;
      if (live.saved) {
        $('steps').value = live.saved.steps;
        $('cfg').value = live.saved.cfg;
      }
      setLiveStatus('');
    }
  }

  return function wire() {
    $('live-toggle').addEventListener('change', () => setLive($('live-toggle').checked));
    $('prompt').addEventListener('input', schedule);
    $('negative').addEventListener('input', schedule);
    $('live-seed').addEventListener('input', () => {
      $('live-seed-value').textContent = $('live-seed').value;
      $('seed').value = $('live-seed').value;  // Generate (and Reuse) then give the same image
      schedule();
    });
    for (const id of ['steps', 'cfg', 'sampler', 'schedule', 'width', 'height']) $(id).addEventListener('change', schedule);
    $('model').addEventListener('change', () => {
      if (!live.on) return;
      applyLiveDefaults();
      schedule();
    });
  };
})();
