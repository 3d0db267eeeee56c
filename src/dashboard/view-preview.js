// @ts-check
/** The preview strip of image datasets: the 8 easiest and 8 hardest items' thumbnails. */

import { api, getJson } from './api.js';
import { $, enc, h, show } from './dom.js';
import { state } from './state.js';
import { keyRejected } from './view-connect.js';

/** @typedef {import('./api.js').ApiError} ApiError @typedef {import('./api.js').Dataset} Dataset @typedef {import('./api.js').Stats} Stats */

const PREVIEW_REFRESH_MS = 15_000;
const PREVIEW_COUNT = 8;

export function clearPreview() {
  for (const url of state.preview.urls) URL.revokeObjectURL(url);
  state.preview = { key: '', at: 0, loading: false, urls: [] };
  $('preview-easiest').replaceChildren();
  $('preview-hardest').replaceChildren();
  show($('preview'), false);
}

/** @param {Dataset} dataset @param {Stats} stats */
export async function maybeRefreshPreview(dataset, stats) {
  const preview = $('preview');
  if (dataset.model === null) {
    // Embedding-only datasets have no pictures to show.
    if (!preview.hidden) clearPreview();
    return;
  }
  show(preview, true);
  const note = $('preview-note');
  if (stats.prototypeVersion === null) {
    for (const url of state.preview.urls) URL.revokeObjectURL(url);
    state.preview.urls = [];
    $('preview-easiest').replaceChildren();
    $('preview-hardest').replaceChildren();
    note.textContent = 'No prototypes yet: the easiest and hardest items appear after the first fit.';
    show(note, true);
    return;
  }
  const key = `${dataset.name}|${stats.prototypeVersion}|${stats.itemCount}`;
  const versionKey = `${dataset.name}|${stats.prototypeVersion}|`;
  const now = Date.now();
  if (state.preview.loading || key === state.preview.key) return;
  if (state.preview.key.startsWith(versionKey) && now - state.preview.at < PREVIEW_REFRESH_MS) return;
  state.preview.loading = true;
  const epoch = state.epoch;
  /** @type {string[]} */
  const urls = [];
  try {
    const base = `v1/datasets/${enc(dataset.name)}`;
    /** @type {[{ externalIds: string[] }, { externalIds: string[] }]} */
    const [easiest, hardest] = await Promise.all([
      getJson(`${base}/selection?order=easiest&count=${PREVIEW_COUNT}&limit=${PREVIEW_COUNT}`),
      getJson(`${base}/selection?order=hardest&count=${PREVIEW_COUNT}&limit=${PREVIEW_COUNT}`),
    ]);
    const [easyTiles, hardTiles] = await Promise.all([
      Promise.all(easiest.externalIds.map((id, rank) => thumbnailTile(base, id, rank, 'easiest', urls))),
      Promise.all(hardest.externalIds.map((id, rank) => thumbnailTile(base, id, rank, 'hardest', urls))),
    ]);
    if (epoch !== state.epoch) {
      for (const url of urls) URL.revokeObjectURL(url);
      return;
    }
    for (const url of state.preview.urls) URL.revokeObjectURL(url);
    state.preview.urls = urls;
    state.preview.key = key;
    state.preview.at = now;
    $('preview-easiest').replaceChildren(...easyTiles);
    $('preview-hardest').replaceChildren(...hardTiles);
    const missing = [...easyTiles, ...hardTiles].filter((t) => t.dataset.thumbnail !== 'loaded').length;
    note.textContent = missing ? `${missing} item(s) have no thumbnail (ingested as embeddings, or before thumbnails were kept).` : '';
    show(note, missing > 0);
  } catch (error) {
    for (const url of urls) URL.revokeObjectURL(url);
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return keyRejected(e);
    note.textContent = e.code === 'NO_PROTOTYPES' ? 'No prototypes yet: the easiest and hardest items appear after the first fit.' : `Preview unavailable: ${e.message} (${e.code}).`;
    show(note, true);
    state.preview.key = key;
    state.preview.at = now;
  } finally {
    if (epoch === state.epoch) state.preview.loading = false;
  }
}

/**
 * One tile: the item's thumbnail fetched with the key (an <img> cannot send headers) and shown
 * from a blob: URL, or a placeholder when the item has none.
 * @param {string} base @param {string} id @param {number} rank @param {string} order @param {string[]} urls
 */
async function thumbnailTile(base, id, rank, order, urls) {
  /** @type {HTMLElement} */
  let picture;
  let status = 'loaded';
  try {
    const response = await api(`${base}/items/${enc(id)}/thumbnail`, { headers: { accept: 'image/jpeg' } });
    const url = URL.createObjectURL(await response.blob());
    urls.push(url);
    picture = h('img', { src: url, alt: `${order} #${rank + 1}: ${id}`, loading: 'lazy', decoding: 'async' });
  } catch (error) {
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) throw e;
    status = e.status === 404 ? 'missing' : 'error';
    picture = h('div', { class: 'placeholder', role: 'img', 'aria-label': `${id}: no thumbnail` }, [e.status === 404 ? 'no thumbnail' : 'unavailable']);
  }
  const figure = h('figure', { class: 'thumb', 'data-external-id': id, 'data-rank': rank + 1, 'data-order': order, 'data-thumbnail': status }, [
    picture,
    h('figcaption', { title: id }, [id]),
  ]);
  return h('li', { 'data-external-id': id, 'data-thumbnail': status }, [figure]);
}
