import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, readlink, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { childPids, freePort, isRunning, killGroup, launchService, waitUntilReady, type Running } from '../helpers/process.js';

/**
 * The embedded backend's data-directory lock when the service is PID 1 of its own PID namespace,
 * as in a container: after a SIGKILL the lock names PID 1, which the restarted service also is.
 */
const IN_PID_NAMESPACE = ['unshare', '--pid', '--fork', '--mount-proc'];

async function until<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the data-directory lock of a service running as PID 1', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  function start(env: Record<string, string>, prefix: string[] = []): Running {
    const running = launchService(env, prefix);
    cleanups.push(async () => {
      killGroup(running);
      await running.exited;
    });
    return running;
  }

  it('survives SIGKILL: the restarted PID 1 takes the lock over and sees the data; a second live process is still refused', { timeout: 240_000 }, async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'protoprune-pid1-'));
    cleanups.push(() => rm(dataDir, { recursive: true, force: true }));
    const lockFile = path.join(dataDir, 'protoprune.lock');
    const env = (port: number) => ({ PORT: String(port), GRPC_PORT: '0', HOST: '127.0.0.1', DATA_DIR: dataDir, LOG_LEVEL: 'info' });

    // 1. First run, PID 1 of a fresh namespace; create data.
    const port1 = await freePort();
    const first = start(env(port1), IN_PID_NAMESPACE);
    await waitUntilReady(port1, first);
    const key = (await readFile(path.join(dataDir, 'initial-admin-key'), 'utf8')).trim();
    const auth = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
    const created = await fetch(`http://127.0.0.1:${port1}/v1/datasets`, { method: 'POST', headers: auth, body: JSON.stringify({ name: 'survivor', dimension: 4 }) });
    expect(created.status).toBe(201);
    const ingested = await fetch(`http://127.0.0.1:${port1}/v1/datasets/survivor/items`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ items: [{ externalId: 'kept', embedding: [1, 0, 0, 0] }] }),
    });
    expect(ingested.status).toBe(200);

    const lockBefore = JSON.parse(await readFile(lockFile, 'utf8')) as { pid: number; start: string; pidns: string };
    expect(lockBefore.pid).toBe(1);
    expect(lockBefore.pidns).not.toBe(await readlink('/proc/self/ns/pid'));

    // 2. SIGKILL the service itself (PID 1 inside, `server` out here), as the OOM killer would.
    const [server] = await until('the namespaced service process', () => {
      const pids = childPids(first.child.pid!);
      return pids.length === 1 ? pids : undefined;
    });
    expect(readFileSync(`/proc/${server}/cmdline`, 'utf8')).toContain('src/main.ts');
    process.kill(server, 'SIGKILL');
    await first.exited;
    await until('the killed service to disappear', () => (isRunning(server) ? undefined : true));
    const lockAfterCrash = JSON.parse(await readFile(lockFile, 'utf8')) as { pid: number; start: string };
    expect(lockAfterCrash).toEqual(lockBefore); // nothing cleaned up: a real crash

    // 3. Restart the same way on the same directory: ready, with the data.
    const port2 = await freePort();
    const second = start(env(port2), IN_PID_NAMESPACE);
    await waitUntilReady(port2, second);
    const dataset = await fetch(`http://127.0.0.1:${port2}/v1/datasets/survivor`, { headers: auth });
    expect(dataset.status).toBe(200);
    const item = await fetch(`http://127.0.0.1:${port2}/v1/datasets/survivor/items/kept`, { headers: auth });
    expect(item.status).toBe(200);
    const lockNow = JSON.parse(await readFile(lockFile, 'utf8')) as { pid: number; start: string; pidns: string };
    expect(lockNow.pid).toBe(1);
    // Another instance: same pid, later start. (The namespace id may be the old one's: the kernel
    // reuses a dead namespace's inode number, and then the start time alone tells them apart.)
    expect(Number(lockNow.start)).toBeGreaterThan(Number(lockBefore.start));

    // 4. A second live process on the directory is refused: from this (the parent) PID namespace,
    //    which sees the holder, and from a sibling namespace, which cannot and relies on its heartbeat.
    for (const [where, prefix, reason] of [
      ['the parent namespace', [], /in use by process 1 \(process alive in PID namespace pid:\[\d+\]\)/],
      ['a sibling namespace', IN_PID_NAMESPACE, /in use by process 1 \(.*not visible from here; its heartbeat is running\)/],
    ] as const) {
      const intruder = start(env(await freePort()), [...prefix]);
      const { code } = await intruder.exited;
      expect(code, where).toBe(1);
      expect(intruder.stdout(), where).toMatch(reason);
      expect(intruder.stdout(), where).toContain('boot failed');
    }

    // The holder is unaffected.
    expect(await fetch(`http://127.0.0.1:${port2}/readyz`).then((r) => r.status)).toBe(200);
    expect(JSON.parse(await readFile(lockFile, 'utf8'))).toEqual(lockNow);
  });
});
