import { spawn, type SpawnOptions } from 'node:child_process';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { run } from '../../src/cli/program.js';
import { PROJECT_ROOT } from '../../src/paths.js';

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export const BIN = path.join(PROJECT_ROOT, 'bin', 'protoprune.mjs');

/** Runs `command` to its end with its output collected. */
export function runCollected(command: string, args: string[], options: SpawnOptions): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk) => (stdout += chunk));
    child.stderr!.on('data', (chunk) => (stderr += chunk));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

/** Runs bin/protoprune.mjs as a child process with exactly `env` (plus PATH and HOME), as user `uid` when given. */
export function spawnCli(args: string[], env: Record<string, string>, cwd = PROJECT_ROOT, uid?: number): Promise<CliRun> {
  return runCollected(process.execPath, [BIN, ...args], { cwd, uid, env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '', ...env } });
}

/** A captured output stream; `isTTY` as a terminal would say. */
export function capture(isTTY = false): PassThrough & { isTTY: boolean; text(): string } {
  const stream = new PassThrough() as PassThrough & { isTTY: boolean; text(): string };
  let text = '';
  stream.on('data', (chunk) => (text += chunk));
  stream.isTTY = isTTY;
  stream.text = () => text;
  return stream;
}

/** Runs the CLI's main function in this process (the server of the test answers it) with captured output. */
export async function runCli(args: string[], env: Record<string, string>): Promise<CliRun> {
  const stdout = capture();
  const stderr = capture();
  const code = await run(args, { stdout, stderr, env });
  return { code, stdout: stdout.text(), stderr: stderr.text() };
}
