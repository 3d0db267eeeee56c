// @ts-check
/**
 * The list of datasets the key may read, the selected one and its view (named in the URL:
 * #dataset=…&view=overview|duplicates|manifests).
 */

import { $, enc, h, setAttrs, show } from './dom.js';
import { kickPoll, refreshViews } from './poll.js';
import { state } from './state.js';
import { clearDatasetPanel } from './view-dataset.js';
import { clearPreview } from './view-preview.js';

/** @typedef {'overview' | 'duplicates' | 'manifests'} View */

/** @type {View[]} */
const VIEWS = ['overview', 'duplicates', 'manifests'];

export function renderDatasetList() {
  const list = $('dataset-list');
  /** @type {Map<string, HTMLElement>} */
  const existing = new Map();
  for (const li of Array.from(list.children)) existing.set(/** @type {HTMLElement} */ (li).dataset.dataset ?? '', /** @type {HTMLElement} */ (li));
  const wanted = new Set(state.datasets.map((d) => d.name));
  for (const [name, li] of existing) if (!wanted.has(name)) li.remove();
  state.datasets.forEach((d, index) => {
    let li = existing.get(d.name);
    if (!li) {
      const button = h('button', { type: 'button', 'data-dataset': d.name }, [h('span', { class: 'name' }, [d.name]), h('span', { class: 'meta' })]);
      button.addEventListener('click', () => selectDataset(d.name));
      li = h('li', { 'data-dataset': d.name }, [button]);
    }
    if (list.children[index] !== li) list.insertBefore(li, list.children[index] ?? null);
    const button = /** @type {HTMLElement} */ (li.firstElementChild);
    const kind = d.model ? 'images' : `${d.dimension}-d embeddings`;
    const version = d.activeVersion === null ? 'no prototypes yet' : `v${d.activeVersion}`;
    /** @type {HTMLElement} */ (button.lastElementChild).textContent = `${kind} · ${version}`;
    setAttrs(button, { 'aria-current': d.name === state.selected ? 'true' : null });
  });
  show($('datasets-empty'), state.datasets.length === 0);
}

/** The URL fragment naming a dataset and a view. @param {string} name @param {View} view */
function hashFor(name, view) {
  return `dataset=${enc(name)}${view === 'overview' ? '' : `&view=${view}`}`;
}

/** @param {string} name */
function selectDataset(name) {
  location.hash = hashFor(name, state.view);
}

/** @param {View} view */
export function selectView(view) {
  if (state.selected === null) return setView(view);
  location.hash = hashFor(state.selected, view);
}

/** @returns {{ name: string | null, view: View }} */
function parseHash() {
  const match = /^#dataset=(.+?)(?:&view=([a-z]+))?$/.exec(location.hash);
  if (!match) return { name: null, view: 'overview' };
  const view = VIEWS.find((v) => v === match[2]) ?? 'overview';
  try {
    return { name: decodeURIComponent(match[1]), view };
  } catch {
    return { name: null, view };
  }
}

export function datasetFromHash() {
  return parseHash().name;
}

export function viewFromHash() {
  return parseHash().view;
}

/** Shows one view of the dataset panel and brings it up to date. @param {View} view */
export function setView(view) {
  state.view = view;
  for (const v of VIEWS) {
    const tab = $(`tab-${v}`);
    tab.setAttribute('aria-selected', v === view ? 'true' : 'false');
    tab.tabIndex = v === view ? 0 : -1;
    show($(`view-${v}`), v === view);
  }
  if (state.connected && state.dataset && state.stats) refreshViews(state.dataset, state.stats);
}

export function onHashChange() {
  const { name, view } = parseHash();
  if (name === state.selected) {
    if (view !== state.view) setView(view);
    return;
  }
  state.selected = name;
  state.epoch++;
  state.dataset = null;
  state.stats = null;
  state.job = null;
  if (state.jobTimer) clearTimeout(state.jobTimer);
  state.jobTimer = null;
  clearPreview();
  clearDatasetPanel();
  setView(view);
  renderDatasetList();
  if (state.connected) kickPoll();
}
