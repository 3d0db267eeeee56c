import { randomUUID } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import type { ServiceContext } from '../service/context.js';
import type { Metrics } from '../metrics.js';
import { MAX_PATH_PARAM_LENGTH } from '../service/limits.js';
import type { AdmissionLimiter } from '../service/admission.js';
import type { DatabaseAvailability } from '../service/errors.js';
import { admissionPlugin } from './plugins/admission.js';
import { errorsPlugin } from './plugins/errors.js';
import { clientErrorHandler, frameworkErrors, inputPlugin, validatorCompilers } from './plugins/input.js';
import { httpMetricsPlugin, metricsRoute, type MetricsExposition } from './plugins/metrics.js';
import { openapiPlugin } from './plugins/openapi.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { healthRoutes, type Readiness } from './routes/health.js';
import { v1Routes } from './routes/v1/index.js';

export interface AppDeps {
  logger: Logger;
  readiness: Readiness;
  /** The use cases behind /v1. */
  ctx: ServiceContext;
  api: Config['api'];
  /** Request metrics, and `exposition` when /metrics is served on this port (behind an admin key). */
  metrics?: { recorder: Metrics; exposition: MetricsExposition | null };
  /** The admission limit of /v1 (shared with gRPC); absent: not limited. */
  admission?: AdmissionLimiter;
  /** Where database outages are noted (logged once per transition). */
  availability?: DatabaseAvailability;
}

const REQUEST_ID_HEADER = 'x-request-id';
/** A client's request id is echoed and logged, so only a short plain token is taken as one. */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Builds the fastify app (not listening). Every request log line carries `reqId`. */
export async function buildApp({ logger, readiness, ctx, api, metrics, admission, availability }: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    requestIdHeader: false,
    genReqId: (req) => {
      const sent = req.headers[REQUEST_ID_HEADER];
      return typeof sent === 'string' && CLIENT_REQUEST_ID.test(sent) ? sent : randomUUID();
    },
    // Every id the API lets a client create must be addressable in a path (percent-encoded).
    routerOptions: { maxParamLength: MAX_PATH_PARAM_LENGTH },
    frameworkErrors,
    clientErrorHandler,
    // Node itself answers a request without Host (400) with no body; inputPlugin refuses it in the error shape.
    http: { requireHostHeader: false },
    schemaController: validatorCompilers(),
    // Keep-alive connections that are idle are closed at shutdown; busy ones finish their request.
    forceCloseConnections: 'idle',
    // admissionPlugin answers requests arriving during the drain: 503 SHUTTING_DOWN in the error shape, with Retry-After.
    return503OnClosing: false,
    bodyLimit: api.bodyLimitBytes,
    requestTimeout: api.requestTimeoutMs,
  }).withTypeProvider<TypeBoxTypeProvider>();

  app.addHook('onSend', async (request, reply) => {
    void reply.header(REQUEST_ID_HEADER, request.id);
  });
  await app.register(errorsPlugin, { availability });
  await app.register(inputPlugin);
  // Before every route's own hooks (authentication reads the database): see admissionPlugin.
  await app.register(admissionPlugin, { limiter: admission });
  if (metrics) await app.register(httpMetricsPlugin, { metrics: metrics.recorder });
  await app.register(openapiPlugin);
  await app.register(healthRoutes, { readiness });
  if (metrics?.exposition) await app.register(metricsRoute, { ctx, exposition: metrics.exposition });
  await app.register(v1Routes, { prefix: '/v1', ctx, api });
  await app.register(dashboardRoutes);
  return app;
}
