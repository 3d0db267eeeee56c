import fp from 'fastify-plugin';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import { ServiceError } from '../../service/errors.js';

/**
 * Per-key request budget on the API routes (per client address when auth is disabled). Counted
 * after authentication, so one client cannot spend another's budget with a forged key.
 */
export const rateLimitPlugin = fp(async (app: FastifyInstance, { perMinute }: { perMinute: number }) => {
  if (perMinute === 0) return;
  await app.register(rateLimit, {
    global: true,
    hook: 'preHandler',
    max: perMinute,
    timeWindow: 60_000,
    keyGenerator: (request) => (request.principal?.keyId ? `key:${request.principal.keyId}` : `ip:${request.ip}`),
    errorResponseBuilder: (_request, context) =>
      new ServiceError('overloaded', 'RATE_LIMITED', `rate limit of ${context.max} requests per minute reached; retry in ${Math.ceil(context.ttl / 1000)} s`, {
        retryAfterMs: context.ttl,
      }),
  });
});
