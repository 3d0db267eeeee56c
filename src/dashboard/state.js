// @ts-check
/** What the dashboard currently shows and for whom; every view reads and updates it. */

/** @typedef {import('./api.js').Dataset} Dataset @typedef {import('./api.js').Stats} Stats @typedef {import('./api.js').Job} Job */

export const state = {
  /** The API accepted the key entered (or, with auth off, no key): polling runs only while it is true. */
  connected: false,
  /** The service answered without a key: it runs with AUTH_DISABLED. */
  authOff: false,
  /** @type {ReturnType<typeof setTimeout> | null} the next attempt of the first contact (view-connect.js start) */
  startTimer: null,
  /** Bumped whenever the key or the selected dataset changes: answers to older requests are dropped. */
  epoch: 0,
  /** @type {Dataset[]} */
  datasets: [],
  /** @type {string | null} the dataset named in the URL (#dataset=…) */
  selected: null,
  /** @type {'overview' | 'duplicates' | 'manifests'} the dataset view named in the URL (#dataset=…&view=…) */
  view: 'overview',
  /** @type {Dataset | null} */
  dataset: null,
  /** @type {Stats | null} */
  stats: null,
  /** @type {Job | null} the selected dataset's latest refit job */
  job: null,
  /** The fraction to keep on the prune curve (the slider's start value). */
  fraction: 0.3,
  /** @type {ReturnType<typeof setTimeout> | null} */
  pollTimer: null,
  /** @type {ReturnType<typeof setTimeout> | null} */
  jobTimer: null,
  polling: false,
  pollAgain: false,
  preview: { key: '', at: 0, loading: false, urls: /** @type {string[]} */ ([]) },
};
