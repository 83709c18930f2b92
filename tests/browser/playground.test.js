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
const zlib = require('node:zlib');
const { chromium } = require('playwright-core');
const OpenAI = require('openai');

const kRepo = path.resolve(__dirname, '..', '..');
const kBinary = process.env.DIFFUSE_BINARY || path.join(kRepo, 'build', 'diffuse');
const kFixtures = process.env.DIFFUSE_FIXTURES || path.resolve(kRepo, 'build', 'test-data', 'fixtures');
const kArtifacts = process.env.DIFFUSE_ARTIFACTS || path.join(path.dirname(kBinary), 'test-artifacts');
const kChromium = process.env.CHROMIUM || '/usr/bin/chromium';
const kModelDir = path.join(kFixtures, 'sd1', 'model');

let server = null;     // child process
let baseUrl = '';
let dataDir = '';
let loraDir = '';      // the server's --lora-dir and --embeddings-dir
let embDir = '';
let browser = null;
let serverLog = '';
const pageErrors = [];

// Starts `diffuse serve --port 0` and resolves with the URL it prints on stderr.
function startServer() {
  return new Promise((resolve, reject) => {
    const args = ['serve', '--port', '0', '--model', kModelDir, '--data-dir', dataDir, '--no-hf-cache',
                  '--lora-dir', loraDir, '--embeddings-dir', embDir];
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

// ---------- PNG in node (zlib only): test pictures in, results out ----------
const kPngSignature = Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]);

function crc32(buf) {
  let c, crc = 0xffffffff;
  for (const b of buf) {
    c = (crc ^ b) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

// 8-bit PNG: channels 3 (RGB) or 4 (RGBA), filter 0 on every row.
function encodePng(width, height, channels, px) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = channels === 4 ? 6 : 2;
  const raw = Buffer.alloc((width * channels + 1) * height);
  for (let y = 0; y < height; y++) {
    Buffer.from(px.buffer, px.byteOffset + y * width * channels, width * channels).copy(raw, y * (width * channels + 1) + 1);
  }
  return Buffer.concat([kPngSignature, chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

// Decodes an 8-bit, non-interlaced grey / RGB / RGBA PNG (what the server writes) to {width, height, channels, px}.
function decodePng(buf) {
  assert.ok(buf.subarray(0, 8).equals(kPngSignature), 'a PNG');
  let pos = 8, width = 0, height = 0, channels = 0;
  const idat = [];
  while (pos < buf.length) {
    const len = buf.readUInt32BE(pos);
    const type = buf.toString('latin1', pos + 4, pos + 8);
    const data = buf.subarray(pos + 8, pos + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert.equal(data[8], 8, '8-bit');
      assert.equal(data[12], 0, 'not interlaced');
      channels = { 0: 1, 2: 3, 6: 4 }[data[9]];
      assert.ok(channels, `colour type ${data[9]}`);
    } else if (type === 'IDAT') {
      idat.push(data);
    }
    pos += 12 + len;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  const px = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)];
    const line = raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? px[y * stride + x - channels] : 0;
      const b = y > 0 ? px[(y - 1) * stride + x] : 0;
      const c = x >= channels && y > 0 ? px[(y - 1) * stride + x - channels] : 0;
      let v = line[x];
      if (filter === 1) v += a;
      else if (filter === 2) v += b;
      else if (filter === 3) v += (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
        v += pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      px[y * stride + x] = v & 0xff;
    }
  }
  return { width, height, channels, px };
}

// A .safetensors file of F32 tensors ({name: {shape, data: Float32Array}}) and string metadata.
function writeSafetensors(file, tensors, metadata) {
  const header = {};
  const bufs = [];
  let offset = 0;
  for (const [name, t] of Object.entries(tensors)) {
    const b = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    header[name] = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + b.length] };
    offset += b.length;
    bufs.push(b);
  }
  if (metadata) header.__metadata__ = metadata;
  let text = JSON.stringify(header);
  while (Buffer.byteLength(text) % 8) text += ' ';
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(text)));
  fs.writeFileSync(file, Buffer.concat([len, Buffer.from(text), ...bufs]));
}

