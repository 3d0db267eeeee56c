// @ts-check
/**
 * The selection card: what GET …/selection does at the slider's fraction with the chosen order —
 * the policy that ran (what `auto` measured and chose), what the dedup step and the policy
 * dropped, and the imbalance report (cluster survival next to random sampling's) — with links to
 * its ids and a button saving it as a manifest.
 */

import { getJson } from './api.js';
import { $, enc, fmt, h, pct, show } from './dom.js';
import { downloadFailedIn, fileStem, setDownload } from './download.js';
import { state } from './state.js';
import { keyRejected } from './view-connect.js';
import { showManifest } from './view-manifests.js';

/** @typedef {import('./api.js').ApiError} ApiError @typedef {import('./api.js').Dataset} Dataset @typedef {import('./api.js').Stats} Stats */
/** @typedef {import('./api.js').SelectionPage} SelectionPage @typedef {import('./api.js').Manifest} Manifest */

/** Wait after a control moved before asking (a dragged slider asks once). */
const DEBOUNCE_MS = 300;
/** While only the item count changes (items arriving), ask again at most this often. */
const REFRESH_MS = 15_000;

const current = {
  /** dataset|version|parameters of what is shown (or being fetched) */
  key: '',
  /** dataset|version|itemCount of it */
  countKey: '',
  at: 0,
  seq: 0,
  /** @type {ReturnType<typeof setTimeout> | null} */
  timer: null,
};

/** The selection the controls describe. */
function parameters() {
  const order = /** @type {HTMLSelectElement} */ ($('selection-order')).value;
  const balance = /** @type {HTMLSelectElement} */ ($('selection-balance')).value;
  const dedup = /** @type {HTMLInputElement} */ ($('selection-dedup')).checked;
  const fraction = Math.round(state.fraction * 100) / 100;
  return { order, balance: order === 'auto' ? null : balance, dedup, fraction };
}

/** GET …/selection's query for the controls' selection. @param {Record<string, string>} [extra] */
function query(extra = {}) {
  const p = parameters();
  const q = new URLSearchParams({ order: p.order, fraction: String(p.fraction) });
  if (p.balance) q.set('balance', p.balance);
  if (p.dedup) q.set('dedup', 'true');
  for (const [name, value] of Object.entries(extra)) q.set(name, value);
  return q.toString();
}

export function clearSelection() {
  if (current.timer) clearTimeout(current.timer);
  current.timer = null;
  current.key = '';
  current.countKey = '';
  current.at = 0;
  current.seq++;
  show($('selection'), false);
  show($('selection-result'), false);
  show($('selection-error'), false);
  show($('selection-message'), false);
  $('selection-imbalance').replaceChildren();
}

/** The controls changed (order, balance, dedup or the fraction slider): ask again shortly. */
export function onSelectionControls() {
  const order = /** @type {HTMLSelectElement} */ ($('selection-order')).value;
  /** @type {HTMLSelectElement} */ ($('selection-balance')).disabled = order === 'auto';
  $('selection-fraction').textContent = pct(state.fraction);
  if (!state.dataset || !state.stats || state.stats.prototypeVersion === null) return;
  const dataset = state.dataset;
  const stats = state.stats;
  updateLinks(dataset);
  if (current.timer) clearTimeout(current.timer);
  current.timer = setTimeout(() => {
    current.timer = null;
    void refreshSelection(dataset, stats);
  }, DEBOUNCE_MS);
}

/** @param {Dataset} dataset */
function updateLinks(dataset) {
  const base = `v1/datasets/${enc(dataset.name)}/selection`;
  const stem = fileStem(`${dataset.name}-${parameters().order}-${Math.round(parameters().fraction * 100)}pct`);
  setDownload(/** @type {HTMLAnchorElement} */ ($('selection-csv')), `${base}?${query({ format: 'csv' })}`, `${stem}.csv`, downloadFailedIn('selection-message'));
  setDownload(/** @type {HTMLAnchorElement} */ ($('selection-ndjson')), `${base}?${query({ format: 'ndjson' })}`, `${stem}.ndjson`, downloadFailedIn('selection-message'));
}

