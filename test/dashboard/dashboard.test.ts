import { mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import type { DistanceKernel } from '../../src/kernels/types.js';
import { DASHBOARD_DIR } from '../../src/http/routes/dashboard.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { mintApiKey, OPERATOR } from '../../src/service/auth.js';
import { DEFAULT_SETTINGS } from '../../src/service/settings.js';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { bearer, startApi, type ApiHarness } from '../http/api-harness.js';
import { ingestItems } from '../../src/service/ingest.js';
import { findChromium, watchForeignRequests } from './browser.js';

/**
 * The dashboard in a real headless Chromium (Debian's package, driven by playwright-core): the
 * page is served by the running service and reads everything through /v1 with the key typed in.
 */

// Browser globals used inside page.evaluate callbacks: this file is type-checked without the DOM
// library, so the little it touches is declared here (module scope, not global).
interface PageElement {
  hidden: boolean;
  value: string;
  src: string;
  naturalWidth: number;
  getAttribute(name: string): string | null;
  getBoundingClientRect(): { width: number };
  dispatchEvent(event: Event): boolean;
}
declare const document: {
  getElementById(id: string): PageElement | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): ArrayLike<PageElement> & Iterable<PageElement>;
  body: { innerText: string };
};
declare const location: { hash: string };
declare const sessionStorage: { getItem(key: string): string | null; setItem(key: string, value: string): void };

/** The native backend when TEST_DATABASE_URL is set (faster), otherwise the embedded one. */
const backend = BACKENDS.find((b) => b.name === 'native') ?? BACKENDS[0];

const DATASET = 'planted';
const OTHER = 'other';
const PHOTOS = 'photos';
const PHOTO_COUNT = 24;
const DIM = 16;
const CLUSTERS = 50;
const PER_CLUSTER = 60;
const N = CLUSTERS * PER_CLUSTER; // 3,000 items
const ARTIFACTS = path.join(PROJECT_ROOT, 'test-artifacts');

interface StatsBody {
  itemCount: number;
  scoredCount: number;
  prototypeVersion: number | null;
  clusterSizes: number[];
  histogram: { counts: number[] };
  refitJob: { id: string; state: string } | null;
}