// The server's LoRA folder: the fixture kohya LoRA of the sd1 model (it runs), and
// a small file with kohya metadata (alias, trained words) that is only listed; its
// embeddings folder: one A1111 embedding of two 16-wide vectors (the fixture encoder's width).
function writeAdapterFolders() {
  loraDir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-lora-'));
  embDir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-emb-'));
  fs.copyFileSync(path.join(kFixtures, 'v2', 'sd1', 'lora', 'lora_kohya.safetensors'), path.join(loraDir, 'fox_ink.safetensors'));
  fs.mkdirSync(path.join(loraDir, 'styles'));
  writeSafetensors(path.join(loraDir, 'styles', 'detail_tweaker.safetensors'), {
    'lora_unet_mid_block_attentions_0_proj_in.lora_down.weight': { shape: [1, 4], data: new Float32Array(4) },
    'lora_unet_mid_block_attentions_0_proj_in.lora_up.weight': { shape: [4, 1], data: new Float32Array(4) },
  }, { ss_output_name: 'detailer', ss_base_model_version: 'sd_v1',
       ss_tag_frequency: JSON.stringify({ '5_detail': { watercolor: 9, sharp: 2 } }) });
  writeSafetensors(path.join(embDir, 'tinyconcept.safetensors'),
                   { emb_params: { shape: [2, 16], data: new Float32Array(32).map((_, i) => (i % 7) / 10) } });
}

