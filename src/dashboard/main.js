// @ts-check
/**
 * protoprune dashboard: hand-written ES modules, no dependencies, no build step (index.html loads
 * this one; it imports the rest).
 *
 * Every number on the page comes from polling the public /v1 API with the API key the user
 * entered (kept in sessionStorage), or with none when the service runs with auth off (the page
 * asks without a key first). The page only ever asks about datasets that GET /v1/datasets listed
 * for that key, and forgets everything it showed when the key changes. The modules: api.js (the
 * API client), state.js (what is shown), poll.js (polling), charts.js (SVG charts), dom.js
 * (helpers), thumbs.js (thumbnails fetched with the key), download.js (id downloads), and one
 * view-*.js per part of the page: connect, datasets, dataset (overview), refit, preview,
 * selection (policy and imbalance), duplicates (SemDeDup groups) and manifests.
 */

import { renderHistogram, renderPruneCurve } from './charts.js';
import { $, pct } from './dom.js';
import { state } from './state.js';
import { askForKey, connect, start } from './view-connect.js';
import { datasetFromHash, onHashChange, selectView, setView, viewFromHash } from './view-datasets.js';
import { pageDuplicates, requestDedup } from './view-duplicates.js';
import { pageManifests, verifyManifest } from './view-manifests.js';
import { requestRefit } from './view-refit.js';
import { onSelectionControls, saveManifest } from './view-selection.js';

/** @typedef {import('./view-datasets.js').View} View */

function init() {
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const input = /** @type {HTMLInputElement} */ ($('api-key'));
    const key = input.value.trim();
    // A key travels in an HTTP header, which holds printable ASCII only (keys are pp_ + base64url).
    if (key && !/^[\x21-\x7e]+$/.test(key)) askForKey('An API key is printable ASCII (it starts with pp_); this one has other characters.');
    else if (key) void connect(key);
  });
  $('change-key').addEventListener('click', () => askForKey());
  $('refit-button').addEventListener('click', () => void requestRefit());
  const slider = /** @type {HTMLInputElement} */ ($('fraction'));
  const onFraction = () => {
    state.fraction = Math.min(1, Math.max(0.01, Number(slider.value) || 0.3));
    $('fraction-value').textContent = pct(state.fraction);
    if (state.stats && state.stats.prototypeVersion !== null) {
      renderHistogram(state.stats, state.fraction);
      renderPruneCurve(state.stats, state.fraction);
    }
    onSelectionControls();
  };
  slider.addEventListener('input', onFraction);
  for (const id of ['selection-order', 'selection-balance', 'selection-dedup']) $(id).addEventListener('change', onSelectionControls);
  $('save-manifest').addEventListener('click', () => void saveManifest());
  $('dedup-button').addEventListener('click', () => void requestDedup());
  $('duplicates-prev').addEventListener('click', () => pageDuplicates(-1));
  $('duplicates-next').addEventListener('click', () => pageDuplicates(1));
  $('manifests-prev').addEventListener('click', () => pageManifests(-1));
  $('manifests-next').addEventListener('click', () => pageManifests(1));
  $('manifest-verify').addEventListener('click', () => void verifyManifest());
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'), (tab) => /** @type {HTMLElement} */ (tab));
  tabs.forEach((tab, index) => {
    tab.addEventListener('click', () => selectView(/** @type {View} */ (tab.dataset.view)));
    // Arrow keys move between tabs (the ARIA tabs pattern).
    tab.addEventListener('keydown', (event) => {
      const step = event.key === 'ArrowRight' ? 1 : event.key === 'ArrowLeft' ? -1 : 0;
      if (!step) return;
      const next = tabs[(index + step + tabs.length) % tabs.length];
      next.focus();
      selectView(/** @type {View} */ (next.dataset.view));
    });
  });
  onFraction();
  window.addEventListener('hashchange', onHashChange);
  state.selected = datasetFromHash();
  setView(viewFromHash());
  // Ask the service without a key first: with auth off it answers, and no key is needed.
  void start();
}

init();
