import { ProtopruneError, parseRetryAfter } from './errors.js';

export interface RetryOptions {
  /** Tries of a call in all, the first included (default 4); 1 turns retries off. */
  attempts?: number;
  /** The longest wait before a retry (default 30 s): a call told to wait longer fails at once, carrying the hint. */
  maxDelayMs?: number;
}

const DEFAULT_ATTEMPTS = 4;
const DEFAULT_MAX_DELAY_MS = 30_000;
/** The wait before the second try when the answer gives no Retry-After; doubled for each further one. */
const FALLBACK_DELAY_MS = 500;

/**
 * POST operations safe to repeat, as paths relative to the API root: re-sending an ingest replaces
 * the same items, scoring and the existence lookup only read, and asking twice for a refit or a
 * dedup run gives the same job.
 */
const REPEATABLE_POSTS = [
  /\/v1\/datasets\/[^/]+\/items$/,
  /\/v1\/datasets\/[^/]+\/items\/existing$/,
  /\/v1\/datasets\/[^/]+\/score$/,
  /\/v1\/datasets\/[^/]+\/prototypes\/refit$/,
  /\/v1\/datasets\/[^/]+\/duplicates\/jobs$/,
];

/** Whether a refused (429/503) request may be sent again: reads, deletes and the repeatable POSTs. */
function isRepeatable(request: Request): boolean {
  if (['GET', 'HEAD', 'DELETE'].includes(request.method)) return true;
  const { pathname } = new URL(request.url);
  return request.method === 'POST' && REPEATABLE_POSTS.some((pattern) => pattern.test(pathname));
}

/** Resolves after `ms`, or rejects with the signal's reason when it aborts first. */
export function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * `fetch` that sends a repeatable request again when the server refuses it with 429 or 503,
 * after the answer's Retry-After (never sooner), at most `attempts` times in all. A server that
 * cannot be reached is a ProtopruneError with status 0 (an aborted request keeps its abort error).
 */
export function retryingFetch(baseFetch: (request: Request) => Promise<Response>, options: RetryOptions = {}): (request: Request) => Promise<Response> {
  const attempts = Math.max(1, options.attempts ?? DEFAULT_ATTEMPTS);
  const maxDelayMs = options.maxDelayMs ?? DEFAULT_MAX_DELAY_MS;
  const send = async (request: Request): Promise<Response> => {
    try {
      return await baseFetch(request);
    } catch (error) {
      if (request.signal.aborted) throw error;
      const reason = (error as { cause?: { code?: string; message?: string } }).cause;
      const detail = reason?.code ?? reason?.message ?? (error as Error).message;
      throw new ProtopruneError(0, 'CONNECTION_FAILED', `cannot reach ${new URL(request.url).origin}: ${detail}`, {}, null, { cause: error });
    }
  };
  return async (request) => {
    const tries = isRepeatable(request) ? attempts : 1;
    for (let attempt = 1; ; attempt++) {
      const last = attempt >= tries;
      const response = await send(last ? request : request.clone());
      if (last || (response.status !== 429 && response.status !== 503)) return response;
      const delay = parseRetryAfter(response.headers.get('retry-after')) ?? FALLBACK_DELAY_MS * 2 ** (attempt - 1);
      if (delay > maxDelayMs) return response;
      await response.body?.cancel();
      await sleep(delay, request.signal);
    }
  };
}