// A colourful RGB test picture: gradients and a checkerboard.
function testPicture(width, height) {
  const px = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = (y * width + x) * 3;
      px[i] = Math.floor((x * 255) / (width - 1));
      px[i + 1] = Math.floor((y * 255) / (height - 1));
      px[i + 2] = ((x >> 3) + (y >> 3)) % 2 ? 200 : 40;
    }
  }
  return px;
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
  writeAdapterFolders();
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
  for (const d of [dataDir, loraDir, embDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
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

test('playground: upload an image, paint a mask, inpaint; pixels away from the stroke are the upload\'s', async () => {
  const page = await newPage();
  const kSide = 64;
  await fillForm(page, { prompt: 'a yellow star on a black background', images: 1, steps: 6, size: 128 });
  const picture = testPicture(kSide, kSide);
  const file = path.join(dataDir, 'upload.png');
  fs.writeFileSync(file, encodePng(kSide, kSide, 3, picture));

  // Upload through the file input; the panel opens and the size follows the image.
  await page.setInputFiles('#init-file', file);
  await page.waitForSelector('#edit-stage:not([hidden])');
  assert.equal(await page.evaluate(() => document.getElementById('edit-panel').open), true);
  assert.equal(await page.inputValue('#width'), String(kSide));
  assert.equal(await page.inputValue('#height'), String(kSide));
  assert.equal(await page.inputValue('#strength'), '0.75');

  // Inpaint mode: paint one horizontal stroke with the mouse, no mask blur.
  await page.selectOption('#edit-mode', 'inpaint');
  await page.waitForSelector('#mask-tools:not([hidden])');
  await page.fill('#mask-blur', '0');
  const box = await page.locator('#mask-canvas').boundingBox();
  assert.ok(box && box.width > 100, `the mask canvas is shown scaled up: ${JSON.stringify(box)}`);
  await page.mouse.move(box.x + box.width * 0.3, box.y + box.height * 0.5);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.7, box.y + box.height * 0.5, { steps: 10 });
  await page.mouse.up();
  const maskAlpha = () => page.evaluate(() => {
    const c = document.getElementById('mask-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    return Array.from({ length: c.width * c.height }, (_, i) => d[4 * i + 3]);
  });
  const painted = (await maskAlpha()).filter((a) => a > 0).length;
  assert.ok(painted > 40 && painted < (kSide * kSide) / 3, `the stroke covers ${painted} pixels`);
  await page.locator('#edit-panel').screenshot({ path: path.join(kArtifacts, 'playground-mask.png') });
  // Invert twice changes nothing; the eraser takes paint away.
  await page.click('#mask-invert');
  await page.click('#mask-invert');
  const paintedNow = () => page.evaluate(() => {
    const c = document.getElementById('mask-canvas');
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 3; i < d.length; i += 4) n += d[i] > 0;
    return n;
  });
  assert.equal(await paintedNow(), painted);
  // Clicking the tools may scroll the page: the canvas is located again before each stroke.
  const stroke = async (from, to) => {
    await page.locator('#mask-canvas').scrollIntoViewIfNeeded();
    const b = await page.locator('#mask-canvas').boundingBox();
    await page.mouse.move(b.x + b.width * from, b.y + b.height * 0.5);
    await page.mouse.down();
    await page.mouse.move(b.x + b.width * to, b.y + b.height * 0.5, { steps: 4 });
    await page.mouse.up();
  };
  await page.click('#tool-eraser');
  await stroke(0.25, 0.35);
  const afterErase = await paintedNow();
  assert.ok(afterErase < painted && afterErase > 0, `the eraser removed paint: ${painted} -> ${afterErase}`);
  await page.click('#tool-brush');
  await stroke(0.25, 0.35);
  assert.ok(await paintedNow() >= painted, 'the brush paints again');
  const alpha = await maskAlpha();  // the mask as sent

  await recordProgress(page);
  await page.click('#generate');
  await page.waitForFunction(() => {
    const imgs = [...document.querySelectorAll('#gallery .gallery-item img')];
    return imgs.length === 1 && imgs[0].complete && imgs[0].naturalWidth > 0;
  }, null, { timeout: 120000 });
  const href = await page.getAttribute('#gallery .gallery-item a[download]', 'href');
  const out = decodePng(Buffer.from(await (await fetch(baseUrl + href)).arrayBuffer()));
  assert.equal(out.width, kSide);
  assert.equal(out.height, kSide);

  // Every pixel more than 2 px from the stroke is the upload's, exactly; the stroke itself is repainted.
  const near = new Uint8Array(kSide * kSide);
  for (let y = 0; y < kSide; y++) {
    for (let x = 0; x < kSide; x++) {
      if (!alpha[y * kSide + x]) continue;
      for (let dy = -2; dy <= 2; dy++) {
        for (let dx = -2; dx <= 2; dx++) {
          const yy = y + dy, xx = x + dx;
          if (yy >= 0 && yy < kSide && xx >= 0 && xx < kSide) near[yy * kSide + xx] = 1;
        }
      }
    }
  }
  let far = 0, farDiff = 0, strokeChanged = 0;
  for (let i = 0; i < kSide * kSide; i++) {
    const same = out.px[3 * i] === picture[3 * i] && out.px[3 * i + 1] === picture[3 * i + 1] &&
                 out.px[3 * i + 2] === picture[3 * i + 2];
    if (!near[i]) {
      far++;
      if (!same) farDiff++;
    } else if (alpha[i] >= 128 && !same) {
      strokeChanged++;
    }
  }
  assert.ok(far > 2000, `${far} pixels are away from the stroke`);
  assert.equal(farDiff, 0, `${farDiff} of ${far} pixels away from the stroke differ from the upload`);
  assert.ok(strokeChanged > 10, `the stroke was repainted (${strokeChanged} pixels changed)`);

  // The job went through the native API as an inpainting job: the history says so, without the image data.
  const hist = await getJson('/api/history?limit=1');
  assert.equal(hist.items[0].params.init_image, `<image ${kSide}x${kSide}>`);
  assert.equal(hist.items[0].params.mask_blur, 0);
  assert.equal(hist.items[0].params.strength, 0.75);

  // "Send to img2img" on the result loads it into the panel, in img2img mode.
  await page.click('#gallery .gallery-item button[data-action=send-img2img]');
  await page.waitForFunction(() => document.getElementById('edit-mode').value === 'img2img');
  await page.waitForFunction(() => document.getElementById('mask-tools').hidden);
  const first = await page.evaluate(() => Array.from(
    document.getElementById('init-canvas').getContext('2d').getImageData(0, 0, 1, 1).data.slice(0, 3)));
  assert.deepEqual(first, [...out.px.subarray(0, 3)]);
  // ...and "Send to inpaint" shows the mask tools with an empty mask.
  await page.click('#gallery .gallery-item button[data-action=send-inpaint]');
  await page.waitForSelector('#mask-tools:not([hidden])');
  assert.equal(await page.inputValue('#edit-mode'), 'inpaint');
  // Inpaint mode with nothing painted says so instead of submitting.
  await page.click('#generate');
  assert.match(await page.textContent('#form-error'), /Paint the area/);
  // A pasted image (clipboard) and a dropped file load too.
  const pasted = encodePng(80, 64, 3, testPicture(80, 64)).toString('base64');
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'pasted.png', { type: 'image/png' }));
    document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true }));
  }, pasted);
  await page.waitForFunction(() => document.getElementById('init-canvas').width === 80);
  assert.equal(await page.inputValue('#width'), '80');
  const dropped = encodePng(64, 72, 3, testPicture(64, 72)).toString('base64');
  await page.evaluate((b64) => {
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    const dt = new DataTransfer();
    dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
    document.getElementById('init-drop').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, dropped);
  await page.waitForFunction(() => document.getElementById('init-canvas').height === 72);
  // Removing the image goes back to text-to-image.
  await page.click('#init-clear');
  assert.equal(await page.isHidden('#edit-stage'), true);

  await page.screenshot({ path: path.join(kArtifacts, 'playground-inpaint.png'), fullPage: true });
  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
});

