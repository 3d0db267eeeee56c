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
 * Calls `cancel` once the response is over — sent, or its client gone — so a stream's database
 * snapshot never outlives its reader, even one that left before the first byte (or a HEAD).
 */
export function cancelWithResponse(reply: FastifyReply, cancel: () => void): void {
  if (reply.raw.closed) cancel();
  else reply.raw.once('close', cancel);
}
