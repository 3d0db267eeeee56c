// @ts-check
/**
 * protoprune dashboard: a single hand-written ES module, no dependencies, no build step.
 *
 * Every number on the page comes from polling the public /v1 API with the API key the user
 * entered (kept in sessionStorage). The page only ever asks about datasets that GET /v1/datasets
 * listed for that key, and forgets everything it showed when the key changes. Charts are inline
 * SVG drawn here; every mark carries its value in a data attribute (data-count, data-size, …).
 */

/**
 * @typedef {{ code: string, message: string, details?: Record<string, unknown> }} ErrorInfo
 * @typedef {{ name: string, dimension: number, k: number | null, model: { name: string, sha256: string } | null,
 *   activeVersion: number | null, settings: Record<string, any>, createdAt: string, updatedAt: string }} Dataset
 * @typedef {{ id: string, dataset: string | null, kind: string, state: string, phase: string | null,
 *   progress: { done: number, total: number, fraction: number }, result: Record<string, any> | null,
 *   error: string | null, attempts: number, createdAt: string, startedAt: string | null, finishedAt: string | null }} Job
 * @typedef {{ dataset: string, itemCount: number, scoredCount: number, prototypeVersion: number | null, k: number | null,
 *   histogram: { binWidth: number, counts: number[] }, clusterSizes: number[], drift: { mean: number, max: number },
 *   arrivedFraction: number, lastRefit: { version: number, fittedAt: string } | null, refitJob: Job | null,
 *   ingest: { lastHour: number, last24Hours: number, hourly: { hour: string, items: number }[] } }} Stats
 */

const KEY_STORAGE = 'protoprune.apiKey';
const POLL_MS = 2000;
const JOB_POLL_MS = 500;
const PREVIEW_REFRESH_MS = 15_000;
const PREVIEW_COUNT = 8;
const DEFAULT_SETTINGS = { minItemsForFit: 1000, autoRefit: true, maxIterations: 30, refit: { meanDrift: 0.01, maxDrift: 0.05, arrivedFraction: 0.2 } };
/** Refit phases in order; `fit-warmup` is shown as part of `fit`. */
const PHASES = [
  { id: 'read', label: 'read' },
  { id: 'fit', label: 'fit' },
  { id: 'rescore', label: 'rescore' },
  { id: 'cleanup', label: 'switch & clean up' },
];
const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);
const SVG_NS = 'http://www.w3.org/2000/svg';

class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message @param {Record<string, unknown>} [details] */
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

// ---------------------------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------------------------

/** @param {string} id @returns {HTMLElement} */
function $(id) {
  const el = document.getElementById(id);
  if (!el) throw new Error(`dashboard markup lacks #${id}`);
  return el;
}

/**
 * @param {string} tag
 * @param {Record<string, string | number | boolean | null | undefined>} [attrs]
 * @param {(Node | string)[]} [children]
 * @returns {HTMLElement}
 */
function h(tag, attrs = {}, children = []) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  el.append(...children);
  return el;
}

/**
 * @param {string} tag
 * @param {Record<string, string | number | boolean | null | undefined>} [attrs]
 * @param {SVGElement} [parent]
 * @returns {SVGElement}
 */
function s(tag, attrs = {}, parent) {
  const el = /** @type {SVGElement} */ (document.createElementNS(SVG_NS, tag));
  setAttrs(el, attrs);
  if (parent) parent.append(el);
  return el;
}

/** @param {Element} el @param {Record<string, string | number | boolean | null | undefined>} attrs */
function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) el.removeAttribute(name);
    else el.setAttribute(name, value === true ? '' : String(value));
  }
}

/** An SVG <title> (tooltip and accessible name) for a mark. @param {SVGElement} el @param {string} text */
function tooltip(el, text) {
  s('title', {}, el).textContent = text;
}

/** @param {HTMLElement} el @param {boolean} visible */
function show(el, visible) {
  el.hidden = !visible;
}

const numberFormat = new Intl.NumberFormat('en-US');
/** @param {number} n */
const fmt = (n) => numberFormat.format(n);
/** @param {number} x @param {number} [digits] */
const pct = (x, digits = 0) => `${(x * 100).toFixed(digits)}%`;
/** @param {number} x */
const score3 = (x) => x.toFixed(3);

