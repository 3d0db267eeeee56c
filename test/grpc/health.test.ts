import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { PROJECT_ROOT } from '../../src/paths.js';
import { startService, type RunningService } from '../../src/server.js';
import { BACKENDS } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';

type CheckResponse = { status: string };
type HealthClient = grpc.Client & {
  check(req: { service: string }, cb: (err: grpc.ServiceError | null, res?: CheckResponse) => void): void;
};

function healthClient(port: number): HealthClient {
  const definition = protoLoader.loadSync(path.join(PROJECT_ROOT, 'proto/grpc/health/v1/health.proto'), {
    keepCase: true,
    enums: String,
  });
  const pkg = grpc.loadPackageDefinition(definition) as unknown as {
    grpc: { health: { v1: { Health: new (address: string, creds: grpc.ChannelCredentials) => HealthClient } } };
  };
  return new pkg.grpc.health.v1.Health(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
}

function check(client: HealthClient, service: string): Promise<CheckResponse> {
  return new Promise((resolve, reject) => client.check({ service }, (err, res) => (err ? reject(err) : resolve(res!))));
}

describe('gRPC health service', () => {
  let service: RunningService;
  let cleanup: () => Promise<void>;
  let client: HealthClient;

  beforeAll(async () => {
    const fresh = await BACKENDS[0].fresh();
    cleanup = fresh.cleanup;
    const config = loadConfig({ PORT: '0', GRPC_PORT: '0', HOST: '127.0.0.1' });
    service = await startService({ ...config, database: fresh.config, dataDir: fresh.dataDir }, silentLogger);
    client = healthClient(service.grpc.port);
  });

  afterAll(async () => {
    client?.close();
    await service?.stop();
    await cleanup?.();
  });

  it('answers SERVING for the server as a whole', async () => {
    await expect(check(client, '')).resolves.toEqual({ status: 'SERVING' });
  });

  it('answers NOT_FOUND for an unknown service name', async () => {
    await expect(check(client, 'no.such.Service')).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
  });
});
