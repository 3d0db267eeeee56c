// @ts-check
/**
 * Connecting: the first contact on load (does the service check keys at all?), the key panel,
 * checking a key against the API, and the chip naming the key in use.
 */

import { getJson, setApiKey } from './api.js';
import { $, show } from './dom.js';
import { kickPoll, resetData } from './poll.js';
import { state } from './state.js';
import { renderDatasetList } from './view-datasets.js';

/** @typedef {import('./api.js').ApiError} ApiError @typedef {import('./api.js').Dataset} Dataset */

/** Where the key is kept: this browser tab only. */
export const KEY_STORAGE = 'protoprune.apiKey';

/** Waits before asking again when the first contact got no answer about keys (starting, busy, rate-limited, unreachable). */
const RETRY_MS = [1000, 2000, 4000, 8000, 15_000];

/** Forgets the key and everything shown with it. @param {string} [message] */
export function askForKey(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  setApiKey(null);
  state.connected = false;
  state.authOff = false;
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

/** The key in use was refused (revoked, or never known): ask for another. @param {ApiError} e */
export function keyRejected(e) {
  askForKey(`The service rejected the API key: ${e.message} (${e.code}). Enter a valid key.`);
}

/**
 * Says on the banner that the service gave no answer about keys yet (starting, busy,
 * rate-limited, unreachable) and runs `again` after a delay growing with `attempt`.
 * @param {ApiError} e @param {number} attempt @param {() => void} again
 */
function retryLater(e, attempt, again) {
  const delay = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
  const banner = $('banner');
  banner.textContent = `Cannot connect to the service yet: ${e.message} (${e.code}); trying again in ${Math.round(delay / 1000)} s…`;
  banner.dataset.code = e.code;
  show(banner, true);
  $('poll-status').textContent = 'Connecting…';
  state.startTimer = setTimeout(() => {
    state.startTimer = null;
    again();
  }, delay);
}

/**
 * The first contact on load: GET v1/datasets without a key. A service with auth off
 * (AUTH_DISABLED=true) answers it, so the page needs no key — and forgets any key this tab still
 * holds (from a service that checked keys): it would only be sent for nothing. A 401 says keys are
 * checked: the stored key is tried, or the key panel asks for one. Any other outcome (the service
 * starting, busy, rate-limiting or unreachable) says nothing about keys: the banner says so and
 * the page asks again, without showing the key panel.
 * @param {number} [attempt]
 */
export async function start(attempt = 0) {
  resetData();
  setApiKey(null);
  const epoch = state.epoch;
  $('poll-status').textContent = 'Connecting…';
  try {
    /** @type {{ datasets: Dataset[] }} */
    const list = await getJson('v1/datasets');
    if (epoch !== state.epoch) return;
    sessionStorage.removeItem(KEY_STORAGE);
    connected(null, list);
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) {
      const stored = sessionStorage.getItem(KEY_STORAGE);
      if (stored) void connect(stored, { stored: true });
      else askForKey();
      return;
    }
    retryLater(e, attempt, () => void start(attempt + 1));
  }
}

/**
 * Tries a key (typed in the key panel, or kept in this tab): kept only if the API accepts it. A
 * key kept in this tab that meets no answer about keys (the service busy, rate-limiting or
 * unreachable) is kept and tried again later, as the first contact is; a typed one is reported.
 * @param {string} key @param {{ stored?: boolean, attempt?: number }} [options]
 */
export async function connect(key, { stored = false, attempt = 0 } = {}) {
  resetData();
  setApiKey(key);
  const epoch = state.epoch;
  const submit = /** @type {HTMLButtonElement} */ ($('key-submit'));
  submit.disabled = true;
  try {
    /** @type {{ datasets: Dataset[] }} */
    const list = await getJson('v1/datasets');
    if (epoch !== state.epoch) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    connected(key, list);
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) askForKey(`The service did not accept this key: ${e.message} (${e.code}).`);
    else if (stored) retryLater(e, attempt, () => void connect(key, { stored, attempt: attempt + 1 }));
    else askForKey(`Could not check the key: ${e.message}${e.code ? ` (${e.code})` : ''}.`);
  } finally {
    submit.disabled = false;
  }
}

/** Shows the datasets and starts polling, with `key` (null: the service checks none). @param {string | null} key @param {{ datasets: Dataset[] }} list */
function connected(key, list) {
  state.connected = true;
  state.authOff = key === null;
  show($('banner'), false);
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
}