/** @param {string | null} iso */
function ago(iso) {
  if (!iso) return '';
  const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86_400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(iso).toLocaleString();
}

/** @param {string} name */
const enc = (name) => encodeURIComponent(name);

// ---------------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------------

const state = {
  /** @type {string | null} */
  key: null,
  /** Bumped whenever the key or the selected dataset changes: answers to older requests are dropped. */
  epoch: 0,
  /** @type {Dataset[]} */
  datasets: [],
  /** @type {string | null} the dataset named in the URL (#dataset=…) */
  selected: null,
  /** @type {Dataset | null} */
  dataset: null,
  /** @type {Stats | null} */
  stats: null,
  /** @type {Job | null} the selected dataset's latest refit job */
  job: null,
  fraction: 0.3,
  /** @type {ReturnType<typeof setTimeout> | null} */
  pollTimer: null,
  /** @type {ReturnType<typeof setTimeout> | null} */
  jobTimer: null,
  polling: false,
  pollAgain: false,
  preview: { key: '', at: 0, loading: false, urls: /** @type {string[]} */ ([]) },
};

// ---------------------------------------------------------------------------------------------
// API
// ---------------------------------------------------------------------------------------------

/**
 * A request to the API with the key; non-2xx answers become ApiError with the API's error code.
 * Paths are relative ("v1/…"), so the dashboard also works behind a path prefix.
 * @param {string} path @param {RequestInit} [init]
 */
async function api(path, init = {}) {
  const key = state.key;
  if (!key) throw new ApiError(401, 'MISSING_API_KEY', 'no API key entered');
  const headers = new Headers(init.headers);
  headers.set('authorization', `Bearer ${key}`);
  if (!headers.has('accept')) headers.set('accept', 'application/json');
  /** @type {Response} */
  let response;
  try {
    response = await fetch(path, { ...init, headers, cache: 'no-store' });
  } catch {
    throw new ApiError(0, 'NETWORK', 'cannot reach the service');
  }
  if (response.ok) return response;
  /** @type {ErrorInfo} */
  let error = { code: `HTTP_${response.status}`, message: response.statusText || 'request failed' };
  try {
    const body = await response.json();
    if (body && typeof body.error === 'object' && body.error) error = body.error;
  } catch {
    // not JSON: keep the status line
  }
  throw new ApiError(response.status, error.code, error.message, error.details ?? {});
}

/** @param {string} path @param {RequestInit} [init] */
async function getJson(path, init) {
  return (await api(path, init)).json();
}

// ---------------------------------------------------------------------------------------------
// Key handling
// ---------------------------------------------------------------------------------------------

/** Forgets the key and everything shown with it. @param {string} [message] */
function askForKey(message) {
  sessionStorage.removeItem(KEY_STORAGE);
  state.key = null;
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

/** Tries a key: kept only if the API accepts it. @param {string} key */
async function connect(key) {
  resetData();
  state.key = key;
  const epoch = state.epoch;
  const submit = /** @type {HTMLButtonElement} */ ($('key-submit'));
  submit.disabled = true;
  try {
    const list = await getJson('v1/datasets');
    if (epoch !== state.epoch) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    show($('key-panel'), false);
    show($('layout'), true);
    show($('change-key'), true);
    const chip = $('key-status');
    chip.textContent = `key …${key.slice(-4)}`;
    chip.title = 'The API key this tab uses (kept in session storage)';
    show(chip, true);
    state.datasets = list.datasets;
    renderDatasetList();
    kickPoll();
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) askForKey(`The service did not accept this key: ${e.message} (${e.code}).`);
    else {
      state.key = null;
      askForKey(`Could not check the key: ${e.message}${e.code ? ` (${e.code})` : ''}.`);
    }
  } finally {
    submit.disabled = false;
  }
}

// ---------------------------------------------------------------------------------------------
// Polling
// ---------------------------------------------------------------------------------------------

