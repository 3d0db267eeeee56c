import { createHash, randomBytes } from 'node:crypto';
import { link, open, readdir, readFile, readlink, rename, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/**
 * An exclusive lock on a data directory: DATA_DIR/protoprune.lock. Two processes writing one
 * PGlite directory would corrupt it, so a second one is refused; a lock left by a process that
 * died (kill -9, OOM) is taken over.
 *
 * A pid alone cannot say whether the holder is alive: in a container node runs as PID 1, so after
 * a crash the lock names PID 1 — which is the restarted process itself. The lock therefore records
 * the process *instance*: pid, start time (/proc/<pid>/stat field 22, clock ticks since boot),
 * boot id and PID namespace. It is held only while a live process with that pid has that start
 * time, in the same boot. Where the holder cannot be looked up from here (another PID namespace
 * we cannot see — a sibling container on a shared volume — another machine, or no /proc), the
 * holder's heartbeat decides: a holder touches the lock every `heartbeatMs`, and a lock not
 * touched for `leaseMs` is stale. Without /proc (non-Linux) only the pid is compared.
 *
 * The file is written atomically (a complete temp file hard-linked into place, which fails if a
 * lock exists), and a stale lock is replaced by renaming a fresh file over it only by the one
 * process that won an O_EXCL guard file named after that exact stale lock (inode + content), so
 * two processes taking over the same stale lock cannot both win. The old format (a bare pid) is
 * still read.
 */

export const LOCK_FILE = 'protoprune.lock';

/** What identifies one process instance. */
export interface ProcessIdentity {
  pid: number;
  /** Start time in clock ticks since boot (/proc/<pid>/stat field 22); null without /proc. */
  start: string | null;
  /** /proc/sys/kernel/random/boot_id; null without /proc. */
  boot: string | null;
  /** The PID namespace (readlink /proc/self/ns/pid, e.g. "pid:[4026531836]"); null if unknown. */
  pidns: string | null;
}

/** A parsed lock file: `legacy` for the old format (a bare pid). */
export interface LockRecord extends ProcessIdentity {
  legacy: boolean;
  /** Per-process random token: tells this process from another with the same pid where there is no /proc. */
  token?: string;
  host?: string;
  since?: string;
}

export interface LockOptions {
  /** How often the holder touches the lock (default 2 s). */
  heartbeatMs?: number;
  /** A lock whose holder cannot be looked up is stale once untouched this long (default 10 s). */
  leaseMs?: number;
}

export interface DirectoryLock {
  /** The lock file. */
  file: string;
  release(): Promise<void>;
}

export class DirectoryLockedError extends Error {
  constructor(
    readonly dir: string,
    readonly holder: number,
    detail: string,
  ) {
    super(`data directory ${dir} is in use by process ${holder}${detail ? ` (${detail})` : ''}`);
    this.name = 'DirectoryLockedError';
  }
}

const DEFAULT_HEARTBEAT_MS = 2_000;
const DEFAULT_LEASE_MS = 10_000;
/** A takeover guard lives for milliseconds; one older than this was left by a crashed process. */
const GUARD_STALE_MS = 10_000;
/** Temp and guard files older than this are leftovers of crashed processes. */
const LEFTOVER_MS = 60_000;
/** An unreadable lock younger than this may be mid-write by a filesystem without hard links. */
const YOUNG_MS = 2_000;
const MAX_ATTEMPTS = 100;

const TOKEN = randomBytes(8).toString('hex');
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const code = (error: unknown) => (error as NodeJS.ErrnoException | undefined)?.code;

interface ProcStat {
  pid: number;
  /** Process state letter (R, S, D, Z, X, ...). */
  state: string;
  start: string;
}

/** Parses /proc/<pid>/stat; the command name (field 2) may hold spaces and parentheses. */
export function parseProcStat(text: string): ProcStat | null {
  const close = text.lastIndexOf(')');
  if (close < 0) return null;
  const pid = Number(text.slice(0, text.indexOf(' ')));
  const rest = text.slice(close + 2).split(' ');
  // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
  if (!Number.isInteger(pid) || rest.length < 20 || !/^\d+$/.test(rest[19])) return null;
  return { pid, state: rest[0], start: rest[19] };
}

async function procStat(pid: number | 'self'): Promise<ProcStat | null> {
  try {
    return parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

/** A zombie has exited (it only awaits its parent's wait()): it no longer writes anything. */
const isRunning = (s: ProcStat | null): s is ProcStat => s !== null && s.state !== 'Z' && s.state !== 'X';

let selfIdentity: Promise<ProcessIdentity> | undefined;

/**
 * This process's identity. /proc is used only when it shows our own pid namespace (its `self`
 * entry has our pid); otherwise — no /proc, or a /proc of another namespace — only the pid counts.
 */
export function currentProcessIdentity(): Promise<ProcessIdentity> {
  selfIdentity ??= (async () => {
    const own = await procStat('self');
    if (!own || own.pid !== process.pid) return { pid: process.pid, start: null, boot: null, pidns: null };
    const boot = (await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => '')).trim() || null;
    const pidns = await readlink('/proc/self/ns/pid').catch(() => null);
    return { pid: process.pid, start: own.start, boot, pidns };
  })();
  return selfIdentity;
}

/** Parses a lock file: the JSON record, or the old format (a bare pid). Null when unreadable. */
export function parseLock(text: string): LockRecord | null {
  const trimmed = text.trim();
  if (/^\d+$/.test(trimmed)) {
    const pid = Number(trimmed);
    return pid > 0 && Number.isSafeInteger(pid) ? { pid, start: null, boot: null, pidns: null, legacy: true } : null;
  }
  try {
    const value = JSON.parse(trimmed) as Record<string, unknown>;
    const pid = value.pid;
    if (typeof pid !== 'number' || !Number.isSafeInteger(pid) || pid <= 0) return null;
    const str = (v: unknown) => (typeof v === 'string' && v.length > 0 ? v : null);
    return {
      pid,
      start: str(value.start),
      boot: str(value.boot),
      pidns: str(value.pidns),
      legacy: false,
      token: str(value.token) ?? undefined,
      host: str(value.host) ?? undefined,
      since: str(value.since) ?? undefined,
    };
  } catch {
    return null;
  }
}

function lockContent(self: ProcessIdentity): string {
  return `${JSON.stringify({ pid: self.pid, start: self.start, boot: self.boot, pidns: self.pidns, token: TOKEN, host: os.hostname(), since: new Date().toISOString() })}\n`;
}

/** The process in our view of /proc whose innermost pid (NSpid) and start time match: a holder in a descendant PID namespace. */
async function findInDescendantNamespace(pid: number, start: string): Promise<boolean> {
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return false;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const s = await procStat(Number(entry));
    if (!isRunning(s) || s.start !== start) continue;
    const status = await readFile(`/proc/${entry}/status`, 'utf8').catch(() => '');
    const nspid = /^NSpid:\s*(.*)$/m.exec(status)?.[1].trim().split(/\s+/);
    if (nspid && Number(nspid[nspid.length - 1]) === pid) return true;
  }
  return false;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return code(error) === 'EPERM';
  }
}