/**
 * Shows the selection of the controls for the dataset's active version, asking the service when
 * it changed (or, while items arrive, every REFRESH_MS).
 * @param {Dataset} dataset @param {Stats} stats
 */
export async function refreshSelection(dataset, stats) {
  const card = $('selection');
  if (stats.prototypeVersion === null) {
    if (!card.hidden) clearSelection();
    return;
  }
  show(card, true);
  updateLinks(dataset);
  const key = `${dataset.name}|${stats.prototypeVersion}|${query()}`;
  const countKey = `${key}|${stats.itemCount}`;
  const now = Date.now();
  if (key === current.key && (countKey === current.countKey || now - current.at < REFRESH_MS)) return;
  current.key = key;
  current.countKey = countKey;
  current.at = now;
  const seq = ++current.seq;
  const epoch = state.epoch;
  card.setAttribute('aria-busy', 'true');
  try {
    /** @type {SelectionPage} */
    const page = await getJson(`v1/datasets/${enc(dataset.name)}/selection?${query({ limit: '1' })}`);
    if (seq !== current.seq || epoch !== state.epoch) return;
    renderSelection(page);
    show($('selection-error'), false);
  } catch (error) {
    if (seq !== current.seq || epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    show($('selection-result'), false);
    const box = $('selection-error');
    box.textContent =
      e.code === 'DEDUP_NOT_RUN'
        ? 'No SemDeDup run of this version yet: run one on the Near-duplicates tab, or untick “drop near-duplicates first”.'
        : `The selection failed: ${e.message} (${e.code}).`;
    box.dataset.code = e.code;
    show(box, true);
    // Ask again at the next poll after a failure that may pass (busy, rate-limited).
    if (e.status === 0 || e.status === 429 || e.status >= 500) current.key = '';
  } finally {
    if (seq === current.seq) card.removeAttribute('aria-busy');
  }
}

/** @param {number | null} x */
const ratio = (x) => (x === null ? '∞' : `${x.toFixed(2)}×`);

/** @param {SelectionPage} page */
function renderSelection(page) {
  const { policy, imbalance, dedup } = page;
  const policyBox = $('selection-policy');
  const ran = `${policy.order}${policy.balance === 'cluster' ? ', balanced across clusters' : ''}`;
  policyBox.replaceChildren(
    h('span', { class: 'label' }, ['Policy: ']),
    h('strong', { id: 'selection-policy-name' }, [ran]),
    policy.auto
      ? h('span', { class: 'muted' }, [
          ` — chosen by auto: ${policy.auto.keptPerCluster.toFixed(1)} kept per non-empty cluster, clusters’ mean scores vary by CV ${policy.auto.clusterScoreCv.toFixed(3)}.`,
        ])
      : h('span', { class: 'muted' }, [' — as asked.']),
  );
  policyBox.dataset.order = policy.order;
  policyBox.dataset.balance = policy.balance;
  policyBox.dataset.auto = policy.auto ? 'true' : 'false';
  policyBox.dataset.version = String(page.prototypeVersion);

  const counts = $('selection-counts');
  const dropped = dedup ? dedup.dropped : 0;
  const parts = [`Keeps ${fmt(page.size)} of ${fmt(page.matched)} items (${pct(page.matched > 0 ? page.size / page.matched : 0, 1)}), version v${page.prototypeVersion}.`];
  if (dedup) {
    parts.push(
      `SemDeDup (ε ${dedup.epsilon}, keep ${dedup.keep}) dropped ${fmt(dedup.dropped)} near-duplicates first; the policy then dropped ${fmt(page.matched - dropped - page.size)}.`,
    );
  }
  counts.textContent = parts.join(' ');
  counts.dataset.size = String(page.size);
  counts.dataset.matched = String(page.matched);
  if (dedup) counts.dataset.dedupDropped = String(dedup.dropped);
  else delete counts.dataset.dedupDropped;

  const list = $('selection-imbalance');
  if (!imbalance) {
    list.replaceChildren(h('dt', {}, ['Imbalance']), h('dd', { 'data-imbalance': 'none' }, ['An empty selection: nothing to compare.']));
  } else {
    const scale = Math.max(imbalance.survivalCv, imbalance.randomSurvivalCv, 1e-9);
    const amplification = imbalance.randomSurvivalCv > 0 ? imbalance.survivalCv / imbalance.randomSurvivalCv : null;
    /** @param {string} id @param {number} value @param {boolean} over */
    const meter = (id, value, over) => {
      const fill = h('div', { class: 'meter-fill', 'data-over': over ? 'true' : 'false' });
      fill.style.width = pct(Math.min(1, value / scale), 1);
      return h('div', { class: 'meter', role: 'meter', 'aria-labelledby': id, 'aria-valuemin': 0, 'aria-valuemax': scale, 'aria-valuenow': value }, [fill]);
    };
    list.replaceChildren(
      h('dt', {}, ['Cluster survival (kept / size)']),
      h('dd', { 'data-imbalance': 'survival', 'data-min': imbalance.minSurvival, 'data-max': imbalance.maxSurvival }, [
        `min ${pct(imbalance.minSurvival, 1)} · max ${pct(imbalance.maxSurvival, 1)}`,
      ]),
      h('dt', {}, ['Max / min survival']),
      h('dd', { 'data-imbalance': 'ratio', 'data-value': imbalance.maxMinRatio === null ? 'null' : imbalance.maxMinRatio }, [
        imbalance.maxMinRatio === null ? '∞ (a cluster keeps nothing)' : ratio(imbalance.maxMinRatio),
      ]),
      h('dt', { id: 'imbalance-cv-label' }, ['Survival CV, this selection']),
      h('dd', { 'data-imbalance': 'cv', 'data-value': imbalance.survivalCv }, [
        h('span', { class: 'value' }, [
          `${imbalance.survivalCv.toFixed(3)} `,
          h('span', { class: 'muted small' }, [amplification === null ? '' : `(${amplification.toFixed(2)}× random’s)`]),
        ]),
        meter('imbalance-cv-label', imbalance.survivalCv, imbalance.survivalCv > imbalance.randomSurvivalCv),
      ]),
      h('dt', { id: 'imbalance-random-label' }, ['Survival CV, random (expected)']),
      h('dd', { 'data-imbalance': 'random-cv', 'data-value': imbalance.randomSurvivalCv }, [
        h('span', { class: 'value' }, [imbalance.randomSurvivalCv.toFixed(3)]),
        meter('imbalance-random-label', imbalance.randomSurvivalCv, false),
      ]),
    );
  }
  show($('selection-result'), true);
}

/** Saves the controls' selection as a manifest (POST …/manifests; needs the write scope). */
export async function saveManifest() {
  const dataset = state.dataset;
  if (!dataset) return;
  const epoch = state.epoch;
  const button = /** @type {HTMLButtonElement} */ ($('save-manifest'));
  const message = $('selection-message');
  const nameInput = /** @type {HTMLInputElement} */ ($('manifest-name'));
  const p = parameters();
  /** @type {Record<string, unknown>} */
  const selection = { order: p.order, fraction: p.fraction };
  if (p.balance) selection.balance = p.balance;
  if (p.dedup) selection.dedup = {};
  const name = nameInput.value.trim();
  button.disabled = true;
  show(message, false);
  try {
    /** @type {Manifest} */
    const manifest = await getJson(`v1/datasets/${enc(dataset.name)}/manifests`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ selection, ...(name && { name }) }),
    });
    if (epoch !== state.epoch) return;
    const open = h('button', { type: 'button', class: 'link', 'data-manifest-id': manifest.id }, ['open it']);
    open.addEventListener('click', () => showManifest(manifest.id));
    message.replaceChildren(`Saved manifest ${manifest.name ? `“${manifest.name}”` : manifest.id.slice(0, 8)}: ${fmt(manifest.count)} ids, SHA-256 ${manifest.sha256.slice(0, 12)}… — `, open);
    message.className = 'small';
    message.dataset.manifestId = manifest.id;
    show(message, true);
    nameInput.value = '';
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    message.textContent =
      e.code === 'INSUFFICIENT_SCOPE'
        ? 'This API key cannot save a manifest: that needs the write scope.'
        : `The manifest was not saved: ${e.message} (${e.code}).`;
    message.className = 'small error';
    delete message.dataset.manifestId;
    show(message, true);
  } finally {
    button.disabled = false;
  }
}
