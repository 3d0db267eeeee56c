import net from 'node:net';
import pg from 'pg';
import { PrismaPg } from '@prisma/adapter-pg';
import { afterEach, describe, expect, it } from 'vitest';
import { PrismaClient } from '../../src/generated/prisma/client.js';
import { classifyDatabaseError, DatabaseAvailability, ServiceError } from '../../src/service/errors.js';
import { openDatabase } from '../../src/store/open.js';
import { BACKENDS, NATIVE_URL } from '../helpers/backends.js';

/** What the driver really throws, caught. */
async function thrown(work: () => Promise<unknown>): Promise<unknown> {
  try {
    await work();
  } catch (error) {
    return error;
  }
  throw new Error('expected the call to fail');
}

function reasonOf(error: unknown): unknown {
  const classified = classifyDatabaseError(error);
  expect(classified, String(error)).toBeInstanceOf(ServiceError);
  expect(classified!.kind).toBe('unavailable');
  expect(classified!.code).toBe('DATABASE_UNAVAILABLE');
  expect(classified!.details.retryAfterMs).toBeGreaterThanOrEqual(1000);
  expect(classified!.cause).toBe(error);
  return classified!.details.reason;
}

async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe('classifyDatabaseError on errors that are not about availability', () => {
  it('leaves ordinary failures (and other service errors) alone', () => {
    expect(classifyDatabaseError(new Error('boom'))).toBeNull();
    expect(classifyDatabaseError(Object.assign(new Error('duplicate key value violates unique constraint'), { code: '23505' }))).toBeNull();
    expect(classifyDatabaseError(Object.assign(new Error('syntax error'), { code: '42601' }))).toBeNull();
    expect(classifyDatabaseError(new ServiceError('not_found', 'DATASET_NOT_FOUND', 'x'))).toBeNull();
    expect(classifyDatabaseError(undefined)).toBeNull();
    expect(classifyDatabaseError('ECONNREFUSED')).toBeNull();
  });
});

describe.each(BACKENDS)('classifyDatabaseError on real $name errors', (backend) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  it('a closed database is DATABASE_UNAVAILABLE (closed), on raw SQL and through Prisma', async () => {
    const fresh = await backend.fresh();
    cleanups.push(fresh.cleanup);
    const { db } = await openDatabase(fresh.config);
    await db.close();
    expect(reasonOf(await thrown(() => db.query('SELECT 1')))).toBe('closed');
    expect(reasonOf(await thrown(() => db.prisma.dataset.findMany()))).toBe('closed');
  });
});

