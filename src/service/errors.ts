/**
 * The one error family of the service layer. Transports map `kind` once: HTTP to a status code,
 * gRPC to a status; `code` is the stable machine-readable identifier clients branch on.
 */
export type ErrorKind =
  | 'invalid'
  | 'not_found'
  | 'conflict'
  | 'unauthenticated'
  | 'forbidden'
  | 'overloaded'
  | 'too_large'
  | 'unavailable';

export class ServiceError extends Error {
  constructor(
    readonly kind: ErrorKind,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ServiceError';
  }
}

export const HTTP_STATUS_BY_KIND: Record<ErrorKind, number> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  overloaded: 429,
  unavailable: 503,
};

/** Ingest and score requests (REST bodies, gRPC messages) carry at most `max` items (MAX_ITEMS_PER_REQUEST). */
export function checkItemCount(count: number, max: number): void {
  if (count > max) {
    throw new ServiceError('too_large', 'TOO_MANY_ITEMS', `a request may carry at most ${max} items (MAX_ITEMS_PER_REQUEST); got ${count}`, { max, count });
  }
}
