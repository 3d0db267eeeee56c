import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import fp from 'fastify-plugin';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { Logger } from 'pino';
import type { Metrics } from '../../metrics.js';
import type { ServiceContext } from '../../service/context.js';
import { authPlugin } from './auth.js';
import { authorizeUnrestrictedAdmin } from '../../service/auth.js';

/** The Prometheus text of a registry (PromMetrics implements it). */
export interface MetricsExposition {
  text(): Promise<string>;
  readonly contentType: string;
}

/** Route label of requests that matched no route (404s): never the raw URL, so label values stay bounded. */
export const UNMATCHED_ROUTE = 'unmatched';

/** Records every HTTP request's latency by route pattern (e.g. `/v1/datasets/:dataset/items`), method and status. */
export const httpMetricsPlugin = fp(async (app: FastifyInstance, { metrics }: { metrics: Metrics }) => {
  app.addHook('onResponse', async (request, reply) => {
    metrics.httpRequest(request.routeOptions.url ?? UNMATCHED_ROUTE, request.method, reply.statusCode, reply.elapsedTime / 1000);
  });
});

/** `GET /metrics` on the main HTTP port, behind an unrestricted admin API key (open when AUTH_DISABLED): it counts every dataset's traffic. */
export const metricsRoute: FastifyPluginAsync<{ ctx: ServiceContext; exposition: MetricsExposition }> = async (app, { ctx, exposition }) => {
  await app.register(authPlugin, { ctx });
  app.get(
    '/metrics',
    {
      config: { scope: 'admin' },
      // An operations endpoint that depends on configuration, like /openapi.json: not in the API document.
      schema: { hide: true },
    },
    async (request, reply) => {
      authorizeUnrestrictedAdmin(request.principal!);
      const body = await exposition.text();
      return reply.type(exposition.contentType).send(body);
    },
  );
};

export interface MetricsListener {
  port: number;
  close(): Promise<void>;
}

/**
 * A plain HTTP listener that serves only `GET /metrics`, without auth: for METRICS_PORT > 0, meant
 * to be reachable from a private network (the scraper) only.
 */
export async function startMetricsListener(host: string, port: number, exposition: MetricsExposition, logger: Logger): Promise<MetricsListener> {
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0];
    if (path !== '/metrics') {
      response.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'ROUTE_NOT_FOUND', message: 'only /metrics is served here', details: {} } }));
      return;
    }
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      response.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'METHOD_NOT_ALLOWED', message: 'use GET', details: {} } }));
      return;
    }
    exposition.text().then(
      (body) => response.writeHead(200, { 'content-type': exposition.contentType }).end(request.method === 'HEAD' ? undefined : body),
      (error: unknown) => {
        logger.error({ err: error }, 'metrics collection failed');
        response.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'INTERNAL', message: 'metrics collection failed', details: {} } }));
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  logger.info({ port: bound }, 'metrics listener on its own port (no auth)');
  return {
    port: bound,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
