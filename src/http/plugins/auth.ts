import fp from 'fastify-plugin';
import type { FastifyInstance } from 'fastify';
import { authenticate, authorize, type Principal, type Scope } from '../../service/auth.js';
import type { ServiceContext } from '../../service/context.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The scope a route needs; routes without one (health, docs) are public. */
    scope?: Scope;
  }
  interface FastifyRequest {
    /** The caller, resolved from `Authorization: Bearer <key>` on routes that declare a scope. */
    principal: Principal | null;
  }
}

/** The secret of an `Authorization: Bearer <secret>` header. */
export function bearerSecret(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}

/**
 * API keys on every route that declares `config.scope`: authenticates the bearer key, checks the
 * scope, and when the route has a `:dataset` parameter, that the key may touch that dataset.
 * Runs before the body is read, so a refused upload is not received.
 */
export const authPlugin = fp(async (app: FastifyInstance, { ctx }: { ctx: ServiceContext }) => {
  app.decorateRequest('principal', null);
  app.addHook('onRequest', async (request) => {
    const scope = request.routeOptions.config.scope;
    if (!scope) return;
    const principal = await authenticate(ctx, bearerSecret(request.headers.authorization));
    request.principal = principal;
    authorize(principal, scope, (request.params as { dataset?: string } | undefined)?.dataset);
  });
});
