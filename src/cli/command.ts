import { InvalidArgumentError } from 'commander';
import type { Job, ProtopruneClient } from '../../clients/typescript/src/index.js';
import { EXIT, type Output } from './output.js';
import { createProgress } from './progress.js';

/** What every command works with: the client of the server named by --url/PROTOPRUNE_URL, and its output. */
export interface CommandContext {
  client: ProtopruneClient;
  out: Output;
}

/** Makes a commander action of a command body that gets its context, then the command's arguments and options, and returns the exit status. */
export type Act = <Args extends unknown[]>(run: (ctx: CommandContext, ...args: Args) => Promise<number>) => (...args: unknown[]) => Promise<void>;

export const positiveInteger = (value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError('expected a positive integer');
  return n;
};

export const integer = (value: string): number => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isInteger(n)) throw new InvalidArgumentError('expected an integer');
  return n;
};

export const number = (value: string): number => {
  const n = Number(value);
  if (value.trim() === '' || !Number.isFinite(n)) throw new InvalidArgumentError('expected a number');
  return n;
};

export const json = (value: string): unknown => {
  try {
    return JSON.parse(value);
  } catch {
    throw new InvalidArgumentError('expected JSON');
  }
};

export const commaList = (value: string): string[] =>
  value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);

export function jobLine(job: Job): string {
  const running = job.state === 'queued' || job.state === 'running';
  const progress = running && job.progress.total > 0 ? ` ${job.progress.done}/${job.progress.total}` : '';
  const phase = running && job.phase ? ` in ${job.phase}` : '';
  return `job ${job.id} (${job.kind}${job.dataset ? ` of ${job.dataset}` : ''}) ${job.state}${phase}${progress}${job.error ? `: ${job.error}` : ''}`;
}

export const jobExit = (job: Job): number => (job.state === 'succeeded' ? EXIT.ok : EXIT.failed);

/** Follows a job to its end with a progress bar of its done/total (which changes between phases). */
export async function followJob(client: ProtopruneClient, job: Job, out: Output): Promise<Job> {
  const progress = createProgress(out.io, { json: out.json, label: job.kind, unit: 'steps' });
  progress.start(job.progress.total);
  try {
    return await client.waitForJob(job.id, {
      onProgress: (current) => progress.update(current.progress.done, { total: current.progress.total, note: current.phase ?? current.state }),
    });
  } finally {
    progress.stop();
  }
}
