// @ts-check
/**
 * The dashboard's client of the public /v1 API: every request carries the API key the user
 * entered (if any), and every non-2xx answer becomes an ApiError with the API's error code.
 */

/**
 * @typedef {{ code: string, message: string, details?: Record<string, unknown> }} ErrorInfo
 * @typedef {{ minItemsForFit: number, autoRefit: boolean, refit: { meanDrift: number, maxDrift: number, arrivedFraction: number } }} DatasetSettings
 *   As the API reports them: every setting resolved against the server's defaults.
 * @typedef {{ name: string, dimension: number, k: number | null, model: { name: string, sha256: string } | null,
 *   activeVersion: number | null, settings: DatasetSettings, createdAt: string, updatedAt: string }} Dataset
 * @typedef {{ id: string, dataset: string | null, kind: string, state: string, phase: string | null,
 *   progress: { done: number, total: number, fraction: number }, result: Record<string, any> | null,
 *   error: string | null, attempts: number, createdAt: string, startedAt: string | null, finishedAt: string | null }} Job
 * @typedef {{ dataset: string, itemCount: number, scoredCount: number, prototypeVersion: number | null, k: number | null,
 *   histogram: { binWidth: number, counts: number[] }, clusterSizes: number[], drift: { mean: number, max: number },
 *   arrivedFraction: number, lastRefit: { version: number, fittedAt: string } | null, refitJob: Job | null,
 *   ingest: { lastHour: number, last24Hours: number, hourly: { hour: string, items: number }[] } }} Stats
 * @typedef {{ order: string, balance: 'none' | 'cluster', auto: { order: string, balance: 'none' | 'cluster', keptPerCluster: number, clusterScoreCv: number } | null }} AppliedPolicy
 * @typedef {{ minSurvival: number, maxSurvival: number, maxMinRatio: number | null, survivalCv: number, randomSurvivalCv: number }} Imbalance
 * @typedef {{ prototypeVersion: number, total: number, matched: number, dedup: { jobId: string, epsilon: number, keep: string, dropped: number } | null,
 *   policy: AppliedPolicy, imbalance: Imbalance | null, size: number, externalIds: string[], nextCursor: string | null }} SelectionPage
 * @typedef {{ kept: string, duplicates: string[], similarities: number[] }} DuplicateGroup
 * @typedef {{ jobId: string, prototypeVersion: number, epsilon: number, groupCount: number, duplicateCount: number, completedAt: string,
 *   groups: DuplicateGroup[], nextCursor: string | null }} Duplicates
 * @typedef {{ id: string, dataset: string, datasetId: string, name: string | null, description: string | null, kind: 'selection' | 'export',
 *   encoder: { name: string, sha256: string } | null, prototypeVersion: number, k: number | null, seed: number,
 *   parameters: Record<string, any>, summary: Record<string, any>, count: number, sha256: string, createdByKeyId: string | null, createdAt: string }} Manifest
 * @typedef {{ externalId: string, metadata: Record<string, unknown>, score: number | null, cluster: number | null, prototypeVersion: number | null,
 *   createdAt: string, updatedAt: string }} Item
 */

export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message @param {Record<string, unknown>} [details] */
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** @type {string | null} sent as `Authorization: Bearer …`; null sends none (a server with auth off needs none). */
let apiKey = null;

/** @param {string | null} key */
export function setApiKey(key) {
  apiKey = key;
}

/** Whether requests carry a key (false with auth off): links then cannot fetch what a request with the key would. */
export function hasApiKey() {
  return apiKey !== null;
}

/**
 * A request to the API with the key (if any); non-2xx answers become ApiError with the API's error code.
 * Paths are relative ("v1/…"), so the dashboard also works behind a path prefix.
 * @param {string} path @param {RequestInit} [init]
 */
export async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  try {
    if (apiKey) headers.set('authorization', `Bearer ${apiKey}`);
  } catch {
    // A header holds bytes 0–255 only: a key that cannot travel is no key the service knows.
    throw new ApiError(401, 'INVALID_API_KEY', 'the API key has characters an HTTP header cannot carry');
  }
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
export async function getJson(path, init) {
  return (await api(path, init)).json();
}
