// @ts-check
/**
 * The manifests view: the dataset's saved selections and exports (GET …/manifests, newest first,
 * a page at a time), one opened with everything it records, links to its ids as NDJSON or CSV,
 * and a check that the ids served still hash to the recorded SHA-256.
 */

import { api, getJson } from './api.js';
import { $, ago, enc, fmt, h, show } from './dom.js';
import { downloadFailedIn, fileStem, setDownload } from './download.js';
import { state } from './state.js';
import { keyRejected } from './view-connect.js';

/** @typedef {import('./api.js').ApiError} ApiError @typedef {import('./api.js').Dataset} Dataset @typedef {import('./api.js').Manifest} Manifest */

export const MANIFESTS_PER_PAGE = 10;
/** While the newest page is shown, it is read again this often (manifests saved elsewhere appear). */
const REFRESH_MS = 20_000;

const view = {
  /** the dataset shown */
  key: '',
  cursors: /** @type {(string | null)[]} */ ([null]),
  page: 0,
  at: 0,
  seq: 0,
  /** @type {string | null} the manifest opened */
  open: null,
  /** @type {Manifest | null} */
  manifest: null,
  /** @type {string | null} a manifest to open once the view is shown (after saving one) */
  pendingOpen: null,
};


export function clearManifests() {
  view.seq++;
  view.key = '';
  view.cursors = [null];
  view.page = 0;
  view.at = 0;
  view.open = null;
  view.manifest = null;
  $('manifest-rows').replaceChildren();
  show($('manifests-table'), false);
  show($('manifests-pager'), false);
  show($('manifest-detail'), false);
  $('manifests-status').textContent = '';
}

/** Shows the dataset's manifests: the newest page again every REFRESH_MS. @param {Dataset} dataset @param {{ force?: boolean }} [options] */
export async function refreshManifests(dataset, options = {}) {
  const pending = view.pendingOpen;
  view.pendingOpen = null;
  if (dataset.name !== view.key) {
    clearManifests();
    view.key = dataset.name;
    await loadPage(dataset, 0);
  } else if (options.force || (view.page === 0 && Date.now() - view.at > REFRESH_MS)) {
    await loadPage(dataset, view.page);
  }
  if (pending) await openManifest(pending);
}

/** Opens manifest `id` on the manifests view (after saving it on the overview). @param {string} id */
export function showManifest(id) {
  view.pendingOpen = id;
  view.at = 0; // the new manifest is on the newest page: read it again
  const name = state.selected;
  if (name !== null) location.hash = `dataset=${enc(name)}&view=manifests`;
}

