import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { startService, type RunningService } from '../../src/server.js';
import { BACKENDS, NATIVE_URL } from '../helpers/backends.js';
import { silentLogger } from '../helpers/logger.js';
import { startRelay } from '../helpers/relay.js';

describe.each(BACKENDS)('health endpoints on the $name backend', (backend) => {
  const cleanups: Array<() => Promise<void>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  async function start(databaseUrlOverride?: (url: string) => string): Promise<RunningService> {
    const fresh = await backend.fresh();
    cleanups.push(fresh.cleanup);
    const base = loadConfig({ PORT: '0', GRPC_PORT: '0', HOST: '127.0.0.1', SHUTDOWN_GRACE_MS: '2000' });
    const database =
      fresh.config.backend === 'native' && databaseUrlOverride
        ? { ...fresh.config, url: databaseUrlOverride(fresh.config.url) }
        : fresh.config;
    const service = await startService({ ...base, database, dataDir: fresh.dataDir }, silentLogger);
    cleanups.push(() => service.stop());
    return service;
  }

  it('GET /healthz and /readyz answer 200 when the database is up', async () => {
    const service = await start();
    await request(service.http.server).get('/healthz').expect(200, { status: 'ok' });
    await request(service.http.server).get('/readyz').expect(200, { status: 'ready' });
  });

  it('echoes a caller request id and generates one otherwise', async () => {
    const service = await start();
    const given = await request(service.http.server).get('/healthz').set('x-request-id', 'abc-123');
    expect(given.headers['x-request-id']).toBe('abc-123');
    const generated = await request(service.http.server).get('/healthz');
    expect(generated.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('answers unknown routes with the common error shape', async () => {
    const service = await start();
    const res = await request(service.http.server).get('/no/such/route').expect(404);
    expect(res.body).toEqual({ error: { code: 'ROUTE_NOT_FOUND', message: 'no route for GET /no/such/route', details: {} } });
  });

  it('GET /readyz answers 503 when the database is gone, /healthz stays 200', async () => {
    if (backend.name === 'embedded') {
      const service = await start();
      await service.db.close(); // the in-process database is gone
      const res = await request(service.http.server).get('/readyz').expect(503);
      expect(res.body.error.code).toBe('NOT_READY');
      expect(res.body.error.message).toMatch(/database unreachable/);
      await request(service.http.server).get('/healthz').expect(200);
      return;
    }
    const relay = await startRelay(new URL(NATIVE_URL!));
    cleanups.push(relay.close);
    const service = await start((url) => {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(relay.port);
      return u.toString();
    });
    await request(service.http.server).get('/readyz').expect(200);
    relay.cut(); // the Postgres server is now unreachable from the service
    const res = await request(service.http.server).get('/readyz').expect(503);
    expect(res.body.error.code).toBe('NOT_READY');
    await request(service.http.server).get('/healthz').expect(200);
  });
});
