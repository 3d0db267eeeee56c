// @ts-check
/** Connecting: the key panel, checking a key against the API, and the chip naming the key in use. */

import { getJson, setApiKey } from './api.js';
import { $, show } from './dom.js';
import { kickPoll, resetData } from './poll.js';
import { state } from './state.js';
import { renderDatasetList } from './view-datasets.js';

/** @typedef {import('./api.js').ApiError} ApiError */

/** Where the key is kept: this browser tab only. */
export const KEY_STORAGE = 'protoprune.apiKey';

/** Forgets the key and everything shown with it. @param {string} [message] */
export function askForKey(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  setApiKey(null);
  state.connected = false;
  resetData();
  show($('layout'), false);
  show($('change-key'), false);
  show($('key-status'), false);
  show($('banner'), false);
  show($('key-panel'), true);
  const error = $('key-error');
  error.textContent = message ?? '';
  show(error, Boolean(message));
  $('poll-status').textContent = '';
  /** @type {HTMLInputElement} */ ($('api-key')).value = '';
  $('api-key').focus();
}

/**
 * Tries a key: kept only if the API accepts it. Without one (null) it asks whether the service
 * answers without a key, which only a service with AUTH_DISABLED does; otherwise the key panel shows.
 * @param {string | null} key
 */
export async function connect(key) {
  resetData();
  setApiKey(key);
  const epoch = state.epoch;
  const submit = /** @type {HTMLButtonElement} */ ($('key-submit'));
  submit.disabled = true;
  try {
    const list = await getJson('v1/datasets');
    if (epoch !== state.epoch) return;
    if (key !== null) sessionStorage.setItem(KEY_STORAGE, key);
    state.connected = true;
    show($('key-panel'), false);
    show($('layout'), true);
    show($('change-key'), key !== null);
    const chip = $('key-status');
    chip.textContent = key === null ? 'no key needed' : `key …${key.slice(-4)}`;
    chip.title = key === null ? 'The service checks no API keys (AUTH_DISABLED)' : 'The API key this tab uses (kept in session storage)';
    chip.dataset.auth = key === null ? 'off' : 'key';
    show(chip, true);
    state.datasets = list.datasets;
    renderDatasetList();
    kickPoll();
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (key === null) askForKey(e.status === 401 ? undefined : `Could not reach the service: ${e.message} (${e.code}).`);
    else if (e.status === 401) askForKey(`The service did not accept this key: ${e.message} (${e.code}).`);
    else askForKey(`Could not check the key: ${e.message}${e.code ? ` (${e.code})` : ''}.`);
  } finally {
    submit.disabled = false;
  }
}
