import fp from 'fastify-plugin';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import type { ServiceContext } from '../../service/context.js';
import { ServiceError } from '../../service/errors.js';
import { RATE_WINDOW_MS, type RequestBudget } from '../../service/rate-budget.js';

/**
 * Per-key request budget on the API routes (per client address when auth is disabled). Counted
 * after authentication, so one client cannot spend another's budget with a forged key. The count
 * is the service's one `RequestBudget` (see service/rate-budget.ts): the gRPC API spends the same
 * budget, and on the native backend every replica counts into the same database row, so the limit
 * holds for the whole deployment, not per process.
 */
export const rateLimitPlugin = fp(async (app: FastifyInstance, { perMinute, ctx }: { perMinute: number; ctx: ServiceContext }) => {
  if (perMinute === 0) return;
  // Made at the first request: building the app (e.g. for the OpenAPI export) touches no database.
  let budget: RequestBudget | undefined;
  /** @fastify/rate-limit's store interface over the shared budget (it keeps headers and the 429 flow). */
  class SharedBudgetStore {
    incr(key: string, callback: (error: Error | null, result?: { current: number; ttl: number }) => void): void {
      (budget ??= ctx.requestBudgets.forLimit(perMinute)).charge(key).then(
        (charge) => callback(null, { current: charge.count, ttl: charge.resetMs }),
        (error: Error) => callback(error),
      );
    }

    child(): SharedBudgetStore {
      return this;
    }
  }
  await app.register(rateLimit, {
    global: true,
    hook: 'preHandler',
    max: perMinute,
    timeWindow: RATE_WINDOW_MS,
    store: SharedBudgetStore,
    keyGenerator: (request) => (request.principal?.keyId ? `key:${request.principal.keyId}` : `ip:${request.ip}`),
    errorResponseBuilder: (_request, context) =>
      new ServiceError('overloaded', 'RATE_LIMITED', `rate limit of ${context.max} requests per minute reached; retry in ${Math.ceil(context.ttl / 1000)} s`, {
        limitPerMinute: context.max,
        retryAfterMs: context.ttl,
      }),
  });
});
