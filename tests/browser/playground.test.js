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
let cnDir = '';        // the server's --controlnet-dir
let browser = null;
let serverLog = '';
const pageErrors = [];

// Starts `diffuse serve --port 0` and resolves with the URL it prints on stderr.
function startServer() {
  return new Promise((resolve, reject) => {
    const args = ['serve', '--port', '0', '--model', kModelDir, '--data-dir', dataDir, '--no-hf-cache',
                  '--controlnet-dir', cnDir,  // the ControlNet panel's test writes its model there
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
  cnDir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-cn-'));
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
  for (const d of [dataDir, loraDir, embDir, cnDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
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
  assert.ok(seen.texts.some((t) => /^Denoising step \d+\/6 · .*(it\/s|s\/it) · ETA /.test(t)),
            `progress text showed steps: ${JSON.stringify(seen.texts)}`);
  assert.ok(seen.previews.length >= 1, 'the live preview was updated at least once');
  // Live previews (PNG data), then the final image in their place.
  assert.ok(seen.previews.slice(0, -1).every((p) => p.src.startsWith('data:image/png;base64,')), JSON.stringify(seen.previews));
  assert.ok(seen.previews[0].src.startsWith('data:image/png;base64,'));
  assert.match(seen.previews[seen.previews.length - 1].src, /\/images\//);
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
    // The stored file, served as an attachment under A1111's name: 00012-<seed>.png.
    assert.match(it.download, new RegExp(`^\\d{5}-${it.seed}\\.png$`));
    assert.equal(it.href, `${it.src}?download=${it.download}`);
    assert.match(it.src, /^\/images\/[A-Za-z0-9_-]+\.png$/);
    assert.match(it.text, new RegExp(`Seed ${it.seed}`));
  }
  // The download is the stored file itself: a PNG with A1111 "parameters" text.
  const png = Buffer.from(await (await fetch(baseUrl + items[0].href)).arrayBuffer());
  assert.deepEqual([...png.subarray(0, 8)], [137, 80, 78, 71, 13, 10, 26, 10]);
  assert.ok(png.includes(Buffer.from('parameters')), 'PNG keeps its metadata');
  assert.ok(png.includes(Buffer.from(`Seed: ${items[0].seed}`)));
  const download = await Promise.all([page.waitForEvent('download'), page.click('#gallery .gallery-item a[download]')]);
  assert.equal(download[0].suggestedFilename(), items[0].download);
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

  // Second run with many steps: Stop ends it after the current step and keeps
  // that step's image (A1111's Interrupt), and the UI says so.
  await fillForm(page, { prompt: 'a very long run', images: 1, steps: 1000, size: 64 });
  await page.click('#generate');
  await page.waitForFunction(() => /^Denoising step \d+\/1000/.test(document.getElementById('progress-text').textContent),
                             null, { timeout: 60000 });
  await page.waitForSelector('#queue .queue-item[data-state=running]');
  assert.equal(await page.isDisabled('#stop'), false);
  await page.click('#stop');
  await page.waitForFunction(() => document.getElementById('progress-text').dataset.state === 'done',
                             null, { timeout: 30000 });
  const stoppedText = await page.textContent('#progress-text');
  assert.match(stoppedText, /^Stopped at step \d+\/1000: partial image kept/);
  const jobs = await getJson('/api/jobs');
  const longJob = jobs.find((j) => j.prompt === 'a very long run');
  assert.equal(longJob.state, 'done');
  assert.ok(longJob.stopped_at_step >= 1 && longJob.stopped_at_step < 1000, JSON.stringify(longJob));
  assert.equal(Number(stoppedText.match(/step (\d+)/)[1]), longJob.stopped_at_step);
  await page.waitForFunction(() => document.querySelectorAll('#queue .queue-item').length === 0);
  await page.waitForFunction(() => document.getElementById('stop').disabled);
  // The partial image is offered: in Results (the page was reloaded, so it is the only one),
  // in place of the preview, and in the history.
  await page.waitForFunction(() => document.querySelectorAll('#gallery .gallery-item img').length === 1);
  const partial = await page.$eval('#gallery .gallery-item', (e) => ({ seed: Number(e.dataset.seed), src: e.querySelector('img').getAttribute('src') }));
  assert.equal(partial.src, longJob.images[0].url);
  assert.equal(await page.getAttribute('#preview', 'src'), partial.src);
  const partialPng = decodePng(Buffer.from(await (await fetch(baseUrl + partial.src)).arrayBuffer()));
  assert.equal(partialPng.width, 64);
  assert.equal((await getJson('/api/history?limit=10')).total, 2);

  await page.screenshot({ path: path.join(kArtifacts, 'playground-cancelled.png'), fullPage: true });
  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
});

test('playground: queued jobs show positions and can be cancelled from the queue', async () => {
  const page = await newPage();
  await fillForm(page, { prompt: 'queue head', images: 1, steps: 1000, size: 64 });
  await page.click('#generate');
  await page.waitForFunction(() => /^Denoising step \d+\/1000/.test(document.getElementById('progress-text').textContent),
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
  // The mask strokes scrolled the page down: bring the results into view (their images load lazily).
  await page.waitForSelector('#gallery .gallery-item img', { state: 'attached', timeout: 120000 });
  await page.locator('#gallery .gallery-item img').first().scrollIntoViewIfNeeded();
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
  const steps = (await page.evaluate(() => window.__seen.texts)).filter((t) => /^Denoising step [1-9]\d*\//.test(t));
  assert.ok(steps.length > 0 && steps.every((t) => /^Denoising step \d+\/3 /.test(t)), steps.join(' | '));
  await page.screenshot({ path: path.join(kArtifacts, 'playground-hires.png'), fullPage: true });
  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
  await page.uncheck('#hires-enable');
});

// ---------- issue 29: the playground's first five minutes ----------

// Mean colours over the shape and the background of a scene: the final image's
// pixels farther than 60 (RGB distance) from its border's median are the shape
// (the demo scorer's rule); `blocks` maps each latent pixel (8 x 8 block) to
// 1 (all shape), 0 (all background) or -1 (both). Returns {shape, background}
// means of `img` (the final image, or a preview at latent size) over the blocks.
function sceneBlocks(final) {
  const { width, height, channels, px } = final;
  const ring = [[], [], []];
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (x >= 4 && y >= 4 && x < width - 4 && y < height - 4) continue;
      for (let c = 0; c < 3; c++) ring[c].push(px[(y * width + x) * channels + c]);
    }
  }
  const bg = ring.map((v) => v.sort((a, b) => a - b)[v.length >> 1]);
  const lw = width / 8, lh = height / 8, blocks = [];
  for (let by = 0; by < lh; by++) {
    for (let bx = 0; bx < lw; bx++) {
      let fg = 0;
      for (let y = by * 8; y < by * 8 + 8; y++) {
        for (let x = bx * 8; x < bx * 8 + 8; x++) {
          const i = (y * width + x) * channels;
          fg += Math.hypot(px[i] - bg[0], px[i + 1] - bg[1], px[i + 2] - bg[2]) > 60;
        }
      }
      blocks.push(fg === 64 ? 1 : fg === 0 ? 0 : -1);
    }
  }
  return blocks;
}

function regionMeans(img, blocks) {
  const { width, height, channels, px } = img;
  const scale = width / Math.sqrt(blocks.length);  // 8 for the final image, 1 for a latent-size preview
  const sums = { 1: [0, 0, 0, 0], 0: [0, 0, 0, 0] };
  const lw = width / scale;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const k = blocks[Math.floor(y / scale) * lw + Math.floor(x / scale)];
      if (k < 0) continue;
      const i = (y * width + x) * channels;
      for (let c = 0; c < 3; c++) sums[k][c] += px[i + c];
      sums[k][3]++;
    }
  }
  const mean = (s) => s.slice(0, 3).map((v) => v / Math.max(1, s[3]));
  return { shape: mean(sums[1]), background: mean(sums[0]), shapeN: sums[1][3], backgroundN: sums[0][3] };
}

const maxDiff = (a, b) => Math.max(...a.map((v, i) => Math.abs(v - b[i])));

test('playground (issue 29): demo examples, model card, native sizes, phases, preview colours, final image, lightbox, shortcuts', async () => {
  const page = await newPage();
  await page.selectOption('#model', 'demo');
  // Example prompts of the demo model as chips; a click fills the prompt.
  const demo = (await getJson('/api/models')).find((m) => m.id === 'demo');
  assert.ok(demo.example_prompts.length >= 3, JSON.stringify(demo.example_prompts));
  const chips = await page.$$eval('[data-testid=example-prompt]', (els) => els.map((e) => e.textContent));
  assert.deepEqual(chips, demo.example_prompts);
  assert.equal(await page.getAttribute('#prompt', 'placeholder'), `e.g. ${demo.example_prompts[0]}`);
  await page.click(`[data-testid=example-prompt]:nth-of-type(2)`);
  assert.equal(await page.inputValue('#prompt'), demo.example_prompts[1]);
  // The model card is the folder's README, shown in place.
  await page.click('[data-testid=model-card] summary');
  await page.waitForFunction(() => document.querySelector('[data-testid=model-readme]').textContent.length > 0);
  assert.match(await page.textContent('[data-testid=model-readme]'), /Diffuse demo model/);
  // Size presets start at the native 128 and stay near it; off-native sizes get a note.
  const presets = await page.$$eval('#size-preset option:not([value=custom])', (els) => els.map((e) => e.value));
  assert.equal(presets[0], '128x128');
  assert.ok(!presets.includes('512x512') && !presets.includes('768x768'), presets.join(', '));
  assert.equal(await page.inputValue('#width'), '128');
  assert.equal(await page.isHidden('[data-testid=size-note]'), true);
  await page.selectOption('#size-preset', presets[presets.length - 1]);
  assert.equal(await page.isVisible('[data-testid=size-note]'), true);
  assert.match(await page.textContent('[data-testid=size-note]'), /trained at 128 × 128/);
  await page.selectOption('#size-preset', '128x128');
  assert.equal(await page.isHidden('[data-testid=size-note]'), true);
  // The seed field shows a 10-digit seed whole.
  await page.fill('#seed', '4294967295');
  const seedBox = await page.$eval('#seed', (e) => {
    // The text's width in the field's font, against the room inside its padding and spin buttons.
    const cs = getComputedStyle(e);
    const ctx = document.createElement('canvas').getContext('2d');
    ctx.font = `${cs.fontSize} ${cs.fontFamily}`;
    const room = e.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight) - 16;  // Chromium's spin buttons
    return { text: ctx.measureText(e.value).width, room };
  });
  assert.ok(seedBox.text <= seedBox.room, `the seed field fits 10 digits: ${JSON.stringify(seedBox)}`);

  // The run: "a large red square in the centre, on a blue background", seed 7.
  await page.fill('#prompt', 'a large red square in the centre, on a blue background');
  await page.fill('#negative', '');
  await page.fill('#seed', '7');
  await page.fill('#steps', '20');
  await page.fill('#images', '1');
  await page.selectOption('#sampler', 'euler');
  await page.fill('#clip-skip', '1');
  await recordProgress(page);
  await page.evaluate(() => {
    window.__titles = [];
    window.__lastPreview = null;
    new MutationObserver(() => window.__titles.push(document.title))
      .observe(document.querySelector('title'), { childList: true, characterData: true, subtree: true });
    const prev = document.getElementById('preview');
    new MutationObserver(() => { if (prev.src.startsWith('data:')) window.__lastPreview = prev.src; })
      .observe(prev, { attributes: true, attributeFilter: ['src'] });
  });
  await page.click('#generate');
  await page.waitForFunction(() => document.getElementById('progress-text').dataset.state === 'done', null, { timeout: 120000 });
  const seen = await page.evaluate(() => window.__seen);
  // Named phases; never "Step 0/0".
  assert.ok(seen.texts.every((t) => !/0\/0/.test(t)), JSON.stringify(seen.texts));
  assert.ok(seen.texts.some((t) => /^Denoising step \d+\/20 · /.test(t)), JSON.stringify(seen.texts));
  assert.ok(seen.texts.filter((t) => /^Denoising step/.test(t)).every((t, i, a) => i === 0 || Number(t.match(/\d+/)[0]) >= Number(a[i - 1].match(/\d+/)[0])));
  const titles = await page.evaluate(() => window.__titles);
  assert.ok(titles.some((t) => /^\[\d+%\] Denoising step \d+\/20/.test(t)), JSON.stringify(titles));
  assert.equal(await page.title(), 'Done · Diffuse playground');
  const done = (await getJson('/api/jobs')).find((j) => j.seed === 7 && j.prompt.startsWith('a large red square'));
  assert.deepEqual(done.phases.map((p) => p.phase), ['loading', 'encoding', 'denoising', 'decoding', 'saving', 'done']);

  // The last preview's colours are the final image's (shape and background, within 40/255).
  const lastPreview = await page.evaluate(() => window.__lastPreview);
  assert.ok(lastPreview, 'a live preview was shown');
  const preview = decodePng(Buffer.from(lastPreview.split(',')[1], 'base64'));
  const finalUrl = done.images[0].url;
  const final = decodePng(Buffer.from(await (await fetch(baseUrl + finalUrl)).arrayBuffer()));
  assert.equal(preview.width, final.width / 8);
  const blocks = sceneBlocks(final);
  const f = regionMeans(final, blocks), p = regionMeans(preview, blocks);
  assert.ok(f.shapeN > 0 && f.backgroundN > 0);
  assert.ok(f.shape[0] > 150 && f.shape[2] < 110 && f.background[2] > 150, `a red square on blue: ${JSON.stringify(f)}`);
  const errShape = maxDiff(p.shape, f.shape), errBg = maxDiff(p.background, f.background);
  console.log(`preview vs final: shape ${errShape.toFixed(1)}, background ${errBg.toFixed(1)} (/255)`);
  assert.ok(errShape <= 40 && errBg <= 40, `preview ${JSON.stringify(p)} vs final ${JSON.stringify(f)}`);
  // After the run the final image replaces the preview.
  assert.equal(await page.getAttribute('#preview', 'src'), finalUrl);
  assert.equal(await page.evaluate(() => document.getElementById('preview').naturalWidth), 128);
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: path.join(kArtifacts, 'playground-demo-first-run.png'), fullPage: false });

  // Clip skip on the page reaches the image's parameters.
  await page.fill('#clip-skip', '2');
  await page.fill('#steps', '2');
  await page.fill('#seed', '8');
  await page.click('#generate');
  await page.waitForFunction(() => document.querySelectorAll('#gallery .gallery-item').length === 2, null, { timeout: 120000 });
  assert.match(await page.textContent('#gallery .gallery-item .params pre'), /Clip skip: 2/);
  await page.fill('#clip-skip', '1');

  // The queue sits above the results; the history does not repeat this session's images.
  const qy = (await page.locator('#queue').boundingBox()).y, gy = (await page.locator('#gallery').boundingBox()).y;
  assert.ok(qy < gy, `queue (${qy}) above the gallery (${gy})`);
  const ours = (await getJson('/api/jobs')).filter((j) => j.prompt.startsWith('a large red square')).map((j) => j.id);
  assert.equal(ours.length, 2);
  await page.waitForFunction((ids) => ids.every((id) => document.querySelector(`#history .history-item[data-id="${id}"] [data-testid=history-in-results]`)), ours);
  for (const id of ours) assert.equal(await page.locator(`#history .history-item[data-id="${id}"] img`).count(), 0);
  // A1111 download names: 5-digit number, then the seed.
  const names = await page.$$eval('#gallery a[download]', (els) => els.map((e) => e.getAttribute('download')));
  assert.ok(names.every((n) => /^\d{5}-\d+\.png$/.test(n)), names.join(', '));
  assert.ok(names[1].endsWith('-7.png'), names.join(', '));

  // Lightbox: a thumbnail click opens it (not the raw PNG); arrows, zoom, download, PNG info; Esc closes.
  const pagesBefore = page.context().pages().length;
  await page.click('#gallery .gallery-item:nth-child(2) [data-testid=thumb]');
  await page.waitForSelector('#lightbox[open]');
  assert.equal(page.context().pages().length, pagesBefore, 'no new tab');
  assert.equal(await page.getAttribute('#lightbox-img', 'src'), finalUrl);
  assert.match(await page.textContent('#lightbox-title'), /^2\/2 · seed 7 /);
  assert.match(await page.textContent('#lightbox-info'), /Seed: 7,/);
  assert.equal(await page.getAttribute('#lightbox-download', 'download'), names[1]);
  await page.keyboard.press('ArrowRight');
  assert.match(await page.textContent('#lightbox-title'), /^1\/2 · seed 8 /);
  await page.keyboard.press('ArrowLeft');
  assert.match(await page.textContent('#lightbox-title'), /^2\/2 /);
  await page.click('#lightbox-zoom');
  assert.equal(await page.getAttribute('#lightbox-zoom', 'aria-pressed'), 'true');
  const dl = await Promise.all([page.waitForEvent('download'), page.click('#lightbox-download')]);
  assert.equal(dl[0].suggestedFilename(), names[1]);
  await page.keyboard.press('Escape');
  await page.waitForFunction(() => !document.getElementById('lightbox').open);

  // Ctrl+Up/Down: A1111's attention editing of the selection, or the word at the caret.
  await page.fill('#prompt', 'a red circle');
  await page.evaluate(() => document.getElementById('prompt').setSelectionRange(2, 5));
  await page.keyboard.press('Control+ArrowUp');
  assert.equal(await page.inputValue('#prompt'), 'a (red:1.1) circle');
  await page.keyboard.press('Control+ArrowUp');
  assert.equal(await page.inputValue('#prompt'), 'a (red:1.2) circle');
  await page.keyboard.press('Control+ArrowDown');
  await page.keyboard.press('Control+ArrowDown');
  assert.equal(await page.inputValue('#prompt'), 'a red circle');
  await page.evaluate(() => document.getElementById('prompt').setSelectionRange(9, 9));
  await page.keyboard.press('Control+ArrowDown');
  assert.equal(await page.inputValue('#prompt'), 'a red (circle:0.9)');

  // Esc stops a run and keeps the partial image.
  await page.fill('#prompt', 'a small green star');
  await page.fill('#steps', '1000');
  await page.fill('#width', '64');
  await page.fill('#height', '64');
  await page.click('#generate');
  await page.waitForFunction(() => /^Denoising step [1-9]\d*\/1000/.test(document.getElementById('progress-text').textContent),
                             null, { timeout: 60000 });
  await page.locator('body').press('Escape');
  await page.waitForFunction(() => document.getElementById('progress-text').dataset.state === 'done', null, { timeout: 30000 });
  assert.match(await page.textContent('#progress-text'), /^Stopped at step \d+\/1000: partial image kept/);

  // Losing the server: "disconnected, retrying" within 3 s; gone once it answers again.
  await page.context().setOffline(true);
  const t0 = Date.now();
  await page.waitForSelector('[data-testid=conn-notice]:not([hidden])', { timeout: 3000 });
  const waited = Date.now() - t0;
  assert.ok(waited <= 3000, `notice after ${waited} ms`);
  assert.match(await page.textContent('[data-testid=conn-notice]'), /Disconnected from the server, retrying/);
  await page.context().setOffline(false);
  await page.waitForSelector('[data-testid=conn-notice][hidden]', { state: 'attached', timeout: 5000 });
  assert.deepEqual(pageErrors.filter((e) => !/Failed to fetch|ERR_INTERNET_DISCONNECTED/.test(e)), [], 'no JavaScript errors on the page');
  pageErrors.length = 0;
});

