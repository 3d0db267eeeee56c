import http from 'node:http';
import net from 'node:net';

/**
 * Two ways to put a request on the wire: node:http (well-formed framing, keep-alive, the path and
 * header bytes exactly as given, latin1) and raw TCP (every byte chosen by the caller, for what
 * node:http refuses to send: NUL or raw UTF-8 in the request line, broken syntax, bad framing).
 */

export interface Answer {
  /** null when the connection ended without a response. */
  status: number | null;
  headers: Record<string, string>;
  body: Buffer;
  /** Transport-level failure (timeout, reset), if any. */
  error?: string;
  ms: number;
}

export interface HttpRequest {
  method: string;
  /** The request target as bytes (every byte 0x21-0xFF; latin1 on the wire). */
  path: Buffer;
  headers: Array<[string, string]>;
  body?: Buffer;
}

/** Header values node:http would refuse to send. */
export const INVALID_HEADER_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
export const INVALID_PATH = /[^\x21-\xff]/;

export function canSendWithNodeHttp(req: HttpRequest): boolean {
  if (INVALID_PATH.test(req.path.toString('latin1'))) return false;
  // node:http upper-cases methods: anything else goes raw so it arrives as written. HEAD goes raw
  // too: a parser-level error answer to HEAD carries a body node:http refuses to read.
  if (!/^[!#$%&'*+\-.^_`|~0-9A-Z]+$/.test(req.method) || req.method === 'HEAD') return false;
  // Host is set by node:http itself; a changed or repeated one goes raw.
  if (req.headers.some(([name]) => name.toLowerCase() === 'host')) return false;
  return req.headers.every(([name, value]) => /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name) && !INVALID_HEADER_VALUE.test(value));
}

export class HttpSender {
  // One connection per request: a malformed request may leave a kept-alive connection in a state
  // where the next request on it is reset, which would blame the wrong request.
  private readonly agent = new http.Agent({ keepAlive: false, maxSockets: 16 });

  constructor(
    private readonly port: () => number,
    private readonly timeoutMs = 15_000,
  ) {}

  send(req: HttpRequest): Promise<Answer> {
    const started = Date.now();
    return new Promise((resolve) => {
      let settled = false;
      const done = (a: Omit<Answer, 'ms'>) => {
        if (settled) return;
        settled = true;
        resolve({ ...a, ms: Date.now() - started });
      };
      const headers: Record<string, string | string[]> = {};
      for (const [name, value] of req.headers) {
        const key = name.toLowerCase();
        const prev = headers[key];
        headers[key] = prev === undefined ? value : Array.isArray(prev) ? [...prev, value] : [prev, value];
      }
      let r: http.ClientRequest;
      try {
        r = http.request({
          host: '127.0.0.1',
          port: this.port(),
          method: req.method,
          path: req.path.toString('latin1'),
          headers: Object.fromEntries(Object.entries(headers).map(([k, v]) => [k, v])),
          agent: this.agent,
          setHost: !('host' in headers),
        });
      } catch (error) {
        done({ status: null, headers: {}, body: Buffer.alloc(0), error: `client refused: ${(error as Error).message}` });
        return;
      }
      r.setTimeout(this.timeoutMs, () => {
        r.destroy(new Error(`no answer within ${this.timeoutMs} ms`));
      });
      r.on('response', (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => done({ status: res.statusCode ?? null, headers: flatHeaders(res.headers), body: Buffer.concat(chunks) }));
        res.on('error', (e) => done({ status: res.statusCode ?? null, headers: flatHeaders(res.headers), body: Buffer.concat(chunks), error: e.message }));
      });
      r.on('error', (e) => done({ status: null, headers: {}, body: Buffer.alloc(0), error: e.message }));
      if (req.body && req.body.length > 0) r.end(req.body);
      else r.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

function flatHeaders(h: http.IncomingHttpHeaders): Record<string, string> {
  return Object.fromEntries(Object.entries(h).map(([k, v]) => [k, Array.isArray(v) ? v.join(', ') : String(v)]));
}

/**
 * Sends `bytes` on a fresh TCP connection and reads until the server closes it (or `timeoutMs`).
 * `halfClose` ends the write side after sending (the request announces more than it sends, or
 * is cut off); the server may then close without answering.
 */
export function sendRaw(port: number, bytes: Buffer, { halfClose = false, timeoutMs = 12_000 } = {}): Promise<Answer> {
  const started = Date.now();
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let settled = false;
    let error: string | undefined;
    const finish = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ ...parseResponse(Buffer.concat(chunks)), ...(error ? { error } : {}), ms: Date.now() - started });
    };
    const timer = setTimeout(() => {
      error = `no end of answer within ${timeoutMs} ms`;
      finish();
    }, timeoutMs);
    socket.on('connect', () => {
      socket.write(bytes);
      if (halfClose) socket.end();
    });
    socket.on('data', (c: Buffer) => {
      chunks.push(c);
      // A complete answer with a length is enough; the server may keep the connection open.
      const parsed = parseResponse(Buffer.concat(chunks));
      if (parsed.complete) finish();
    });
    socket.on('error', (e) => {
      if (chunks.length === 0) error = e.message;
      finish();
    });
    socket.on('close', finish);
  });
}

