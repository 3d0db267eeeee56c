import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { PROJECT_ROOT } from '../../src/paths.js';
import { acquireDirectoryLock, currentProcessIdentity, LOCK_FILE, parseLock, parseProcStat, type DirectoryLock } from '../../src/store/lock.js';

const LOCK_MODULE = path.join(PROJECT_ROOT, 'src/store/lock.ts');

async function exitedPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' });
  await new Promise((resolve) => child.on('exit', resolve));
  return child.pid!;
}

/**
 * A separate node process running the real lock module on `dir`. It prints `ready`, waits for a
 * line on stdin (so several can be released at once), tries the lock and prints `won` or
 * `refused: <message>`; `result` resolves with that line.
 */
function lockingChild(dir: string, holdMs = 60_000): { child: ChildProcess; ready: Promise<void>; go(): void; result: Promise<string> } {
  const script = `
    const { acquireDirectoryLock } = await import(${JSON.stringify(LOCK_MODULE)});
    console.log('ready');
    await new Promise((resolve) => process.stdin.once('data', resolve));
    try {
      await acquireDirectoryLock(${JSON.stringify(dir)});
      console.log('won');
    } catch (error) {
      console.log('refused: ' + error.message);
      process.exit(0);
    }
    setTimeout(() => process.exit(0), ${holdMs});
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: PROJECT_ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  const lines = (n: number) =>
    new Promise<string[]>((resolve, reject) => {
      const check = () => {
        const got = out.split('\n').slice(0, -1);
        if (got.length >= n) resolve(got);
      };
      child.stdout!.on('data', check);
      child.on('exit', () => reject(new Error(`child exited early: ${out}${err}`)));
      check();
    });
  child.stdout!.on('data', (d) => (out += d));
  return {
    child,
    ready: lines(1).then(() => undefined),
    go: () => child.stdin!.write('go\n'),
    result: lines(2).then((l) => l[1]),
  };
}

async function holdingChild(dir: string): Promise<ChildProcess> {
  const holder = lockingChild(dir);
  await holder.ready;
  holder.go();
  const result = await holder.result;
  if (result !== 'won') throw new Error(`child did not get the lock: ${result}`);
  return holder.child;
}

describe('parsing', () => {
  it('reads the start time (field 22) even when the command name has spaces and parentheses', () => {
    const fields = Array.from({ length: 50 }, (_, i) => String(i + 3));
    fields[0] = 'S';
    const parsed = parseProcStat(`4242 (a) (b c) ${fields.join(' ')}\n`);
    expect(parsed).toEqual({ pid: 4242, state: 'S', start: '22' });
  });

  it('reads the old format (a bare pid) and the JSON record; garbage is unreadable', () => {
    expect(parseLock('1234\n')).toMatchObject({ pid: 1234, legacy: true, start: null });
    expect(parseLock('{"pid":7,"start":"99","boot":"b","pidns":"pid:[1]"}')).toMatchObject({ pid: 7, start: '99', boot: 'b', pidns: 'pid:[1]', legacy: false });
    expect(parseLock('')).toBeNull();
    expect(parseLock('{"pid":"x"}')).toBeNull();
    expect(parseLock('0')).toBeNull();
  });
});

describe('acquireDirectoryLock', () => {
  const cleanups: Array<() => Promise<unknown>> = [];
  afterEach(async () => {
    while (cleanups.length) await cleanups.pop()!();
  });

  async function tempDir(): Promise<string> {
    const dir = await mkdtemp(path.join(tmpdir(), 'protoprune-lock-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  }
  function track(lock: DirectoryLock): DirectoryLock {
    cleanups.push(() => lock.release());
    return lock;
  }
  const lockOf = async (dir: string) => JSON.parse(await readFile(path.join(dir, LOCK_FILE), 'utf8')) as Record<string, unknown>;

  it('records pid, start time, boot id and PID namespace, refuses this same process, and release removes the file', async () => {
    const dir = await tempDir();
    const lock = track(await acquireDirectoryLock(dir));
    const self = await currentProcessIdentity();
    const ownStart = parseProcStat(await readFile('/proc/self/stat', 'utf8'))!.start;
    expect(self.start).toBe(ownStart);
    const record = await lockOf(dir);
    expect(record).toMatchObject({
      pid: process.pid,
      start: ownStart,
      boot: (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim(),
      pidns: expect.stringMatching(/^pid:\[\d+\]$/),
    });
    await expect(acquireDirectoryLock(dir)).rejects.toThrow(`is in use by process ${process.pid}`);
    await lock.release();
    await expect(stat(path.join(dir, LOCK_FILE))).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await readdir(dir)).toEqual([]); // no temp or guard files left
    track(await acquireDirectoryLock(dir)); // free again
  });

  it('takes over a lock left by a dead process', async () => {
    const dir = await tempDir();
    const self = await currentProcessIdentity();
    const dead = await exitedPid();
    await writeFile(path.join(dir, LOCK_FILE), JSON.stringify({ ...self, pid: dead, start: '12345' }));
    track(await acquireDirectoryLock(dir));
    expect(await lockOf(dir)).toMatchObject({ pid: process.pid, start: self.start });
  });

  it('takes over a lock naming our own pid with another start time (the PID 1 case)', async () => {
    const dir = await tempDir();
    const self = await currentProcessIdentity();
    const otherStart = String(Number(self.start) - 1);
    await writeFile(path.join(dir, LOCK_FILE), JSON.stringify({ ...self, start: otherStart }));
    track(await acquireDirectoryLock(dir));
    expect(await lockOf(dir)).toMatchObject({ pid: process.pid, start: self.start });
  });

  it('refuses while another live process holds the lock, and takes over once it is killed', async () => {
    const dir = await tempDir();
    const holder = await holdingChild(dir);
    cleanups.push(async () => holder.kill('SIGKILL'));
    await expect(acquireDirectoryLock(dir)).rejects.toThrow(`is in use by process ${holder.pid} (process alive)`);
    const exited = new Promise((resolve) => holder.on('exit', resolve));
    holder.kill('SIGKILL');
    await exited;
    expect((await lockOf(dir)).pid).toBe(holder.pid); // the lock survived the crash
    track(await acquireDirectoryLock(dir));
    expect((await lockOf(dir)).pid).toBe(process.pid);
  });

  it('still reads the old format: a live pid is refused, a dead pid or our own pid is taken over', async () => {
    const dir = await tempDir();
    const file = path.join(dir, LOCK_FILE);
    const sleeper = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    cleanups.push(async () => sleeper.kill('SIGKILL'));
    await writeFile(file, `${sleeper.pid}\n`);
    await expect(acquireDirectoryLock(dir)).rejects.toThrow(`is in use by process ${sleeper.pid}`);

    await writeFile(file, `${await exitedPid()}\n`);
    const fromDead = await acquireDirectoryLock(dir);
    expect((await lockOf(dir)).pid).toBe(process.pid);
    await fromDead.release();

    // An old-format lock is never written by this process: naming our pid, it is a predecessor's.
    await writeFile(file, `${process.pid}`);
    track(await acquireDirectoryLock(dir));
    expect((await lockOf(dir)).pid).toBe(process.pid);
  });

  it('takes over an unreadable lock', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, LOCK_FILE), 'not a lock');
    track(await acquireDirectoryLock(dir));
    expect((await lockOf(dir)).pid).toBe(process.pid);
  });

  it('a holder it cannot look up (another boot or machine) is refused while its heartbeat runs, and taken over after the lease', async () => {
    const dir = await tempDir();
    const file = path.join(dir, LOCK_FILE);
    const self = await currentProcessIdentity();
    await writeFile(file, JSON.stringify({ ...self, pid: 4242, boot: 'another-boot', host: 'elsewhere' }));
    const beat = setInterval(() => void utimes(file, new Date(), new Date()).catch(() => undefined), 100);
    try {
      await expect(acquireDirectoryLock(dir, { leaseMs: 1_000, heartbeatMs: 200 })).rejects.toThrow(/in use by process 4242 .*heartbeat is running/);
    } finally {
      clearInterval(beat);
    }
    const started = Date.now();
    track(await acquireDirectoryLock(dir, { leaseMs: 1_000, heartbeatMs: 200 }));
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);
    expect((await lockOf(dir)).pid).toBe(process.pid);
  });

  it('the holder touches its lock (the heartbeat others rely on)', async () => {
    const dir = await tempDir();
    track(await acquireDirectoryLock(dir, { heartbeatMs: 50 }));
    const before = (await stat(path.join(dir, LOCK_FILE))).mtimeMs;
    await new Promise((r) => setTimeout(r, 300));
    expect((await stat(path.join(dir, LOCK_FILE))).mtimeMs).toBeGreaterThan(before);
  });

  it('a guard left by a process that crashed mid-takeover does not block the takeover', async () => {
    const dir = await tempDir();
    const file = path.join(dir, LOCK_FILE);
    const content = `${await exitedPid()}\n`;
    await writeFile(file, content);
    const { ino } = await stat(file);
    const guard = `${file}.takeover-${createHash('sha256').update(`${ino}\0${content}`).digest('hex').slice(0, 16)}`;
    await writeFile(guard, '1\n');
    const old = new Date(Date.now() - 60_000);
    await utimes(guard, old, old);
    track(await acquireDirectoryLock(dir));
    expect((await lockOf(dir)).pid).toBe(process.pid);
  });

  it('of many acquisitions racing for one stale lock in this process, exactly one wins', async () => {
    for (let round = 0; round < 10; round++) {
      const dir = await tempDir();
      await writeFile(path.join(dir, LOCK_FILE), `${await exitedPid()}\n`);
      const results = await Promise.allSettled(Array.from({ length: 8 }, () => acquireDirectoryLock(dir)));
      const won = results.filter((r): r is PromiseFulfilledResult<DirectoryLock> => r.status === 'fulfilled');
      expect(won).toHaveLength(1);
      for (const r of results) if (r.status === 'rejected') expect(String(r.reason)).toContain(`in use by process ${process.pid}`);
      await won[0].value.release();
    }
  });

  it('of several processes racing for one stale lock, exactly one wins', async () => {
    const dir = await tempDir();
    await writeFile(path.join(dir, LOCK_FILE), `${await exitedPid()}\n`);
    const racers = Array.from({ length: 4 }, () => lockingChild(dir, 5_000));
    for (const r of racers) cleanups.push(async () => r.child.kill('SIGKILL'));
    await Promise.all(racers.map((r) => r.ready));
    for (const r of racers) r.go();
    const lines = await Promise.all(racers.map((r) => r.result));
    expect(lines.filter((l) => l === 'won')).toHaveLength(1);
    const winner = racers[lines.indexOf('won')].child.pid;
    for (const l of lines) if (l !== 'won') expect(l).toContain(`in use by process ${winner}`);
    expect((await lockOf(dir)).pid).toBe(winner);
  });
});
