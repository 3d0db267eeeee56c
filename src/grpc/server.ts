import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import type { Metrics } from '../metrics.js';
import type { AdmissionLimiter } from '../service/admission.js';
import type { ServiceContext } from '../service/context.js';
import type { DatabaseAvailability } from '../service/errors.js';
import { admitted, RateLimiter } from './guard.js';
import { protopruneHandlers } from './handlers.js';
import { clientFaultStatuses } from './interceptors.js';
import { loadProtopruneDefinition, protopruneService, SERVICE_NAME } from './proto.js';

/** What the API services need: the use cases' context and the API limits. */
export interface GrpcDeps {
  ctx: ServiceContext;
  api: Config['api'];
  /** Call latency by method and status is recorded here when given. */
  metrics?: Metrics;
  /** The admission limit shared with REST (see admitted); absent: calls are not limited. */
  admission?: AdmissionLimiter;
  /** Where database outages are noted (logged once per transition). */
  availability?: DatabaseAvailability;
}

/** Calls that pass the admission gate without holding a slot while they last. */
const LONG_LIVED_METHODS: ReadonlySet<string> = new Set(['WatchJob']);

export interface GrpcServer {
  port: number;
  /** Marks the server NOT_SERVING, lets in-flight calls finish for up to `graceMs`, then cuts the rest. */
  shutdown(graceMs: number): Promise<void>;
}

const STATUS_NAMES = new Map<number, string>(
  Object.entries(grpc.status)
    .filter(([, v]) => typeof v === 'number')
    .map(([name, code]) => [code as number, name]),
);

/** `OK`, `INVALID_ARGUMENT`, … for a status code. */
export function statusName(code: number | undefined): string {
  return STATUS_NAMES.get(code ?? grpc.status.UNKNOWN) ?? String(code);
}

/**
 * Wraps every handler to time the call and record its final status (by method) — the handlers
 * themselves are unchanged. Unary and client-streaming calls end in their callback; server-streaming
 * ones at the stream's finish (OK), error (its code) or cancellation (CANCELLED).
 */
export function instrumented(service: grpc.ServiceDefinition, handlers: grpc.UntypedServiceImplementation, metrics: Metrics): grpc.UntypedServiceImplementation {
  const out: grpc.UntypedServiceImplementation = {};
  for (const [method, handler] of Object.entries(handlers)) {
    const definition = service[method];
    if (!definition) {
      out[method] = handler;
      continue;
    }
    if (!definition.responseStream) {
      const h = handler as (call: unknown, callback: grpc.sendUnaryData<unknown>) => void;
      out[method] = ((call: unknown, callback: grpc.sendUnaryData<unknown>) => {
        const started = performance.now();
        h(call, ((error, value, trailer, flags) => {
          metrics.grpcCall(method, statusName(error ? (error.code ?? grpc.status.UNKNOWN) : grpc.status.OK), (performance.now() - started) / 1000);
          callback(error, value, trailer, flags);
        }) as grpc.sendUnaryData<unknown>);
      }) as grpc.UntypedHandleCall;
    } else {
      const h = handler as (call: grpc.ServerWritableStream<unknown, unknown>) => void;
      out[method] = ((call: grpc.ServerWritableStream<unknown, unknown>) => {
        const started = performance.now();
        let recorded = false;
        const record = (code: number) => {
          if (recorded) return;
          recorded = true;
          metrics.grpcCall(method, statusName(code), (performance.now() - started) / 1000);
        };
        call.on('finish', () => record(grpc.status.OK));
        call.on('error', (error: Partial<grpc.StatusObject>) => record(error?.code ?? grpc.status.UNKNOWN));
        call.on('cancelled', () => record(grpc.status.CANCELLED));
        h(call);
      }) as grpc.UntypedHandleCall;
    }
  }
  return out;
}

/**
 * Starts the gRPC server beside HTTP: the protoprune.v1.Protoprune API (proto/protoprune/v1),
 * the standard grpc.health.v1.Health service, and server reflection (v1 and v1alpha) so tools
 * like grpcurl can list and describe the services.
 */
export async function startGrpcServer(host: string, port: number, logger: Logger, deps: GrpcDeps): Promise<GrpcServer> {
  const server = new grpc.Server({
    'grpc.max_receive_message_length': deps.api.bodyLimitBytes,
    'grpc.max_send_message_length': -1,
    interceptors: [clientFaultStatuses],
  });
  const health = new HealthImplementation({ '': 'SERVING', [SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);

  const definition = loadProtopruneDefinition();
  const service = protopruneService(definition);
  const raw = protopruneHandlers({ ctx: deps.ctx, api: deps.api, logger, limiter: new RateLimiter(deps.api.rateLimitPerMinute) });
  const handlers = deps.admission
    ? admitted(service, raw, { limiter: deps.admission, availability: deps.availability, logger, passThrough: LONG_LIVED_METHODS })
    : raw;
  server.addService(service, deps.metrics ? instrumented(service, handlers, deps.metrics) : handlers);
  new ReflectionService(definition).addToServer(server);

  const bound = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${host}:${port}`, grpc.ServerCredentials.createInsecure(), (error, actualPort) =>
      error ? reject(error) : resolve(actualPort),
    );
  });
  logger.info({ port: bound }, 'gRPC server listening');

  return {
    port: bound,
    async shutdown(graceMs) {
      health.setStatus('', 'NOT_SERVING');
      health.setStatus(SERVICE_NAME, 'NOT_SERVING');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}
