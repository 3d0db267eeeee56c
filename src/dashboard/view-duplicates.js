// @ts-check
/**
 * The near-duplicates view: the groups of the dataset's newest completed SemDeDup run of its
 * active version (GET …/duplicates), a page of groups at a time, each the kept item and its
 * near-duplicates with their similarity and thumbnails; a button runs SemDeDup when there is no
 * run, and a job in progress is followed until its groups can be shown. Clicking an item shows
 * its score, cluster and metadata.
 */

import { getJson } from './api.js';
import { $, ago, enc, fmt, h, pct, score3, show } from './dom.js';
import { state } from './state.js';
import { ThumbnailSet } from './thumbs.js';
import { keyRejected } from './view-connect.js';

/** @typedef {import('./api.js').ApiError} ApiError @typedef {import('./api.js').Dataset} Dataset @typedef {import('./api.js').Stats} Stats */
/** @typedef {import('./api.js').Job} Job @typedef {import('./api.js').Duplicates} Duplicates @typedef {import('./api.js').Item} Item */

/** Groups per page: with at most SHOWN_DUPLICATES + 1 items each, a page holds at most 80 tiles. */
export const GROUPS_PER_PAGE = 10;
/** Near-duplicates shown per group; the rest are counted ("+ N more"). */
export const SHOWN_DUPLICATES = 7;
const JOB_POLL_MS = 1000;
/** While there is no run (and no job to follow), look again this often: one may be started elsewhere (CLI, API). */
const NOT_RUN_RECHECK_MS = 10_000;

const view = {
  /** dataset|version shown */
  key: '',
  /** Cursors of the pages seen so far: cursors[i] fetches page i (page 0: null). */
  cursors: /** @type {(string | null)[]} */ ([null]),
  page: 0,
  /** @type {string | null} */
  next: null,
  seq: 0,
  /** when the shown page (or the absence of a run) was read */
  at: 0,
  /** @type {ThumbnailSet | null} */
  thumbs: null,
  /** @type {string | null} a dedup job being followed */
  jobId: null,
  /** @type {ReturnType<typeof setTimeout> | null} */
  jobTimer: null,
  /** @type {string | null} the item whose details are open */
  detail: null,
};


export function clearDuplicates() {
  view.seq++;
  view.key = '';
  view.cursors = [null];
  view.page = 0;
  view.next = null;
  view.jobId = null;
  view.detail = null;
  if (view.jobTimer) clearTimeout(view.jobTimer);
  view.jobTimer = null;
  view.thumbs?.close();
  view.thumbs = null;
  $('duplicate-groups').replaceChildren();
  $('duplicates-run').textContent = '';
  $('duplicates-status').textContent = '';
  delete $('duplicates-status').dataset.state;
  show($('duplicates-pager'), false);
  show($('dedup-button'), false);
  show($('dedup-message'), false);
  show($('item-detail'), false);
}

/**
 * Shows the groups of the dataset's active version, reloading them when the version changed.
 * @param {Dataset} dataset @param {Stats} stats @param {{ force?: boolean }} [options]
 */
export async function refreshDuplicates(dataset, stats, options = {}) {
  if (stats.prototypeVersion === null) {
    if (view.key !== `${dataset.name}|`) {
      clearDuplicates();
      view.key = `${dataset.name}|`;
    }
    $('duplicates-status').textContent = 'No prototypes yet: SemDeDup runs on a fitted version, after the first fit.';
    return;
  }
  const key = `${dataset.name}|${stats.prototypeVersion}`;
  if (key === view.key && !options.force) {
    // No run to show: look again now and then (a run may be started elsewhere), keeping the page as it is.
    const notRun = $('duplicates-status').dataset.state === 'not-run' && view.jobId === null;
    if (notRun && Date.now() - view.at > NOT_RUN_RECHECK_MS) await loadPage(dataset, 0);
    return;
  }
  clearDuplicates();
  view.key = key;
  await loadPage(dataset, 0);
}