/** Drops every piece of data shown so far (key change, dataset change). */
function resetData() {
  state.epoch++;
  state.datasets = [];
  state.dataset = null;
  state.stats = null;
  state.job = null;
  if (state.pollTimer) clearTimeout(state.pollTimer);
  if (state.jobTimer) clearTimeout(state.jobTimer);
  state.pollTimer = null;
  state.jobTimer = null;
  clearPreview();
  $('dataset-list').replaceChildren();
  clearDatasetPanel();
}

function clearDatasetPanel() {
  show($('dataset-panel'), false);
  show($('dataset-unavailable'), false);
  for (const id of ['histogram', 'prune-curve', 'clusters', 'ingest', 'prune-legend', 'drift', 'refit-phases']) $(id).replaceChildren();
  const message = $('refit-message');
  message.textContent = '';
  show(message, false);
}

/** Runs a poll now (or right after the one in flight). */
function kickPoll() {
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
  if (!state.key) return;
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
  if (error.status === 401) return askForKey(`The service rejected the API key: ${error.message} (${error.code}). Enter a valid key.`);
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
  void maybeRefreshPreview(dataset, stats);
}

/** @param {string} name @param {string} why */
function showUnavailable(name, why) {
  clearDatasetPanel();
  clearPreview();
  show($('select-hint'), false);
  const box = $('dataset-unavailable');
  box.textContent = `Dataset “${name}” ${why}.`;
  box.dataset.dataset = name;
  show(box, true);
}

// ---------------------------------------------------------------------------------------------
// Datasets list and selection
// ---------------------------------------------------------------------------------------------

function renderDatasetList() {
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

function datasetFromHash() {
  const match = /^#dataset=(.+)$/.exec(location.hash);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]);
  } catch {
    return null;
  }
}

function onHashChange() {
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
  if (state.key) kickPoll();
}

// ---------------------------------------------------------------------------------------------
// Dataset panel
// ---------------------------------------------------------------------------------------------

function settingsOf(/** @type {Dataset} */ dataset) {
  const stored = dataset.settings ?? {};
  return { ...DEFAULT_SETTINGS, ...stored, refit: { ...DEFAULT_SETTINGS.refit, ...(stored.refit ?? {}) } };
}

function renderDataset() {
  const dataset = state.dataset;
  const stats = state.stats;
  if (!dataset || !stats) return;
  const settings = settingsOf(dataset);
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
    renderHistogram(stats);
    renderPruneCurve(stats);
    renderClusters(stats);
  } else {
    for (const id of ['histogram', 'prune-curve', 'clusters', 'prune-legend']) $(id).replaceChildren();
  }
  renderIngest(stats);
  renderDrift(stats, settings);
  renderJob();
}

// ---------------------------------------------------------------------------------------------
// Charts
// ---------------------------------------------------------------------------------------------

/** A "nice" axis maximum and step for values up to `max`. @param {number} max */
function niceAxis(max) {
  if (!(max > 0)) return { top: 1, step: 1 };
  const rough = max / 4;
  const power = 10 ** Math.floor(Math.log10(rough));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((c) => c >= rough) ?? 10 * power;
  const niceStep = step < 1 ? 1 : step;
  return { top: Math.ceil(max / niceStep) * niceStep, step: niceStep };
}

/**
 * An SVG chart frame: a viewBox of `width × height`, a plot area inside `margin`, y gridlines
 * with labels, and an accessible name.
 * @param {HTMLElement} container
 * @param {{ width?: number, height?: number, label: string, yMax: number, yStep: number, yFormat?: (v: number) => string, xLabel?: string, yLabel?: string }} options
 */
