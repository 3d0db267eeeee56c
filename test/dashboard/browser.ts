import { existsSync } from 'node:fs';
import { chromium, type Browser, type Page } from 'playwright-core';

/**
 * Shared by the dashboard's browser tests: Debian's Chromium, driven by playwright-core (which
 * downloads no browser), and the page-side globals the tests touch inside page.evaluate.
 */

const CHROMIUM_CANDIDATES = [
  process.env.CHROMIUM_PATH,
  '/usr/bin/chromium',
  '/usr/bin/chromium-browser',
  '/usr/lib/chromium/chromium',
  '/usr/bin/google-chrome-stable',
  '/usr/bin/google-chrome',
];

export function findChromium(): string {
  const found = CHROMIUM_CANDIDATES.find((candidate) => candidate && existsSync(candidate));
  if (!found) {
    throw new Error(
      'The dashboard browser test needs Chromium, and none was found (looked at CHROMIUM_PATH and ' +
        `${CHROMIUM_CANDIDATES.slice(1).join(', ')}). Install it with ` +
        '`sudo apt-get install -y --no-install-recommends chromium` (Debian/Ubuntu; .ci/run does this), ' +
        'or set CHROMIUM_PATH to a Chromium or Chrome binary.',
    );
  }
  return found;
}

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: findChromium(), headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] });
}

/** Collects script errors and console errors (except the browser's own "status of 401/403/404/409" lines). */
export function watchErrors(page: Page, into: string[]): void {
  page.on('pageerror', (error) => into.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/status of 40[13479]/.test(message.text())) into.push(`console: ${message.text()}`);
  });
}

/** Collects every request the page makes beyond the service's origin (and its own blob:/data: URLs): the page loads nothing from elsewhere. */
export function watchForeignRequests(page: Page, base: string, into: string[]): void {
  page.on('request', (request) => {
    const url = request.url();
    if (!url.startsWith(`${base}/`) && !url.startsWith('blob:') && !url.startsWith('data:')) into.push(url);
  });
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await probe();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}