/** @param {Dataset} dataset @param {number} page */
async function loadPage(dataset, page) {
  const seq = ++view.seq;
  const epoch = state.epoch;
  const cursor = view.cursors[page];
  const status = $('duplicates-status');
  if (status.dataset.state !== 'not-run') status.textContent = 'Loading…';
  view.at = Date.now();
  /** @type {Duplicates} */
  let body;
  try {
    const q = new URLSearchParams({ limit: String(GROUPS_PER_PAGE) });
    if (cursor) q.set('cursor', cursor);
    body = await getJson(`v1/datasets/${enc(dataset.name)}/duplicates?${q}`);
  } catch (error) {
    if (seq !== view.seq || epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    $('duplicate-groups').replaceChildren();
    show($('duplicates-pager'), false);
    $('duplicates-run').textContent = '';
    if (e.code === 'DEDUP_NOT_RUN') {
      const jobId = typeof e.details?.jobId === 'string' ? e.details.jobId : null;
      const epsilon = typeof e.details?.epsilon === 'number' ? e.details.epsilon : null;
      const version = typeof e.details?.version === 'number' ? e.details.version : state.stats?.prototypeVersion;
      status.textContent = `No SemDeDup run of version v${version ?? '?'}${epsilon === null ? '' : ` at ε ${epsilon}`} yet.`;
      status.dataset.state = 'not-run';
      if (jobId) followJob(dataset, jobId);
      else show($('dedup-button'), true);
      return;
    }
    status.textContent = `The groups could not be read: ${e.message} (${e.code}).`;
    status.dataset.state = 'error';
    if (e.status === 0 || e.status === 429 || e.status >= 500) view.key = ''; // ask again at the next poll
    return;
  }
  if (seq !== view.seq || epoch !== state.epoch) return;
  view.page = page;
  view.next = body.nextCursor;
  if (body.nextCursor) view.cursors[page + 1] = body.nextCursor;
  show($('dedup-button'), false);
  renderRun(body);
  renderGroups(dataset, body, page);
}

/** @param {Duplicates} body */
function renderRun(body) {
  const run = $('duplicates-run');
  run.textContent =
    `Run of job ${body.jobId.slice(0, 8)} on version v${body.prototypeVersion} at ε ${body.epsilon} (similarity ≥ ${(1 - body.epsilon).toFixed(3)}), ` +
    `completed ${ago(body.completedAt)}: ${fmt(body.groupCount)} group${body.groupCount === 1 ? '' : 's'}, ${fmt(body.duplicateCount)} near-duplicate${body.duplicateCount === 1 ? '' : 's'} a dedup step would drop.`;
  run.dataset.jobId = body.jobId;
  run.dataset.groupCount = String(body.groupCount);
  run.dataset.duplicateCount = String(body.duplicateCount);
  run.dataset.version = String(body.prototypeVersion);
}

/** @param {Dataset} dataset @param {Duplicates} body @param {number} page */
function renderGroups(dataset, body, page) {
  view.thumbs?.close();
  const thumbs = new ThumbnailSet(keyRejected);
  view.thumbs = thumbs;
  const base = `v1/datasets/${enc(dataset.name)}`;
  const images = dataset.model !== null;
  const first = page * GROUPS_PER_PAGE;
  const groups = body.groups.map((group, g) => {
    const number = first + g + 1;
    const shown = group.duplicates.slice(0, SHOWN_DUPLICATES);
    const hidden = group.duplicates.length - shown.length;
    const tiles = [
      itemTile(dataset, thumbs.tile(base, group.kept, { images, label: `group ${number}, kept: ${group.kept}` }), group.kept, 'kept', null),
      ...shown.map((id, j) =>
        itemTile(dataset, thumbs.tile(base, id, { images, label: `group ${number}, near-duplicate ${j + 1}: ${id}` }), id, 'duplicate', group.similarities[j]),
      ),
    ];
    return h('li', { class: 'dup-group', 'data-kept': group.kept, 'data-duplicates': group.duplicates.length }, [
      h('div', { class: 'group-head' }, [
        h('strong', {}, [`Group ${fmt(number)}`]),
        h('span', { class: 'muted small' }, [` the kept item and ${fmt(group.duplicates.length)} near-duplicate${group.duplicates.length === 1 ? '' : 's'}`]),
      ]),
      h('ul', { class: 'group-items' }, tiles),
      ...(hidden > 0 ? [h('p', { class: 'muted small', 'data-more': hidden }, [`+ ${fmt(hidden)} more near-duplicates (the CSV of GET …/duplicates lists every pair).`])] : []),
    ]);
  });
  $('duplicate-groups').replaceChildren(...groups);
  const status = $('duplicates-status');
  status.dataset.state = body.groupCount === 0 ? 'empty' : 'groups';
  status.textContent = body.groupCount === 0 ? 'The run found no near-duplicates at this ε.' : '';
  const pager = $('duplicates-pager');
  show(pager, body.groupCount > GROUPS_PER_PAGE);
  $('duplicates-range').textContent = body.groups.length ? `Groups ${fmt(first + 1)}–${fmt(first + body.groups.length)} of ${fmt(body.groupCount)}` : '';
  /** @type {HTMLButtonElement} */ ($('duplicates-prev')).disabled = page === 0;
  /** @type {HTMLButtonElement} */ ($('duplicates-next')).disabled = body.nextCursor === null;
}

/**
 * @param {Dataset} dataset @param {HTMLElement} figure @param {string} id @param {'kept' | 'duplicate'} role @param {number | null} similarity
 */
function itemTile(dataset, figure, id, role, similarity) {
  const badge = h('span', { class: `tag tag-${role}` }, [role === 'kept' ? 'kept' : `sim ${similarity === null ? '' : similarity.toFixed(3)}`]);
  const li = h('li', { class: 'tile', tabindex: 0, role: 'button', 'aria-label': `Details of ${id}`, 'data-external-id': id, 'data-role': role, 'data-similarity': similarity }, [
    figure,
    badge,
  ]);
  li.addEventListener('click', () => void showItem(dataset, id));
  li.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      void showItem(dataset, id);
    }
  });
  return li;
}