function chartFrame(container, options) {
  const width = options.width ?? 640;
  const height = options.height ?? 240;
  const m = { left: 52, right: 14, top: 12, bottom: 38 };
  const svg = s('svg', { viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': options.label, preserveAspectRatio: 'xMidYMid meet' });
  const plot = { x: m.left, y: m.top, w: width - m.left - m.right, h: height - m.top - m.bottom };
  const yFormat = options.yFormat ?? ((v) => fmt(v));
  const grid = s('g', { 'aria-hidden': 'true' }, svg);
  for (let v = 0; v <= options.yMax + 1e-9; v += options.yStep) {
    const y = plot.y + plot.h - (v / options.yMax) * plot.h;
    s('line', { class: v === 0 ? 'axis' : 'gridline', x1: plot.x, x2: plot.x + plot.w, y1: y, y2: y }, grid);
    s('text', { x: plot.x - 6, y: y + 4, 'text-anchor': 'end' }, grid).textContent = yFormat(v);
  }
  if (options.xLabel) s('text', { x: plot.x + plot.w / 2, y: height - 4, 'text-anchor': 'middle' }, grid).textContent = options.xLabel;
  if (options.yLabel) {
    s('text', { x: 12, y: plot.y + plot.h / 2, 'text-anchor': 'middle', transform: `rotate(-90 12 ${plot.y + plot.h / 2})` }, grid).textContent = options.yLabel;
  }
  container.replaceChildren(svg);
  return { svg, plot, grid };
}

/**
 * Score thresholds that keep `fraction` of the items: the easiest cut (keep scores ≤ it) and the
 * hardest cut (keep scores ≥ it), interpolated linearly inside a histogram bin.
 * @param {number[]} counts @param {number} width @param {number} fraction
 */
function cutsFor(counts, width, fraction) {
  const total = counts.reduce((a, b) => a + b, 0);
  const target = fraction * total;
  let easiest = counts.length * width;
  let cumulative = 0;
  for (let i = 0; i < counts.length; i++) {
    const c = counts[i];
    if (c > 0 && cumulative + c >= target) {
      easiest = (i + (target - cumulative) / c) * width;
      break;
    }
    cumulative += c;
  }
  let hardest = 0;
  cumulative = 0;
  for (let i = counts.length - 1; i >= 0; i--) {
    const c = counts[i];
    if (c > 0 && cumulative + c >= target) {
      hardest = (i + 1 - (target - cumulative) / c) * width;
      break;
    }
    cumulative += c;
  }
  return { total, keep: Math.floor(fraction * total + 0.5), easiest, hardest };
}

/** @param {SVGElement} svg @param {{ x: number, y: number, w: number, h: number }} plot @param {number} maxScore */
function scoreAxis(svg, plot, maxScore) {
  const g = s('g', { 'aria-hidden': 'true' }, svg);
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    if (t > maxScore + 1e-9) continue;
    const x = plot.x + (t / maxScore) * plot.w;
    s('line', { class: 'axis', x1: x, x2: x, y1: plot.y + plot.h, y2: plot.y + plot.h + 4 }, g);
    s('text', { x, y: plot.y + plot.h + 16, 'text-anchor': 'middle' }, g).textContent = t.toFixed(2);
  }
}

/** @param {Stats} stats */
function renderHistogram(stats) {
  const { counts, binWidth } = stats.histogram;
  const total = counts.reduce((a, b) => a + b, 0);
  const max = Math.max(0, ...counts);
  const axis = niceAxis(max);
  const container = $('histogram');
  const { svg, plot } = chartFrame(container, {
    label: `Score histogram of ${fmt(total)} items in ${counts.length} bins of ${binWidth}`,
    yMax: axis.top,
    yStep: axis.step,
    xLabel: 'score (1 − cosine to the nearest prototype)',
    yLabel: 'items',
  });
  const maxScore = counts.length * binWidth;
  const barWidth = plot.w / counts.length;
  const bars = s('g', {}, svg);
  counts.forEach((count, i) => {
    const height = (count / axis.top) * plot.h;
    const from = i * binWidth;
    const last = i === counts.length - 1;
    const bar = s(
      'rect',
      {
        class: 'hist-bar',
        x: (plot.x + i * barWidth + 0.75).toFixed(2),
        y: (plot.y + plot.h - height).toFixed(2),
        width: Math.max(0.5, barWidth - 1.5).toFixed(2),
        height: height.toFixed(2),
        'data-bin': i,
        'data-count': count,
        'data-from': from.toFixed(3),
        'data-to': last ? 'inf' : (from + binWidth).toFixed(3),
      },
      bars,
    );
    tooltip(bar, `scores ${from.toFixed(3)}–${last ? '' : (from + binWidth).toFixed(3)}${last ? ' and above' : ''}: ${fmt(count)} items`);
  });
  scoreAxis(svg, plot, maxScore);
  const cuts = cutsFor(counts, binWidth, state.fraction);
  drawCutLines(svg, plot, maxScore, cuts, false);
  container.dataset.total = String(total);
  container.dataset.bins = String(counts.length);
}

/**
 * Vertical dashed lines at the easiest and hardest cuts.
 * @param {SVGElement} svg @param {{ x: number, y: number, w: number, h: number }} plot @param {number} maxScore
 * @param {{ easiest: number, hardest: number }} cuts @param {boolean} labelled
 */
function drawCutLines(svg, plot, maxScore, cuts, labelled) {
  const g = s('g', { 'aria-hidden': 'true' }, svg);
  for (const [kind, t] of /** @type {[string, number][]} */ ([
    ['easiest', cuts.easiest],
    ['hardest', cuts.hardest],
  ])) {
    const x = plot.x + (Math.min(t, maxScore) / maxScore) * plot.w;
    s('line', { class: `cut cut-${kind}`, x1: x, x2: x, y1: plot.y, y2: plot.y + plot.h }, g);
    if (labelled) {
      // Labels sit beside their line, towards the side they keep; close cuts stack the second one lower.
      const gap = (Math.abs(cuts.hardest - cuts.easiest) / maxScore) * plot.w;
      const anchor = kind === 'easiest' ? 'end' : 'start';
      const y = plot.y + 10 + (kind === 'hardest' && gap < 70 ? 14 : 0);
      s('text', { class: `label-${kind}`, x: x + (kind === 'easiest' ? -4 : 4), y, 'text-anchor': anchor }, g).textContent =
        `${kind === 'easiest' ? '≤' : '≥'} ${score3(t)}`;
    }
  }
}

/** @param {Stats} stats */
function renderPruneCurve(stats) {
  const { counts, binWidth } = stats.histogram;
  const fraction = state.fraction;
  const cuts = cutsFor(counts, binWidth, fraction);
  const container = $('prune-curve');
  const { svg, plot } = chartFrame(container, {
    height: 260,
    label: `Prune curve: keeping the hardest ${pct(fraction)} means scores ≥ ${score3(cuts.hardest)}; the easiest ${pct(fraction)}, scores ≤ ${score3(cuts.easiest)}`,
    yMax: 1,
    yStep: 0.25,
    yFormat: (v) => pct(v),
    xLabel: 'score threshold',
    yLabel: 'kept',
  });
  const maxScore = counts.length * binWidth;
  const total = cuts.total || 1;
  /** @type {string[]} */
  const hardestPoints = [];
  /** @type {string[]} */
  const easiestPoints = [];
  let cumulative = 0;
  for (let i = 0; i <= counts.length; i++) {
    const x = (plot.x + ((i * binWidth) / maxScore) * plot.w).toFixed(2);
    const below = cumulative / total;
    hardestPoints.push(`${x},${(plot.y + plot.h - (1 - below) * plot.h).toFixed(2)}`);
    easiestPoints.push(`${x},${(plot.y + plot.h - below * plot.h).toFixed(2)}`);
    if (i < counts.length) cumulative += counts[i];
  }
  const curves = s('g', {}, svg);
  tooltip(s('polyline', { class: 'curve curve-hardest', points: hardestPoints.join(' '), 'data-order': 'hardest' }, curves), 'keep the hardest: fraction of items with score ≥ threshold');
  tooltip(s('polyline', { class: 'curve curve-easiest', points: easiestPoints.join(' '), 'data-order': 'easiest' }, curves), 'keep the easiest: fraction of items with score < threshold');
  scoreAxis(svg, plot, maxScore);
  const level = plot.y + plot.h - fraction * plot.h;
  s('line', { class: 'cut-level', x1: plot.x, x2: plot.x + plot.w, y1: level, y2: level, 'aria-hidden': 'true' }, svg);
  drawCutLines(svg, plot, maxScore, cuts, true);
  for (const kind of ['easiest', 'hardest']) {
    const t = kind === 'easiest' ? cuts.easiest : cuts.hardest;
    s('circle', { class: `dot-${kind}`, cx: plot.x + (Math.min(t, maxScore) / maxScore) * plot.w, cy: level, r: 4, 'data-order': kind, 'data-cut': t.toFixed(4) }, svg);
  }
  Object.assign(container.dataset, {
    fraction: String(fraction),
    keep: String(cuts.keep),
    hardestCut: cuts.hardest.toFixed(4),
    easiestCut: cuts.easiest.toFixed(4),
  });
  const legend = $('prune-legend');
  legend.replaceChildren(
    h('li', { 'data-order': 'hardest' }, [
      h('span', { class: 'swatch swatch-hardest', 'aria-hidden': 'true' }),
      `Keep the hardest ${pct(fraction)} (${fmt(cuts.keep)} of ${fmt(cuts.total)}): scores ≥ ${score3(cuts.hardest)}`,
    ]),
    h('li', { 'data-order': 'easiest' }, [
      h('span', { class: 'swatch swatch-easiest', 'aria-hidden': 'true' }),
      `Keep the easiest ${pct(fraction)} (${fmt(cuts.keep)} of ${fmt(cuts.total)}): scores ≤ ${score3(cuts.easiest)}`,
    ]),
  );
}

/** @param {Stats} stats */
function renderClusters(stats) {
  const sizes = stats.clusterSizes;
  const container = $('clusters');
  const order = sizes.map((size, cluster) => ({ size, cluster })).sort((a, b) => b.size - a.size || a.cluster - b.cluster);
  const sorted = order.map((o) => o.size);
  const total = sizes.reduce((a, b) => a + b, 0);
  const median = sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : 0;
  $('clusters-note').textContent = sizes.length
    ? `${fmt(sizes.length)} clusters, sorted by size · largest ${fmt(sorted[0])} · median ${fmt(median)} · smallest ${fmt(sorted[sorted.length - 1])} items`
    : '';
  if (!sizes.length) {
    container.replaceChildren(h('p', { class: 'empty' }, ['No clusters.']));
    return;
  }
  const axis = niceAxis(sorted[0]);
  const { svg, plot } = chartFrame(container, {
    height: 220,
    label: `Sizes of ${sizes.length} clusters holding ${fmt(total)} items; largest ${sorted[0]}, smallest ${sorted[sorted.length - 1]}`,
    yMax: axis.top,
    yStep: axis.step,
    xLabel: 'clusters, largest first',
    yLabel: 'items',
  });
  const barWidth = plot.w / sizes.length;
  const gap = barWidth > 4 ? Math.min(2, barWidth * 0.2) : 0;
  const bars = s('g', {}, svg);
  order.forEach(({ size, cluster }, rank) => {
    const height = (size / axis.top) * plot.h;
    const bar = s(
      'rect',
      {
        class: 'cluster-bar',
        x: (plot.x + rank * barWidth + gap / 2).toFixed(2),
        y: (plot.y + plot.h - height).toFixed(2),
        width: Math.max(0.3, barWidth - gap).toFixed(2),
        height: height.toFixed(2),
        'data-cluster': cluster,
        'data-size': size,
      },
      bars,
    );
    tooltip(bar, `cluster ${cluster}: ${fmt(size)} items`);
  });
  container.dataset.total = String(total);
  container.dataset.k = String(sizes.length);
}

/** @param {Stats} stats */
function renderIngest(stats) {
  const HOUR = 3_600_000;
  /** @type {Map<number, number>} */
  const byHour = new Map();
  for (const { hour, items } of stats.ingest.hourly) {
    const at = Math.floor(Date.parse(hour) / HOUR) * HOUR;
    byHour.set(at, (byHour.get(at) ?? 0) + items);
  }
  const newest = Math.max(Math.floor(Date.now() / HOUR) * HOUR, ...byHour.keys());
  const hours = Array.from({ length: 25 }, (_, i) => newest - (24 - i) * HOUR);
  const values = hours.map((at) => byHour.get(at) ?? 0);
  const axis = niceAxis(Math.max(0, ...values));
  const container = $('ingest');
  const { svg, plot } = chartFrame(container, {
    height: 200,
    label: `Items written per hour over the last 24 hours: ${fmt(stats.ingest.last24Hours)} in total, ${fmt(stats.ingest.lastHour)} in the last hour`,
    yMax: axis.top,
    yStep: axis.step,
    xLabel: 'hour (local time)',
    yLabel: 'items',
  });
  const barWidth = plot.w / hours.length;
  const bars = s('g', {}, svg);
  const labels = s('g', { 'aria-hidden': 'true' }, svg);
  hours.forEach((at, i) => {
    const height = (values[i] / axis.top) * plot.h;
    const bar = s(
      'rect',
      {
        class: 'ingest-bar',
        x: (plot.x + i * barWidth + 1).toFixed(2),
        y: (plot.y + plot.h - height).toFixed(2),
        width: Math.max(0.5, barWidth - 2).toFixed(2),
        height: height.toFixed(2),
        'data-hour': new Date(at).toISOString(),
        'data-items': values[i],
      },
      bars,
    );
    const label = new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    tooltip(bar, `${label}: ${fmt(values[i])} items`);
    if ((hours.length - 1 - i) % 6 === 0) {
      s('text', { x: plot.x + (i + 0.5) * barWidth, y: plot.y + plot.h + 16, 'text-anchor': 'middle' }, labels).textContent = label;
    }
  });
  container.dataset.lastHour = String(stats.ingest.lastHour);
  container.dataset.last24Hours = String(stats.ingest.last24Hours);
}

/** @param {Stats} stats @param {ReturnType<typeof settingsOf>} settings */
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

// ---------------------------------------------------------------------------------------------
// Refit job
// ---------------------------------------------------------------------------------------------

/** @param {Job} job */
function trackJob(job) {
  if (job.dataset !== null && job.dataset !== state.selected) return;
  state.job = job;
  renderJob();
  if (!TERMINAL.has(job.state)) scheduleJobPoll();
}

function scheduleJobPoll() {
  if (state.jobTimer) return;
  state.jobTimer = setTimeout(() => {
    state.jobTimer = null;
    void pollJob();
  }, JOB_POLL_MS);
}

/** Follows the job closely (GET /v1/jobs/{id}) until it finishes, then refreshes everything. */
async function pollJob() {
  const job = state.job;
  if (!job || TERMINAL.has(job.state) || !state.key) return;
  const epoch = state.epoch;
  try {
    /** @type {Job} */
    const fresh = await getJson(`v1/jobs/${enc(job.id)}`);
    if (epoch !== state.epoch) return;
    state.job = fresh;
    renderJob();
    if (TERMINAL.has(fresh.state)) kickPoll();
    else scheduleJobPoll();
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) askForKey(`The service rejected the API key: ${e.message} (${e.code}). Enter a valid key.`);
    else if (e.status !== 403 && e.status !== 404) scheduleJobPoll();
  }
}