/** The first HTTP/1.1 response in `raw` (status null when there is none). */
export function parseResponse(raw: Buffer): { status: number | null; headers: Record<string, string>; body: Buffer; complete: boolean } {
  const end = raw.indexOf('\r\n\r\n');
  if (end < 0) return { status: null, headers: {}, body: Buffer.alloc(0), complete: false };
  const head = raw.subarray(0, end).toString('latin1').split('\r\n');
  const match = /^HTTP\/\d\.\d (\d{3})/.exec(head[0] ?? '');
  const headers: Record<string, string> = {};
  for (const line of head.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
  }
  let body = raw.subarray(end + 4);
  let complete = false;
  if (headers['transfer-encoding']?.toLowerCase().includes('chunked')) {
    const out: Buffer[] = [];
    let at = 0;
    for (;;) {
      const lineEnd = body.indexOf('\r\n', at);
      if (lineEnd < 0) break;
      const size = parseInt(body.subarray(at, lineEnd).toString('latin1'), 16);
      if (!Number.isFinite(size)) break;
      if (size === 0) {
        complete = true;
        break;
      }
      if (lineEnd + 2 + size > body.length) break;
      out.push(body.subarray(lineEnd + 2, lineEnd + 2 + size));
      at = lineEnd + 2 + size + 2;
    }
    body = Buffer.concat(out);
  } else if (headers['content-length'] !== undefined) {
    const length = Number(headers['content-length']);
    complete = body.length >= length;
    body = body.subarray(0, length);
  }
  return { status: match ? Number(match[1]) : null, headers, body, complete };
}

/** Serialises a request for raw TCP: the request line and headers exactly as given. */
export function rawRequestBytes(req: HttpRequest, { host = true, close = true } = {}): Buffer {
  const lines: Buffer[] = [Buffer.concat([Buffer.from(`${req.method} `, 'latin1'), req.path, Buffer.from(' HTTP/1.1\r\n', 'latin1')])];
  const names = new Set(req.headers.map(([n]) => n.toLowerCase()));
  if (host && !names.has('host')) lines.push(Buffer.from('Host: 127.0.0.1\r\n'));
  for (const [name, value] of req.headers) lines.push(Buffer.from(`${name}: ${value}\r\n`, 'utf8'));
  if (close && !names.has('connection')) lines.push(Buffer.from('Connection: close\r\n'));
  if (!names.has('content-length') && !names.has('transfer-encoding')) lines.push(Buffer.from(`Content-Length: ${req.body?.length ?? 0}\r\n`));
  lines.push(Buffer.from('\r\n'));
  if (req.body) lines.push(req.body);
  return Buffer.concat(lines);
}