/** Shows an item's score, cluster and metadata (all as text). @param {Dataset} dataset @param {string} id */
async function showItem(dataset, id) {
  view.detail = id;
  const epoch = state.epoch;
  const box = $('item-detail');
  const fields = $('item-detail-fields');
  const metadata = $('item-detail-metadata');
  $('item-detail-title').textContent = id;
  box.dataset.externalId = id;
  fields.replaceChildren(h('dt', {}, ['']), h('dd', {}, ['Loading…']));
  metadata.textContent = '';
  show(box, true);
  try {
    /** @type {Item} */
    const item = await getJson(`v1/datasets/${enc(dataset.name)}/items/${enc(id)}`);
    if (epoch !== state.epoch || view.detail !== id) return;
    /** @type {[string, string][]} */
    const rows = [
      ['Score', item.score === null ? 'not scored' : score3(item.score)],
      ['Cluster', item.cluster === null ? '–' : String(item.cluster)],
      ['Prototype version', item.prototypeVersion === null ? '–' : `v${item.prototypeVersion}`],
      ['Stored', ago(item.createdAt)],
    ];
    fields.replaceChildren(...rows.flatMap(([label, value]) => [h('dt', {}, [label]), h('dd', {}, [value])]));
    const keys = Object.keys(item.metadata ?? {});
    metadata.textContent = keys.length ? JSON.stringify(item.metadata, null, 2) : 'No metadata.';
    box.dataset.loaded = 'true';
  } catch (error) {
    if (epoch !== state.epoch || view.detail !== id) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    fields.replaceChildren(h('dt', {}, ['']), h('dd', { class: 'error' }, [e.status === 404 ? 'This item no longer exists.' : `Could not read it: ${e.message} (${e.code}).`]));
  }
}

/** Follows a dedup job until it ends, then shows its groups. @param {Dataset} dataset @param {string} jobId */
function followJob(dataset, jobId) {
  view.jobId = jobId;
  const seq = view.seq;
  const epoch = state.epoch;
  const status = $('duplicates-status');
  const tick = async () => {
    view.jobTimer = null;
    if (seq !== view.seq || epoch !== state.epoch) return;
    try {
      /** @type {Job} */
      const job = await getJson(`v1/jobs/${enc(jobId)}`);
      if (seq !== view.seq || epoch !== state.epoch) return;
      status.dataset.state = 'job';
      status.dataset.jobState = job.state;
      if (job.state === 'succeeded') {
        view.jobId = null;
        return void loadPage(dataset, 0);
      }
      if (job.state === 'failed' || job.state === 'cancelled') {
        view.jobId = null;
        status.textContent = `SemDeDup job ${job.id.slice(0, 8)} ${job.state}${job.error ? `: ${job.error}` : ''}.`;
        show($('dedup-button'), true);
        return;
      }
      const { done, total } = job.progress;
      status.textContent =
        job.state === 'queued'
          ? `SemDeDup job ${job.id.slice(0, 8)} is queued.`
          : `SemDeDup job ${job.id.slice(0, 8)} is running: ${fmt(done)} of ${fmt(total)} (${pct(job.progress.fraction)}).`;
    } catch (error) {
      if (seq !== view.seq || epoch !== state.epoch) return;
      const e = /** @type {ApiError} */ (error);
      if (e.status === 401) return keyRejected(e);
      if (e.status === 403 || e.status === 404) return;
    }
    view.jobTimer = setTimeout(() => void tick(), JOB_POLL_MS);
  };
  if (view.jobTimer) clearTimeout(view.jobTimer);
  view.jobTimer = setTimeout(() => void tick(), 0);
}

/** Runs SemDeDup on the active version at the dataset's ε (POST …/duplicates/jobs; needs the write scope). */
export async function requestDedup() {
  const dataset = state.dataset;
  if (!dataset) return;
  const epoch = state.epoch;
  const button = /** @type {HTMLButtonElement} */ ($('dedup-button'));
  const message = $('dedup-message');
  show(message, false);
  button.disabled = true;
  try {
    /** @type {Job} */
    const job = await getJson(`v1/datasets/${enc(dataset.name)}/duplicates/jobs`, { method: 'POST' });
    if (epoch !== state.epoch) return;
    show(button, false);
    if (job.state === 'succeeded') await loadPage(dataset, 0);
    else followJob(dataset, job.id);
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    message.textContent =
      e.code === 'INSUFFICIENT_SCOPE'
        ? 'This API key cannot run SemDeDup: that needs the write scope. Use a key with write access.'
        : `SemDeDup was not started: ${e.message} (${e.code}).`;
    message.dataset.code = e.code;
    show(message, true);
  } finally {
    button.disabled = false;
  }
}

/** @param {1 | -1} step */
export function pageDuplicates(step) {
  const dataset = state.dataset;
  if (!dataset) return;
  const page = view.page + step;
  if (page < 0 || (step > 0 && !view.next)) return;
  show($('item-detail'), false);
  void loadPage(dataset, page);
}