/** @param {Dataset} dataset @param {number} page */
async function loadPage(dataset, page) {
  const seq = ++view.seq;
  const epoch = state.epoch;
  const status = $('manifests-status');
  view.at = Date.now();
  try {
    const q = new URLSearchParams({ limit: String(MANIFESTS_PER_PAGE) });
    const cursor = view.cursors[page];
    if (cursor) q.set('cursor', cursor);
    /** @type {{ manifests: Manifest[], nextCursor: string | null }} */
    const body = await getJson(`v1/datasets/${enc(dataset.name)}/manifests?${q}`);
    if (seq !== view.seq || epoch !== state.epoch) return;
    view.page = page;
    if (body.nextCursor) view.cursors[page + 1] = body.nextCursor;
    else view.cursors.length = page + 1;
    renderRows(body.manifests);
    const empty = body.manifests.length === 0 && page === 0;
    status.textContent = empty ? 'No manifests yet: save a selection as one on the Overview.' : '';
    status.dataset.state = empty ? 'empty' : 'listed';
    show($('manifests-table'), !empty);
    show($('manifests-pager'), page > 0 || body.nextCursor !== null);
    const first = page * MANIFESTS_PER_PAGE;
    $('manifests-range').textContent = body.manifests.length ? `${fmt(first + 1)}–${fmt(first + body.manifests.length)}` : '';
    /** @type {HTMLButtonElement} */ ($('manifests-prev')).disabled = page === 0;
    /** @type {HTMLButtonElement} */ ($('manifests-next')).disabled = body.nextCursor === null;
  } catch (error) {
    if (seq !== view.seq || epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    status.textContent = `The manifests could not be read: ${e.message} (${e.code}).`;
    status.dataset.state = 'error';
  }
}

/** What ran: a selection's policy (from its summary), or an export. @param {Manifest} m */
function policyOf(m) {
  if (m.kind === 'export') return 'score export';
  const policy = /** @type {{ order?: unknown, balance?: unknown } | undefined} */ (m.summary.policy);
  const asked = typeof m.parameters.order === 'string' ? m.parameters.order : 'auto';
  const order = typeof policy?.order === 'string' ? policy.order : asked;
  const balanced = policy?.balance === 'cluster' ? ' + cluster balance' : '';
  const dedup = m.parameters.dedup ? 'dedup, then ' : '';
  const fraction = typeof m.parameters.fraction === 'number' ? ` ${(m.parameters.fraction * 100).toFixed(0)}%` : typeof m.parameters.count === 'number' ? ` ${fmt(m.parameters.count)}` : '';
  return `${dedup}${order}${balanced}${asked === 'auto' ? ' (auto)' : ''}${fraction}`;
}

/** @param {Manifest[]} manifests */
function renderRows(manifests) {
  $('manifest-rows').replaceChildren(
    ...manifests.map((m) => {
      const open = h('button', { type: 'button', class: 'secondary small-button', 'data-open': m.id }, ['Open']);
      open.addEventListener('click', () => void openManifest(m.id));
      return h('tr', { 'data-manifest-id': m.id, 'aria-selected': m.id === view.open ? 'true' : null }, [
        h('td', { title: m.createdAt }, [ago(m.createdAt)]),
        h('td', { class: 'name' }, m.name === null ? [h('span', { class: 'muted' }, [m.id.slice(0, 8)])] : [m.name]),
        h('td', { 'data-policy': '' }, [policyOf(m)]),
        h('td', {}, [`v${m.prototypeVersion}`]),
        h('td', { class: 'num', 'data-count': m.count }, [fmt(m.count)]),
        h('td', {}, [h('code', { title: m.sha256, 'data-sha256': m.sha256 }, [`${m.sha256.slice(0, 16)}…`])]),
        h('td', {}, [open]),
      ]);
    }),
  );
}

/** @param {string} id */
async function openManifest(id) {
  const epoch = state.epoch;
  view.open = id;
  const message = $('manifest-message');
  show(message, false);
  try {
    /** @type {Manifest} */
    const m = await getJson(`v1/manifests/${enc(id)}`);
    if (epoch !== state.epoch || view.open !== id) return;
    view.manifest = m;
    renderDetail(m);
    for (const row of Array.from($('manifest-rows').children)) {
      /** @type {HTMLElement} */ (row).setAttribute('aria-selected', /** @type {HTMLElement} */ (row).dataset.manifestId === id ? 'true' : 'false');
    }
  } catch (error) {
    if (epoch !== state.epoch || view.open !== id) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    show($('manifest-detail'), true);
    $('manifest-detail-title').textContent = `Manifest ${id.slice(0, 8)}`;
    message.textContent = e.status === 404 ? 'This manifest no longer exists (or this key may not read its dataset).' : `It could not be read: ${e.message} (${e.code}).`;
    message.className = 'small error';
    show(message, true);
  }
}

/** @param {Manifest} m */
function renderDetail(m) {
  const box = $('manifest-detail');
  box.dataset.manifestId = m.id;
  $('manifest-detail-title').textContent = m.name === null ? `Manifest ${m.id}` : `Manifest “${m.name}”`;
  /** @type {[string, string, string?][]} */
  const rows = [
    ['Id', m.id],
    ['Dataset', m.dataset],
    ['Kind', m.kind],
    ['Created', `${new Date(m.createdAt).toLocaleString()} (${ago(m.createdAt)})`],
    ['Created by key', m.createdByKeyId ?? 'none (auth off, or the operator)'],
    ['Encoder', m.encoder ? `${m.encoder.name} · SHA-256 ${m.encoder.sha256}` : 'none (an embedding-only dataset)'],
    ['Prototype version', `v${m.prototypeVersion}`],
    ['k', m.k === null ? '–' : fmt(m.k)],
    ['Seed', String(m.seed)],
    ['Policy', policyOf(m)],
    ['Ids', fmt(m.count), String(m.count)],
    ['SHA-256 of the ids', m.sha256, m.sha256],
  ];
  if (m.description) rows.splice(3, 0, ['Description', m.description]);
  $('manifest-fields').replaceChildren(
    ...rows.flatMap(([label, value, data]) => [h('dt', {}, [label]), h('dd', { 'data-field': label, 'data-value': data ?? null }, [value])]),
  );
  $('manifest-parameters').textContent = JSON.stringify(m.parameters, null, 2);
  $('manifest-summary').textContent = JSON.stringify(m.summary, null, 2);
  const stem = fileStem(m.name ?? `manifest-${m.id.slice(0, 8)}`);
  const path = (/** @type {string} */ format) => `v1/manifests/${enc(m.id)}?format=${format}`;
  setDownload(/** @type {HTMLAnchorElement} */ ($('manifest-ndjson')), path('ndjson'), `${stem}.ndjson`, downloadFailedIn('manifest-message'));
  setDownload(/** @type {HTMLAnchorElement} */ ($('manifest-csv')), path('csv'), `${stem}.csv`, downloadFailedIn('manifest-message'));
  const verify = /** @type {HTMLButtonElement} */ ($('manifest-verify'));
  verify.disabled = typeof crypto === 'undefined' || !crypto.subtle;
  verify.title = verify.disabled ? 'Needs the browser’s SubtleCrypto, which only a secure context (https, or localhost) has' : 'Fetch the ids and hash them here';
  show($('manifest-message'), false);
  show(box, true);
}

/** Fetches the opened manifest's ids and compares their count and SHA-256 with what it records. */
export async function verifyManifest() {
  const m = view.manifest;
  if (!m) return;
  const epoch = state.epoch;
  const button = /** @type {HTMLButtonElement} */ ($('manifest-verify'));
  const message = $('manifest-message');
  button.disabled = true;
  message.className = 'small';
  message.textContent = 'Fetching and hashing the ids…';
  delete message.dataset.verified;
  show(message, true);
  try {
    const text = await (await api(`v1/manifests/${enc(m.id)}?format=ndjson`, { headers: { accept: 'application/x-ndjson' } })).text();
    const ids = text.split('\n').filter((line) => line.length > 0).map((line) => String(JSON.parse(line).externalId));
    // The digest is over each id's UTF-8 bytes followed by one NUL byte, in order.
    const encoder = new TextEncoder();
    const parts = ids.map((id) => encoder.encode(id));
    const bytes = new Uint8Array(parts.reduce((sum, p) => sum + p.length + 1, 0));
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length + 1; // the NUL byte is already 0
    }
    const digest = Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)), (b) => b.toString(16).padStart(2, '0')).join('');
    if (epoch !== state.epoch || view.manifest !== m) return;
    const ok = digest === m.sha256 && ids.length === m.count;
    message.textContent = ok
      ? `Verified: the ${fmt(ids.length)} ids served hash to the recorded SHA-256.`
      : `Mismatch: the service served ${fmt(ids.length)} ids hashing to ${digest}; the manifest records ${fmt(m.count)} ids and ${m.sha256}.`;
    message.className = ok ? 'small ok' : 'small error';
    message.dataset.verified = ok ? 'true' : 'false';
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    message.textContent = `The ids could not be checked: ${e.message}${e.code ? ` (${e.code})` : ''}.`;
    message.className = 'small error';
  } finally {
    button.disabled = false;
  }
}

/** @param {1 | -1} step */
export function pageManifests(step) {
  const dataset = state.dataset;
  if (!dataset) return;
  const page = view.page + step;
  if (page < 0 || page >= view.cursors.length) return;
  void loadPage(dataset, page);
}
