import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { startService, type RunningService } from '../../src/server.js';
import { ApiClient } from '../grpc/client.js';
import { BACKENDS, NATIVE_URL } from '../helpers/backends.js';
import { startRelay, viaRelay } from '../helpers/relay.js';

/** A pino logger whose JSON lines the test can read. */
function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

/** Log lines the transports write per failed request (what an outage must NOT produce). */
const PER_REQUEST_ERRORS = ['unhandled error', 'gRPC call failed unexpectedly', 'gRPC call could not be answered normally'];

async function until(what: string, ok: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${what}: not within ${timeoutMs} ms`);
}

describe.each(BACKENDS)('a database that cannot serve, on the $name backend', (backend) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  it('answers REST 503 DATABASE_UNAVAILABLE with Retry-After and gRPC UNAVAILABLE with retry trailers, logs the outage once, and recovers', async () => {
    const fresh = await backend.fresh();
    cleanups.push(fresh.cleanup);
    const relay = backend.name === 'native' ? await startRelay(new URL(NATIVE_URL!)) : null;
    if (relay) cleanups.push(relay.close);
    const database = fresh.config.backend === 'native' && relay ? { ...fresh.config, url: viaRelay(fresh.config.url, relay) } : fresh.config;
    const { logger, lines } = capturingLogger();
    const base = loadConfig({ PORT: '0', GRPC_PORT: '0', HOST: '127.0.0.1', SHUTDOWN_GRACE_MS: '2000', AUTH_DISABLED: 'true', METRICS_ENABLED: 'false', JOB_POLL_MS: '60000' });
    const service: RunningService = await startService({ ...base, database, dataDir: fresh.dataDir }, logger);
    cleanups.push(() => service.stop());
    const http = service.http.server;
    const client = new ApiClient(service.grpc.port, undefined);
    cleanups.push(async () => client.raw.close());

    await request(http).post('/v1/datasets').send({ name: 'outage', dimension: 4 }).expect(201);
    await request(http).get('/readyz').expect(200);

    // The database goes away: native — the network to Postgres is cut; embedded — the in-process database is closed.
    if (relay) relay.cut();
    else await service.db.close();

    const restAnswers = await Promise.all(
      Array.from({ length: 24 }, (_, i) => (i % 2 === 0 ? request(http).get('/v1/datasets') : request(http).get('/v1/datasets/outage/stats'))),
    );
    for (const res of restAnswers) {
      expect(res.status, JSON.stringify(res.body)).toBe(503);
      expect(res.body.error.code).toBe('DATABASE_UNAVAILABLE');
      expect(res.body.error.details.reason).toEqual(expect.any(String));
      expect(Number(res.headers['retry-after'])).toBeGreaterThanOrEqual(1);
      // Nothing of the driver's text (hosts, ports, SQL) reaches the client.
      expect(JSON.stringify(res.body)).not.toMatch(/ECONNREFUSED|127\.0\.0\.1|SELECT|stack/i);
    }
    for (let i = 0; i < 8; i++) {
      const failure = await client.fails(i % 2 === 0 ? 'GetDataset' : 'ListDatasets', { name: 'outage' });
      expect(failure.code).toBe(grpc.status.UNAVAILABLE);
      expect(failure.errorCode).toBe('DATABASE_UNAVAILABLE');
      expect(Number(failure.metadata.get('retry-after-ms')[0])).toBeGreaterThanOrEqual(1000);
      expect(Number(failure.metadata.get('retry-after')[0])).toBeGreaterThanOrEqual(1);
    }
    const notReady = await request(http).get('/readyz').expect(503);
    expect(notReady.body.error.code).toBe('NOT_READY');
    expect(notReady.body.error.message).toMatch(/database unreachable/);
    expect(Number(notReady.headers['retry-after'])).toBeGreaterThanOrEqual(1);

    const messages = lines.map((l) => l.msg);
    for (const msg of PER_REQUEST_ERRORS) expect(messages.filter((m) => m === msg), msg).toEqual([]);
    // No stack traces for these failures: no log line of the requests carries an error object.
    for (const line of lines.filter((l) => l.reqId !== undefined || l.method !== undefined)) expect(line.err, String(line.msg)).toBeUndefined();

    if (!relay) {
      // A closed embedded database is this process shutting down, not an outage to report.
      expect(messages.filter((m) => m === 'database unavailable')).toEqual([]);
      expect(restAnswers.every((r) => r.body.error.details.reason === 'closed')).toBe(true);
      return;
    }
    const down = lines.filter((l) => l.msg === 'database unavailable');
    expect(down).toHaveLength(1);
    expect(down[0].level).toBe(40);
    expect(down[0].err).toBeUndefined();
    expect(down[0].reason).toEqual(expect.any(String));

    // The database comes back: the first success after the outage is logged once, and requests are served again.
    await relay.restore();
    await until('served again', async () => (await request(http).get('/v1/datasets')).status === 200);
    await request(http).get('/readyz').expect(200);
    await client.unary('GetDataset', { name: 'outage' });
    expect(lines.filter((l) => l.msg === 'database reachable again')).toHaveLength(1);
    expect(lines.filter((l) => l.msg === 'database unavailable')).toHaveLength(1);
  });
});