type Verdict = { held: true; why: string } | { held: false } | { held: 'unknown'; why: string };

/** Whether the process a lock names is alive, as far as this process can tell. */
export async function judgeLock(rec: LockRecord, self: ProcessIdentity): Promise<Verdict> {
  const haveProc = self.start !== null;
  if (rec.legacy) {
    // The old format came from an older version: this process never writes it, so a lock naming
    // our own pid was left by an earlier process that had our pid (PID 1 in a container).
    if (rec.pid === self.pid) return { held: false };
    const s = haveProc ? await procStat(rec.pid) : null;
    const alive = s !== null ? isRunning(s) : pidAlive(rec.pid);
    return alive ? { held: true, why: 'old-format lock, process alive' } : { held: false };
  }
  if (!haveProc && rec.boot === null) {
    // Neither side has /proc (non-Linux): the pid is all there is.
    if (rec.pid === self.pid) return rec.token === TOKEN ? { held: true, why: 'held by this process' } : { held: false };
    return pidAlive(rec.pid) ? { held: true, why: 'process alive' } : { held: false };
  }
  if (!haveProc || rec.boot === null || rec.start === null || self.boot === null) {
    return { held: 'unknown', why: 'its holder cannot be looked up from here' };
  }
  if (rec.boot !== self.boot) return { held: 'unknown', why: `written under another boot or machine (${rec.host ?? 'unknown host'})` };
  if (rec.pidns !== null && rec.pidns === self.pidns) {
    if (rec.pid === self.pid) return rec.start === self.start ? { held: true, why: 'held by this process' } : { held: false };
    const s = await procStat(rec.pid);
    // A process /proc does not show may still exist (hidepid, another user's): then it cannot be checked.
    if (s === null) return pidAlive(rec.pid) ? { held: 'unknown', why: `process ${rec.pid} is not visible in /proc` } : { held: false };
    return isRunning(s) && s.start === rec.start ? { held: true, why: 'process alive' } : { held: false };
  }
  // Another PID namespace: visible from here if it is a descendant of ours.
  if (await findInDescendantNamespace(rec.pid, rec.start)) return { held: true, why: `process alive in PID namespace ${rec.pidns ?? '?'}` };
  return { held: 'unknown', why: `its holder is in PID namespace ${rec.pidns ?? '?'}, not visible from here` };
}