test('openai SDK: images.edit with a mask whose transparent pixels are edited', async () => {
  const kSide = 64;
  const client = new OpenAI({ baseURL: `${baseUrl}/v1`, apiKey: 'sk-local-unused', maxRetries: 0 });
  const picture = testPicture(kSide, kSide);
  // Transparent (alpha 0) in a centred square: the area to edit, as OpenAI defines the mask.
  const rgba = Buffer.alloc(kSide * kSide * 4, 255);
  const inEdit = (i) => { const x = i % kSide, y = Math.floor(i / kSide); return x >= 20 && x < 44 && y >= 20 && y < 44; };
  for (let i = 0; i < kSide * kSide; i++) if (inEdit(i)) rgba[4 * i + 3] = 0;
  const image = await OpenAI.toFile(encodePng(kSide, kSide, 3, picture), 'image.png', { type: 'image/png' });
  const mask = await OpenAI.toFile(encodePng(kSide, kSide, 4, rgba), 'mask.png', { type: 'image/png' });
  const res = await client.images.edit({ image, mask, prompt: 'a green circle', n: 2, size: `${kSide}x${kSide}`,
                                         response_format: 'b64_json' });
  assert.equal(res.data.length, 2);
  assert.ok(Number.isInteger(res.created));
  for (const d of res.data) {
    const out = decodePng(Buffer.from(d.b64_json, 'base64'));
    assert.equal(out.width, kSide);
    assert.equal(out.height, kSide);
    let kept = 0;
    for (let i = 0; i < kSide * kSide; i++) {
      if (inEdit(i)) continue;
      assert.deepEqual([...out.px.subarray(3 * i, 3 * i + 3)], [...picture.subarray(3 * i, 3 * i + 3)], `pixel ${i} is kept`);
      kept++;
    }
    assert.equal(kept, kSide * kSide - 24 * 24);
  }
  assert.notEqual(res.data[0].b64_json, res.data[1].b64_json);

  // A mask with no transparent pixel: nothing to edit, a 400 the SDK raises as BadRequestError.
  const opaque = await OpenAI.toFile(encodePng(kSide, kSide, 4, Buffer.alloc(kSide * kSide * 4, 255)), 'mask.png',
                                     { type: 'image/png' });
  const image2 = await OpenAI.toFile(encodePng(kSide, kSide, 3, picture), 'image.png', { type: 'image/png' });
  await assert.rejects(client.images.edit({ image: image2, mask: opaque, prompt: 'x' }), (e) => {
    assert.equal(e.status, 400);
    assert.ok(e instanceof OpenAI.BadRequestError, `${e.constructor.name}`);
    assert.match(e.message, /transparent/);
    return true;
  });
});

