import { Readable } from 'node:stream';
import type { FastifyReply } from 'fastify';
/** How a listing answers: one JSON page, or the whole listing streamed as NDJSON or CSV. */
export type Format = 'json' | 'ndjson' | 'csv';

/** `format=` wins; otherwise the Accept header picks NDJSON or CSV; JSON pages by default. */
export function pickFormat(format: Format | undefined, accept: string | undefined): Format {
  if (format) return format;
  const wanted = (accept ?? '').toLowerCase();
  if (wanted.includes('application/x-ndjson')) return 'ndjson';
  if (wanted.includes('text/csv')) return 'csv';
  return 'json';
}

/** A CSV field, quoted when it holds a quote, comma or line break (RFC 4180). */
export function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/**
 * Sends a streamed body, read only as the client takes it. A HEAD request gets the headers alone:
 * the body is never started and the stream is given up at once. Otherwise `cancel` runs once the
 * response is over — sent, or its client gone, even before the first byte — so a stream's
 * database snapshot never outlives its reader.
 */
export function sendStream(reply: FastifyReply, body: () => AsyncIterable<string | Uint8Array>, cancel: () => void = () => undefined): FastifyReply {
  if (reply.request.method === 'HEAD') {
    cancel();
    return reply.send(Readable.from([]));
  }
  if (reply.raw.closed) cancel();
  else reply.raw.once('close', cancel);
  return reply.send(Readable.from(body()));
}
