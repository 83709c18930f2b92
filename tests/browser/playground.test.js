// End-to-end test of the playground page (web/) against the real `diffuse serve`,
// driven in Debian's Chromium through playwright-core (no browser download).
//
// Environment:
//   DIFFUSE_BINARY     the diffuse executable (default: <repo>/build/diffuse)
//   DIFFUSE_FIXTURES   the golden fixtures folder (default: <repo>/build/test-data/fixtures, made by the build)
//   DIFFUSE_ARTIFACTS  where screenshots go (default: <dir of DIFFUSE_BINARY>/test-artifacts)
//   CHROMIUM           the browser (default: /usr/bin/chromium)
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
const kFixtures = process.env.DIFFUSE_FIXTURES || path.resolve(kRepo, 'build', 'test-data', 'fixtures');
const kArtifacts = process.env.DIFFUSE_ARTIFACTS || path.join(path.dirname(kBinary), 'test-artifacts');
const kChromium = process.env.CHROMIUM || '/usr/bin/chromium';
const kModelDir = path.join(kFixtures, 'sd1', 'model');

let server = null;     // child process
let baseUrl = '';
let dataDir = '';
let browser = null;
let serverLog = '';
const pageErrors = [];

// Starts `diffuse serve --port 0` and resolves with the URL it prints on stderr.
function startServer() {
  return new Promise((resolve, reject) => {
    const args = ['serve', '--port', '0', '--model', kModelDir, '--data-dir', dataDir, '--no-hf-cache'];
    const child = spawn(kBinary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => reject(new Error(`server did not print its URL in 60 s:\n${serverLog}`)), 60000);
    const onData = (buf) => {
      serverLog += buf.toString();
      const m = /diffuse serve: (http:\/\/[^\s/]+:\d+)\//.exec(serverLog);
      if (m && !baseUrl) {
        baseUrl = m[1];
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stderr.on('data', onData);
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

before(async () => {
  assert.ok(fs.existsSync(kBinary), `no diffuse binary at ${kBinary} (set DIFFUSE_BINARY)`);
  assert.ok(fs.existsSync(kModelDir), `no fixture model at ${kModelDir} (set DIFFUSE_FIXTURES)`);
  assert.ok(fs.existsSync(kChromium), `no browser at ${kChromium} (apt-get install chromium)`);
  fs.mkdirSync(kArtifacts, { recursive: true });
  dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-browser-'));
  await startServer();
  // Root has no user namespace sandbox in containers; the page is ours and local.
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

async function newPage() {
  const ctx = await browser.newContext({ viewport: { width: 1440, height: 1000 }, acceptDownloads: true });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(`console: ${m.text()}`); });
  await page.goto(baseUrl + '/');
  await page.waitForFunction(() => document.querySelectorAll('#model option[value]:not([value=""])').length > 0);
  return page;
}

// Records every text of #progress-text and every new #preview src, so fast runs are still observed.
async function recordProgress(page) {
  await page.evaluate(() => {
    window.__seen = { texts: [], previews: [] };
    const text = document.getElementById('progress-text');
    const prev = document.getElementById('preview');
    new MutationObserver(() => window.__seen.texts.push(text.textContent))
      .observe(text, { childList: true, characterData: true, subtree: true });
    new MutationObserver(() => window.__seen.previews.push({ src: prev.src.slice(0, 40), step: prev.dataset.step }))
      .observe(prev, { attributes: true, attributeFilter: ['src'] });
  });
}

async function fillForm(page, { prompt, images, steps, size }) {
  await page.selectOption('#model', { index: 0 });
  await page.fill('#prompt', prompt);
  await page.fill('#negative', 'blurry');
  await page.fill('#images', String(images));
  await page.fill('#seed', '-1');
  await page.fill('#steps', String(steps));
  await page.fill('#cfg', '7');
  await page.selectOption('#sampler', 'euler');
  await page.selectOption('#schedule', 'default');
  await page.fill('#width', String(size));
  await page.fill('#height', String(size));
}

test('playground: model picker, generate, progress, preview, gallery, history, reuse, stop', async () => {
  const page = await newPage();

  // Model picker: name, family, hash, licence, model card; disclaimer is present.
  // The built-in demo model is listed first (and so selected), then the --model given.
  const models = await getJson('/api/models');
  assert.equal(models.length, 2);
  assert.equal(models[0].id, 'demo');
  const option = await page.textContent('#model option');
  assert.ok(option.includes(models[0].name), `option "${option}" names the model`);
  await page.waitForSelector('#model-info .chip.family');
  const family = await page.textContent('#model-info .chip.family');
  if (models[0].family) assert.equal(family, models[0].family.toUpperCase());
  assert.ok((await page.textContent('[data-testid=model-license]')).length > 0);
  const disclaimer = await page.textContent('#disclaimer');
  assert.match(disclaimer, /licen[cs]e/i);
  assert.match(disclaimer, /ethical/i);

  // The device panel refreshes every second: either GPU rows or the CPU's description, plus CPU and RAM meters.
  await page.waitForSelector('#device-panel [data-testid=cpu-util]');
  const devices = await page.textContent('#device-panel');
  assert.ok(/GPU \d+:/.test(devices) || /CPU: \S/.test(devices), `device panel: ${devices}`);
  if (!/GPU \d+:/.test(devices)) {
    // Without a GPU: the CPU's model, cores and ISA from /api/devices, never the NVML loader's error.
    const cpu = (await getJson('/api/devices')).devices.cpu;
    assert.ok(devices.includes(`CPU: ${cpu.model}`), `device panel names the CPU: ${devices}`);
    assert.match(devices, new RegExp(`${cpu.cores} cores`));
    if (cpu.isa.includes('avx2')) assert.match(devices, /avx2/);
    assert.doesNotMatch(devices, /cannot open|\.so/);
  }
  assert.match(devices, /RAM/);

  // First run: 2 images, 64x64 (the tiny model's CPU run must stay quick on a busy CI machine), 6 steps.
  await fillForm(page, { prompt: 'a red fox in the snow', images: 2, steps: 6, size: 64 });
  await recordProgress(page);
  await page.click('#generate');
  await page.waitForSelector('#gallery .gallery-item img', { timeout: 120000 });
  await page.waitForFunction(() => document.querySelectorAll('#gallery .gallery-item img').length === 2);
  await page.waitForFunction(() => [...document.querySelectorAll('#gallery .gallery-item img')]
    .every((i) => i.complete && i.naturalWidth === 64 && i.naturalHeight === 64));

  const seen = await page.evaluate(() => window.__seen);
  assert.ok(seen.texts.some((t) => /^Step \d+\/6 · .*(it\/s|s\/it) · ETA /.test(t)),
            `progress text showed steps: ${JSON.stringify(seen.texts)}`);
  assert.ok(seen.previews.length >= 1, 'the live preview was updated at least once');
  assert.ok(seen.previews.every((p) => p.src.startsWith('data:image/png;base64,')));
  assert.match(await page.textContent('#progress-text'), /^Done: 2 images/);
  assert.equal(await page.getAttribute('#progress', 'aria-valuenow'), '100');
  // Once loaded, the picker shows the family, the short hash and the licence the server learned.
  const loaded = (await getJson('/api/models'))[0];
  assert.equal(loaded.family, 'sd1');
  await page.waitForFunction((h) => document.querySelector('#model option').textContent.includes(`[${h}]`), loaded.hash);
  assert.equal(await page.textContent('#model-info .chip.family'), 'SD1');
  assert.equal(await page.textContent('[data-testid=model-license]'), loaded.license || 'unknown (check the model card)');

  // Seeds: the batch uses seed, seed + 1; each item links the stored PNG for download.
  const items = await page.$$eval('#gallery .gallery-item', (els) => els.map((e) => ({
    seed: Number(e.dataset.seed),
    src: e.querySelector('img').getAttribute('src'),
    href: e.querySelector('a[download]').getAttribute('href'),
    download: e.querySelector('a[download]').getAttribute('download'),
    text: e.textContent,
  })));
  assert.equal(items.length, 2);
  assert.equal(items[1].seed, items[0].seed + 1);
  for (const it of items) {
    assert.match(it.href, /^\/images\/[A-Za-z0-9_-]+\.png$/);
    assert.equal(it.href, it.src);
    assert.ok(it.download.endsWith('.png'));
    assert.match(it.text, new RegExp(`Seed ${it.seed}`));
  }
  // The download is the stored file itself: a PNG with A1111 "parameters" text.
  const png = Buffer.from(await (await fetch(baseUrl + items[0].href)).arrayBuffer());
  assert.deepEqual([...png.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
  assert.ok(png.includes(Buffer.from('parameters')), 'PNG keeps its metadata');
  assert.ok(png.includes(Buffer.from(`Seed: ${items[0].seed}`)));
  const download = await Promise.all([page.waitForEvent('download'), page.click('#gallery .gallery-item a[download]')]);
  const saved = await download[0].path();
  assert.ok(fs.readFileSync(saved).equals(png), 'downloaded bytes equal the stored PNG');

  await page.screenshot({ path: path.join(kArtifacts, 'playground.png'), fullPage: true });

  // Reload: the job is in the history (persistent), and "Reuse" fills the form.
  await page.reload();
  await page.waitForSelector('#history .history-item');
  const hist = await page.$$eval('#history .history-item', (els) => els.map((e) => ({
    prompt: e.querySelector('.history-prompt').textContent,
    srcs: [...e.querySelectorAll('img')].map((i) => i.getAttribute('src')),
  })));
  assert.equal(hist.length, 1);
  assert.equal(hist[0].prompt, 'a red fox in the snow');
  assert.deepEqual(hist[0].srcs.slice().sort(), items.map((i) => i.src).sort());
  assert.match(await page.textContent('#history-page'), /Page 1 of 1/);

  await page.fill('#prompt', 'something else');
  await page.fill('#steps', '3');
  await page.click('#history .history-image:nth-child(2) button[data-action=reuse]');
  assert.equal(await page.inputValue('#prompt'), 'a red fox in the snow');
  assert.equal(await page.inputValue('#negative'), 'blurry');
  assert.equal(await page.inputValue('#seed'), String(items[1].seed));
  assert.equal(await page.inputValue('#steps'), '6');
  assert.equal(await page.inputValue('#sampler'), 'euler');
  assert.equal(await page.inputValue('#width'), '64');

  // Second run with many steps: Stop cancels it and the UI says so.
  await fillForm(page, { prompt: 'a very long run', images: 1, steps: 1000, size: 64 });
  await page.click('#generate');
  await page.waitForFunction(() => /^Step \d+\/1000/.test(document.getElementById('progress-text').textContent),
                             null, { timeout: 60000 });
  await page.waitForSelector('#queue .queue-item[data-state=running]');
  assert.equal(await page.isDisabled('#stop'), false);
  await page.click('#stop');
  await page.waitForFunction(() => document.getElementById('progress-text').dataset.state === 'cancelled',
                             null, { timeout: 30000 });
  const cancelledText = await page.textContent('#progress-text');
  assert.match(cancelledText, /^Cancelled at step \d+\/1000/);
  const jobs = await getJson('/api/jobs');
  const longJob = jobs.find((j) => j.prompt === 'a very long run');
  assert.equal(longJob.state, 'cancelled');
  assert.ok(longJob.step < 1000);
  await page.waitForFunction(() => document.querySelectorAll('#queue .queue-item').length === 0);
  await page.waitForFunction(() => document.getElementById('stop').disabled);
  // A cancelled job adds nothing to the gallery or the history.
  assert.equal(await page.locator('#gallery .gallery-item').count(), 0);  // the page was reloaded
  assert.equal((await getJson('/api/history?limit=10')).total, 1);

  await page.screenshot({ path: path.join(kArtifacts, 'playground-cancelled.png'), fullPage: true });
  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
});

test('playground: queued jobs show positions and can be cancelled from the queue', async () => {
  const page = await newPage();
  await fillForm(page, { prompt: 'queue head', images: 1, steps: 1000, size: 64 });
  await page.click('#generate');
  await page.waitForFunction(() => /^Step \d+\/1000/.test(document.getElementById('progress-text').textContent),
                             null, { timeout: 60000 });
  await page.fill('#prompt', 'queue tail');
  await page.fill('#seed', '1234');
  await page.press('#prompt', 'Control+Enter');  // the keyboard shortcut submits too
  await page.waitForSelector('#queue .queue-item[data-state=queued]');
  // Seed buttons: dice -> -1 (random); recycle -> the seed of the last submitted job.
  await page.click('#seed-random');
  assert.equal(await page.inputValue('#seed'), '-1');
  await page.click('#seed-reuse');
  assert.equal(await page.inputValue('#seed'), '1234');
  assert.match(await page.textContent('#queue .queue-item[data-state=queued]'), /position 1/);
  await page.click('#queue .queue-item[data-state=queued] button[data-action=cancel]');
  await page.click('#queue .queue-item[data-state=running] button[data-action=cancel]');
  await page.waitForFunction(() => document.querySelectorAll('#queue .queue-item').length === 0, null, { timeout: 30000 });
  const jobs = await getJson('/api/jobs');
  for (const p of ['queue head', 'queue tail']) {
    assert.equal(jobs.find((j) => j.prompt === p).state, 'cancelled', p);
  }
  await page.waitForFunction(() => document.getElementById('progress-text').dataset.state === 'cancelled');
  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
});
