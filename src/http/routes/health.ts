import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ErrorBody } from '../schemas.js';

export interface Readiness {
  /**
   * Resolves with null when ready, or the reason it is not: the database unreachable, migrations
   * not applied, or shutting down. A busy instance (every pooled connection in use, requests being
   * refused by the admission limit) is ready: the check uses a connection of its own.
   */
  check(): Promise<string | null>;
}

/** How long an orchestrator or client should wait before asking /readyz again after a 503. */
export const NOT_READY_RETRY_AFTER_S = 5;

const Status = Type.Object({ status: Type.String() });

export const healthRoutes: FastifyPluginAsyncTypebox<{ readiness: Readiness }> = async (app, { readiness }) => {
  app.get(
    '/healthz',
    { schema: { operationId: 'getLiveness', summary: 'Liveness: the process is up', tags: ['health'], security: [], response: { 200: Status } } },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        operationId: 'getReadiness',
        summary: 'Readiness: the database answers and every migration is applied (stays 200 while the instance is merely busy)',
        tags: ['health'],
        security: [],
        response: { 200: Status, 503: ErrorBody },
      },
    },
    async (_request, reply) => {
      const problem = await readiness.check();
      if (problem !== null) {
        return reply.status(503).header('retry-after', String(NOT_READY_RETRY_AFTER_S)).send({ error: { code: 'NOT_READY', message: problem, details: {} } });
      }
      return { status: 'ready' };
    },
  );
};
