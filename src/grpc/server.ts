import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import { HealthImplementation } from 'grpc-health-check';
import type { Logger } from 'pino';
import type { Config } from '../config/index.js';
import type { ServiceContext } from '../service/context.js';
import { RateLimiter } from './guard.js';
import { protopruneHandlers } from './handlers.js';
import { loadProtopruneDefinition, protopruneService, SERVICE_NAME } from './proto.js';

/** What the API services need: the use cases' context and the API limits. */
export interface GrpcDeps {
  ctx: ServiceContext;
  api: Config['api'];
}

export interface GrpcServer {
  port: number;
  /** Marks the server NOT_SERVING, lets in-flight calls finish for up to `graceMs`, then cuts the rest. */
  shutdown(graceMs: number): Promise<void>;
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
  });
  const health = new HealthImplementation({ '': 'SERVING', [SERVICE_NAME]: 'SERVING' });
  health.addToServer(server);

  const definition = loadProtopruneDefinition();
  server.addService(
    protopruneService(definition),
    protopruneHandlers({ ctx: deps.ctx, api: deps.api, logger, limiter: new RateLimiter(deps.api.rateLimitPerMinute) }),
  );
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
