import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { ServiceError } from '../service/errors.js';
import { printable } from '../service/text.js';

/** Trailing metadata keys of a failed call. */
export const ERROR_CODE_KEY = 'error-code';
export const ERROR_DETAILS_KEY = 'error-details';
export const RETRY_AFTER_MS_KEY = 'retry-after-ms';

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
 * ASCII-escaped JSON; `retry-after-ms` when the details carry `retryAfterMs`). Anything else is
 * INTERNAL with a generic message; the real error is logged, never sent (no stacks, no SQL).
 * Nothing a client sent can make this throw: the status message is clipped and made well-formed
 * (grpc-js percent-encodes it, which throws on lone surrogates) and the trailers are ASCII.
 */
export function toGrpcError(error: unknown, logger: Logger, method: string): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  if (error instanceof ServiceError) {
    metadata.set(ERROR_CODE_KEY, error.code);
    metadata.set(ERROR_DETAILS_KEY, asciiJson(error.details ?? {}));
    const retry = (error.details as { retryAfterMs?: unknown } | undefined)?.retryAfterMs;
    if (typeof retry === 'number' && Number.isFinite(retry)) {
      metadata.set(RETRY_AFTER_MS_KEY, String(Math.ceil(retry)));
      metadata.set('retry-after', String(Math.max(1, Math.ceil(retry / 1000))));
    }
    return { code: grpcStatusOf(error), details: printable(error.message), metadata };
  }
  logger.error({ err: error, method }, 'gRPC call failed unexpectedly');
  metadata.set(ERROR_CODE_KEY, 'INTERNAL');
  metadata.set(ERROR_DETAILS_KEY, '{}');
  return { code: grpc.status.INTERNAL, details: 'internal error', metadata };
}
