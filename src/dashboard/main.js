// @ts-check
/**
 * protoprune dashboard: hand-written ES modules, no dependencies, no build step (index.html loads
 * this one; it imports the rest).
 *
 * Every number on the page comes from polling the public /v1 API with the API key the user
 * entered (kept in sessionStorage), or with none when the service runs with auth off. The page only ever asks about datasets that GET /v1/datasets
 * listed for that key, and forgets everything it showed when the key changes. The modules:
 * api.js (the API client), state.js (what is shown), poll.js (polling), charts.js (SVG charts),
 * dom.js (helpers), and one view-*.js per part of the page.
 */

import { renderHistogram, renderPruneCurve } from './charts.js';
import { $, pct } from './dom.js';
import { state } from './state.js';
import { askForKey, connect, KEY_STORAGE } from './view-connect.js';
import { datasetFromHash, onHashChange } from './view-datasets.js';
import { requestRefit } from './view-refit.js';

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
  };
  slider.addEventListener('input', onFraction);
  onFraction();
  window.addEventListener('hashchange', onHashChange);
  state.selected = datasetFromHash();
  // Without a stored key, ask the service first: with auth off it answers without one.
  void connect(sessionStorage.getItem(KEY_STORAGE));
}

init();
