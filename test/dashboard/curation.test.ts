import { readFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Rng } from '../../src/core/random.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { BACKENDS } from '../helpers/backends.js';
import { nearCopy } from '../helpers/halfvec.js';
import { plantedClusters } from '../helpers/planted.js';
import { bearer, startApi, type ApiHarness } from '../http/api-harness.js';
import { findChromium, launchChromium, waitFor, watchErrors, watchForeignRequests } from './browser.js';

/**
 * The dashboard's curation views in a real headless Chromium against a service with API keys:
 * SemDeDup groups with thumbnails (run from the page), manifests (saved from the page, opened,
 * their ids downloaded with the key), and the selection's policy and imbalance report. Every
 * number on the page is compared with what the API answers for the same request.
 */

// Browser globals used inside page callbacks (this file is type-checked without the DOM library).
interface PageElement {
  naturalWidth: number;
  complete: boolean;
  value: string;
  textContent: string | null;
  getAttribute(name: string): string | null;
  querySelector(selector: string): PageElement | null;
  querySelectorAll(selector: string): ArrayLike<PageElement> & Iterable<PageElement>;
  dispatchEvent(event: Event): boolean;
}
declare const document: { querySelectorAll(selector: string): ArrayLike<PageElement> & Iterable<PageElement>; querySelector(selector: string): PageElement | null };
declare const window: { __xss?: number };

const ARTIFACTS = path.join(PROJECT_ROOT, 'test-artifacts');
const SHOTS = 'shots';
const PLANTED = 'planted';
const SCENES = 30;
/** Scenes that get a re-encoded copy; scene 0 gets a second (resized) one. */
const COPIED = [0, 3, 7, 11, 19];
/** An external id and metadata a page must show as text, never as markup. */
const HOSTILE_ID = 'scene-7 <img src=x onerror="window.__xss=1">.jpg';
const HOSTILE_NOTE = '<script>window.__xss=2</script><b>bold?</b>';
const DIM = 16;

interface Group {
  kept: string;
  duplicates: string[];
  similarities: number[];
}
interface DuplicatesPage {
  jobId: string;
  prototypeVersion: number;
  groupCount: number;
  duplicateCount: number;
  groups: Group[];
  nextCursor: string | null;
}
interface SelectionPage {
  prototypeVersion: number;
  matched: number;
  size: number;
  dedup: { dropped: number } | null;
  policy: { order: string; balance: string; auto: { order: string; balance: string } | null };
  imbalance: { minSurvival: number; maxSurvival: number; maxMinRatio: number | null; survivalCv: number; randomSurvivalCv: number } | null;
}
declare const sessionStorage: { getItem(key: string): string | null; setItem(key: string, value: string): void };

interface Manifest {
  id: string;
  name: string | null;
  count: number;
  sha256: string;
  prototypeVersion: number;
}

/** A 128×128 scene of five coloured shapes on a coloured ground (SVG rendered by sharp). */
function scene(i: number): Buffer {
  const rng = new Rng(500 + i);
  const colour = () => `rgb(${Math.floor(rng.next() * 256)},${Math.floor(rng.next() * 256)},${Math.floor(rng.next() * 256)})`;
  let shapes = '';
  for (let s = 0; s < 5; s++) {
    const x = Math.floor(rng.next() * 128);
    const y = Math.floor(rng.next() * 128);
    const r = 10 + Math.floor(rng.next() * 30);
    shapes +=
      rng.next() < 0.5
        ? `<circle cx="${x}" cy="${y}" r="${r}" fill="${colour()}"/>`
        : `<rect x="${x - r}" y="${y - r}" width="${2 * r}" height="${r * 1.4}" fill="${colour()}" transform="rotate(${Math.floor(rng.next() * 90)} ${x} ${y})"/>`;
  }
  return Buffer.from(`<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128"><rect width="128" height="128" fill="${colour()}"/>${shapes}</svg>`);
}

const copyId = (i: number) => (i === 7 ? HOSTILE_ID : `scene-${i}-copy.jpg`);