test('playground: LoRA & embeddings browser: search, click to add a tag, weight slider, generate with it', async () => {
  const page = await newPage();
  await fillForm(page, { prompt: 'a red fox', images: 1, steps: 2, size: 64 });
  // The fixture LoRA is for the sd1 fixture model (the second listed, after the demo model).
  await page.selectOption('#model', { index: 1 });
  for (const [id, v] of [['#prompt', 'a red fox'], ['#steps', '2'], ['#width', '64'], ['#height', '64']]) await page.fill(id, v);
  await page.selectOption('#sampler', 'euler');

  // Opening the panel lists the server's folders.
  await page.click('#adapters-panel summary');
  await page.waitForSelector('#lora-list [data-testid=lora-item][data-name=fox_ink]');
  const loras = await page.$$eval('#lora-list [data-testid=lora-item]', (els) => els.map((e) => e.dataset.name));
  assert.deepEqual(loras, ['fox_ink', 'detail_tweaker'], 'natural path order: the files of the folder itself first');
  assert.match(await page.textContent('#lora-list [data-name=detail_tweaker]'), /\(detailer\).*SD1.*styles\/detail_tweaker\.safetensors.*watercolor/s);
  await page.waitForSelector('#embedding-list [data-testid=embedding-item][data-name=tinyconcept]');
  assert.match(await page.textContent('#embedding-list [data-name=tinyconcept]'), /2 vectors · width 16/);

  // The search box filters by name, alias and trained words.
  await page.fill('#adapters-search', 'watercolor');
  assert.deepEqual(await page.$$eval('#lora-list [data-testid=lora-item]', (els) => els.map((e) => e.dataset.name)),
                   ['detail_tweaker']);
  assert.equal(await page.locator('#embedding-list [data-testid=embedding-item]').count(), 0);
  await page.fill('#adapters-search', '');

  // Refresh rescans the folders: a file copied in since is listed.
  fs.copyFileSync(path.join(loraDir, 'fox_ink.safetensors'), path.join(loraDir, 'zz_new.safetensors'));
  await page.click('#adapters-refresh');
  await page.waitForSelector('#lora-list [data-testid=lora-item][data-name=zz_new]');
  assert.equal(await page.textContent('#lora-count'), '3');

  // Clicking a LoRA adds its tag to the prompt, marks it, and selects it for the weight slider.
  assert.equal(await page.isHidden('#lora-weight-box'), true);
  await page.click('#lora-list [data-name=fox_ink]');
  assert.equal(await page.inputValue('#prompt'), 'a red fox <lora:fox_ink:1>');
  assert.equal(await page.getAttribute('#lora-list [data-name=fox_ink]', 'aria-pressed'), 'true');
  assert.equal(await page.textContent('#adapters-chip'), '1 LoRA');
  assert.equal(await page.isVisible('#lora-weight-box'), true);
  assert.equal(await page.textContent('#lora-weight-name'), 'fox_ink');

  // The slider rewrites the selected tag's weight.
  await page.$eval('#lora-weight', (e) => { e.value = '0.5'; e.dispatchEvent(new Event('input', { bubbles: true })); });
  assert.equal(await page.inputValue('#prompt'), 'a red fox <lora:fox_ink:0.5>');
  assert.equal(await page.textContent('#lora-weight-value'), '0.5');

  // A tag typed by hand is selected by putting the cursor in it.
  await page.fill('#prompt', '<lora:detail_tweaker:0.7> a red fox <lora:fox_ink:0.5>');
  await page.$eval('#prompt', (e) => { e.setSelectionRange(5, 5); e.dispatchEvent(new Event('click')); });
  assert.equal(await page.textContent('#lora-weight-name'), 'detail_tweaker');
  assert.equal(await page.inputValue('#lora-weight'), '0.7');
  await page.$eval('#lora-weight', (e) => { e.value = '1.25'; e.dispatchEvent(new Event('input', { bubbles: true })); });
  assert.equal(await page.inputValue('#prompt'), '<lora:detail_tweaker:1.25> a red fox <lora:fox_ink:0.5>');
  // Clicking a LoRA that is in the prompt removes its tag (A1111's cards toggle).
  await page.click('#lora-list [data-name=detail_tweaker]');
  assert.equal(await page.inputValue('#prompt'), 'a red fox <lora:fox_ink:0.5>');
  assert.equal(await page.getAttribute('#lora-list [data-name=detail_tweaker]', 'aria-pressed'), 'false');

  // An embedding goes to the prompt box used last: here the negative prompt.
  await page.focus('#negative');
  await page.click('#embedding-list [data-name=tinyconcept]');
  assert.equal(await page.inputValue('#negative'), 'blurry tinyconcept');
  assert.equal(await page.inputValue('#prompt'), 'a red fox <lora:fox_ink:0.5>');

  // Generate: the image's parameters keep the tag and name the LoRA's and the embedding's hashes.
  await page.click('#generate');
  await page.waitForFunction(() => document.querySelector('#gallery .gallery-item img') ||
                             /failed|Failed|error/.test(document.getElementById('progress-text').textContent),
                             null, { timeout: 120000 });
  assert.equal(await page.locator('#gallery .gallery-item').count(), 1, await page.textContent('#progress-text'));
  const params = await page.textContent('#gallery .gallery-item .params pre');
  assert.match(params, /^a red fox <lora:fox_ink:0\.5>\nNegative prompt: blurry tinyconcept\n/);
  assert.match(params, /Lora hashes: "fox_ink: [0-9a-f]{12}"/);
  assert.match(params, /TI hashes: "tinyconcept: [0-9a-f]{12}"/);
  await page.screenshot({ path: path.join(kArtifacts, 'playground-lora.png'), fullPage: true });

  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');

  // An unknown LoRA is refused (400) with the server's message, shown under the form.
  await page.fill('#prompt', 'a red fox <lora:no_such_lora:1>');
  await page.click('#generate');
  await page.waitForFunction(() => /no_such_lora/.test(document.getElementById('form-error').textContent));
  assert.match(await page.textContent('#form-error'), /400: LoRA 'no_such_lora' not found in .*available: .*fox_ink/);
  // Chromium logs the refused request itself; nothing else may be logged.
  const others = pageErrors.filter((e) => !/status of 400/.test(e));
  assert.deepEqual(others, [], 'no JavaScript errors on the page');
  pageErrors.length = 0;
});

