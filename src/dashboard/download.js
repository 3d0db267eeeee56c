// @ts-check
/**
 * Download links for id lists (selections, manifests). A link cannot carry the Authorization
 * header: with a key, a click fetches the file with it and saves it from a blob: URL; with auth
 * off the link is a plain link to the endpoint, which the browser streams to disk.
 */

import { api, hasApiKey } from './api.js';
import { $, show } from './dom.js';
import { keyRejected } from './view-connect.js';

/** @typedef {import('./api.js').ApiError} ApiError */

/**
 * Points `link` at `path` (relative, "v1/…"), saved as `filename`.
 * @param {HTMLAnchorElement} link @param {string} path @param {string} filename
 * @param {(error: ApiError) => void} onError a failed download (with a key)
 */
export function setDownload(link, path, filename, onError) {
  link.href = path;
  link.download = filename;
  link.dataset.path = path;
  link.onclick = (event) => {
    if (!hasApiKey()) return; // a plain link: nothing to add
    event.preventDefault();
    if (link.dataset.busy === 'true') return;
    link.dataset.busy = 'true';
    link.setAttribute('aria-busy', 'true');
    void saveWithKey(path, filename)
      .catch((error) => onError(/** @type {ApiError} */ (error)))
      .finally(() => {
        delete link.dataset.busy;
        link.removeAttribute('aria-busy');
      });
  };
}

/** @param {string} path @param {string} filename */
async function saveWithKey(path, filename) {
  const response = await api(path, { headers: { accept: '*/*' } });
  const url = URL.createObjectURL(await response.blob());
  const anchor = document.createElement('a');
  anchor.href = url;
  anchor.download = filename;
  anchor.hidden = true;
  document.body.append(anchor);
  anchor.click();
  anchor.remove();
  // The download has its own copy once it started; keep the URL a moment for slow starts.
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/**
 * What a failed download does: a rejected key asks for another; anything else is said in the
 * view's message line `messageId`.
 * @param {string} messageId @returns {(e: ApiError) => void}
 */
export function downloadFailedIn(messageId) {
  return (e) => {
    if (e.status === 401) return keyRejected(e);
    const message = $(messageId);
    message.textContent = `The download failed: ${e.message} (${e.code}).`;
    message.className = 'small error';
    show(message, true);
  };
}

/** A file name from free text (a manifest's name or a dataset's): letters, digits, - _ . only. @param {string} text */
export function fileStem(text) {
  const stem = text.normalize('NFKD').replace(/[^A-Za-z0-9._-]+/g, '-').replace(/^[-.]+|[-.]+$/g, '').slice(0, 80);
  return stem || 'ids';
}
