// End-to-end test of the playground's live mode (web/live.js, issue 23) against
// the real `diffuse serve` with the built-in demo model, in Debian's Chromium
// through playwright-core. Environment as playground.test.js (DIFFUSE_BINARY,
// CHROMIUM, DIFFUSE_ARTIFACTS).
'use strict';

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { chromium } = require('playwright-core');

const kRepo = path.resolve(__dirname, '..', '..');
const kBinary = process.env.DIFFUSE_BINARY || path.join(kRepo, 'build', 'diffuse');
const kArtifacts = process.env.DIFFUSE_ARTIFACTS || path.join(path.dirname(kBinary), 'test-artifacts');
const kChromium = process.env.CHROMIUM || '/usr/bin/chromium';

let server = null;
let baseUrl = '';
let dataDir = '';
let browser = null;
let serverLog = '';
const pageErrors = [];

function startServer() {
  return new Promise((resolve, reject) => {
    // The built-in demo model only: it draws the shapes and colours a prompt names.
    const args = ['serve', '--port', '0', '--data-dir', dataDir, '--no-hf-cache', '--preview-every', '0'];
    const child = spawn(kBinary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => reject(new Error(`server did not print its URL in 60 s:\n${serverLog}`)), 60000);
    child.stderr.on('data', (buf) => {
      serverLog += buf.toString();
      const m = /diffuse serve: (http:\/\/[^\s/]+:\d+)\//.exec(serverLog);
      if (m && !baseUrl) {
        baseUrl = m[1];
        clearTimeout(timer);
        resolve(child);
      }
    });
    child.stdout.on('data', (b) => { serverLog += b.toString(); });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      if (!baseUrl) reject(new Error(`server exited (${code ?? sig}) before listening:\n${serverLog}`));
    });
    server = child;
  });
}

async function getJson(p) {
  const res = await fetch(baseUrl + p);
  assert.equal(res.status, 200, `GET ${p} -> ${res.status}`);
  return res.json();
}

