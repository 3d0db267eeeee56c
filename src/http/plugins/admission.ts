import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AdmissionLimiter, Release } from '../../service/admission.js';
import { ServiceError } from '../../service/errors.js';

export interface AdmissionOptions {
  /** The admission limit shared with gRPC; absent: requests are not limited (shutdown is still answered). */
  limiter?: AdmissionLimiter;
}

/** Only the API uses the database per request; health, metrics, docs, the dashboard and 404s are exempt. */
export function isAdmitted(routeUrl: string | undefined): boolean {
  return routeUrl !== undefined && routeUrl.startsWith('/v1/');
}

interface Slot {
  release: Release | null;
  /** The request has a body: its slot is given back while the body arrives and taken again before the handler. */
  reacquire: boolean;
  abort: AbortController;
}

function hasBody(request: FastifyRequest): boolean {
  const length = request.headers['content-length'];
  return request.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
}

/**
 * The REST edge of the admission limit (see AdmissionLimiter). A /v1 request takes a slot in
 * onRequest — before authentication, which reads the database — and keeps it until its response is
 * finished or its connection closes (streamed answers hold it while they stream). A request with a
 * body gives the slot back while the body arrives and takes one again before its handler runs (at
 * the front of the line: it waits in line once at most), so a slow upload does not hold database
 * capacity. Refusals are 503 SERVER_BUSY with Retry-After.
 *
 * Also answers requests that arrive while the server drains for shutdown (fastify's own
 * return503OnClosing is turned off in buildApp): 503 SHUTTING_DOWN in the common error shape, with
 * Retry-After and `Connection: close`, instead of a bare 503.
 */
export const admissionPlugin = fp(async (app: FastifyInstance, { limiter }: AdmissionOptions) => {
  const slots = new WeakMap<FastifyRequest, Slot>();
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });

  app.addHook('onRequest', async (request, reply) => {
    if (closing) {
      void reply.header('connection', 'close');
      throw new ServiceError('unavailable', 'SHUTTING_DOWN', 'the server is shutting down; retry (another instance)', { retryAfterMs: 1000 });
    }
    if (!limiter || !isAdmitted(request.routeOptions.url)) return;
    const slot: Slot = { release: null, reacquire: false, abort: new AbortController() };
    slots.set(request, slot);
    reply.raw.once('close', () => {
      slot.abort.abort(new ServiceError('unavailable', 'CLIENT_CLOSED', 'the client closed the connection before it was served', { retryAfterMs: 1000 }));
      slot.release?.();
      slot.release = null;
    });
    slot.release = await limiter.acquire(slot.abort.signal);
    slot.reacquire = hasBody(request);
  });

  if (!limiter) return;

  app.addHook('preParsing', async (request, _reply, payload) => {
    const slot = slots.get(request);
    if (slot?.reacquire && slot.release) {
      slot.release();
      slot.release = null;
    }
    return payload;
  });

  app.addHook('preHandler', async (request) => {
    const slot = slots.get(request);
    if (!slot?.reacquire) return;
    slot.reacquire = false;
    const release = await limiter.acquire(slot.abort.signal, { front: true });
    // The connection may have closed while this request waited: then the slot goes straight back.
    if (slot.abort.signal.aborted) release();
    else slot.release = release;
  });
});