/** @param {Job} job */
function jobFraction(job) {
  if (job.state === 'succeeded') return 1;
  if (job.state === 'queued') return 0;
  return Math.max(0, Math.min(1, job.progress.fraction));
}

/** @param {Job} job */
function jobText(job) {
  const phase = job.phase ?? '';
  const { done, total } = job.progress;
  switch (job.state) {
    case 'queued':
      return 'Queued: waiting for the job worker.';
    case 'running': {
      if (phase === 'fit' || phase === 'fit-warmup') {
        return `Running · ${phase === 'fit-warmup' ? 'k-means warm-up on a sample' : 'k-means'}: iteration ${fmt(done)} of at most ${fmt(total)}.`;
      }
      if (phase === 'rescore') return `Running · writing new scores: ${fmt(done)} of ${fmt(total)} items (${pct(job.progress.fraction)}).`;
      if (phase === 'read') return 'Running · reading the embeddings.';
      if (phase === 'cleanup') return 'Running · switched to the new version; cleaning up.';
      return `Running${phase ? ` · ${phase}` : ''}: ${fmt(done)} / ${fmt(total)}.`;
    }
    case 'succeeded': {
      const version = job.result && typeof job.result.version === 'number' ? ` → version ${job.result.version}` : '';
      return `Succeeded ${ago(job.finishedAt)}${version}.`;
    }
    case 'failed':
      return `Failed: ${job.error ?? 'unknown error'}.`;
    default:
      return `${job.state}.`;
  }
}