test('playground (issue 29): on a narrow screen Generate scrolls to the output', async () => {
  const ctx = await browser.newContext({ viewport: { width: 420, height: 900 } });
  const page = await ctx.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(baseUrl + '/');
  await page.waitForFunction(() => document.querySelectorAll('#model option[value]:not([value=""])').length > 0);
  await page.selectOption('#model', 'demo');
  await page.fill('#prompt', 'a red circle on a blue background');
  await page.fill('#steps', '2');
  await page.evaluate(() => window.scrollTo(0, 0));
  // The output starts below the fold; a tap on Generate (no scrolling by the test) brings it up.
  assert.ok(await page.evaluate(() => document.getElementById('output-title').getBoundingClientRect().top > window.innerHeight));
  await page.$eval('#generate', (b) => b.click());
  await page.waitForFunction(() => {
    const r = document.getElementById('output-title').getBoundingClientRect();
    return r.top >= 0 && r.top < window.innerHeight / 2;
  }, null, { timeout: 5000 });
  await page.waitForFunction(() => document.getElementById('progress-text').dataset.state === 'done', null, { timeout: 120000 });
  await page.screenshot({ path: path.join(kArtifacts, 'playground-narrow.png') });
  await ctx.close();
  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
});

test('playground (issue 29): with --api-auth the page works through the browser\'s Basic login', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'diffuse-auth-'));
  const child = spawn(kBinary, ['serve', '--port', '0', '--data-dir', dir, '--no-hf-cache', '--api-auth', 'ana:s3cret:x'],
                      { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  try {
    const url = await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no URL in 60 s:\n${log}`)), 60000);
      child.stderr.on('data', (b) => {
        log += b.toString();
        const m = /diffuse serve: (http:\/\/[^\s/]+:\d+)\//.exec(log);
        if (m) { clearTimeout(timer); resolve(m[1]); }
      });
      child.on('exit', (code) => reject(new Error(`server exited (${code}):\n${log}`)));
    });
    // Without credentials: 401 with a Basic challenge (the browser's login prompt).
    const bare = await fetch(url + '/');
    assert.equal(bare.status, 401);
    assert.match(bare.headers.get('www-authenticate') || '', /^Basic /);
    // With them (what the user types into that prompt): the page loads and generates.
    const ctx = await browser.newContext({ httpCredentials: { username: 'ana', password: 's3cret:x' } });
    const page = await ctx.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.goto(url + '/');
    await page.waitForFunction(() => document.querySelectorAll('#model option[value]:not([value=""])').length > 0);
    await page.fill('#prompt', 'a yellow star on a black background');
    await page.fill('#steps', '2');
    await page.click('#generate');
    await page.waitForFunction(() => document.querySelectorAll('#gallery .gallery-item img').length === 1, null, { timeout: 120000 });
    await page.waitForFunction(() => document.querySelector('#gallery .gallery-item img').naturalWidth > 0);
    assert.match(await page.textContent('#progress-text'), /^Done: 1 image/);
    await ctx.close();
    assert.deepEqual(errors, []);
  } finally {
    child.kill('SIGINT');
    await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// ---------- ControlNet panel (web/controlnet.js) ----------

// A tiny diffusers ControlNet for the sd1 fixture model: the UNet's config with
// a small hint block, the encoder tensors' shapes from the UNet's header, every
// value random (deterministic); zero convs small.
function writeControlNetFolder(dir) {
  const unetDir = path.join(kModelDir, 'unet');
  const cfg = JSON.parse(fs.readFileSync(path.join(unetDir, 'config.json'), 'utf8'));
  const buf = fs.readFileSync(path.join(unetDir, 'diffusion_pytorch_model.safetensors'));
  const header = JSON.parse(buf.toString('utf8', 8, 8 + Number(buf.readBigUInt64LE(0))));
  let seed = 12345;
  const random = (shape, amp) => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      data[i] = ((seed >>> 8) / 16777216 - 0.5) * 2 * amp;
    }
    return { shape, data };
  };
  const tensors = {};
  for (const [k, v] of Object.entries(header)) {
    if (/^(conv_in|time_embedding|down_blocks|mid_block)\./.test(k)) tensors[k] = random(v.shape, 0.1);
  }
  const hint = [4, 8, 8, 16];
  const conv = (name, cout, cin, k, amp) => {
    tensors[`${name}.weight`] = random([cout, cin, k, k], amp);
    tensors[`${name}.bias`] = random([cout], amp);
  };
  conv('controlnet_cond_embedding.conv_in', hint[0], 3, 3, 0.3);
  for (let i = 0; i + 1 < hint.length; i++) {
    conv(`controlnet_cond_embedding.blocks.${2 * i}`, hint[i], hint[i], 3, 0.3);
    conv(`controlnet_cond_embedding.blocks.${2 * i + 1}`, hint[i + 1], hint[i], 3, 0.3);
  }
  const widths = cfg.block_out_channels;
  conv('controlnet_cond_embedding.conv_out', widths[0], hint[hint.length - 1], 3, 0.3);
  // Skips of the down path: conv_in, each block's layers, and its downsampler (all but the last block).
  const skips = [widths[0]];
  widths.forEach((w, b) => {
    for (let l = 0; l < cfg.layers_per_block; l++) skips.push(w);
    if (b + 1 < widths.length) skips.push(w);
  });
  skips.forEach((w, k) => conv(`controlnet_down_blocks.${k}`, w, w, 1, 0.05));
  conv('controlnet_mid_block', widths[widths.length - 1], widths[widths.length - 1], 1, 0.05);
  cfg._class_name = 'ControlNetModel';
  cfg.conditioning_embedding_out_channels = hint;
  delete cfg.up_block_types;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 1));
  writeSafetensors(path.join(dir, 'diffusion_pytorch_model.safetensors'), tensors);
}

test('playground: ControlNet panel: models, preprocessor preview, a generation with a unit', async () => {
  writeControlNetFolder(path.join(cnDir, 'control_tiny_sd1_canny'));
  const page = await newPage();
  await fillForm(page, { prompt: 'a lighthouse at dusk', images: 1, steps: 2, size: 64 });
  await page.selectOption('#model', { index: 1 });  // the sd1 fixture model (the ControlNet's family)
  for (const [id, v] of [['#prompt', 'a lighthouse at dusk'], ['#steps', '2'], ['#width', '64'], ['#height', '64']]) await page.fill(id, v);
  await page.selectOption('#sampler', 'euler');
  await page.click('#controlnet-panel summary');
  // The lists come from the A1111 extension's routes.
  const models = (await getJson('/controlnet/model_list')).model_list;
  assert.equal(models.length, 1, JSON.stringify(models));
  await page.waitForFunction(() => document.querySelectorAll('#cn-model option[value]:not([value=""])').length === 1);
  assert.deepEqual(await page.$$eval('#cn-model option', (els) => els.map((e) => e.value)), models);
  const modules = await page.$$eval('#cn-module option:not([disabled])', (els) => els.map((e) => e.value));
  assert.deepEqual(modules, (await getJson('/controlnet/module_list')).module_list);
  assert.ok(await page.$('#cn-module option[value="depth_midas"][disabled]'), 'network preprocessors are listed, not usable');

  // An image, canny: the preview is the server's edge map (black and white only) at the processor resolution.
  const file = path.join(dataDir, 'cn-input.png');
  fs.writeFileSync(file, encodePng(96, 64, 3, testPicture(96, 64)));
  await page.setInputFiles('#cn-file', file);
  await page.selectOption('#cn-module', 'canny');
  await page.waitForFunction(() => /^Preprocessed with canny/.test(document.getElementById('cn-status').textContent),
                             null, { timeout: 30000 });
  assert.equal(await page.inputValue('#cn-a'), '100');
  assert.equal(await page.inputValue('#cn-b'), '200');
  await page.fill('#cn-res', '128');
  await page.click('#cn-preview');
  await page.waitForFunction(() => {
    const img = document.getElementById('cn-result-img');
    return img.complete && img.naturalHeight === 128;
  }, null, { timeout: 30000 });
  const stats = await page.evaluate(() => {
    const img = document.getElementById('cn-result-img');
    const c = document.createElement('canvas');
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const g = c.getContext('2d');
    g.drawImage(img, 0, 0);
    const d = g.getImageData(0, 0, c.width, c.height).data;
    let white = 0, other = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (d[i] === 255 && d[i + 1] === 255 && d[i + 2] === 255) white++;
      else if (d[i] !== 0 || d[i + 1] !== 0 || d[i + 2] !== 0) other++;
    }
    return { width: c.width, white, other };
  });
  assert.equal(stats.width, 192);  // 96x64 with the short side at 128
  assert.equal(stats.other, 0, 'an edge map has only black and white pixels');
  assert.ok(stats.white > 50, `edges found: ${stats.white}`);
  assert.equal(await page.isChecked('#cn-enable'), true, 'adding an image turns the unit on');
  await page.screenshot({ path: path.join(kArtifacts, 'playground-controlnet.png'), fullPage: true });

  // Generate: the job carries alwayson_scripts.controlnet; the image's parameters name the unit.
  await page.fill('#cn-weight', '0.8');
  const sent = page.waitForRequest((r) => r.url().endsWith('/api/jobs') && r.method() === 'POST');
  await page.click('#generate');
  const body = JSON.parse((await sent).postData());
  const unit = body.alwayson_scripts.controlnet.args[0];
  assert.equal(unit.module, 'canny');
  assert.equal(unit.model, models[0]);
  assert.equal(unit.weight, 0.8);
  assert.equal(unit.processor_res, 128);
  assert.match(unit.image, /^data:image\/png;base64,/);
  await page.waitForFunction(() => document.querySelector('#gallery .gallery-item img') ||
                             /failed|Failed|error/.test(document.getElementById('progress-text').textContent),
                             null, { timeout: 120000 });
  const params = await page.textContent('#gallery .gallery-item .params pre');
  assert.match(params, /ControlNet 0: "Module: canny, Model: control_tiny_sd1_canny \[[0-9a-f]{8}\], Weight: 0\.8, /);
  assert.deepEqual(pageErrors, [], 'no JavaScript errors on the page');
  // Off again for the tests that follow.
  await page.uncheck('#cn-enable');
});