// Polls `fn` (async, returns a truthy value when done) every 50 ms for up to `ms`.
async function waitFor(what, fn, ms) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${serverLog.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

before(async () => {
  assert.ok(fs.existsSync(kBinary), `no diffuse binary at ${kBinary} (set DIFFUSE_BINARY)`);
  assert.ok(fs.existsSync(kChromium), `no browser at ${kChromium} (apt-get install chromium)`);
  fs.mkdirSync(kArtifacts, { recursive: true });
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-live-'));
  await startServer();
  browser = await chromium.launch({ executablePath: kChromium, headless: true,
                                    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
});

after(async () => {
  if (browser) await browser.close().catch(() => {});
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGINT');
    const t = setTimeout(() => server.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(t);
  }
  if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true });
});

async function newPage(routeModels) {
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 1000 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
  if (routeModels) {
    await page.route('**/api/models', async (route) => {
      const res = await route.fetch();
      route.fulfill({ response: res, json: routeModels(await res.json()) });
    });
  }
  await page.goto(baseUrl + '/');
  await page.waitForFunction(() => document.querySelectorAll('#model option[value]:not([value=""])').length > 0);
  await page.selectOption('#model', 'demo');
  return page;
}

// The live image's mean RGB (0..255), drawn on a canvas in the page.
function meanRgb(page) {
  return page.evaluate(() => {
    const img = document.getElementById('live-image');
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    const m = [0, 0, 0];
    for (let i = 0; i < d.length; i += 4) for (let k = 0; k < 3; k++) m[k] += d[i + k];
    return m.map((v) => v / (d.length / 4));
  });
}

const liveJobId = (page) => page.getAttribute('#live-image', 'data-job-id');

async function typePrompt(page, text) {
  await page.fill('#prompt', '');
  await page.locator('#prompt').pressSequentially(text, { delay: 15 });
}

test('live mode: typing and the seed slider make new images, with their latency', async () => {
  const page = await newPage();
  assert.equal(await page.isVisible('#live-panel'), false);
  await page.check('#live-toggle');
  assert.equal(await page.isVisible('#live-panel'), true);
  // The demo model has no few-step defaults (20 steps): live mode runs 4.
  assert.equal(await page.inputValue('#steps'), '4');
  assert.match(await page.textContent('#live-defaults'), /no few-step defaults/);

  await typePrompt(page, 'a large red square in the centre, on a blue background');
  const first = await waitFor('the first live image', async () => {
    const id = await liveJobId(page);
    const job = id && await getJson(`/api/jobs/${id}`);
    return job && job.prompt === 'a large red square in the centre, on a blue background' ? job : null;
  }, 60000);
  assert.equal(first.state, 'done');
  assert.equal(first.total_steps, 4);
  const rgb1 = await meanRgb(page);
  // The latency of the image: "123 ms", and the median over the images so far.
  assert.match(await page.textContent('#live-latency'), /^\d+ ms$/);
  assert.ok(Number(await page.getAttribute('#live-latency', 'data-ms')) > 0);
  assert.match(await page.textContent('#live-stats'), /median \d+ ms over \d+ images?/);

  // Typing another prompt changes the image: white background, a green shape.
  await typePrompt(page, 'a large green triangle on the left, white background');
  const second = await waitFor('the image of the new prompt', async () => {
    const id = await liveJobId(page);
    const job = id && id !== first.id && await getJson(`/api/jobs/${id}`);
    return job && job.prompt === 'a large green triangle on the left, white background' ? job : null;
  }, 60000);
  assert.equal(second.state, 'done');
  const rgb2 = await meanRgb(page);
  // Same seed (the slider's), another prompt: another picture. At 4 steps the demo model draws loosely, so
  // this asks only that the mean colour moves clearly (|dR| + |dG| + |dB| > 30 of 765; 0 if the image stayed).
  const moved = rgb1.reduce((acc, v, k) => acc + Math.abs(rgb2[k] - v), 0);
  assert.ok(moved > 30, `mean RGB ${rgb1.map(Math.round)} -> ${rgb2.map(Math.round)}: the image did not change with the prompt`);
  assert.equal(second.seed, first.seed);

  // The seed slider: a new image with that seed (and the form's seed follows it).
  await page.evaluate(() => {
    const s = document.getElementById('live-seed');
    s.value = '1234';
    s.dispatchEvent(new Event('input', { bubbles: true }));
  });
  await waitFor('the image of seed 1234', async () => (await page.getAttribute('#live-image', 'data-seed')) === '1234', 60000);
  const third = await getJson(`/api/jobs/${await liveJobId(page)}`);
  assert.equal(third.seed, 1234);
  assert.equal(await page.inputValue('#seed'), '1234');
  await page.screenshot({ path: path.join(kArtifacts, 'live-mode.png') });

  // Off: the panel goes and the form's steps come back.
  await page.uncheck('#live-toggle');
  assert.equal(await page.isVisible('#live-panel'), false);
  assert.equal(await page.inputValue('#steps'), '20');
  assert.deepEqual(pageErrors, []);
  await page.context().close();
});

test('live mode: a superseded request is cancelled on the server at its next step', async () => {
  const page = await newPage();
  await page.check('#live-toggle');
  // Long jobs (the user may set any steps), so the first is surely still running when the next edit comes.
  await page.fill('#steps', '400');
  await page.dispatchEvent('#steps', 'change');
  const promptA = 'a red circle on a blue background';
  await typePrompt(page, promptA);
  const a = await waitFor('the first job running', async () => {
    const jobs = await getJson('/api/jobs');
    return jobs.find((j) => j.prompt === promptA && j.state === 'running' && j.step >= 1);
  }, 60000);
  assert.equal(a.total_steps, 400);

  // One more word: a new job, and the first one is cancelled on the server, not finished.
  const promptB = `${promptA} and a star`;
  await page.locator('#prompt').pressSequentially(' and a star', { delay: 15 });
  const b = await waitFor('the new job running', async () => {
    const jobs = await getJson('/api/jobs');
    return jobs.find((j) => j.prompt === promptB && j.state === 'running');
  }, 30000);
  const aEnd = await getJson(`/api/jobs/${a.id}`);
  assert.equal(aEnd.state, 'cancelled', `the superseded job ended ${aEnd.state}`);
  assert.ok(aEnd.step < aEnd.total_steps, `the superseded job ran all its steps (${aEnd.step}/${aEnd.total_steps})`);
  assert.deepEqual(aEnd.images, []);
  assert.match(await page.textContent('#live-stats'), /superseded/);

  // Live off while B runs: B is cancelled too (the worker is not left busy with an unwanted image).
  await page.uncheck('#live-toggle');
  const bEnd = await waitFor('the second job cancelled', async () => {
    const j = await getJson(`/api/jobs/${b.id}`);
    return ['done', 'failed', 'cancelled'].includes(j.state) ? j : null;
  }, 30000);
  assert.equal(bEnd.state, 'cancelled');
  assert.ok(bEnd.step < bEnd.total_steps);
  // Cancelled jobs leave no history entry.
  const history = await getJson('/api/history?limit=100');
  const ids = JSON.stringify(history);
  assert.ok(!ids.includes(a.id) && !ids.includes(b.id), 'a cancelled live job is in the history');
  assert.deepEqual(pageErrors, []);
  await page.context().close();
});

test('live mode: a few-step model runs its own steps and CFG', async () => {
  // The server reports a Turbo-like model's defaults (1 step, CFG 0): simulated on the demo model's entry.
  const page = await newPage((models) => models.map((m) => (m.id === 'demo'
    ? Object.assign({}, m, { kind: 'turbo', defaults: Object.assign({}, m.defaults, { steps: 1, cfg_scale: 0 }) }) : m)));
  await page.check('#live-toggle');
  assert.equal(await page.inputValue('#steps'), '1');
  assert.equal(await page.inputValue('#cfg'), '0');
  assert.match(await page.textContent('#live-defaults'), /1 step, CFG 0: the model's few-step defaults/);
  await typePrompt(page, 'a small yellow star at the top, on a black background');
  const job = await waitFor('the 1-step image', async () => {
    const id = await liveJobId(page);
    return id ? getJson(`/api/jobs/${id}`) : null;
  }, 60000);
  assert.equal(job.total_steps, 1);
  assert.equal(job.state, 'done');
  assert.deepEqual(pageErrors, []);
  await page.context().close();
});