function renderJob() {
  const job = state.job;
  const button = /** @type {HTMLButtonElement} */ ($('refit-button'));
  show($('refit-job'), job !== null);
  show($('refit-idle'), job === null);
  const active = job !== null && !TERMINAL.has(job.state);
  button.disabled = active;
  button.textContent = active ? 'Refit in progress…' : 'Request refit';
  if (!job) return;
  const fraction = jobFraction(job);
  const text = jobText(job);
  const bar = $('refit-progress');
  setAttrs(bar, {
    'aria-valuenow': Math.round(fraction * 100),
    'aria-valuetext': text,
    'data-job-id': job.id,
    'data-state': job.state,
    'data-phase': job.phase ?? '',
    'data-done': job.progress.done,
    'data-total': job.progress.total,
    'data-fraction': fraction.toFixed(4),
  });
  $('refit-progress-fill').style.width = pct(fraction, 1);
  $('refit-job-text').textContent = text;
  const current = job.phase === 'fit-warmup' ? 'fit' : job.phase;
  const index = PHASES.findIndex((p) => p.id === current);
  $('refit-phases').replaceChildren(
    ...PHASES.map((p, i) => {
      const status = job.state === 'succeeded' ? 'done' : job.state === 'queued' || index < 0 ? 'pending' : i < index ? 'done' : i === index ? 'current' : 'pending';
      return h('li', { 'data-phase': p.id, 'data-status': status, 'aria-current': status === 'current' ? 'step' : null }, [p.label]);
    }),
  );
}

