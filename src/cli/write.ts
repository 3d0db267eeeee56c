import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { Readable, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { CliError, EXIT } from './output.js';

/** Writes every chunk, waiting for the target to drain when its buffer is full. */
async function writeChunks(chunks: AsyncIterable<Uint8Array | string>, target: Writable): Promise<void> {
  for await (const chunk of chunks) {
    if (!target.write(chunk)) await once(target, 'drain');
  }
}

/**
 * Streams `chunks` to `file`, or to `stdout` when no file is named. A file that could not be
 * written to the end is removed, so no partial output is left looking complete.
 */
export async function writeOutput(chunks: AsyncIterable<Uint8Array | string>, file: string | undefined, stdout: Writable): Promise<void> {
  if (file === undefined) return writeChunks(chunks, stdout);
  try {
    await pipeline(Readable.from(chunks), createWriteStream(file));
  } catch (error) {
    await unlink(file).catch(() => undefined);
    throw error;
  }
}

/** Streamed rows as one external id per line. */
export async function* idLines(rows: AsyncIterable<{ externalId: string }>): AsyncGenerator<string> {
  for await (const row of rows) yield `${row.externalId}\n`;
}

/** Parquet is not written to a terminal: it would only garble it (a pipe or a file is fine). */
export function refuseParquetOnTerminal(format: string, output: string | undefined, stdout: { isTTY?: boolean }): void {
  if (format === 'parquet' && !output && stdout.isTTY) throw new CliError('Parquet is binary: write it to a file with --output, or redirect stdout', EXIT.usage);
}

/** Joins small strings into chunks of about 64 KiB, so a stream of ids is not written line by line. */
export async function* coalesce(lines: AsyncIterable<string>, size = 64 * 1024): AsyncGenerator<string> {
  let buffered = '';
  for await (const line of lines) {
    buffered += line;
    if (buffered.length >= size) {
      yield buffered;
      buffered = '';
    }
  }
  if (buffered !== '') yield buffered;
}
