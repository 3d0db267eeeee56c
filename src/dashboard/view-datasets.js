// @ts-check
/** The list of datasets the key may read, and the selected one (named in the URL: #dataset=…). */

import { $, enc, h, setAttrs, show } from './dom.js';
import { kickPoll } from './poll.js';
import { state } from './state.js';
import { clearDatasetPanel } from './view-dataset.js';
import { clearPreview } from './view-preview.js';

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

/** @param {string} name */
function selectDataset(name) {
  location.hash = `dataset=${enc(name)}`;
}

export function datasetFromHash() {
  const match = /^#dataset=(.+)$/.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

export function onHashChange() {
  const name = datasetFromHash();
  if (name === state.selected) return;
  state.selected = name;
  state.epoch++;
  state.dataset = null;
  state.stats = null;
  state.job = null;
  if (state.jobTimer) clearTimeout(state.jobTimer);
  state.jobTimer = null;
  clearPreview();
  clearDatasetPanel();
  renderDatasetList();
  if (state.connected) kickPoll();
}
