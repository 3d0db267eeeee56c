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

/** One item's failure in a batch answer (ingest, scoring). */
export interface ItemFailure {
  externalId: string;
  status: 'error';
  code: string;
  message: string;
}

/**
 * A batch none of whose items could be used is a malformed request, refused as a whole: the code
 * is the items' common one (e.g. NON_FINITE_VALUE) or INVALID_ITEMS when they differ, and
 * `details.items` names each item's problem. A batch with any good item answers item by item.
 */
export function refuseIfNoItemUsable(outcomes: ReadonlyArray<{ status: string } | ItemFailure>): void {
  if (outcomes.length === 0 || outcomes.some((o) => o.status !== 'error')) return;
  const failures = outcomes as readonly ItemFailure[];
  const codes = new Set(failures.map((f) => f.code));
  const [only] = codes;
  const code = codes.size === 1 ? only : 'INVALID_ITEMS';
  const message = codes.size === 1 ? `no item could be used: ${failures[0].message}` : `no item could be used (${[...codes].join(', ')})`;
  throw new ServiceError('invalid', code, message, {
    items: failures.map(({ externalId, code: itemCode, message: itemMessage }, index) => ({ index, externalId, code: itemCode, message: itemMessage })),
  });
}