describe.each(BACKENDS)('dashboard curation views in headless Chromium ($name backend)', { timeout: 180_000 }, (backend) => {
  let api: ApiHarness;
  let base: string;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  const errors: string[] = [];
  const foreign: string[] = [];
  let missingBrowser: Error | undefined;
  const test = (name: string, fn: () => Promise<void> | void) =>
    it(name, async () => {
      if (missingBrowser) throw missingBrowser;
      await fn();
    });

  async function call<T>(method: string, url: string, secret: string, body?: unknown): Promise<{ status: number; body: T; text: string }> {
    const response = await fetch(`${base}${url}`, {
      method,
      headers: { authorization: bearer(secret), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed: unknown = null;
    try {
      parsed = JSON.parse(text);
    } catch {
      // NDJSON or CSV
    }
    return { status: response.status, body: parsed as T, text };
  }

  async function refit(dataset: string) {
    const job = await call<{ id: string }>('POST', `/v1/datasets/${dataset}/prototypes/refit`, api.keys.writer);
    expect(job.status).toBe(202);
    const done = await waitFor(`the refit of ${dataset}`, async () => {
      const j = (await call<{ state: string }>('GET', `/v1/jobs/${job.body.id}`, api.keys.reader)).body;
      return j.state === 'succeeded' || j.state === 'failed' ? j : null;
    });
    expect(done.state).toBe('succeeded');
  }

  async function enterKey(secret: string) {
    if (await page.locator('#change-key').isVisible()) await page.click('#change-key');
    await page.waitForSelector('#key-panel', { state: 'visible' });
    await page.fill('#api-key', secret);
    await page.click('#key-submit');
    await page.waitForSelector('#layout', { state: 'visible' });
  }

  /** The groups as the page shows them. */
  const domGroups = () =>
    page.$$eval('#duplicate-groups > li.dup-group', (groups) =>
      groups.map((g) => ({
        kept: g.getAttribute('data-kept'),
        total: Number(g.getAttribute('data-duplicates')),
        items: Array.from((g as unknown as PageElement).querySelectorAll('.group-items > li'), (li) => ({
          id: li.getAttribute('data-external-id'),
          role: li.getAttribute('data-role'),
          similarity: li.getAttribute('data-similarity'),
          thumbnail: li.querySelector('.thumb')?.getAttribute('data-thumbnail') ?? null,
          caption: li.querySelector('figcaption')?.textContent ?? null,
        })),
      })),
    );

  beforeAll(async () => {
    try {
      findChromium();
    } catch (error) {
      missingBrowser = error as Error;
      return;
    }
    api = await startApi(backend);
    base = `http://127.0.0.1:${api.service.httpPort}`;

    // An image dataset (the server's encoder): 30 scenes, 6 near-copies of 5 of them, and two
    // items sent as embeddings (near-identical, so a group, and without thumbnails).
    const created = await call('POST', '/v1/datasets', api.keys.admin, { name: SHOTS, k: 3, settings: { minItemsForFit: 100_000, autoRefit: false, duplicateEpsilon: 0.12 } });
    expect(created.status).toBe(201);
    const images: { externalId: string; image: string; metadata: Record<string, unknown> }[] = [];
    for (let i = 0; i < SCENES; i++) images.push({ externalId: `scene-${i}.png`, image: (await sharp(scene(i)).png().toBuffer()).toString('base64'), metadata: { split: i % 2 ? 'train' : 'val' } });
    for (const i of COPIED) {
      images.push({ externalId: copyId(i), image: (await sharp(scene(i)).jpeg({ quality: 92 }).toBuffer()).toString('base64'), metadata: { split: 'train', note: i === 7 ? HOSTILE_NOTE : 'copy' } });
    }
    images.push({ externalId: 'scene-0-copy2.png', image: (await sharp(scene(0)).resize(124, 124).png().toBuffer()).toString('base64'), metadata: { split: 'train' } });
    const stored = await call<{ counts: { stored: number } }>('POST', `/v1/datasets/${SHOTS}/items`, api.keys.writer, { items: images });
    expect(stored.body.counts.stored).toBe(images.length);
    const dataset = await call<{ dimension: number }>('GET', `/v1/datasets/${SHOTS}`, api.keys.reader);
    const rng = new Rng(42);
    const vector = Float32Array.from({ length: dataset.body.dimension }, () => rng.next() - 0.5);
    const vectors = await call<{ counts: { stored: number } }>('POST', `/v1/datasets/${SHOTS}/items`, api.keys.writer, {
      items: [
        { externalId: 'vec-a', embedding: Array.from(vector) },
        { externalId: 'vec-b', embedding: Array.from(nearCopy(vector, 0.01, rng)) },
      ],
    });
    expect(vectors.body.counts.stored).toBe(2);
    await refit(SHOTS);

    // An embedding dataset of 12 planted clusters, half tight and half loose (so keeping the
    // hardest skews the clusters' shares), with 14 near-duplicate groups — one of 10 members.
    expect((await call('POST', '/v1/datasets', api.keys.admin, { name: PLANTED, dimension: DIM, k: 12, settings: { minItemsForFit: 100_000, autoRefit: false, duplicateEpsilon: 0.01 } })).status).toBe(201);
    const tight = plantedClusters({ seed: 21, clusters: 6, perCluster: 50, dim: DIM, noise: 0.6 });
    const loose = plantedClusters({ seed: 22, clusters: 6, perCluster: 50, dim: DIM, noise: 1.2 });
    const point = (data: typeof tight, i: number) => data.points.subarray(i * DIM, (i + 1) * DIM);
    const items: { externalId: string; embedding: number[] }[] = [];
    for (let i = 0; i < 300; i++) items.push({ externalId: `t-${String(i).padStart(3, '0')}`, embedding: Array.from(point(tight, i)) });
    for (let i = 0; i < 300; i++) items.push({ externalId: `l-${String(i).padStart(3, '0')}`, embedding: Array.from(point(loose, i)) });
    const copyRng = new Rng(77);
    for (let c = 0; c < 9; c++) items.push({ externalId: `t-000-copy-${c}`, embedding: Array.from(nearCopy(point(tight, 0), 0.01, copyRng)) });
    for (let g = 1; g <= 13; g++) items.push({ externalId: `l-${String(g * 7).padStart(3, '0')}-copy`, embedding: Array.from(nearCopy(point(loose, g * 7), 0.01, copyRng)) });
    const planted = await call<{ counts: { stored: number } }>('POST', `/v1/datasets/${PLANTED}/items`, api.keys.writer, { items });
    expect(planted.body.counts.stored).toBe(items.length);
    await refit(PLANTED);
    const dedup = await call<{ id: string }>('POST', `/v1/datasets/${PLANTED}/duplicates/jobs`, api.keys.writer);
    expect(dedup.status).toBe(202);
    await waitFor('the dedup of the planted dataset', async () => (await call<{ state: string }>('GET', `/v1/jobs/${dedup.body.id}`, api.keys.reader)).body.state === 'succeeded');

    browser = await launchChromium();
    context = await browser.newContext({ viewport: { width: 1440, height: 1100 }, colorScheme: 'light' });
    page = await context.newPage();
    watchErrors(page, errors);
    watchForeignRequests(page, base, foreign);
  });

  afterAll(async () => {
    await browser?.close();
    await api?.close();
  });

  test('with auth on, a fresh page load shows the key panel (and nothing of the datasets)', async () => {
    const requests: string[] = [];
    const onRequest = (request: { url(): string }) => requests.push(request.url());
    page.on('request', onRequest);
    try {
      await page.goto(`${base}/dashboard`);
      await page.waitForSelector('#key-panel', { state: 'visible' });
    } finally {
      page.off('request', onRequest);
    }
    expect(await page.isVisible('#layout')).toBe(false);
    expect(await page.isVisible('#key-error')).toBe(false);
    // The one API request was the keyless first contact (answered 401).
    expect(requests.filter((url) => url.includes('/v1/'))).toEqual([`${base}/v1/datasets`]);
  });

  test('with auth on, a key kept in the tab that meets a busy service is kept and tried again under the banner', async () => {
    const tab = await browser.newContext();
    const secret = api.keys.reader;
    await tab.addInitScript((key) => sessionStorage.setItem('protoprune.apiKey', key), secret);
    const busyPage = await tab.newPage();
    try {
      let refused = 0;
      // The keyless first contact gets the service's real 401; the stored key's first try meets a 503.
      await busyPage.route(`${base}/v1/datasets`, async (route) => {
        if (route.request().headers().authorization && refused === 0) {
          refused++;
          await route.fulfill({ status: 503, headers: { 'retry-after': '1' }, json: { error: { code: 'SERVER_BUSY', message: 'the server is busy', details: {} } } });
        } else await route.continue();
      });
      await busyPage.goto(`${base}/dashboard`);
      await busyPage.waitForSelector('#banner', { state: 'visible' });
      expect(await busyPage.getAttribute('#banner', 'data-code')).toBe('SERVER_BUSY');
      expect(await busyPage.isVisible('#key-panel')).toBe(false);
      await busyPage.waitForSelector(`#dataset-list button[data-dataset="${PLANTED}"]`, { timeout: 10_000 });
      expect(refused).toBe(1);
      expect(await busyPage.isVisible('#banner')).toBe(false);
      expect(await busyPage.textContent('#key-status')).toBe(`key …${secret.slice(-4)}`);
      expect(await busyPage.evaluate(() => sessionStorage.getItem('protoprune.apiKey'))).toBe(secret);
    } finally {
      await tab.close();
    }
  });

  test('near-duplicates: SemDeDup run from the page, its groups with thumbnails, items without one, text-only ids and metadata', async () => {
    await enterKey(api.keys.writer);
    await page.goto(`${base}/dashboard#dataset=${SHOTS}&view=duplicates`);
    await page.waitForSelector('#view-duplicates', { state: 'visible' });
    expect(await page.getAttribute('#tab-duplicates', 'aria-selected')).toBe('true');
    // No run yet: the page offers one, and runs it as a job it follows.
    await page.waitForSelector('#dedup-button', { state: 'visible' });
    expect(await page.getAttribute('#duplicates-status', 'data-state')).toBe('not-run');
    await page.click('#dedup-button');
    await page.waitForSelector('#duplicates-run[data-job-id]', { timeout: 60_000 });

    const served = await call<DuplicatesPage>('GET', `/v1/datasets/${SHOTS}/duplicates?limit=10`, api.keys.reader);
    expect(served.status).toBe(200);
    const run = served.body;
    expect(await page.getAttribute('#duplicates-run', 'data-job-id')).toBe(run.jobId);
    expect(Number(await page.getAttribute('#duplicates-run', 'data-group-count'))).toBe(run.groupCount);
    expect(Number(await page.getAttribute('#duplicates-run', 'data-duplicate-count'))).toBe(run.duplicateCount);
    // Every planted copy sits in its scene's group, and the two embeddings form one.
    const groupOf = (id: string) => run.groups.find((g) => g.kept === id || g.duplicates.includes(id));
    for (const i of COPIED) expect(groupOf(copyId(i)), copyId(i)).toBe(groupOf(`scene-${i}.png`));
    expect(groupOf('scene-0-copy2.png')).toBe(groupOf('scene-0.png'));
    expect(groupOf('vec-a')).toBeDefined();
    expect(groupOf('vec-a')).toBe(groupOf('vec-b'));
    expect(run.groupCount).toBe(COPIED.length + 1);
    expect(run.nextCursor).toBeNull();

    const shown = await domGroups();
    expect(shown.map((g) => g.kept)).toEqual(run.groups.map((g) => g.kept));
    shown.forEach((g, n) => {
      const want = run.groups[n];
      expect(g.total).toBe(want.duplicates.length);
      expect(g.items.map((item) => item.id)).toEqual([want.kept, ...want.duplicates]);
      expect(g.items.map((item) => item.role)).toEqual(['kept', ...want.duplicates.map(() => 'duplicate')]);
      expect(g.items.slice(1).map((item) => Number(item.similarity))).toEqual(want.similarities);
      expect(g.items.map((item) => item.caption)).toEqual([want.kept, ...want.duplicates]);
    });
    // Image items show their thumbnail, decoded; the two embeddings have none.
    await page.waitForFunction(() => Array.from(document.querySelectorAll('#duplicate-groups .thumb')).every((f) => f.getAttribute('data-thumbnail') !== 'loading'));
    const tiles = shown.flatMap((g) => g.items.map((item) => item.id!));
    const status = await page.$$eval('#duplicate-groups .thumb', (figures) => figures.map((f) => [f.getAttribute('data-external-id'), f.getAttribute('data-thumbnail')]));
    expect(Object.fromEntries(status)).toEqual(Object.fromEntries(tiles.map((id) => [id, id.startsWith('vec-') ? 'missing' : 'loaded'])));
    await page.waitForFunction(() => Array.from(document.querySelectorAll('#duplicate-groups img')).every((img) => img.complete && img.naturalWidth > 0));
    const decoded = await page.$$eval('#duplicate-groups img', (imgs) => imgs.map((img) => [(img as unknown as PageElement).naturalWidth, img.getAttribute('src')?.startsWith('blob:')]));
    expect(decoded).toHaveLength(tiles.length - 2);
    for (const [width, blob] of decoded) {
      expect(width).toBe(64);
      expect(blob).toBe(true);
    }
    expect(await page.$$eval('#duplicate-groups .thumb[data-thumbnail="missing"] .placeholder', (p) => p.map((e) => e.textContent))).toEqual(['no thumbnail', 'no thumbnail']);

    // The hostile id and metadata are text: no element came of them.
    expect(await page.$$eval('#duplicate-groups figcaption', (captions) => captions.map((c) => c.textContent))).toContain(HOSTILE_ID);
    await page.click(`#duplicate-groups li[data-external-id="${HOSTILE_ID.replace(/"/g, '\\"')}"]`);
    await page.waitForSelector('#item-detail[data-loaded="true"]');
    expect(await page.textContent('#item-detail-title')).toBe(HOSTILE_ID);
    expect(await page.textContent('#item-detail-metadata')).toContain(HOSTILE_NOTE);
    expect(await page.$$('#view-duplicates script, #view-duplicates b, #view-duplicates img[src="x"]')).toHaveLength(0);
    expect(await page.evaluate(() => window.__xss)).toBeUndefined();
    await mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-duplicates.png'), fullPage: true });
  });

  test('near-duplicates: pages of 10 groups (the DOM holds one page), at most 7 near-duplicates shown per group', async () => {
    await page.click(`#dataset-list button[data-dataset="${PLANTED}"]`);
    await page.waitForSelector(`#dataset-panel[data-dataset="${PLANTED}"]`);
    await page.waitForSelector('#duplicates-run[data-job-id]');
    const first = await call<DuplicatesPage>('GET', `/v1/datasets/${PLANTED}/duplicates?limit=10`, api.keys.reader);
    expect(first.body.groupCount).toBeGreaterThanOrEqual(14);
    const second = await call<DuplicatesPage>('GET', `/v1/datasets/${PLANTED}/duplicates?limit=10&cursor=${encodeURIComponent(first.body.nextCursor!)}`, api.keys.reader);
    await page.waitForFunction((n) => document.querySelectorAll('#duplicate-groups > li.dup-group').length === n, first.body.groups.length);
    expect((await domGroups()).map((g) => g.kept)).toEqual(first.body.groups.map((g) => g.kept));
    // An embedding dataset: no thumbnails to fetch.
    expect(await page.$$('#duplicate-groups img')).toHaveLength(0);
    expect(new Set(await page.$$eval('#duplicate-groups .thumb', (f) => f.map((e) => e.getAttribute('data-thumbnail'))))).toEqual(new Set(['none']));
    expect(await page.textContent('#duplicates-range')).toBe(`Groups 1–10 of ${first.body.groupCount}`);

    await page.click('#duplicates-next');
    await page.waitForFunction((kept) => document.querySelector('#duplicate-groups > li.dup-group')?.getAttribute('data-kept') === kept, second.body.groups[0].kept);
    const secondShown = await domGroups();
    expect(secondShown.map((g) => g.kept)).toEqual(second.body.groups.map((g) => g.kept));
    expect(await page.$$('#duplicate-groups > li.dup-group')).toHaveLength(second.body.groups.length);
    expect(await page.isDisabled('#duplicates-next')).toBe(second.body.nextCursor === null);
    // The group of 10 members shows its kept item and 7 near-duplicates, and counts the other 2.
    const ten = [...first.body.groups, ...second.body.groups].find((g) => g.duplicates.length === 9)!;
    expect(ten).toBeDefined();
    if (first.body.groups.includes(ten)) {
      await page.click('#duplicates-prev');
      await page.waitForFunction((kept) => document.querySelector('#duplicate-groups > li.dup-group')?.getAttribute('data-kept') === kept, first.body.groups[0].kept);
    }
    const tenGroup = (await domGroups()).find((g) => g.kept === ten.kept)!;
    expect(tenGroup.items.map((item) => item.id)).toEqual([ten.kept, ...ten.duplicates.slice(0, 7)]);
    expect(await page.getAttribute(`#duplicate-groups > li[data-kept="${ten.kept}"] [data-more]`, 'data-more')).toBe('2');
  });

  test('selection: the policy that ran and the imbalance report, as the API reports them, for the chosen order and fraction', async () => {
    await page.click('#tab-overview');
    await page.waitForSelector('#view-overview', { state: 'visible' });
    await page.waitForSelector('#selection-policy[data-order]');
    const shown = async () => ({
      order: await page.getAttribute('#selection-policy', 'data-order'),
      balance: await page.getAttribute('#selection-policy', 'data-balance'),
      auto: await page.getAttribute('#selection-policy', 'data-auto'),
      size: Number(await page.getAttribute('#selection-counts', 'data-size')),
      matched: Number(await page.getAttribute('#selection-counts', 'data-matched')),
      dedupDropped: await page.getAttribute('#selection-counts', 'data-dedup-dropped'),
      min: Number(await page.getAttribute('[data-imbalance="survival"]', 'data-min')),
      max: Number(await page.getAttribute('[data-imbalance="survival"]', 'data-max')),
      ratio: await page.getAttribute('[data-imbalance="ratio"]', 'data-value'),
      cv: Number(await page.getAttribute('[data-imbalance="cv"]', 'data-value')),
      randomCv: Number(await page.getAttribute('[data-imbalance="random-cv"]', 'data-value')),
    });
    const expected = (s: SelectionPage) => ({
      order: s.policy.order,
      balance: s.policy.balance,
      auto: s.policy.auto ? 'true' : 'false',
      size: s.size,
      matched: s.matched,
      dedupDropped: s.dedup ? String(s.dedup.dropped) : null,
      min: s.imbalance!.minSurvival,
      max: s.imbalance!.maxSurvival,
      ratio: s.imbalance!.maxMinRatio === null ? 'null' : String(s.imbalance!.maxMinRatio),
      cv: s.imbalance!.survivalCv,
      randomCv: s.imbalance!.randomSurvivalCv,
    });
    const select = async (query: string) => (await call<SelectionPage>('GET', `/v1/datasets/${PLANTED}/selection?${query}&limit=1`, api.keys.reader)).body;

    // The default: auto at 30%.
    const auto = await select('order=auto&fraction=0.3');
    expect(auto.policy.auto).not.toBeNull();
    await page.waitForFunction((size) => document.querySelector('#selection-counts')?.getAttribute('data-size') === String(size), auto.size);
    expect(await shown()).toEqual(expected(auto));
    expect(await page.textContent('#selection-policy')).toContain('chosen by auto');

    // Keeping the hardest 30% of tight and loose clusters skews the clusters' shares.
    await page.selectOption('#selection-order', 'hardest');
    const hardest = await select('order=hardest&fraction=0.3');
    await page.waitForFunction(() => document.querySelector('#selection-policy')?.getAttribute('data-auto') === 'false');
    expect(await shown()).toEqual(expected(hardest));
    expect(hardest.imbalance!.survivalCv).toBeGreaterThan(hardest.imbalance!.randomSurvivalCv);
    expect(await page.getAttribute('[data-imbalance="cv"] .meter-fill', 'data-over')).toBe('true');

    // Balanced across clusters at 50%, then dedup first: each as the API answers.
    await page.selectOption('#selection-balance', 'cluster');
    await page.$eval('#fraction', (input) => {
      (input as unknown as PageElement).value = '0.5';
      input.dispatchEvent(new Event('input', { bubbles: true }));
    });
    const balanced = await select('order=hardest&fraction=0.5&balance=cluster');
    await page.waitForFunction((size) => document.querySelector('#selection-counts')?.getAttribute('data-size') === String(size) && document.querySelector('#selection-policy')?.getAttribute('data-balance') === 'cluster', balanced.size);
    expect(await shown()).toEqual(expected(balanced));
    await page.check('#selection-dedup');
    const deduped = await select('order=hardest&fraction=0.5&balance=cluster&dedup=true');
    expect(deduped.dedup!.dropped).toBeGreaterThanOrEqual(22);
    await page.waitForFunction((dropped) => document.querySelector('#selection-counts')?.getAttribute('data-dedup-dropped') === String(dropped), deduped.dedup!.dropped);
    expect(await shown()).toEqual(expected(deduped));
    expect(await page.textContent('#selection-counts')).toContain(`dropped ${deduped.dedup!.dropped} near-duplicates first`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-selection.png'), fullPage: true });
  });

  test('manifests: a selection saved from the page is listed, opened, and its ids download (with the key) exactly', async () => {
    // Back to the hardest 30%, no balance, no dedup; save it under a name with markup in it.
    await page.uncheck('#selection-dedup');
    await page.selectOption('#selection-balance', 'none');
    await page.$eval('#fraction', (input) => {
      (input as unknown as PageElement).value = '0.3';
      input.dispatchEvent(new Event('input', { bubbles: true }));
    });
    const name = '<i>hardest</i> 30% & "more"';
    await page.fill('#manifest-name', name);
    await page.click('#save-manifest');
    await page.waitForSelector('#selection-message[data-manifest-id]');
    const id = (await page.getAttribute('#selection-message', 'data-manifest-id'))!;
    const saved = (await call<Manifest & { parameters: Record<string, unknown> }>('GET', `/v1/manifests/${id}`, api.keys.reader)).body;
    expect(saved.name).toBe(name);
    expect(saved.parameters).toEqual({ order: 'hardest', fraction: 0.3, balance: 'none' });
    // A second one, made elsewhere (a score export), is listed too, newest first.
    const other = await call<Manifest>('POST', `/v1/datasets/${PLANTED}/manifests`, api.keys.writer, { export: {}, name: 'every score' });
    expect(other.status).toBe(201);

    await page.click(`#selection-message button[data-manifest-id="${id}"]`);
    await page.waitForSelector('#view-manifests', { state: 'visible' });
    await page.waitForSelector(`#manifest-detail[data-manifest-id="${id}"]`, { state: 'visible' });
    await page.waitForSelector(`#manifest-rows tr[data-manifest-id="${other.body.id}"]`);
    const rows = await page.$$eval('#manifest-rows tr', (trs) =>
      trs.map((tr) => ({ id: tr.getAttribute('data-manifest-id'), count: tr.querySelector('[data-count]')?.getAttribute('data-count'), sha256: tr.querySelector('[data-sha256]')?.getAttribute('data-sha256'), name: tr.querySelector('td.name')?.textContent, policy: tr.querySelector('[data-policy]')?.textContent })),
    );
    const listed = (await call<{ manifests: Manifest[] }>('GET', `/v1/datasets/${PLANTED}/manifests`, api.keys.reader)).body.manifests;
    expect(rows.map((r) => r.id)).toEqual(listed.map((m) => m.id));
    expect(rows.map((r) => [r.count, r.sha256])).toEqual(listed.map((m) => [String(m.count), m.sha256]));
    expect(rows.find((r) => r.id === id)).toMatchObject({ name, policy: 'hardest 30%' });
    expect(rows.find((r) => r.id === other.body.id)).toMatchObject({ name: 'every score', policy: 'score export' });
    expect(await page.$$('#view-manifests i')).toHaveLength(0);
    expect(await page.textContent('#manifest-detail-title')).toBe(`Manifest “${name}”`);
    expect(await page.getAttribute('#manifest-fields [data-field="SHA-256 of the ids"]', 'data-value')).toBe(saved.sha256);
    expect(await page.getAttribute('#manifest-fields [data-field="Ids"]', 'data-value')).toBe(String(saved.count));

    // The ids, fetched with the key (a link cannot carry it) and saved from a blob.
    const expectedIds = (await call<unknown>('GET', `/v1/datasets/${PLANTED}/selection?order=hardest&fraction=0.3&format=csv`, api.keys.reader)).text.trimEnd().split('\n').slice(1);
    expect(expectedIds).toHaveLength(saved.count);
    const [ndjson] = await Promise.all([page.waitForEvent('download'), page.click('#manifest-ndjson')]);
    expect(ndjson.url()).toMatch(/^blob:/);
    expect(ndjson.suggestedFilename()).toMatch(/\.ndjson$/);
    const lines = (await readFile((await ndjson.path())!, 'utf8')).trimEnd().split('\n');
    expect(lines.map((line) => JSON.parse(line).externalId)).toEqual(expectedIds);
    const [csv] = await Promise.all([page.waitForEvent('download'), page.click('#manifest-csv')]);
    const csvText = await readFile((await csv.path())!, 'utf8');
    expect(csvText).toBe((await call<unknown>('GET', `/v1/manifests/${id}?format=csv`, api.keys.reader)).text);
    expect(csvText.trimEnd().split('\n').slice(1)).toEqual(expectedIds);
    // The ids served hash to the recorded SHA-256, checked in the browser.
    await page.click('#manifest-verify');
    await page.waitForSelector('#manifest-message[data-verified]');
    expect(await page.getAttribute('#manifest-message', 'data-verified')).toBe('true');

    // A refit later, the manifest still serves the same ids (and says which version made them).
    await refit(PLANTED);
    await page.waitForSelector('#dataset-panel[data-version="2"]', { timeout: 30_000 });
    const [again] = await Promise.all([page.waitForEvent('download'), page.click('#manifest-ndjson')]);
    const againLines = (await readFile((await again.path())!, 'utf8')).trimEnd().split('\n');
    expect(againLines.map((line) => JSON.parse(line).externalId)).toEqual(expectedIds);
    expect(await page.$eval(`#manifest-rows tr[data-manifest-id="${id}"]`, (tr) => tr.querySelector('td:nth-child(4)')?.textContent)).toBe(`v${saved.prototypeVersion}`);
    // The selection's links download with the key too.
    await page.click('#tab-overview');
    await page.waitForSelector('#selection-policy[data-version="2"]');
    const [selection] = await Promise.all([page.waitForEvent('download'), page.click('#selection-csv')]);
    const fresh = (await call<unknown>('GET', `/v1/datasets/${PLANTED}/selection?order=hardest&fraction=0.3&format=csv`, api.keys.reader)).text;
    expect(await readFile((await selection.path())!, 'utf8')).toBe(fresh);
    await page.click('#tab-manifests');
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard-manifests.png'), fullPage: true });
  });

  test('with a read key, saving a manifest and running SemDeDup explain that they need the write scope', async () => {
    await enterKey(api.keys.reader);
    await page.click(`#dataset-list button[data-dataset="${PLANTED}"]`);
    await page.click('#tab-overview');
    await page.waitForSelector('#selection-policy[data-order]');
    await page.click('#save-manifest');
    await page.waitForSelector('#selection-message.error');
    expect(await page.textContent('#selection-message')).toMatch(/needs the write scope/);
    // Version 2 of the planted dataset has no SemDeDup run yet.
    await page.click('#tab-duplicates');
    await page.waitForSelector('#dedup-button', { state: 'visible' });
    await page.click('#dedup-button');
    await page.waitForSelector('#dedup-message', { state: 'visible' });
    expect(await page.getAttribute('#dedup-message', 'data-code')).toBe('INSUFFICIENT_SCOPE');
  });

  test('loaded nothing from other origins and logged no script errors', () => {
    expect(foreign).toEqual([]);
    expect(errors).toEqual([]);
  });
});
