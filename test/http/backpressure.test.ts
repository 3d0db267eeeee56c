import * as grpc from '@grpc/grpc-js';
import net from 'node:net';
import { pino } from 'pino';
import request from 'supertest';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/index.js';
import { startService, type RunningService } from '../../src/server.js';
import { ApiClient, type CallFailure } from '../grpc/client.js';
import { BACKENDS } from '../helpers/backends.js';

function capturingLogger() {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, lines };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Every request connection of the database is held by a slow statement (native: pg_sleep on both
 * pooled connections of DATABASE_POOL_MAX=2; embedded: a transaction on its one connection) while
 * far more requests arrive than the admission limit lets in. Nothing may answer 500: refusals are
 * 503 (SERVER_BUSY from the admission limit, DATABASE_UNAVAILABLE/pool_timeout from the pool) with
 * Retry-After, gRPC UNAVAILABLE with retry trailers, and /readyz stays 200 throughout (busy is not
 * unready).
 */
describe.each(BACKENDS)('backpressure on the $name backend', (backend) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  it('a saturated instance refuses with 503 + Retry-After (never 500) and stays ready', async () => {
    const fresh = await backend.fresh();
    cleanups.push(fresh.cleanup);
    const database = fresh.config.backend === 'native' ? { ...fresh.config, poolMax: 2 } : fresh.config;
    const { logger, lines } = capturingLogger();
    const base = loadConfig({ PORT: '0', GRPC_PORT: '0', HOST: '127.0.0.1', SHUTDOWN_GRACE_MS: '2000', AUTH_DISABLED: 'true', METRICS_ENABLED: 'false', JOB_POLL_MS: '60000' });
    const service: RunningService = await startService({ ...base, database, dataDir: fresh.dataDir }, logger);
    cleanups.push(() => service.stop());
    const http = service.http.server;
    const client = new ApiClient(service.grpc.port, undefined);
    cleanups.push(async () => client.raw.close());
    const limits = service.admission.config;
    // Auto-sized from the pool: 2 per connection (native, 2 connections), 8 embedded; 4 × that may wait.
    expect(limits.maxInFlight).toBe(backend.name === 'native' ? 4 : 8);
    expect(limits.maxQueued).toBe(4 * limits.maxInFlight);

    await request(http).post('/v1/datasets').send({ name: 'busy', dimension: 4 }).expect(201);
    await request(http).get('/v1/datasets/busy/stats').expect(200);

    // Occupy every request connection for longer than the pool's 5 s connect wait.
    const holdMs = 7000;
    const holds =
      backend.name === 'native'
        ? [service.db.query(`SELECT pg_sleep(${holdMs / 1000})`), service.db.query(`SELECT pg_sleep(${holdMs / 1000})`)]
        : [service.db.transaction(() => sleep(holdMs))];
    const heldSince = Date.now();
    if (backend.name === 'native') {
      while (service.db.poolStats().idle > 0 || service.db.poolStats().total < 2) await sleep(20);
    }

    // Readiness probes every 250 ms while the instance is saturated.
    const probes: number[] = [];
    let probing = true;
    const prober = (async () => {
      while (probing) {
        probes.push((await request(http).get('/readyz')).status);
        await sleep(250);
      }
    })();

    const total = 2 * (limits.maxInFlight + limits.maxQueued) + 10;
    const [rest, rpc] = await Promise.all([
      Promise.all(Array.from({ length: total }, () => request(http).get('/v1/datasets/busy/stats'))),
      Promise.all(
        Array.from({ length: 8 }, () =>
          client.unary('GetStats', { dataset: 'busy' }).then(
            () => null,
            (error: grpc.ServiceError) => error,
          ),
        ),
      ),
    ]);
    await Promise.all(holds);
    probing = false;
    await prober;

    const statuses = new Map<number, number>();
    for (const res of rest) statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
    expect([...statuses.keys()].filter((s) => s >= 500 && s !== 503), JSON.stringify([...statuses])).toEqual([]);
    const refused = rest.filter((r) => r.status === 503 || r.status === 429);
    expect(refused.length).toBeGreaterThan(0);
    for (const res of refused) {
      expect(Number(res.headers['retry-after']), JSON.stringify(res.body)).toBeGreaterThanOrEqual(1);
      expect(['SERVER_BUSY', 'DATABASE_UNAVAILABLE']).toContain(res.body.error.code);
    }
    const codes = refused.map((r) => r.body.error.code as string);
    // Beyond in-flight + queue, requests are refused at once by the admission limit.
    expect(codes.filter((c) => c === 'SERVER_BUSY').length).toBeGreaterThanOrEqual(total - limits.maxInFlight - limits.maxQueued);
    if (backend.name === 'native') {
      // The admitted few that outwaited the pool's connect timeout: 503 pool_timeout, not 500.
      const poolTimeouts = refused.filter((r) => r.body.error.code === 'DATABASE_UNAVAILABLE');
      expect(poolTimeouts.length).toBeGreaterThan(0);
      for (const r of poolTimeouts) expect(r.body.error.details.reason).toBe('pool_timeout');
    } else {
      // The embedded connection queues fairly without a timeout: the admitted ones (REST or gRPC:
      // one budget) are served once it is free.
      expect((statuses.get(200) ?? 0) + rpc.filter((e) => e === null).length).toBeGreaterThan(0);
    }
    // Refused at once means fast: the queue-full refusals did not wait for the database.
    expect(Date.now() - heldSince).toBeLessThan(holdMs + 5000);

    for (const error of rpc) {
      if (error === null) continue;
      const failure = { code: error.code, errorCode: error.metadata.get('error-code')[0] } as Partial<CallFailure>;
      expect(failure.code, error.details).toBe(grpc.status.UNAVAILABLE);
      expect(['SERVER_BUSY', 'DATABASE_UNAVAILABLE']).toContain(failure.errorCode);
      expect(Number(error.metadata.get('retry-after-ms')[0])).toBeGreaterThanOrEqual(1000);
      expect(Number(error.metadata.get('retry-after')[0])).toBeGreaterThanOrEqual(1);
    }

    expect(probes.length).toBeGreaterThan(2);
    expect(probes.every((s) => s === 200), JSON.stringify(probes)).toBe(true);

    // Busy is not an outage: no "database unavailable", no per-request error lines.
    const messages = lines.map((l) => l.msg);
    expect(messages).not.toContain('database unavailable');
    expect(messages).not.toContain('unhandled error');
    expect(messages).not.toContain('gRPC call failed unexpectedly');
    if (backend.name === 'native') expect(messages.filter((m) => typeof m === 'string' && m.startsWith('database pool exhausted'))).toHaveLength(1);

    // Once the connections are free the instance serves again, and every slot was given back.
    await request(http).get('/v1/datasets/busy/stats').expect(200);
    // (A slot is given back when the server side of the response closes, just after the client has it.)
    for (let i = 0; i < 50 && service.admission.stats().inFlight > 0; i++) await sleep(20);
    expect(service.admission.stats()).toMatchObject({ inFlight: 0, queued: 0 });
  });

  it('a request whose body is still arriving holds no slot; it takes one again before its handler runs', async () => {
    const fresh = await backend.fresh();
    cleanups.push(fresh.cleanup);
    const base = loadConfig({
      PORT: '0',
      GRPC_PORT: '0',
      HOST: '127.0.0.1',
      SHUTDOWN_GRACE_MS: '2000',
      AUTH_DISABLED: 'true',
      METRICS_ENABLED: 'false',
      ADMISSION_MAX_IN_FLIGHT: '1',
      ADMISSION_QUEUE_TIMEOUT_MS: '0',
    });
    const service = await startService({ ...base, database: fresh.config, dataDir: fresh.dataDir }, capturingLogger().logger);
    cleanups.push(() => service.stop());
    expect(service.admission.config).toMatchObject({ maxInFlight: 1, queueTimeoutMs: 0 });
    const http = service.http.server;
    await request(http).post('/v1/datasets').send({ name: 'upload', dimension: 4 }).expect(201);

    // A slow upload: headers and half of the body now, the rest later.
    const body = JSON.stringify({ items: [{ externalId: 'a', embedding: [1, 0, 0, 0] }] });
    const socket = net.connect(service.httpPort, '127.0.0.1');
    cleanups.push(async () => socket.destroy());
    let answer = '';
    socket.on('data', (d) => (answer += d));
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.write(
      `POST /v1/datasets/upload/items HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body.slice(0, 10)}`,
    );
    await sleep(300);
    expect(service.admission.stats().inFlight).toBe(0);
    // With one slot and no waiting, this is refused at once if the upload still held the slot.
    await request(http).get('/v1/datasets/upload').expect(200);

    socket.write(body.slice(10));
    for (let i = 0; i < 200 && !/\r\n\r\n[\s\S]*\}$/.test(answer); i++) await sleep(50);
    expect(answer).toMatch(/^HTTP\/1\.1 20[01] /);
    expect(answer).toContain('"stored":1');
    expect(service.admission.stats()).toMatchObject({ inFlight: 0, queued: 0 });
  });
});
