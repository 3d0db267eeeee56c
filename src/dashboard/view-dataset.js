// @ts-check
/** The selected dataset's panel: summary, first-fit notice, charts, drift against its thresholds. */

import { renderClusters, renderHistogram, renderIngest, renderPruneCurve } from './charts.js';
import { $, ago, fmt, h, pct, show } from './dom.js';
import { state } from './state.js';
import { clearDuplicates } from './view-duplicates.js';
import { clearManifests } from './view-manifests.js';
import { clearPreview } from './view-preview.js';
import { renderJob } from './view-refit.js';
import { clearSelection } from './view-selection.js';

/** @typedef {import('./api.js').DatasetSettings} DatasetSettings @typedef {import('./api.js').Stats} Stats */

/** Hides the dataset panel and empties its charts, drift list and refit message. */
export function clearDatasetPanel() {
  show($('dataset-panel'), false);
  show($('dataset-unavailable'), false);
  for (const id of ['histogram', 'prune-curve', 'clusters', 'ingest', 'prune-legend', 'drift', 'refit-phases']) $(id).replaceChildren();
  const message = $('refit-message');
  message.textContent = '';
  show(message, false);
  clearSelection();
  clearDuplicates();
  clearManifests();
}

/** @param {string} name @param {string} why */
export function showUnavailable(name, why) {
  clearDatasetPanel();
  clearPreview();
  show($('select-hint'), false);
  const box = $('dataset-unavailable');
  box.textContent = `Dataset “${name}” ${why}.`;
  box.dataset.dataset = name;
  show(box, true);
}

export function renderDataset() {
  const dataset = state.dataset;
  const stats = state.stats;
  if (!dataset || !stats) return;
  // The API resolves every setting against the server's defaults: the page keeps no copy of them.
  const settings = dataset.settings;
  const panel = $('dataset-panel');
  show($('dataset-unavailable'), false);
  show($('select-hint'), false);
  show(panel, true);
  panel.dataset.dataset = dataset.name;
  panel.dataset.version = stats.prototypeVersion === null ? '' : String(stats.prototypeVersion);
  $('dataset-title').textContent = dataset.name;
  $('dataset-kind').textContent = dataset.model ? `images · ${dataset.model.name}` : 'embeddings';
  $('dataset-updated').textContent = `created ${ago(dataset.createdAt)}`;

  const fitted = stats.prototypeVersion !== null;
  $('stat-items').textContent = fmt(stats.itemCount);
  $('stat-items').dataset.count = String(stats.itemCount);
  $('stat-scored').textContent = fitted ? `${fmt(stats.scoredCount)} scored with v${stats.prototypeVersion}` : 'not scored yet';
  $('stat-version').textContent = fitted ? `v${stats.prototypeVersion}` : 'none';
  $('stat-version').dataset.version = fitted ? String(stats.prototypeVersion) : '';
  $('stat-fitted').textContent = stats.lastRefit ? `fitted ${ago(stats.lastRefit.fittedAt)}` : 'no fit yet';
  $('stat-k').textContent = stats.k !== null ? fmt(stats.k) : dataset.k !== null ? fmt(dataset.k) : 'auto';
  $('stat-dimension').textContent = `${fmt(dataset.dimension)}-d · ${stats.k !== null ? 'fitted' : dataset.k !== null ? 'configured' : 'chosen at each fit'}`;
  $('stat-last-hour').textContent = fmt(stats.ingest.lastHour);
  $('stat-last-day').textContent = `${fmt(stats.ingest.last24Hours)} in the last 24 h`;

  const noPrototypes = $('no-prototypes');
  show(noPrototypes, !fitted);
  noPrototypes.dataset.state = fitted ? '' : 'no-prototypes';
  if (!fitted) {
    const min = Number(settings.minItemsForFit);
    const have = stats.itemCount;
    $('no-prototypes-text').textContent =
      have >= min
        ? `The dataset holds ${fmt(have)} items (the first fit needs ${fmt(min)}): the first fit is queued or running. Scores, histogram, cluster sizes and selections appear when it finishes.`
        : `The first fit runs once the dataset holds ${fmt(min)} items; it holds ${fmt(have)}. Until then items are stored unscored and selections are not available.`;
    $('no-prototypes-fill').style.width = pct(Math.min(1, have / Math.max(1, min)), 1);
  }
  for (const id of ['fig-histogram', 'fig-prune', 'fig-clusters']) show($(id), fitted);
  if (fitted) {
    renderHistogram(stats, state.fraction);
    renderPruneCurve(stats, state.fraction);
    renderClusters(stats);
  } else {
    for (const id of ['histogram', 'prune-curve', 'clusters', 'prune-legend']) $(id).replaceChildren();
  }
  renderIngest(stats);
  renderDrift(stats, settings);
  renderJob();
}

/** @param {Stats} stats @param {DatasetSettings} settings */
function renderDrift(stats, settings) {
  const rows = [
    { id: 'mean', label: 'Mean centroid drift', value: stats.drift.mean, threshold: Number(settings.refit.meanDrift), format: (/** @type {number} */ v) => v.toFixed(4) },
    { id: 'max', label: 'Max centroid drift', value: stats.drift.max, threshold: Number(settings.refit.maxDrift), format: (/** @type {number} */ v) => v.toFixed(4) },
    { id: 'arrived', label: 'Arrived since the fit', value: stats.arrivedFraction, threshold: Number(settings.refit.arrivedFraction), format: (/** @type {number} */ v) => pct(v, 1) },
  ];
  const list = $('drift');
  list.replaceChildren();
  for (const row of rows) {
    const over = row.value >= row.threshold;
    const fill = h('div', { class: 'meter-fill', 'data-over': over ? 'true' : 'false' });
    fill.style.width = pct(Math.min(1, row.threshold > 0 ? row.value / row.threshold : 0), 1);
    list.append(
      h('dt', { id: `drift-${row.id}-label` }, [row.label]),
      h('dd', { 'data-drift': row.id, 'data-value': row.value, 'data-threshold': row.threshold }, [
        h('span', { class: 'value' }, [`${row.format(row.value)} `, h('span', { class: 'muted small' }, [`of ${row.format(row.threshold)} threshold`])]),
        h('div', { class: 'meter', role: 'meter', 'aria-labelledby': `drift-${row.id}-label`, 'aria-valuemin': 0, 'aria-valuemax': row.threshold, 'aria-valuenow': row.value }, [fill]),
      ]),
    );
  }
  list.append(h('dt', {}, ['Auto-refit']), h('dd', { 'data-drift': 'auto-refit' }, [settings.autoRefit ? 'on' : 'off']));
}
