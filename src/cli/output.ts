import type { Writable } from 'node:stream';

/** Where a CLI run writes and what it reads from its environment (the process's, or a test's). */
export interface CliIo {
  stdout: Writable & { isTTY?: boolean };
  stderr: Writable & { isTTY?: boolean };
  env: Record<string, string | undefined>;
}

export const EXIT = { ok: 0, failed: 1, usage: 2 } as const;

/** A problem of the command line or of a local file, reported as one line (no stack). */
export class CliError extends Error {
  override readonly name = 'CliError';

  constructor(
    message: string,
    readonly exitCode: number = EXIT.failed,
  ) {
    super(message);
  }
}

/**
 * A command's output: results on stdout — human text, or with `--json` only machine-readable
 * JSON — and notes (what happened on the way) on stderr, silenced by `--json`.
 */
export class Output {
  constructor(
    readonly io: CliIo,
    readonly json: boolean,
  ) {}

  /** The command's result: `human` lines, or `machine` as one JSON document with --json. */
  result(human: string | string[], machine: unknown): void {
    if (this.json) this.io.stdout.write(`${JSON.stringify(machine)}\n`);
    else this.io.stdout.write(`${([] as string[]).concat(human).join('\n')}\n`);
  }

  /** A result only scripts need (the human reader got notes): `machine` as JSON with --json, nothing otherwise. */
  jsonResult(machine: unknown): void {
    if (this.json) this.io.stdout.write(`${JSON.stringify(machine)}\n`);
  }

  note(line: string): void {
    if (!this.json) this.io.stderr.write(`${line}\n`);
  }
}

/** Seconds with one decimal, e.g. "3.2 s". */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** Count with its noun, e.g. "1 file", "3 files". */
export function plural(count: number, noun: string, nouns = `${noun}s`): string {
  return `${count} ${count === 1 ? noun : nouns}`;
}
