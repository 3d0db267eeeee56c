import fp from 'fastify-plugin';
import type { FastifyError, FastifyInstance } from 'fastify';
import {
  classifyDatabaseError,
  DEFAULT_RETRY_AFTER_MS,
  HTTP_STATUS_BY_KIND,
  retryAfterMsOf,
  retryAfterSeconds,
  ServiceError,
  type DatabaseAvailability,
} from '../../service/errors.js';
import { errorBody } from '../schemas.js';

/** Maps a JSON-schema validation failure to the offending field, e.g. "body/items/3/embedding". */
function validationDetails(error: FastifyError): Record<string, unknown> {
  const first = error.validation?.[0];
  if (!first) return {};
  const location = error.validationContext ?? 'request';
  const missing = (first.params as { missingProperty?: string } | undefined)?.missingProperty;
  const pointer = `${first.instancePath ?? ''}${missing ? `/${missing}` : ''}`;
  return { field: `${location}${pointer}`, reason: first.message ?? 'invalid' };
}

/** Stable names for fastify's and its plugins' own client errors. */
const CLIENT_ERROR_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_JSON_BODY: 'INVALID_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'EMPTY_BODY',
  FST_REQ_FILE_TOO_LARGE: 'FILE_TOO_LARGE',
  FST_FILES_LIMIT: 'TOO_MANY_ITEMS',
  FST_PARTS_LIMIT: 'TOO_MANY_ITEMS',
  FST_INVALID_MULTIPART_CONTENT_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
};

export interface ErrorsOptions {
  /** Told about database availability errors, so an outage is logged once, not per request. */
  availability?: DatabaseAvailability;
}

/**
 * One error shape for every failure: `{ error: { code, message, details } }`. Validation errors
 * name the field; internal errors are logged in full and answered without stack, SQL or internals.
 * A database that cannot serve (pool timeout, unreachable, connection lost; see
 * classifyDatabaseError) is 503 DATABASE_UNAVAILABLE, logged once per outage by `availability`
 * and never with a stack. Every 429 and 503 answer carries `Retry-After` (seconds).
 */
export const errorsPlugin = fp(async (app: FastifyInstance, { availability }: ErrorsOptions) => {
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(errorBody('ROUTE_NOT_FOUND', `no route for ${request.method} ${request.url.split('?')[0]}`));
  });

  // Refusals produced anywhere (the readiness route, plugins) get a retry hint when they lack one.
  app.addHook('onSend', async (_request, reply) => {
    if ((reply.statusCode === 429 || reply.statusCode === 503) && !reply.hasHeader('retry-after')) {
      void reply.header('retry-after', String(retryAfterSeconds(DEFAULT_RETRY_AFTER_MS)));
    }
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    const known = error instanceof ServiceError ? error : classifyDatabaseError(error);
    if (known) {
      if (known !== (error as unknown)) availability?.failed(known);
      const status = HTTP_STATUS_BY_KIND[known.kind];
      const retry = retryAfterMsOf(known);
      if (retry !== null && (status === 429 || status === 503)) void reply.header('retry-after', String(retryAfterSeconds(retry)));
      return reply.status(status).send(errorBody(known.code, known.message, known.details));
    }
    if (error.validation) {
      const details = validationDetails(error);
      return reply.status(400).send(errorBody('VALIDATION_FAILED', `invalid ${details.field ?? 'request'}: ${details.reason ?? ''}`.trim(), details));
    }
    const status = error.statusCode ?? 500;
    if (status >= 400 && status < 500) {
      // fastify's own client errors (bad JSON, body too large, unsupported media type, ...).
      const code = CLIENT_ERROR_CODES[error.code] ?? (error.code ?? 'BAD_REQUEST').replace(/^FST_(ERR_)?/, '');
      return reply.status(status).send(errorBody(code, error.message));
    }
    request.log.error({ err: error }, 'unhandled error');
    return reply.status(500).send(errorBody('INTERNAL', 'internal error; see the server log for this request id', { requestId: request.id }));
  });
});
