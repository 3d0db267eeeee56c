import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Readable } from 'node:stream';
import fp from 'fastify-plugin';
import { AjvCompiler } from '@fastify/ajv-compiler';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import { EMBEDDING_FRAME_MEDIA_TYPE } from '../../service/embedding-frames.js';
import { ServiceError } from '../../service/errors.js';
import { assertValidText, printable } from '../../service/text.js';
import { errorBody } from '../schemas.js';

/**
 * Request bodies are validated without type coercion: `"embedding": [true, false]` or `"k": "5"`
 * must be refused, not read as numbers. Path parameters and query strings arrive as text, so they
 * keep fastify's default coercion. Both compilers share fastify's other Ajv defaults and schemas.
 */
export function validatorCompilers(): NonNullable<FastifyServerOptions['schemaController']> {
  const pool = AjvCompiler();
  return {
    compilersFactory: {
      // fastify always passes its resolved `ajv` server option ({ customOptions, plugins }).
      buildValidator(externalSchemas, ajvOptions) {
        const options = ajvOptions as { customOptions: Record<string, unknown>; plugins: [] };
        const coercing = pool(externalSchemas, options);
        const exact = pool(externalSchemas, { ...options, customOptions: { ...options.customOptions, coerceTypes: false } });
        return (routeSchema) => (routeSchema.httpPart === 'body' ? exact : coercing)(routeSchema);
      },
    },
  };
}

/** fastify's router errors (before any route or hook runs), in the one error shape. */
const ROUTER_ERRORS: Record<string, { status: number; code: string }> = {
  FST_ERR_BAD_URL: { status: 400, code: 'MALFORMED_URL' },
  FST_ERR_MAX_PARAM_LENGTH: { status: 414, code: 'PATH_PARAMETER_TOO_LONG' },
};

export function frameworkErrors(error: FastifyError, request: FastifyRequest, reply: FastifyReply): void {
  const known = ROUTER_ERRORS[error.code];
  if (!known) {
    request.log.error({ err: error }, 'router error');
    void reply.status(500).send(errorBody('INTERNAL', 'internal error; see the server log for this request id', { requestId: request.id }));
    return;
  }
  const message = known.code === 'MALFORMED_URL' ? 'the URL has an invalid percent-encoding' : 'a path parameter is longer than any id the API accepts';
  void reply.status(known.status).send(errorBody(known.code, message));
}

/** Errors of Node's HTTP parser, before fastify sees a request: answered in the one error shape, then the connection closes. */
const PARSER_ERRORS: Record<string, { status: number; code: string; message: string }> = {
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, code: 'REQUEST_TIMEOUT', message: 'the request did not arrive in time' },
  HPE_HEADER_OVERFLOW: { status: 431, code: 'HEADERS_TOO_LARGE', message: 'the request headers exceed the server’s limit' },
};

export function clientErrorHandler(this: FastifyInstance, error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return;
  const known = PARSER_ERRORS[error.code ?? ''] ?? { status: 400, code: 'MALFORMED_REQUEST', message: 'the request is not valid HTTP/1.1' };
  this.log.debug({ code: error.code }, 'HTTP parser refused a request');
  // An answer can only go out when no response of this connection has started (as Node's own handler checks).
  const inFlight = (socket as Socket & { _httpMessage?: { headersSent?: boolean } })._httpMessage;
  if (!socket.writable || inFlight?.headersSent) {
    socket.destroy(error);
    return;
  }
  const body = JSON.stringify(errorBody(known.code, known.message));
  socket.end(
    `HTTP/1.1 ${known.status} ${STATUS_CODES[known.status]}\r\nContent-Type: application/json; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/** The body of a binary embeddings request (EMBEDDING_FRAME_MEDIA_TYPE), unread; null for any other body. */
export function frameBody(request: FastifyRequest): Readable | null {
  return request.body instanceof Readable ? request.body : null;
}

/**
 * Hostile input, refused before any use case sees it: only JSON, multipart and binary embeddings
 * (EMBEDDING_FRAME_MEDIA_TYPE) bodies are parsed (anything else is 415 UNSUPPORTED_MEDIA_TYPE),
 * and every string of the path, query and body must be storable text (`assertValidText`). A binary
 * body is handed on as its stream, read as it arrives by the route; its Content-Length is checked
 * against the body limit here, the bytes themselves while they are read.
 */
export const inputPlugin = fp(async (app: FastifyInstance) => {
  app.removeContentTypeParser('text/plain');
  app.addContentTypeParser(EMBEDDING_FRAME_MEDIA_TYPE, (request, payload, done) => {
    const declared = Number(request.headers['content-length'] ?? 0);
    const limit = request.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit ?? Infinity;
    if (declared > limit) done(new ServiceError('too_large', 'BODY_TOO_LARGE', `the body exceeds BODY_LIMIT_BYTES (${limit} bytes)`, { limit }), undefined);
    else done(null, payload);
  });
  app.addHook('onRequest', async (request) => {
    if (request.raw.httpVersion === '1.1' && request.headers.host === undefined) {
      throw new ServiceError('invalid', 'MISSING_HOST_HEADER', 'an HTTP/1.1 request must carry a Host header');
    }
  });
  // Without a listener Node answers an Expect other than 100-continue with a bare 417.
  app.server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const body = JSON.stringify(errorBody('EXPECTATION_FAILED', 'only "Expect: 100-continue" is supported', { expect: printable(String(req.headers.expect), 200) }));
    res.writeHead(417, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
    res.end(body);
  });
  app.addHook('preValidation', async (request) => {
    assertValidText(request.params, 'params');
    assertValidText(request.query, 'querystring');
    if (frameBody(request) === null) assertValidText(request.body, 'body');
  });
});
