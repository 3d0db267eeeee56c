// @ts-check
/**
 * Polling: the dataset list and the selected dataset's /stats every POLL_MS, dropping answers that
 * arrive after the key or the selection changed (state.epoch).
 */

import { getJson } from './api.js';
import { $, enc, show } from './dom.js';
import { state } from './state.js';
import { keyRejected } from './view-connect.js';
import { clearDatasetPanel, renderDataset, showUnavailable } from './view-dataset.js';
import { renderDatasetList } from './view-datasets.js';
import { refreshDuplicates } from './view-duplicates.js';
import { refreshManifests } from './view-manifests.js';
import { clearPreview, maybeRefreshPreview } from './view-preview.js';
import { scheduleJobPoll, TERMINAL, trackJob } from './view-refit.js';
import { refreshSelection } from './view-selection.js';

/** @typedef {import('./api.js').ApiError} ApiError @typedef {import('./api.js').Dataset} Dataset @typedef {import('./api.js').Stats} Stats */

const POLL_MS = 2000;

/** Drops every piece of data shown so far (key change, dataset change). */
export function resetData() {
  state.epoch++;
  state.datasets = [];
  state.dataset = null;
  state.stats = null;
  state.job = null;
  if (state.pollTimer) clearTimeout(state.pollTimer);
  if (state.jobTimer) clearTimeout(state.jobTimer);
  if (state.startTimer) clearTimeout(state.startTimer);
  state.pollTimer = null;
  state.jobTimer = null;
  state.startTimer = null;
  clearPreview();
  $('dataset-list').replaceChildren();
  clearDatasetPanel();
}

/** Runs a poll now (or right after the one in flight). */
export function kickPoll() {
  if (state.pollTimer) clearTimeout(state.pollTimer);
  state.pollTimer = null;
  if (state.polling) {
    state.pollAgain = true;
    return;
  }
  void pollLoop();
}

async function pollLoop() {
  state.polling = true;
  const epoch = state.epoch;
  try {
    $('poll-status').textContent = 'Updating…';
    await pollOnce();
    if (epoch === state.epoch) {
      show($('banner'), false);
      $('poll-status').textContent = `Updated ${new Date().toLocaleTimeString()}`;
    }
  } catch (error) {
    if (epoch === state.epoch) handlePollError(/** @type {ApiError} */ (error));
  } finally {
    state.polling = false;
  }
  if (!state.connected) return;
  if (state.pollAgain) {
    state.pollAgain = false;
    void pollLoop();
  } else {
    state.pollTimer = setTimeout(() => {
      state.pollTimer = null;
      void pollLoop();
    }, POLL_MS);
  }
}

/** @param {ApiError} error */
function handlePollError(error) {
  if (error.status === 401) return keyRejected(error);
  if (error.status === 403 || error.status === 404) {
    // The dataset vanished or this key may not read it: show nothing of it.
    state.dataset = null;
    state.stats = null;
    return showUnavailable(state.selected ?? '', error.status === 404 ? 'no longer exists' : 'is not readable with this API key');
  }
  const banner = $('banner');
  banner.textContent =
    error.status === 429
      ? 'The service is rate-limiting this key; the dashboard keeps retrying.'
      : error.status === 0
        ? 'Cannot reach the service; retrying…'
        : `The service answered ${error.status}: ${error.message} (${error.code}); retrying…`;
  show(banner, true);
  $('poll-status').textContent = 'Retrying…';
}

async function pollOnce() {
  const epoch = state.epoch;
  /** @type {{ datasets: Dataset[] }} */
  const list = await getJson('v1/datasets');
  if (epoch !== state.epoch) return;
  state.datasets = list.datasets;
  renderDatasetList();
  const name = state.selected;
  show($('select-hint'), name === null);
  if (name === null) return clearDatasetPanel();
  const dataset = state.datasets.find((d) => d.name === name);
  // Only datasets the API listed for this key are ever asked about.
  if (!dataset) return showUnavailable(name, 'is not available to this API key (or does not exist)');
  /** @type {Stats} */
  const stats = await getJson(`v1/datasets/${enc(name)}/stats`);
  if (epoch !== state.epoch || state.selected !== name) return;
  state.dataset = dataset;
  state.stats = stats;
  if (stats.refitJob) trackJob(stats.refitJob);
  else if (state.job && !TERMINAL.has(state.job.state)) scheduleJobPoll();
  renderDataset();
  refreshViews(dataset, stats);
}

/**
 * Brings the shown view of the dataset panel up to date after a poll (or when it is switched
 * to): only the view on screen asks the API for anything.
 * @param {Dataset} dataset @param {Stats} stats
 */
export function refreshViews(dataset, stats) {
  if (state.view === 'overview') {
    void maybeRefreshPreview(dataset, stats);
    void refreshSelection(dataset, stats);
  } else if (state.view === 'duplicates') {
    void refreshDuplicates(dataset, stats);
  } else {
    void refreshManifests(dataset);
  }
}
