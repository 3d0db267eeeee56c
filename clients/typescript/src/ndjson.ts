/**
 * The JSON values of an NDJSON body, one per line, parsed as the bytes arrive: only the current
 * chunk and a partial line are held. Stopping early (break) cancels the body.
 */
export async function* ndjsonLines<Row>(body: ReadableStream<Uint8Array>): AsyncGenerator<Row> {
  const decoder = new TextDecoder();
  let partial = '';
  for await (const chunk of body) {
    const lines = (partial + decoder.decode(chunk, { stream: true })).split('\n');
    partial = lines.pop()!;
    for (const line of lines) if (line.trim() !== '') yield JSON.parse(line) as Row;
  }
  partial += decoder.decode();
  if (partial.trim() !== '') yield JSON.parse(partial) as Row;
}
