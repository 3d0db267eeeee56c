import fp from 'fastify-plugin';
import type { FastifyError, FastifyInstance } from 'fastify';
import { HTTP_STATUS_BY_KIND, ServiceError } from '../../service/errors.js';
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

/**
 * One error shape for every failure: `{ error: { code, message, details } }`. Validation errors
 * name the field; internal errors are logged in full and answered without stack, SQL or internals.
 */
export const errorsPlugin = fp(async (app: FastifyInstance) => {
  app.setNotFoundHandler((request, reply) => {
    void reply.status(404).send(errorBody('ROUTE_NOT_FOUND', `no route for ${request.method} ${request.url.split('?')[0]}`));
  });

  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (error instanceof ServiceError) {
      return reply.status(HTTP_STATUS_BY_KIND[error.kind]).send(errorBody(error.code, error.message, error.details));
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
