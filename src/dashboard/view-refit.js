// @ts-check
/** The refit card: the selected dataset's refit job, followed closely while it runs, and the refit button. */

import { getJson } from './api.js';
import { $, ago, enc, fmt, h, pct, setAttrs, show } from './dom.js';
import { kickPoll } from './poll.js';
import { state } from './state.js';
import { keyRejected } from './view-connect.js';

/** @typedef {import('./api.js').ApiError} ApiError @typedef {import('./api.js').Job} Job */

const JOB_POLL_MS = 500;
/** Refit phases in order; `fit-warmup` is shown as part of `fit`. */
const PHASES = [
  { id: 'read', label: 'read' },
  { id: 'fit', label: 'fit' },
  { id: 'rescore', label: 'rescore' },
  { id: 'cleanup', label: 'switch & clean up' },
];
/** Job states after which a job no longer changes. */
export const TERMINAL = new Set(['succeeded', 'failed', 'cancelled']);

/** @param {Job} job */
export function trackJob(job) {
  if (job.dataset !== null && job.dataset !== state.selected) return;
  state.job = job;
  renderJob();
  if (!TERMINAL.has(job.state)) scheduleJobPoll();
}

export function scheduleJobPoll() {
  if (state.jobTimer) return;
  state.jobTimer = setTimeout(() => {
    state.jobTimer = null;
    void pollJob();
  }, JOB_POLL_MS);
}

/** Follows the job closely (GET /v1/jobs/{id}) until it finishes, then refreshes everything. */
async function pollJob() {
  const job = state.job;
  if (!job || TERMINAL.has(job.state) || !state.connected) return;
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
    if (e.status === 401) keyRejected(e);
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

export function renderJob() {
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

export async function requestRefit() {
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
    if (e.status === 401) return keyRejected(e);
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
