// @ts-check
/**
 * The dashboard's charts: inline SVG drawn from /stats, no library. Every mark carries its value
 * in a data attribute (data-count, data-size, …).
 */

import { $, fmt, h, pct, s, score3, tooltip } from './dom.js';

/** @typedef {import('./api.js').Stats} Stats */

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
 * Bar `index` of a bar chart: `value` of `top` tall from the plot's baseline, `gap` px between bars.
 * @param {SVGElement} parent @param {{ x: number, y: number, w: number, h: number }} plot
 * @param {{ index: number, width: number, gap: number, value: number, top: number }} bar
 * @param {Record<string, string | number>} attributes class and data attributes
 */
function barRect(parent, plot, bar, attributes) {
  const height = (bar.value / bar.top) * plot.h;
  return s(
    'rect',
    {
      x: (plot.x + bar.index * bar.width + bar.gap / 2).toFixed(2),
      y: (plot.y + plot.h - height).toFixed(2),
      width: Math.max(0.5, bar.width - bar.gap).toFixed(2),
      height: height.toFixed(2),
      ...attributes,
    },
    parent,
  );
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

/** @param {Stats} stats @param {number} fraction the fraction to keep, drawn as its two cuts */
export function renderHistogram(stats, fraction) {
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
    const from = i * binWidth;
    const last = i === counts.length - 1;
    const bar = barRect(bars, plot, { index: i, width: barWidth, gap: 1.5, value: count, top: axis.top }, {
      class: 'hist-bar',
      'data-bin': i,
      'data-count': count,
      'data-from': from.toFixed(3),
      'data-to': last ? 'inf' : (from + binWidth).toFixed(3),
    });
    tooltip(bar, `scores ${from.toFixed(3)}–${last ? '' : (from + binWidth).toFixed(3)}${last ? ' and above' : ''}: ${fmt(count)} items`);
  });
  scoreAxis(svg, plot, maxScore);
  const cuts = cutsFor(counts, binWidth, fraction);
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

/** @param {Stats} stats @param {number} fraction the fraction to keep */
export function renderPruneCurve(stats, fraction) {
  const { counts, binWidth } = stats.histogram;
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
export function renderClusters(stats) {
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
export function renderIngest(stats) {
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
    const bar = barRect(bars, plot, { index: i, width: barWidth, gap: 2, value: values[i], top: axis.top }, {
      class: 'ingest-bar',
      'data-hour': new Date(at).toISOString(),
      'data-items': values[i],
    });
    const label = new Date(at).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    tooltip(bar, `${label}: ${fmt(values[i])} items`);
    if ((hours.length - 1 - i) % 6 === 0) {
      s('text', { x: plot.x + (i + 0.5) * barWidth, y: plot.y + plot.h + 16, 'text-anchor': 'middle' }, labels).textContent = label;
    }
  });
  container.dataset.lastHour = String(stats.ingest.lastHour);
  container.dataset.last24Hours = String(stats.ingest.last24Hours);
}