describe.each(NATIVE_URL ? [NATIVE_URL] : [])('classifyDatabaseError on native driver errors', (url) => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  function pool(options: pg.PoolConfig): pg.Pool {
    const p = new pg.Pool({ connectionString: url, ...options });
    p.on('error', () => undefined);
    cleanups.push(() => p.end());
    return p;
  }

  it('pool timeout, refused connection, terminated backend: raw pg and Prisma-wrapped', async () => {
    const exhausted = pool({ max: 1, connectionTimeoutMillis: 200 });
    const prisma = new PrismaClient({ adapter: new PrismaPg(exhausted) });
    const held = await exhausted.connect();
    expect(reasonOf(await thrown(() => exhausted.query('SELECT 1')))).toBe('pool_timeout');
    expect(reasonOf(await thrown(() => prisma.$queryRaw`SELECT 1`))).toBe('pool_timeout');
    held.release();

    const nowhere = new URL(url);
    nowhere.port = String(await closedPort());
    const refused = pool({ connectionString: nowhere.toString(), max: 1, connectionTimeoutMillis: 2000 });
    expect(reasonOf(await thrown(() => refused.query('SELECT 1')))).toBe('unreachable');
    const refusedPrisma = new PrismaClient({ adapter: new PrismaPg(refused) });
    expect(reasonOf(await thrown(() => refusedPrisma.$queryRaw`SELECT 1`))).toBe('unreachable');

    // pg_terminate_backend: SQLSTATE 57P01 (admin shutdown) on the running statement.
    const victim = pool({ max: 1, application_name: 'classify-victim' });
    const admin = pool({ max: 1 });
    const client = await victim.connect();
    const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const running = thrown(() => client.query('SELECT pg_sleep(10)'));
    await new Promise((r) => setTimeout(r, 200));
    await admin.query('SELECT pg_terminate_backend($1)', [pid]);
    const terminated = await running;
    expect((terminated as { code?: string }).code).toBe('57P01');
    expect(reasonOf(terminated)).toBe('shutting_down');
    client.release(true);
    // The broken client answers with "Client has encountered a connection error" / "Connection terminated".
    expect(reasonOf(await thrown(() => client.query('SELECT 1')))).toMatch(/connection_lost|closed/);
  });

  it('SQLSTATE classes 08 and 53300, Node socket codes, Prisma codes: as the driver reports them', () => {
    const pgError = (code: string) => Object.assign(new Error('x'), { code, severity: 'FATAL' });
    expect(reasonOf(pgError('08006'))).toBe('unreachable');
    expect(reasonOf(pgError('08001'))).toBe('unreachable');
    expect(reasonOf(pgError('57P03'))).toBe('shutting_down');
    expect(reasonOf(pgError('53300'))).toBe('too_many_connections');
    expect(reasonOf(Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', syscall: 'read', errno: -104 }))).toBe('connection_lost');
    expect(reasonOf(new Error('Connection terminated unexpectedly'))).toBe('connection_lost');
    expect(reasonOf(new Error('Connection terminated due to connection timeout'))).toBe('connect_timeout');
    // AggregateError of a host resolving to several addresses (localhost → ::1 and 127.0.0.1).
    expect(reasonOf(new AggregateError([Object.assign(new Error('connect ECONNREFUSED ::1:5432'), { code: 'ECONNREFUSED' })], ''))).toBe('unreachable');
    expect(reasonOf(Object.assign(new Error('Timed out fetching a new connection from the connection pool'), { code: 'P2024' }))).toBe('pool_timeout');
    expect(reasonOf(Object.assign(new Error('x'), { code: 'P2010', meta: { driverAdapterError: { cause: { kind: 'TooManyConnections' } } } }))).toBe('too_many_connections');
  });
});

describe('DatabaseAvailability', () => {
  function recorder() {
    const lines: Array<{ level: string; message: string; fields: Record<string, unknown> }> = [];
    return {
      lines,
      log: {
        warn: (fields: Record<string, unknown>, message: string) => lines.push({ level: 'warn', message, fields }),
        info: (fields: Record<string, unknown>, message: string) => lines.push({ level: 'info', message, fields }),
      },
    };
  }

  it('logs an outage once at its first failure and once when the database answers again', () => {
    const { lines, log } = recorder();
    let now = 1000;
    const availability = new DatabaseAvailability(log, () => now);
    const refused = Object.assign(new Error('connect ECONNREFUSED 10.0.0.5:5432'), { code: 'ECONNREFUSED' });
    for (let i = 0; i < 50; i++) expect(availability.failed(refused)?.code).toBe('DATABASE_UNAVAILABLE');
    expect(availability.available).toBe(false);
    expect(availability.failed(new Error('not a database problem'))).toBeNull();
    now = 4500;
    availability.reachable();
    availability.reachable();
    expect(lines).toEqual([
      { level: 'warn', message: 'database unavailable', fields: { reason: 'unreachable', cause: 'connect ECONNREFUSED 10.0.0.5:5432' } },
      { level: 'info', message: 'database reachable again', fields: { downMs: 3500 } },
    ]);
    expect(availability.available).toBe(true);
  });

  it('pool timeouts and a closed database are not outages; pool timeouts are summarised once a minute', () => {
    const { lines, log } = recorder();
    let now = 0;
    const availability = new DatabaseAvailability(log, () => now);
    const timeout = new Error('timeout exceeded when trying to connect');
    for (let i = 0; i < 10; i++) availability.failed(new Error('timeout exceeded when trying to connect'));
    // The same driver error reported twice (by the store, then by a transport's mapper) counts once.
    availability.failed(timeout);
    availability.failed(classifyDatabaseError(timeout));
    availability.failed(new Error('PGlite is closed'));
    now = 61_000;
    availability.failed(new Error('timeout exceeded when trying to connect'));
    expect(availability.available).toBe(true);
    // 1 at first; then the 9 other distinct ones, `timeout` once, and the one a minute later.
    expect(lines.map((l) => [l.message, l.fields])).toEqual([
      ['database pool exhausted: requests waited too long for a connection', { poolTimeouts: 1 }],
      ['database pool exhausted: requests waited too long for a connection', { poolTimeouts: 11 }],
    ]);
  });
});
