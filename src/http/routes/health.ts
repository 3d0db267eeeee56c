import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { ErrorBody } from '../schemas.js';

export interface Readiness {
  /** Resolves with null when ready, or the reason it is not. */
  check(): Promise<string | null>;
}

const Status = Type.Object({ status: Type.String() });

export const healthRoutes: FastifyPluginAsyncTypebox<{ readiness: Readiness }> = async (app, { readiness }) => {
  app.get(
    '/healthz',
    { schema: { summary: 'Liveness: the process is up', tags: ['health'], security: [], response: { 200: Status } } },
    async () => ({ status: 'ok' }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Readiness: the database answers and every migration is applied',
        tags: ['health'],
        security: [],
        response: { 200: Status, 503: ErrorBody },
      },
    },
    async (_request, reply) => {
      const problem = await readiness.check();
      if (problem !== null) {
        return reply.status(503).send({ error: { code: 'NOT_READY', message: problem, details: {} } });
      }
      return { status: 'ready' };
    },
  );
};
