import * as grpc from '@grpc/grpc-js';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ApiClient } from './grpc/client.js';
import { freePort, killGroup, launchService, logLines, waitUntilReady } from './helpers/process.js';

describe('the service log', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  it('never contains an API key secret sent in headers, query strings or gRPC metadata, and still logs every request', { timeout: 180_000 }, async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'protoprune-logs-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const grpcPort = await freePort();
    const running = launchService({ PORT: String(port), GRPC_PORT: String(grpcPort), HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'debug' });
    cleanups.push(async () => {
      killGroup(running);
      await running.exited;
    });
    await waitUntilReady(port, running);
    const key = (await readFile(path.join(dataDir, 'initial-admin-key'), 'utf8')).trim();
    expect(key).toMatch(/^pp_/);
    const base = `http://127.0.0.1:${port}`;
    const bearer = { authorization: `Bearer ${key}` };
    const json = { ...bearer, 'content-type': 'application/json' };

    // REST: authenticated with the header, keys in query strings, validation failures, a 404, a wrong key.
    const statuses: Record<string, number> = {};
    const call = async (label: string, url: string, init?: RequestInit) => {
      statuses[label] = (await fetch(`${base}${url}`, init)).status;
    };
    await call('create', '/v1/datasets', { method: 'POST', headers: json, body: JSON.stringify({ name: 'logs', dimension: 4 }) });
    await call('list with header and api_key', `/v1/datasets?api_key=${key}`, { headers: bearer });
    await call('token only', `/v1/datasets?token=${key}`);
    await call('invalid body', `/v1/datasets/logs/items?access_token=${key}`, { method: 'POST', headers: json, body: JSON.stringify({ items: 'nope' }) });
    await call('invalid query', `/v1/datasets/logs/selection?order=sideways&api_key=${key}`, { headers: bearer });
    await call('not found', `/no/such/route?token=${key}&x=1`, { headers: { ...bearer, cookie: `session=${key}`, 'x-api-key': key } });
    await call('wrong key', '/v1/datasets', { headers: { authorization: `Bearer ${key}x` } });
    expect(statuses).toEqual({
      create: 201,
      'list with header and api_key': 200,
      'token only': 401,
      'invalid body': 400,
      'invalid query': 400,
      'not found': 404,
      'wrong key': 401,
    });

    // gRPC with `authorization: Bearer <key>` metadata: a success and failures.
    const client = new ApiClient(grpcPort, key);
    cleanups.push(async () => client.close());
    expect(JSON.stringify(await client.unary('ListDatasets', {}))).toContain('logs');
    expect((await client.fails('GetDataset', { name: 'nope' })).code).toBe(grpc.status.NOT_FOUND);
    expect((await client.fails('CreateDataset', { name: '', dimension: 4 })).code).toBe(grpc.status.INVALID_ARGUMENT);
    expect((await client.withKey(`${key}x`).fails('ListDatasets', {})).code).toBe(grpc.status.UNAUTHENTICATED);

    running.child.kill('SIGTERM');
    expect((await running.exited).code).toBe(0);

    const all = running.stdout() + running.stderr();
    expect(all).not.toContain(key);
    expect(all).not.toContain(key.slice(3)); // not even without its prefix

    // The log still has what it should: one incoming/completed pair per REST request, URLs redacted.
    const lines = logLines(running.stdout());
    const incoming = lines.filter((l) => l.msg === 'incoming request').map((l) => (l.req as { url: string }).url);
    for (const url of [
      '/v1/datasets?api_key=[REDACTED]',
      '/v1/datasets?token=[REDACTED]',
      '/v1/datasets/logs/items?access_token=[REDACTED]',
      '/v1/datasets/logs/selection?order=sideways&api_key=[REDACTED]',
      '/no/such/route?token=[REDACTED]&x=1',
    ]) {
      expect(incoming).toContain(url);
    }
    const completed = lines.filter((l) => l.msg === 'request completed').map((l) => (l.res as { statusCode: number }).statusCode);
    for (const status of [201, 200, 401, 400, 404]) expect(completed).toContain(status);
    for (const l of lines.filter((x) => 'req' in x)) expect(l.req).not.toHaveProperty('headers');
    expect(lines.map((l) => l.msg)).toContain('gRPC server listening');
  });
});
