// @ts-check
/**
 * Item thumbnails for the curation views: fetched with the key (an <img> cannot send a header),
 * a few at a time, and shown from blob: URLs that the owning ThumbnailSet revokes all together
 * when its view moves on (another page, dataset or key).
 */

import { api } from './api.js';
import { enc, h } from './dom.js';

/** @typedef {import('./api.js').ApiError} ApiError */

/** Thumbnail requests in flight at once per set. */
const CONCURRENCY = 4;

export class ThumbnailSet {
  /** @param {(error: ApiError) => void} onUnauthorized called once when the service rejects the key */
  constructor(onUnauthorized) {
    /** @type {string[]} */
    this.urls = [];
    /** @type {(() => Promise<void>)[]} */
    this.queue = [];
    this.active = 0;
    this.closed = false;
    this.onUnauthorized = onUnauthorized;
  }

  /**
   * A tile for item `id` of the dataset at `base` ("v1/datasets/…"): a placeholder now, its
   * thumbnail once fetched, or "no thumbnail" when the item has none (ingested as an embedding).
   * The tile's data-thumbnail says which: loading, loaded, missing, error or none.
   * @param {string} base @param {string} id @param {{ images: boolean, label: string }} options images: false for an embedding-only dataset (nothing to fetch)
   */
  tile(base, id, options) {
    const placeholder = h('div', { class: 'placeholder', role: 'img', 'aria-label': `${options.label}: ${options.images ? 'loading' : 'no image'}` }, [
      options.images ? '…' : 'embedding',
    ]);
    const figure = h('figure', { class: 'thumb', 'data-external-id': id, 'data-thumbnail': options.images ? 'loading' : 'none' }, [
      placeholder,
      h('figcaption', { title: id }, [id]),
    ]);
    if (!options.images) return figure;
    this.enqueue(async () => {
      if (this.closed) return;
      try {
        const response = await api(`${base}/items/${enc(id)}/thumbnail`, { headers: { accept: 'image/jpeg' } });
        const blob = await response.blob();
        if (this.closed) return;
        const url = URL.createObjectURL(blob);
        this.urls.push(url);
        placeholder.replaceWith(h('img', { src: url, alt: options.label, decoding: 'async' }));
        figure.dataset.thumbnail = 'loaded';
      } catch (error) {
        if (this.closed) return;
        const e = /** @type {ApiError} */ (error);
        if (e.status === 401) {
          this.close();
          this.onUnauthorized(e);
          return;
        }
        const missing = e.status === 404;
        figure.dataset.thumbnail = missing ? 'missing' : 'error';
        placeholder.textContent = missing ? 'no thumbnail' : 'unavailable';
        placeholder.setAttribute('aria-label', `${options.label}: ${missing ? 'no thumbnail' : 'thumbnail unavailable'}`);
      }
    });
    return figure;
  }

  /** @param {() => Promise<void>} task */
  enqueue(task) {
    this.queue.push(task);
    this.pump();
  }

  pump() {
    while (!this.closed && this.active < CONCURRENCY && this.queue.length > 0) {
      const task = /** @type {() => Promise<void>} */ (this.queue.shift());
      this.active++;
      void task().finally(() => {
        this.active--;
        this.pump();
      });
    }
  }

  /** Stops fetching and revokes every URL made so far. */
  close() {
    this.closed = true;
    this.queue = [];
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
  }
}