async function requestRefit() {
  const name = state.selected;
  if (!name || !state.dataset) return;
  const epoch = state.epoch;
  const button = /** @type {HTMLButtonElement} */ ($('refit-button'));
  const message = $('refit-message');
  show(message, false);
  button.disabled = true;
  try {
    /** @type {Job} */
    const job = await getJson(`v1/datasets/${enc(name)}/prototypes/refit`, { method: 'POST' });
    if (epoch !== state.epoch) return;
    trackJob(job);
  } catch (error) {
    if (epoch !== state.epoch) return;
    const e = /** @type {ApiError} */ (error);
    if (e.status === 401) return askForKey(`The service rejected the API key: ${e.message} (${e.code}). Enter a valid key.`);
    const granted = Array.isArray(e.details?.granted) ? /** @type {string[]} */ (e.details.granted).join(', ') : '';
    message.textContent =
      e.code === 'INSUFFICIENT_SCOPE'
        ? `This API key cannot request a refit: that needs the write scope${granted ? `, and the key has only ${granted}` : ''}. Use a key with write access.`
        : e.code === 'RATE_LIMITED'
          ? 'Too many requests with this key; try again in a moment.'
          : `The refit was not accepted: ${e.message} (${e.code}).`;
    message.dataset.code = e.code;
    show(message, true);
  } finally {
    if (epoch === state.epoch) renderJob();
  }
}

// ---------------------------------------------------------------------------------------------
// Preview strip (image datasets)
// ---------------------------------------------------------------------------------------------

function clearPreview() {
  for (const url of state.preview.urls) URL.revokeObjectURL(url);
  state.preview = { key: '', at: 0, loading: false, urls: [] };
  $('preview-easiest').replaceChildren();
  $('preview-hardest').replaceChildren();
  show($('preview'), false);
}

/** @param {Dataset} dataset @param {Stats} stats */
async function maybeRefreshPreview(dataset, stats) {
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
    if (e.status === 401) return askForKey(`The service rejected the API key: ${e.message} (${e.code}). Enter a valid key.`);
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

// ---------------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------------

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
      renderHistogram(state.stats);
      renderPruneCurve(state.stats);
    }
  };
  slider.addEventListener('input', onFraction);
  onFraction();
  window.addEventListener('hashchange', onHashChange);
  state.selected = datasetFromHash();
  const stored = sessionStorage.getItem(KEY_STORAGE);
  if (stored) void connect(stored);
  else askForKey();
}

init();
