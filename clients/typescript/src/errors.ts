/**
 * Every failure of a protoprune call: an error answer of the server (status ≥ 400, with the code
 * and message of its one error body `{ error: { code, message, details } }`), or a server that
 * could not be reached (status 0, code CONNECTION_FAILED).
 */
export class ProtopruneError extends Error {
  override readonly name = 'ProtopruneError';

  constructor(
    /** HTTP status; 0 when no answer arrived. */
    readonly status: number,
    /** The server's stable machine-readable code, e.g. DATASET_NOT_FOUND. */
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
    /** The server's Retry-After hint in milliseconds (429 and 503 answers), or null. */
    readonly retryAfterMs: number | null = null,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }

  /** The error of an answer whose body was already read (`body`: parsed JSON, or text). */
  static fromResponse(response: Response, body: unknown): ProtopruneError {
    const retryAfterMs = parseRetryAfter(response.headers.get('retry-after'));
    const error = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
    if (error && typeof error.code === 'string' && typeof error.message === 'string') {
      const details = typeof error.details === 'object' && error.details !== null ? (error.details as Record<string, unknown>) : {};
      return new ProtopruneError(response.status, error.code, error.message, details, retryAfterMs);
    }
    const text = typeof body === 'string' && body.trim() !== '' ? `: ${body.trim().slice(0, 200)}` : '';
    return new ProtopruneError(response.status, `HTTP_${response.status}`, `HTTP ${response.status} ${response.statusText}${text}`, {}, retryAfterMs);
  }

}

/** One item's problem in a batch answer. */
export interface ItemProblem {
  externalId: string;
  code: string;
  message: string;
}

/**
 * A batch none of whose items could be used is refused as a whole (400, `details.items` naming
 * each item's problem): those problems, one per item; null for any other error.
 */
export function refusedItems(error: unknown): ItemProblem[] | null {
  if (!(error instanceof ProtopruneError) || error.status !== 400 || !Array.isArray(error.details.items)) return null;
  return (error.details.items as ItemProblem[]).map(({ externalId, code, message }) => ({ externalId, code, message }));
}

/** `Retry-After` (delay in seconds, or an HTTP date) in milliseconds from now; null when absent or unreadable. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | null {
  if (value === null || value.trim() === '') return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, date - now);
}
