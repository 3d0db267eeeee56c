import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { freePort, launchService, waitUntilReady } from './helpers/process.js';

describe('the service process', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  it('refuses a bad configuration with exit status 78 and a message naming the variable', async () => {
    const running = launchService({ PORT: 'abc', LOG_LEVEL: 'loud' });
    const { code } = await running.exited;
    expect(code).toBe(78);
    expect(running.stderr()).toContain('PORT="abc": expected an integer from 0 to 65535');
    expect(running.stderr()).toContain('LOG_LEVEL="loud": expected one of fatal, error, warn, info, debug, trace, silent');
  });

  it('on SIGTERM finishes the request in flight, refuses new connections, and exits 0 within 10 s', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'protoprune-main-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const running = launchService({ PORT: String(port), GRPC_PORT: '0', HOST: '127.0.0.1', DATA_DIR: dataDir });
    cleanups.push(async () => running.child.kill('SIGKILL'));
    await waitUntilReady(port, running);

    // A request whose body is still arriving is in flight: the server cannot answer it yet.
    const socket = net.connect(port, '127.0.0.1');
    let response = '';
    socket.on('data', (d) => (response += d));
    const body = '{"pending":true}';
    await new Promise<void>((resolve) => socket.once('connect', resolve));
    socket.write(`POST /in-flight HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`);
    // Let the server parse the headers first (on a busy machine it may not have yet): only then is
    // the request in flight rather than a new one arriving after shutdown began.
    await new Promise((r) => setTimeout(r, 300));

    const signalledAt = Date.now();
    running.child.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 500));
    const refused = await fetch(`http://127.0.0.1:${port}/healthz`).then(() => false, () => true);
    expect(refused).toBe(true);

    socket.end(body.slice(5));
    const { code } = await running.exited;
    const elapsed = Date.now() - signalledAt;

    expect(code).toBe(0);
    expect(elapsed).toBeLessThan(10_000);
    expect(response).toMatch(/^HTTP\/1\.1 404 /);
    expect(response).toContain('"code":"ROUTE_NOT_FOUND"');

    const lines = running.stdout().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const requestLines = lines.filter((l) => 'req' in l || 'res' in l);
    expect(requestLines.length).toBeGreaterThan(0);
    for (const line of requestLines) expect(line.reqId).toEqual(expect.any(String));
    expect(lines.map((l) => l.msg)).toContain('stopped cleanly');
  });
});
