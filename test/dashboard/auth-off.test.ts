import { readFile } from 'node:fs/promises';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BACKENDS } from '../helpers/backends.js';
import { plantedClusters } from '../helpers/planted.js';
import { startApi, type ApiHarness } from '../http/api-harness.js';
import { findChromium, launchChromium, waitFor, watchErrors } from './browser.js';

/**
 * The dashboard of a service started with AUTH_DISABLED=true, in a real headless Chromium: it
 * must show the datasets from a fresh page load without anything typed, whatever key the tab
 * still holds, and ride out a first request that gets no answer about keys.
 */

declare const sessionStorage: { getItem(key: string): string | null; setItem(key: string, value: string): void };
declare const document: { querySelector(selector: string): { getAttribute(name: string): string | null } | null };

const KEY_STORAGE = 'protoprune.apiKey';
const DIM = 8;

describe.each(BACKENDS)('dashboard with auth off ($name backend)', { timeout: 120_000 }, (backend) => {
  let api: ApiHarness;
  let base: string;
  let browser: Browser;
  let manifest: { id: string; count: number; sha256: string };
  const errors: string[] = [];
  /** Set when Chromium is missing: every test then fails with the install instructions (none is skipped). */
  let missingBrowser: Error | undefined;

  const open = (path: string, init: RequestInit = {}) =>
    fetch(`${base}${path}`, { ...init, headers: { ...(init.body ? { 'content-type': 'application/json' } : {}), ...(init.headers as Record<string, string>) } });

  beforeAll(async () => {
    try {
      findChromium();
    } catch (error) {
      missingBrowser = error as Error;
      return;
    }
    api = await startApi(backend, { AUTH_DISABLED: 'true' });
    base = `http://127.0.0.1:${api.service.httpPort}`;
    // Everything below goes without a key: the service checks none.
    expect((await open('/v1/datasets', { method: 'POST', body: JSON.stringify({ name: 'open', dimension: DIM, k: 3, settings: { minItemsForFit: 60, autoRefit: false } }) })).status).toBe(201);
    const data = plantedClusters({ seed: 3, clusters: 3, perCluster: 20, dim: DIM, noise: 0.4 });
    const items = Array.from({ length: data.n }, (_, i) => ({ externalId: `o-${String(i).padStart(2, '0')}`, embedding: Array.from(data.points.subarray(i * DIM, (i + 1) * DIM)) }));
    expect((await open('/v1/datasets/open/items', { method: 'POST', body: JSON.stringify({ items }) })).status).toBe(200);
    await waitFor('the first fit', async () => {
      const stats = (await (await open('/v1/datasets/open/stats')).json()) as { prototypeVersion: number | null; refitJob: unknown };
      return stats.prototypeVersion !== null && stats.refitJob === null;
    });
    const created = await open('/v1/datasets/open/manifests', { method: 'POST', body: JSON.stringify({ selection: { order: 'hardest', fraction: 0.25 }, name: 'open hardest quarter' }) });
    expect(created.status).toBe(201);
    manifest = (await created.json()) as typeof manifest;
    browser = await launchChromium();
  });

  afterAll(async () => {
    await browser?.close();
    await api?.close();
  });

  /** A new tab (its own empty sessionStorage), with `stored` in it before the page's scripts run. */
  async function freshPage(stored?: string, options = { watchErrors: true }): Promise<{ context: BrowserContext; page: Page; authorizations: (string | undefined)[] }> {
    const context = await browser.newContext();
    if (stored !== undefined) await context.addInitScript(([name, key]) => sessionStorage.setItem(name, key), [KEY_STORAGE, stored] as const);
    const page = await context.newPage();
    if (options.watchErrors) watchErrors(page, errors);
    const authorizations: (string | undefined)[] = [];
    page.on('request', (request) => {
      if (request.url().includes('/v1/')) authorizations.push(request.headers().authorization);
    });
    return { context, page, authorizations };
  }

  const test = (name: string, fn: () => Promise<void> | void) =>
    it(name, async () => {
      if (missingBrowser) throw missingBrowser;
      await fn();
    });

  test('a fresh page load shows the datasets without a key typed, and sends none', async () => {
    const { context, page, authorizations } = await freshPage();
    try {
      await page.goto(`${base}/dashboard`);
      await page.waitForSelector('#dataset-list button[data-dataset="open"]');
      expect(await page.isVisible('#key-panel')).toBe(false);
      expect(await page.isVisible('#layout')).toBe(true);
      expect(await page.isVisible('#change-key')).toBe(false);
      expect(await page.getAttribute('#key-status', 'data-auth')).toBe('off');
      expect(await page.textContent('#key-status')).toBe('no key needed');
      // Selecting the dataset shows its numbers and the selection's policy, still with no key.
      await page.click('#dataset-list button[data-dataset="open"]');
      await page.waitForSelector('#dataset-panel[data-version="1"]');
      await page.waitForSelector('#selection-policy[data-order]');
      expect(await page.textContent('#stat-items')).toBe('60');
      expect(authorizations.length).toBeGreaterThan(2);
      expect(authorizations.every((header) => header === undefined)).toBe(true);
      expect(await page.evaluate((name) => sessionStorage.getItem(name), KEY_STORAGE)).toBeNull();
    } finally {
      await context.close();
    }
  });

  for (const [what, stored] of [
    ['an unknown key', 'pp_thiskeywasneverminted0000000000'],
    ['a key a header cannot carry', 'pp_🦊🦊'],
  ] as const) {
    test(`a tab still holding ${what} connects without it, and forgets it`, async () => {
      const { context, page, authorizations } = await freshPage(stored);
      try {
        await page.goto(`${base}/dashboard`);
        await page.waitForSelector('#dataset-list button[data-dataset="open"]');
        expect(await page.isVisible('#key-panel')).toBe(false);
        expect(await page.textContent('#key-status')).toBe('no key needed');
        expect(await page.isVisible('#change-key')).toBe(false);
        expect(authorizations.every((header) => header === undefined)).toBe(true);
        expect(await page.evaluate((name) => sessionStorage.getItem(name), KEY_STORAGE)).toBeNull();
      } finally {
        await context.close();
      }
    });
  }

  test('a first request the service cannot answer yet (503) is retried under a banner, not met with the key panel', async () => {
    // The browser logs each refused request as an error: this page's console is not watched.
    const { context, page } = await freshPage(undefined, { watchErrors: false });
    try {
      let refused = 0;
      await page.route(`${base}/v1/datasets`, async (route) => {
        if (refused < 2) {
          refused++;
          await route.fulfill({ status: 503, json: { error: { code: 'SERVER_BUSY', message: 'the server is busy', details: {} } } });
        } else await route.continue();
      });
      await page.goto(`${base}/dashboard`);
      await page.waitForSelector('#banner', { state: 'visible' });
      expect(await page.getAttribute('#banner', 'data-code')).toBe('SERVER_BUSY');
      expect(await page.isVisible('#key-panel')).toBe(false);
      // 1 s, then 2 s later the third attempt goes through.
      await page.waitForSelector('#dataset-list button[data-dataset="open"]', { timeout: 10_000 });
      expect(refused).toBe(2);
      expect(await page.isVisible('#banner')).toBe(false);
      expect(await page.isVisible('#key-panel')).toBe(false);
      expect(await page.textContent('#key-status')).toBe('no key needed');
    } finally {
      await context.close();
    }
  });

  test('a manifest’s ids download through a plain link to the endpoint (no key to add)', async () => {
    const { context, page } = await freshPage();
    try {
      await page.goto(`${base}/dashboard#dataset=open&view=manifests`);
      await page.waitForSelector(`#manifest-rows tr[data-manifest-id="${manifest.id}"]`);
      expect(await page.textContent(`#manifest-rows tr[data-manifest-id="${manifest.id}"] td.name`)).toBe('open hardest quarter');
      await page.click(`#manifest-rows tr[data-manifest-id="${manifest.id}"] button[data-open]`);
      await page.waitForSelector(`#manifest-detail[data-manifest-id="${manifest.id}"]`, { state: 'visible' });
      expect(await page.getAttribute('#manifest-csv', 'href')).toBe(`v1/manifests/${manifest.id}?format=csv`);
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#manifest-csv')]);
      expect(download.url()).toBe(`${base}/v1/manifests/${manifest.id}?format=csv`);
      const csv = await readFile((await download.path())!, 'utf8');
      const served = await (await open(`/v1/manifests/${manifest.id}?format=csv`)).text();
      expect(csv).toBe(served);
      const ids = csv.trimEnd().split('\n').slice(1);
      expect(ids).toHaveLength(manifest.count);
      expect(ids).toHaveLength(15);
      const selected = (await (await open('/v1/datasets/open/selection?order=hardest&fraction=0.25&format=csv')).text()).trimEnd().split('\n').slice(1);
      expect(ids).toEqual(selected);
      await page.click('#manifest-verify');
      await page.waitForSelector('#manifest-message[data-verified]');
      expect(await page.evaluate(() => document.querySelector('#manifest-message')?.getAttribute('data-verified'))).toBe('true');
    } finally {
      await context.close();
    }
  });

  test('logged no script errors', () => {
    expect(errors).toEqual([]);
  });
});