/** A 96×96 JPEG: one of three base colours plus pixel noise, base64. */
async function photo(i: number): Promise<string> {
  const rng = new Rng(1000 + i);
  const base = [
    [200, 60, 50],
    [50, 170, 80],
    [60, 90, 210],
  ][i % 3];
  const pixels = Buffer.alloc(96 * 96 * 3);
  for (let p = 0; p < pixels.length; p++) pixels[p] = Math.max(0, Math.min(255, base[p % 3] + Math.round((rng.next() - 0.5) * 120)));
  return (await sharp(pixels, { raw: { width: 96, height: 96, channels: 3 } }).jpeg().toBuffer()).toString('base64');
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe(`dashboard in headless Chromium (${backend.name} backend)`, { timeout: 120_000 }, () => {
  let api: ApiHarness;
  let base: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const pageErrors: string[] = [];
  /** Set when Chromium is missing: every test then fails with the install instructions (none is skipped). */
  let missingBrowser: Error | undefined;
  /** A test that needs the browser. */
  const test = (name: string, fn: () => Promise<void> | void, timeout?: number) =>
    it(
      name,
      async () => {
        if (missingBrowser) throw missingBrowser;
        await fn();
      },
      timeout,
    );
  const foreignRequests: string[] = [];

  async function call<T>(method: string, url: string, secret: string, body?: unknown): Promise<{ status: number; body: T }> {
    const response = await fetch(`${base}${url}`, {
      method,
      headers: { authorization: bearer(secret), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: response.status, body: (await response.json()) as T };
  }

  const stats = async () => (await call<StatsBody>('GET', `/v1/datasets/${DATASET}/stats`, api.keys.admin)).body;

  async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 60_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await probe();
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(100);
    }
  }

  /** Replaces the key the page uses, as a user would: "Change API key", type, Connect. */
  async function enterKey(secret: string) {
    if (await page.locator('#change-key').isVisible()) await page.click('#change-key');
    await page.waitForSelector('#key-panel', { state: 'visible' });
    await page.fill('#api-key', secret);
    await page.click('#key-submit');
    await page.waitForSelector('#layout', { state: 'visible' });
  }

  /** Moves the fraction slider (a range input) as a user would, firing its input event. */
  async function setFraction(value: number) {
    await page.$eval(
      '#fraction',
      (input, v) => {
        (input as unknown as PageElement).value = String(v);
        input.dispatchEvent(new Event('input', { bubbles: true }));
      },
      value,
    );
  }

  const domHistogram = () => page.$$eval('#histogram rect.hist-bar', (bars) => bars.map((b) => Number(b.getAttribute('data-count'))));
  const domClusters = () =>
    page.$$eval('#clusters rect.cluster-bar', (bars) => bars.map((b) => [Number(b.getAttribute('data-cluster')), Number(b.getAttribute('data-size'))] as [number, number]));

  beforeAll(async () => {
    let executablePath: string;
    try {
      executablePath = findChromium();
    } catch (error) {
      missingBrowser = error as Error;
      return;
    }
    api = await startApi(backend);
    base = `http://127.0.0.1:${api.service.httpPort}`;

    // An embedding-only dataset of 3,000 planted points; its first fit runs once all are stored.
    const created = await call('POST', '/v1/datasets', api.keys.admin, { name: DATASET, dimension: DIM, k: CLUSTERS, settings: { minItemsForFit: N, autoRefit: false } });
    expect(created.status).toBe(201);
    expect((await call('POST', '/v1/datasets', api.keys.admin, { name: OTHER, dimension: DIM, settings: { minItemsForFit: 500 } })).status).toBe(201);
    const data = plantedClusters({ seed: 7, clusters: CLUSTERS, perCluster: PER_CLUSTER, dim: DIM, noise: 0.8 });
    for (let from = 0; from < N; from += 500) {
      const items = [];
      for (let i = from; i < Math.min(N, from + 500); i++) {
        items.push({ externalId: `p-${String(i).padStart(5, '0')}`, embedding: data.points.subarray(i * DIM, (i + 1) * DIM) });
      }
      const result = await ingestItems(api.service.services.ctx, DATASET, items);
      expect(result.items.every((item) => item.status === 'stored')).toBe(true);
    }
    const few = plantedClusters({ seed: 8, clusters: 3, perCluster: 10, dim: DIM, noise: 0.5 });
    await ingestItems(
      api.service.services.ctx,
      OTHER,
      Array.from({ length: few.n }, (_, i) => ({ externalId: `o-${i}`, embedding: few.points.subarray(i * DIM, (i + 1) * DIM) })),
    );
    // An image dataset (the server's encoder) whose preview strip shows thumbnails.
    expect((await call('POST', '/v1/datasets', api.keys.admin, { name: PHOTOS, k: 3, settings: { minItemsForFit: PHOTO_COUNT, autoRefit: false } })).status).toBe(201);
    // Ids with non-ASCII, emoji and URL-special characters: the strip must address each thumbnail.
    const photoId = (i: number) => `${['img', 'café', 'фото', '写真🦊', 'a/b?c#d%e&f+g'][i % 5]}-${String(i).padStart(2, '0')}.jpg`;
    const photos = await Promise.all(Array.from({ length: PHOTO_COUNT }, async (_, i) => ({ externalId: photoId(i), image: await photo(i) })));
    const uploaded = await call<{ counts: { stored: number } }>('POST', `/v1/datasets/${PHOTOS}/items`, api.keys.writer, { items: photos });
    expect(uploaded.body.counts.stored).toBe(PHOTO_COUNT);
    await waitFor('the first fit of the image dataset', async () => {
      const s = (await call<StatsBody>('GET', `/v1/datasets/${PHOTOS}/stats`, api.keys.admin)).body;
      return s.prototypeVersion !== null && s.refitJob === null;
    });
    await waitFor('the first fit', async () => {
      const s = await stats();
      return s.prototypeVersion !== null && s.refitJob === null && s.scoredCount === N;
    });

    browser = await chromium.launch({ executablePath, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
    context = await browser.newContext({ viewport: { width: 1440, height: 1100 }, colorScheme: 'light' });
    page = await context.newPage();
    page.on('pageerror', (error) => pageErrors.push(`pageerror: ${error.message}`));
    page.on('console', (message) => {
      if (message.type() === 'error' && !/status of 40[134]/.test(message.text())) pageErrors.push(`console: ${message.text()}`);
    });
    watchForeignRequests(page, base, foreignRequests);
  });

  afterAll(async () => {
    await browser?.close();
    await api?.close();
  });

  test('serves the page and its assets without an API key, and asks for a key', async () => {
    for (const url of ['/dashboard', '/dashboard/assets/main.js', '/dashboard/assets/dashboard.css', '/dashboard/assets/icon.svg']) {
      const response = await fetch(`${base}${url}`);
      expect(response.status, url).toBe(200);
    }
    // The script is native ES modules: main.js imports the rest, each served as JavaScript.
    const html = await (await fetch(`${base}/dashboard`)).text();
    expect(html).toContain('<script type="module" src="dashboard/assets/main.js"></script>');
    const modules = (await readdir(DASHBOARD_DIR)).filter((file) => file.endsWith('.js')).sort();
    expect(modules).toEqual(expect.arrayContaining(['api.js', 'charts.js', 'state.js', 'poll.js', 'view-dataset.js', 'view-refit.js']));
    for (const module of modules) {
      const response = await fetch(`${base}/dashboard/assets/${module}`);
      expect(response.status, module).toBe(200);
      expect(response.headers.get('content-type'), module).toMatch(/^text\/javascript/);
    }
    const served = await fetch(`${base}/dashboard`);
    expect(served.headers.get('content-type')).toMatch(/^text\/html/);
    expect(served.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect((await fetch(`${base}/dashboard/assets/..%2Fpackage.json`)).status).toBe(404);
    expect((await fetch(`${base}/dashboard/`, { redirect: 'manual' })).status).toBe(308);

    const loaded: string[] = [];
    const onRequest = (request: { url(): string }) => {
      const module = /\/dashboard\/assets\/([^/?]+\.js)$/.exec(request.url());
      if (module) loaded.push(module[1]);
    };
    page.on('request', onRequest);
    try {
      const response = await page.goto(`${base}/dashboard`);
      expect(response?.status()).toBe(200);
      await page.waitForSelector('#key-panel', { state: 'visible' });
    } finally {
      page.off('request', onRequest);
    }
    expect(await page.isVisible('#layout')).toBe(false);
    // The page loaded every module (a module that failed to load would leave it blank).
    expect([...new Set(loaded)].sort()).toEqual(modules);
  });

  test('with a read key: the histogram adds up to the item count and the cluster bars are /stats’ clusterSizes', async () => {
    await enterKey(api.keys.reader);
    await page.waitForSelector(`#dataset-list button[data-dataset="${DATASET}"]`);
    expect(await page.$$eval('#dataset-list button', (buttons) => buttons.map((b) => b.getAttribute('data-dataset')))).toEqual(expect.arrayContaining([DATASET, OTHER]));
    await page.click(`#dataset-list button[data-dataset="${DATASET}"]`);
    await page.waitForSelector('#dataset-panel[data-version="1"]');
    await page.waitForFunction(() => document.querySelectorAll('#histogram rect.hist-bar').length === 40);

    const expected = await stats();
    expect(expected.itemCount).toBe(N);
    const histogram = await domHistogram();
    expect(histogram).toHaveLength(40);
    expect(histogram.reduce((a, b) => a + b, 0)).toBe(expected.itemCount);
    expect(histogram).toEqual(expected.histogram.counts);

    const bars = await domClusters();
    expect(bars).toHaveLength(expected.clusterSizes.length);
    const sizes = new Array<number>(bars.length).fill(-1);
    for (const [cluster, size] of bars) sizes[cluster] = size;
    expect(sizes).toEqual(expected.clusterSizes);

    expect(await page.textContent('#stat-items')).toBe('3,000');
    expect(await page.getAttribute('#prune-curve', 'data-keep')).toBe('900'); // 30% by default
    const hardestCut = Number(await page.getAttribute('#prune-curve', 'data-hardest-cut'));
    const easiestCut = Number(await page.getAttribute('#prune-curve', 'data-easiest-cut'));
    expect(easiestCut).toBeGreaterThan(0);
    expect(hardestCut).toBeGreaterThan(easiestCut);
    // Everything was ingested just now: all of it in the last hour's bar.
    const hourly = await page.$$eval('#ingest rect.ingest-bar', (bars) => bars.map((b) => Number(b.getAttribute('data-items'))));
    expect(hourly.reduce((a, b) => a + b, 0)).toBe(N);
    expect(await page.getAttribute('#ingest', 'data-last-hour')).toBe(String(N));
    // An embedding-only dataset has no thumbnail strip.
    expect(await page.isVisible('#preview')).toBe(false);
    expect(await page.$$('#preview .thumb')).toHaveLength(0);
    expect(await page.isVisible('#no-prototypes')).toBe(false);

    // Moving the fraction moves the cuts.
    await setFraction(0.5);
    await page.waitForFunction(() => document.querySelector('#prune-curve')?.getAttribute('data-keep') === '1500');
  });

  test('with a read key: the refit button explains that the key lacks the write scope', async () => {
    await page.click('#refit-button');
    await page.waitForSelector('#refit-message', { state: 'visible' });
    expect(await page.getAttribute('#refit-message', 'data-code')).toBe('INSUFFICIENT_SCOPE');
    expect(await page.textContent('#refit-message')).toMatch(/needs the write scope/);
    expect((await stats()).refitJob).toBeNull();
  });

  test('with a write key: a requested refit shows its progress bar while the job runs, then the new version', async () => {
    await enterKey(api.keys.writer);
    await page.waitForSelector('#dataset-panel[data-version="1"]');
    await page.waitForFunction(() => document.querySelectorAll('#histogram rect.hist-bar').length === 40);
    expect(await page.isVisible('#refit-message')).toBe(false);

    // 3,000 × 16-d at k = 50 fits in well under a second; slow the distance kernel down so the
    // job visibly runs for a few seconds (the page follows a job every 500 ms).
    const kernel = api.service.services.ctx.kernel as DistanceKernel;
    const originals = { nearestTwo: kernel.nearestTwo, assignedSimilarity: kernel.assignedSimilarity, nearest: kernel.nearest };
    const slow = <A extends unknown[], R>(fn: (...args: A) => Promise<R>) =>
      async (...args: A): Promise<R> => {
        await sleep(200);
        return fn.apply(kernel, args);
      };
    kernel.nearestTwo = slow(originals.nearestTwo);
    kernel.assignedSimilarity = slow(originals.assignedSimilarity);
    kernel.nearest = slow(originals.nearest);

    const seen: { visible: boolean; state: string | null; phase: string | null; valueNow: string | null }[] = [];
    try {
      await page.click('#refit-button');
      let screenshotTaken = false;
      const deadline = Date.now() + 90_000;
      for (;;) {
        const observation = await page.evaluate(() => {
          const bar = document.getElementById('refit-progress')!;
          const box = document.getElementById('refit-job')!;
          return {
            visible: !box.hidden && bar.getBoundingClientRect().width > 0,
            state: bar.getAttribute('data-state'),
            phase: bar.getAttribute('data-phase'),
            valueNow: bar.getAttribute('aria-valuenow'),
          };
        });
        seen.push(observation);
        if (observation.state === 'running' && observation.visible && Number(observation.valueNow) > 0 && !screenshotTaken) {
          await mkdir(ARTIFACTS, { recursive: true });
          await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-refit.png'), fullPage: true });
          screenshotTaken = true;
        }
        if (observation.state === 'succeeded' || observation.state === 'failed') break;
        if (Date.now() > deadline) throw new Error(`the refit did not finish; seen ${JSON.stringify(seen.slice(-5))}`);
        await sleep(50);
      }
    } finally {
      Object.assign(kernel, originals);
    }
    const running = seen.filter((o) => o.state === 'running' && o.visible);
    expect(running.length, `observations: ${JSON.stringify(seen.slice(0, 20))}`).toBeGreaterThan(0);
    expect(running.some((o) => o.phase === 'fit' || o.phase === 'read')).toBe(true);
    for (const o of running) expect(Number(o.valueNow)).toBeGreaterThanOrEqual(0);
    expect(seen[seen.length - 1].state).toBe('succeeded');
    expect(await page.getAttribute('#refit-progress', 'aria-valuenow')).toBe('100');

    // The page moves on to the new version and its numbers.
    await page.waitForSelector('#dataset-panel[data-version="2"]', { timeout: 15_000 });
    const expected = await stats();
    expect(expected.prototypeVersion).toBe(2);
    await page.waitForFunction(
      (counts) => JSON.stringify(Array.from(document.querySelectorAll('#histogram rect.hist-bar'), (b) => Number(b.getAttribute('data-count')))) === counts,
      JSON.stringify(expected.histogram.counts),
    );
    expect((await domHistogram()).reduce((a, b) => a + b, 0)).toBe(N);
    const sizes = new Array<number>(expected.clusterSizes.length).fill(-1);
    for (const [cluster, size] of await domClusters()) sizes[cluster] = size;
    expect(sizes).toEqual(expected.clusterSizes);

    await setFraction(0.3);
    await sleep(300);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });
  });

  test('an image dataset shows the 8 easiest and 8 hardest items’ thumbnails', async () => {
    await page.click(`#dataset-list button[data-dataset="${PHOTOS}"]`);
    await page.waitForSelector('#preview', { state: 'visible' });
    await page.waitForFunction(() => document.querySelectorAll('#preview-easiest .thumb, #preview-hardest .thumb').length === 16);
    for (const order of ['easiest', 'hardest']) {
      const selection = await call<{ externalIds: string[] }>('GET', `/v1/datasets/${PHOTOS}/selection?order=${order}&count=8`, api.keys.reader);
      expect(selection.body.externalIds).toHaveLength(8);
      const tiles = await page.$$eval(`#preview-${order} .thumb`, (figures) =>
        figures.map((f) => ({ id: f.getAttribute('data-external-id'), thumbnail: f.getAttribute('data-thumbnail') })),
      );
      expect(tiles.map((t) => t.id)).toEqual(selection.body.externalIds);
      expect(tiles.every((t) => t.thumbnail === 'loaded')).toBe(true);
    }
    // Every thumbnail was fetched with the key and decoded from a blob: URL.
    await page.waitForFunction(() => Array.from(document.querySelectorAll('#preview img')).every((img) => img.naturalWidth > 0));
    const sources = await page.$$eval('#preview img', (images) => images.map((img) => (img as unknown as PageElement).src));
    expect(sources).toHaveLength(16);
    expect(sources.every((src) => src.startsWith('blob:'))).toBe(true);
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-images.png'), fullPage: true });
  });

  test('a read key limited to another dataset never sees this one', async () => {
    const limited = await mintApiKey(api.service.db, { name: 'other-reader', scopes: ['read'], datasets: [OTHER] }, OPERATOR);
    const requested: string[] = [];
    const onRequest = (request: { url(): string }) => requested.push(request.url());
    page.on('request', onRequest);
    try {
      // Forget the current key, point the page at the forbidden dataset (#dataset=planted), then
      // connect with the limited key.
      await page.click('#change-key');
      await page.waitForSelector('#key-panel', { state: 'visible' });
      await page.evaluate((name) => {
        location.hash = `dataset=${name}`;
      }, DATASET);
      await enterKey(limited.secret);
      await page.waitForSelector(`#dataset-list button[data-dataset="${OTHER}"]`);
      await page.waitForSelector('#dataset-unavailable', { state: 'visible' });
      expect(await page.$$eval('#dataset-list button', (buttons) => buttons.map((b) => b.getAttribute('data-dataset')))).toEqual([OTHER]);
      expect(await page.isVisible('#dataset-panel')).toBe(false);
      expect(await page.$$('#histogram rect, #clusters rect, #ingest rect')).toHaveLength(0);
      expect(await page.textContent('#dataset-unavailable')).toMatch(/not available to this API key/);

      // The other dataset has 30 items and needs 500 for a first fit.
      await page.click(`#dataset-list button[data-dataset="${OTHER}"]`);
      await page.waitForSelector('#no-prototypes', { state: 'visible' });
      expect(await page.textContent('#no-prototypes')).toMatch(/No prototypes yet/);
      expect(await page.textContent('#no-prototypes-text')).toMatch(/holds 30/);
      expect(await page.isVisible('#fig-histogram')).toBe(false);
      expect(await page.textContent('#stat-items')).toBe('30');
      expect(await page.evaluate(() => document.body.innerText)).not.toContain(DATASET);
      await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-no-prototypes.png'), fullPage: true });
    } finally {
      page.off('request', onRequest);
    }
    // The page never asked the API about the dataset this key may not read.
    expect(requested.filter((url) => url.includes(`/v1/datasets/${DATASET}`))).toEqual([]);
    expect(requested.some((url) => url.endsWith('/v1/datasets'))).toBe(true);
  });

  test('shows the first-fit size, drift thresholds and auto-refit the API reports, which hold the server’s defaults', async () => {
    // The page still shows the other dataset (30 items, created with only minItemsForFit) with the limited key.
    await page.waitForSelector(`#dataset-panel[data-dataset="${OTHER}"]`);
    const drift = () =>
      page.$$eval('#drift dd[data-drift]', (rows) => rows.map((row) => [row.getAttribute('data-drift'), row.getAttribute('data-threshold'), (row as unknown as { textContent: string }).textContent]));
    const listed = await call<{ datasets: { name: string; settings: typeof DEFAULT_SETTINGS }[] }>('GET', '/v1/datasets', api.keys.admin);
    const reported = listed.body.datasets.find((d) => d.name === OTHER)!.settings;
    expect(reported).toMatchObject({ minItemsForFit: 500, autoRefit: DEFAULT_SETTINGS.autoRefit, refit: DEFAULT_SETTINGS.refit });
    const thresholds = (settings: typeof DEFAULT_SETTINGS) => [
      ['mean', String(settings.refit.meanDrift), expect.any(String)],
      ['max', String(settings.refit.maxDrift), expect.any(String)],
      ['arrived', String(settings.refit.arrivedFraction), expect.any(String)],
      ['auto-refit', null, settings.autoRefit ? 'on' : 'off'],
    ];
    expect(await drift()).toEqual(thresholds(reported));
    expect(await page.textContent('#no-prototypes-text')).toMatch(/once the dataset holds 500 items/);

    // Whatever the server reports is what the page shows: it keeps no copy of the defaults.
    const changed = { ...reported, minItemsForFit: 777, autoRefit: !reported.autoRefit, refit: { meanDrift: 0.125, maxDrift: 0.25, arrivedFraction: 0.5 } };
    await page.route(`${base}/v1/datasets`, async (route) => {
      const response = await route.fetch();
      const body = (await response.json()) as { datasets: { name: string; settings: unknown }[] };
      for (const dataset of body.datasets) if (dataset.name === OTHER) dataset.settings = changed;
      await route.fulfill({ response, json: body });
    });
    try {
      await page.waitForFunction(() => document.body.innerText.includes('once the dataset holds 777 items'));
      expect(await drift()).toEqual(thresholds(changed));
    } finally {
      await page.unroute(`${base}/v1/datasets`);
    }
  });

  test('refuses a key with non-ASCII, emoji or NUL, and names a non-ASCII or NUL dataset in the URL as unavailable', async () => {
    for (const typed of ['pp_café', 'pp_🦊🦊', 'pp_a\u0000b']) {
      if (await page.locator('#change-key').isVisible()) await page.click('#change-key');
      await page.waitForSelector('#key-panel', { state: 'visible' });
      await page.fill('#api-key', typed);
      await page.click('#key-submit');
      await page.waitForSelector('#key-error', { state: 'visible' });
      expect(await page.textContent('#key-error')).toMatch(/printable ASCII/);
      expect(await page.isVisible('#layout')).toBe(false);
    }
    for (const name of ['café-🦊', 'nul\u0000name']) {
      await page.evaluate((n) => {
        location.hash = `dataset=${encodeURIComponent(n)}`;
      }, name);
      await enterKey(api.keys.reader);
      await page.waitForSelector('#dataset-unavailable', { state: 'visible' });
      expect(await page.getAttribute('#dataset-unavailable', 'data-dataset')).toBe(name);
      expect(await page.textContent('#dataset-unavailable')).toContain(name);
      await page.click(`#dataset-list button[data-dataset="${DATASET}"]`);
      await page.waitForSelector('#dataset-panel', { state: 'visible' });
    }
  });

  test('asks for a key again when the API answers 401', async () => {
    await page.evaluate(() => sessionStorage.setItem('protoprune.apiKey', 'not-a-key'));
    await page.reload();
    await page.waitForSelector('#key-error', { state: 'visible' });
    expect(await page.textContent('#key-error')).toMatch(/INVALID_API_KEY/);
    expect(await page.isVisible('#layout')).toBe(false);
    expect(await page.evaluate(() => sessionStorage.getItem('protoprune.apiKey'))).toBeNull();
  });

  test('with auth off the page connects without a key; the auth-on page above asked for one', async () => {
    const open = await startApi(backend, { AUTH_DISABLED: 'true' });
    const openContext = await browser.newContext();
    try {
      const openBase = `http://127.0.0.1:${open.service.httpPort}`;
      const created = await fetch(`${openBase}/v1/datasets`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ name: 'open', dimension: DIM }) });
      expect(created.status).toBe(201);
      const openPage = await openContext.newPage();
      const authorizations: (string | undefined)[] = [];
      openPage.on('request', (request) => {
        if (request.url().includes('/v1/')) authorizations.push(request.headers().authorization);
      });
      await openPage.goto(`${openBase}/dashboard`);
      await openPage.waitForSelector('#dataset-list button[data-dataset="open"]');
      expect(await openPage.isVisible('#key-panel')).toBe(false);
      expect(await openPage.isVisible('#change-key')).toBe(false);
      expect(await openPage.getAttribute('#key-status', 'data-auth')).toBe('off');
      expect(await openPage.textContent('#key-status')).toBe('no key needed');
      expect(authorizations.length).toBeGreaterThan(0);
      expect(authorizations.every((header) => header === undefined)).toBe(true);
      expect(await openPage.evaluate(() => sessionStorage.getItem('protoprune.apiKey'))).toBeNull();
    } finally {
      await openContext.close();
      await open.close();
    }
  });

  test('loaded nothing from other origins and logged no script errors', () => {
    expect(foreignRequests).toEqual([]);
    expect(pageErrors).toEqual([]);
  });
});