test('playground: hires fix panel: upscalers from /sdapi/v1/upscalers, a 2x second pass, A1111 parameters', async () => {
  const page = await newPage();
  await fillForm(page, { prompt: 'a lighthouse at dusk', images: 1, steps: 2, size: 64 });
  await page.selectOption('#model', { index: 1 });  // the sd1 fixture model
  for (const [id, v] of [['#prompt', 'a lighthouse at dusk'], ['#steps', '2'], ['#width', '64'], ['#height', '64']]) await page.fill(id, v);
  await page.selectOption('#sampler', 'euler');

  // The upscaler picker holds A1111's list: the pixel upscalers, then the latent modes.
  await page.click('#hires-panel summary');
  const listed = (await getJson('/sdapi/v1/upscalers')).map((u) => u.name);
  const options = await page.$$eval('#hires-upscaler option', (els) => els.map((e) => e.value));
  assert.deepEqual(options, listed);
  assert.deepEqual(options.slice(0, 3), ['None', 'Lanczos', 'Nearest']);
  assert.ok(options.includes('Latent (bicubic antialiased)'), options.join(', '));
  assert.equal(await page.inputValue('#hires-upscaler'), 'Latent');

  await page.check('#hires-enable');
  await page.selectOption('#hires-upscaler', 'Latent (bicubic)');
  await page.fill('#hires-scale', '2');
  await page.fill('#hires-steps', '2');
  await page.fill('#hires-denoise', '0.5');
  await recordProgress(page);
  await page.click('#generate');
  await page.waitForFunction(() => document.querySelector('#gallery .gallery-item img') ||
                             /failed|Failed|error/.test(document.getElementById('progress-text').textContent),
                             null, { timeout: 120000 });
  await page.waitForFunction(() => [...document.querySelectorAll('#gallery .gallery-item img')]
    .every((i) => i.complete && i.naturalWidth === 128 && i.naturalHeight === 128), null, { timeout: 30000 });
  const params = await page.textContent('#gallery .gallery-item .params pre');
  assert.match(params, /Steps: 2, Sampler: Euler, .*Size: 64x64/);
  assert.match(params, /Denoising strength: 0\.5/);
  assert.match(params, /Hires upscale: 2, Hires steps: 2, Hires upscaler: Latent \(bicubic\)/);
  // Progress runs over both passes: 2 steps, then int(2 x 0.5) = 1.
  const steps = (await page.evaluate(() => window.__seen.texts)).filter((t) => /^Step [1-9]\d*\//.test(t));
  assert.ok(steps.length > 0 && steps.every((t) => /^Step \d+\/3 /.test(t)), steps.join(' | '));
  await page.screenshot({ path: path.join(kArtifacts, 'playground-hires.png'), fullPage: true });
  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
  await page.uncheck('#hires-enable');
});
