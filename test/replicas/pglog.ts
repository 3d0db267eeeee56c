import { closeSync, existsSync, openSync, readdirSync, readSync, statSync } from 'node:fs';
import path from 'node:path';

/**
 * The PostgreSQL server log, read from a byte offset taken when a scenario began: the harness
 * greps the part written during the scenario. Debian's cluster log (log_line_prefix
 * '%m [%p] %q%u@%d ') names the backend pid of every line, which lets deadlocks be attributed to
 * the scenario's own backends. REPLICAS_PG_LOG overrides the location.
 */

export function postgresLogPath(): string | null {
  const explicit = process.env.REPLICAS_PG_LOG;
  if (explicit) return existsSync(explicit) ? explicit : null;
  const dir = '/var/log/postgresql';
  try {
    const candidates = readdirSync(dir)
      .filter((f) => /^postgresql-\d+-main\.log$/.test(f))
      .map((f) => path.join(dir, f))
      .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs);
    return candidates[0] ?? null;
  } catch {
    return null;
  }
}

export function logSize(file: string | null): number {
  if (!file) return 0;
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** The text appended to `file` since `offset` (from the start when the file was rotated/truncated). */
export function logSince(file: string | null, offset: number): string {
  if (!file) return '';
  const size = logSize(file);
  const from = size < offset ? 0 : offset;
  if (size === from) return '';
  const fd = openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(size - from);
    readSync(fd, buffer, 0, buffer.length, from);
    return buffer.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

export interface DeadlockReport {
  /** The backend pid that logged `ERROR:  deadlock detected`. */
  pid: number | null;
  /** Every pid the DETAIL lines name (the victim and the processes it waited for). */
  involved: number[];
  /** The statements of the processes involved (each `Process N: …`, whitespace collapsed). */
  statements: string[];
  /** A real deadlock report (DETAIL names the waiting processes), not a client raising the message. */
  genuine: boolean;
  /** The ERROR line with its DETAIL/CONTEXT/STATEMENT continuation, trimmed. */
  text: string;
}

const PID_IN_PREFIX = /^\S+ \S+ \S+ \[(\d+)\]/;

/** Every `deadlock detected` error in `text`, with the pids involved. */
export function parseDeadlocks(text: string): DeadlockReport[] {
  const lines = text.split('\n');
  const reports: DeadlockReport[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!/ERROR:\s+deadlock detected/.test(lines[i])) continue;
    const pidMatch = PID_IN_PREFIX.exec(lines[i]);
    const pid = pidMatch ? Number(pidMatch[1]) : null;
    const block = [lines[i]];
    // Continuation: DETAIL/HINT/CONTEXT/STATEMENT lines of the same pid, and tab-indented lines.
    for (let j = i + 1; j < lines.length; j++) {
      const next = lines[j];
      const samePid = PID_IN_PREFIX.exec(next)?.[1];
      const continuation = next.startsWith('\t') || (samePid !== undefined && Number(samePid) === pid && /\b(DETAIL|HINT|CONTEXT|STATEMENT):/.test(next));
      if (!continuation) break;
      block.push(next);
    }
    const involved = new Set<number>();
    if (pid !== null) involved.add(pid);
    for (const line of block) for (const m of line.matchAll(/[Pp]rocess (\d+)/g)) involved.add(Number(m[1]));
    // `\tProcess N: <statement>`, the statement continuing on further tab-indented lines.
    const parts: string[][] = [];
    let current: string[] | null = null;
    for (const line of block) {
      const m = /^\tProcess \d+: (.*)$/.exec(line);
      if (m) {
        current = [m[1]];
        parts.push(current);
      } else if (current && line.startsWith('\t') && !/^\tProcess \d+ waits/.test(line)) {
        current.push(line);
      } else {
        current = null;
      }
    }
    const statements = parts.map((p) => p.join(' ').replace(/\s+/g, ' ').trim());
    const genuine = block.some((line) => /waits for .* blocked by process/.test(line));
    reports.push({ pid, involved: [...involved], statements, genuine, text: block.join('\n').slice(0, 1500) });
  }
  return reports;
}
