import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { classifyDatabaseError, retryAfterMsOf, retryAfterSeconds, ServiceError } from '../service/errors.js';
import { printable } from '../service/text.js';

/** Trailing metadata keys of a failed call. */
export const ERROR_CODE_KEY = 'error-code';
export const ERROR_DETAILS_KEY = 'error-details';
export const RETRY_AFTER_MS_KEY = 'retry-after-ms';

/**
 * On a status built from a database driver error (see classifyDatabaseError): that classified
 * error, so the admission wrapper can report the outage (non-enumerable; never sent).
 */
export const DATABASE_ERROR = Symbol('protoprune.databaseError');

/** The gRPC status of a service error's kind; conflicts are ALREADY_EXISTS only for a taken name. */
export function grpcStatusOf(error: ServiceError): grpc.status {
  switch (error.kind) {
    case 'invalid':
      return grpc.status.INVALID_ARGUMENT;
    case 'not_found':
      return grpc.status.NOT_FOUND;
    case 'conflict':
      return error.code === 'DATASET_EXISTS' ? grpc.status.ALREADY_EXISTS : grpc.status.FAILED_PRECONDITION;
    case 'unauthenticated':
      return grpc.status.UNAUTHENTICATED;
    case 'forbidden':
      return grpc.status.PERMISSION_DENIED;
    case 'overloaded':
    case 'too_large':
      return grpc.status.RESOURCE_EXHAUSTED;
    case 'unavailable':
      return grpc.status.UNAVAILABLE;
  }
}

/** Longest string value kept in `error-details`, so the trailers stay far below clients' metadata limits (8 KiB by default). */
const DETAIL_STRING_MAX = 256;

/**
 * JSON whose every character outside printable ASCII is a \uXXXX escape: legal in a gRPC text
 * trailer whatever the details hold (non-ASCII, emoji, NUL, lone surrogates), and JSON.parse
 * gives back the exact strings (clipped to DETAIL_STRING_MAX).
 */
export function asciiJson(value: unknown): string {
  const json = JSON.stringify(value, (_key, v: unknown) => (typeof v === 'string' && v.length > DETAIL_STRING_MAX ? `${v.slice(0, DETAIL_STRING_MAX)}…` : v));
  return (json ?? 'null').replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * The one translation of errors into gRPC statuses. A ServiceError keeps its message, and its
 * machine-readable code and details travel as trailing metadata (`error-code`, `error-details`
 * ASCII-escaped JSON; `retry-after-ms` and `retry-after` (s) on every RESOURCE_EXHAUSTED or
 * UNAVAILABLE refusal, from `details.retryAfterMs` or 1 s). A database that cannot serve (pool
 * timeout, unreachable, connection lost: classifyDatabaseError) is UNAVAILABLE DATABASE_UNAVAILABLE,
 * not logged here (the outage is logged once, see DatabaseAvailability). Anything else is
 * INTERNAL with a generic message; the real error is logged, never sent (no stacks, no SQL).
 * Nothing a client sent can make this throw: the status message is clipped and made well-formed
 * (grpc-js percent-encodes it, which throws on lone surrogates) and the trailers are ASCII.
 */
export function toGrpcError(error: unknown, logger: Logger, method: string): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  const known = error instanceof ServiceError ? error : classifyDatabaseError(error);
  if (known) {
    metadata.set(ERROR_CODE_KEY, known.code);
    metadata.set(ERROR_DETAILS_KEY, asciiJson(known.details ?? {}));
    const retry = retryAfterMsOf(known);
    if (retry !== null) {
      metadata.set(RETRY_AFTER_MS_KEY, String(Math.ceil(retry)));
      metadata.set('retry-after', String(retryAfterSeconds(retry)));
    }
    const status: Partial<grpc.StatusObject> = { code: grpcStatusOf(known), details: printable(known.message), metadata };
    if (known !== error) Object.defineProperty(status, DATABASE_ERROR, { value: known, enumerable: false });
    return status;
  }
  logger.error({ err: error, method }, 'gRPC call failed unexpectedly');
  metadata.set(ERROR_CODE_KEY, 'INTERNAL');
  metadata.set(ERROR_DETAILS_KEY, '{}');
  return { code: grpc.status.INTERNAL, details: 'internal error', metadata };
}