interface Seen {
  content: string;
  ino: number;
  mtimeMs: number;
}

async function readLock(file: string): Promise<Seen | null> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (error) {
    if (code(error) === 'ENOENT') return null;
    throw error;
  }
  try {
    const info = await handle.stat();
    const content = await handle.readFile('utf8');
    return { content, ino: info.ino, mtimeMs: info.mtimeMs };
  } finally {
    await handle.close();
  }
}

async function writeTemp(file: string, content: string): Promise<string> {
  const tmp = `${file}.${process.pid}-${randomBytes(6).toString('hex')}.tmp`;
  const handle = await open(tmp, 'wx', 0o644);
  try {
    await handle.writeFile(content);
    await handle.sync();
  } finally {
    await handle.close();
  }
  return tmp;
}

/** Creates the lock only if none exists, complete from its first byte (hard link of a temp file). */
async function createExclusive(file: string, content: string): Promise<boolean> {
  const tmp = await writeTemp(file, content);
  try {
    await link(tmp, file);
    return true;
  } catch (error) {
    if (code(error) === 'EEXIST') return false;
    if (!['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS', 'EXDEV'].includes(code(error) ?? '')) throw error;
    // No hard links on this filesystem: O_EXCL create (readers treat a young empty lock as mid-write).
    try {
      await writeFile(file, content, { flag: 'wx', mode: 0o644 });
      return true;
    } catch (inner) {
      if (code(inner) === 'EEXIST') return false;
      throw inner;
    }
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/**
 * The O_EXCL guard for replacing one particular stale lock. Generation n+1 is tried only when
 * generation n is older than GUARD_STALE_MS (its process crashed mid-takeover). Null when another
 * process is taking that lock over right now.
 */
async function acquireGuard(base: string): Promise<string[] | null> {
  const names: string[] = [];
  for (let n = 0; n < 8; n++) {
    const name = n === 0 ? base : `${base}.${n}`;
    try {
      await writeFile(name, `${process.pid}\n`, { flag: 'wx' });
      return [...names, name];
    } catch (error) {
      if (code(error) !== 'EEXIST') throw error;
      const info = await stat(name).catch(() => null);
      if (!info || Date.now() - info.mtimeMs < GUARD_STALE_MS) return null;
      names.push(name);
    }
  }
  return null;
}

/** Replaces the stale lock `seen` with ours, unless someone else already did; true when we hold it. */
async function takeOver(file: string, seen: Seen, content: string): Promise<boolean> {
  const digest = createHash('sha256').update(`${seen.ino}\0${seen.content}`).digest('hex').slice(0, 16);
  const guard = await acquireGuard(`${file}.takeover-${digest}`);
  if (!guard) return false;
  try {
    // Only the guard's holder may replace this inode, and it is still the one judged stale.
    const now = await readLock(file);
    if (!now || now.ino !== seen.ino || now.content !== seen.content) return false;
    const tmp = await writeTemp(file, content);
    try {
      await rename(tmp, file);
    } catch (error) {
      await unlink(tmp).catch(() => undefined);
      throw error;
    }
    return (await readLock(file))?.content === content;
  } finally {
    for (const name of guard) await unlink(name).catch(() => undefined);
  }
}

/**
 * For a holder we cannot look up: watches the lock until its heartbeat touches it (held), it goes
 * untouched for `leaseMs` (stale), or it is replaced or removed (changed).
 */
async function watchLease(file: string, seen: Seen, leaseMs: number, pollMs: number): Promise<'held' | 'stale' | 'changed'> {
  // A touch "in the future" (another machine's clock) counts from now, so the wait stays bounded.
  const since = Math.min(seen.mtimeMs, Date.now());
  for (;;) {
    const remaining = since + leaseMs - Date.now();
    if (remaining <= 0) return 'stale';
    await sleep(Math.min(pollMs, remaining + 5));
    const now = await readLock(file);
    if (!now || now.ino !== seen.ino || now.content !== seen.content) return 'changed';
    if (now.mtimeMs !== seen.mtimeMs) return 'held';
  }
}

/** Removes temp and guard files that crashed processes left behind. */
async function sweepLeftovers(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const name of names) {
    if (!name.startsWith(`${LOCK_FILE}.`) || !(name.endsWith('.tmp') || name.includes('.takeover-'))) continue;
    const full = path.join(dir, name);
    const info = await stat(full).catch(() => null);
    if (info && Date.now() - info.mtimeMs > LEFTOVER_MS) await unlink(full).catch(() => undefined);
  }
}

function holding(file: string, content: string, heartbeatMs: number): DirectoryLock {
  let released = false;
  let beating = false;
  // The heartbeat lets processes that cannot look us up (another PID namespace, another machine) see we are alive.
  const timer = setInterval(() => {
    if (beating || released) return;
    beating = true;
    void (async () => {
      try {
        if ((await readFile(file, 'utf8')) !== content) {
          clearInterval(timer); // no longer ours: never refresh someone else's lock
          return;
        }
        const now = new Date();
        await utimes(file, now, now);
      } catch {
        // Transient (or the directory is gone): the next beat tries again.
      } finally {
        beating = false;
      }
    })();
  }, heartbeatMs);
  timer.unref();
  let releasing: Promise<void> | undefined;
  return {
    file,
    release() {
      releasing ??= (async () => {
        released = true;
        clearInterval(timer);
        const current = await readFile(file, 'utf8').catch(() => null);
        if (current === content) await unlink(file).catch(() => undefined);
      })();
      return releasing;
    },
  };
}

/**
 * Takes the exclusive lock of `dir`, or throws DirectoryLockedError naming the live holder. Waits
 * (up to `leaseMs`) only when the holder cannot be looked up and its lock was touched recently.
 */
export async function acquireDirectoryLock(dir: string, options: LockOptions = {}): Promise<DirectoryLock> {
  const heartbeatMs = options.heartbeatMs ?? DEFAULT_HEARTBEAT_MS;
  const leaseMs = options.leaseMs ?? DEFAULT_LEASE_MS;
  const file = path.join(dir, LOCK_FILE);
  const self = await currentProcessIdentity();
  const content = lockContent(self);

  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    if (attempt > 0) await sleep(5 + Math.floor(Math.random() * 20));
    if (await createExclusive(file, content)) {
      await sweepLeftovers(dir);
      return holding(file, content, heartbeatMs);
    }
    const seen = await readLock(file);
    if (!seen) continue; // released meanwhile: try again
    const rec = parseLock(seen.content);
    if (!rec) {
      if (Date.now() - seen.mtimeMs < YOUNG_MS && seen.content.trim() === '') continue; // mid-write
    } else {
      let verdict = await judgeLock(rec, self);
      if (verdict.held === 'unknown') {
        const outcome = await watchLease(file, seen, leaseMs, Math.max(50, Math.min(500, Math.floor(heartbeatMs / 4))));
        if (outcome === 'changed') continue;
        verdict = outcome === 'held' ? { held: true, why: `${verdict.why}; its heartbeat is running` } : { held: false };
      }
      if (verdict.held) throw new DirectoryLockedError(dir, rec.pid, verdict.why);
    }
    if (await takeOver(file, seen, content)) {
      await sweepLeftovers(dir);
      return holding(file, content, heartbeatMs);
    }
  }
  throw new Error(`could not lock data directory ${dir}`);
}
