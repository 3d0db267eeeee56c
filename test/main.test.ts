import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../src/paths.js';

interface Running {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function launch(env: Record<string, string>): Running {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: PROJECT_ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, stdout: () => out, stderr: () => err, exited };
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function waitUntilReady(port: number, running: Running, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (running.child.exitCode !== null) throw new Error(`service exited early:\n${running.stderr()}\n${running.stdout()}`);
    const ok = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status === 200, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error('service not ready in time');
}

describe('the service process', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  it('refuses a bad configuration with exit status 78 and a message naming the variable', async () => {
    const running = launch({ PORT: 'abc', LOG_LEVEL: 'loud' });
    const { code } = await running.exited;
    expect(code).toBe(78);
    expect(running.stderr()).toContain('PORT="abc": expected an integer from 0 to 65535');
    expect(running.stderr()).toContain('LOG_LEVEL="loud": expected one of fatal, error, warn, info, debug, trace, silent');
  });

  it('on SIGTERM finishes the request in flight, refuses new connections, and exits 0 within 10 s', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'protoprune-main-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const port = await freePort();
    const running = launch({ PORT: String(port), GRPC_PORT: '0', HOST: '127.0.0.1', DATA_DIR: dataDir });
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
