import http2 from 'node:http2';
import { gzipSync } from 'node:zlib';
import fc from 'fast-check';
import { hostileString, pctEncode, wtf8 } from './hostile.js';
import type { Method, Proto } from './grpc-fuzz.js';
import { STATUS_NAME } from './grpc-fuzz.js';
import type { World } from './server.js';

/**
 * gRPC framing damage that no gRPC client library sends, written straight onto HTTP/2: compressed
 * flags without (or with a bogus) grpc-encoding, broken gzip, length prefixes longer or shorter
 * than the message, two messages for a unary method, no message at all, wrong content types, a
 * missing `te: trailers`, unknown methods and odd paths, garbage grpc-timeout, oversized headers.
 * Every message inside is a request the server must refuse anyway (a read method's, or one with
 * no valid key), so whatever the framing does, nothing can be stored.
 */

export interface FrameCase {
  method: string;
  kind: string;
  path: string;
  headers: Record<string, string>;
  body: Buffer;
  summary: string;
}

export interface FrameAnswer {
  httpStatus: number | null;
  grpcStatus: number | null;
  grpcMessage: string;
  rstCode: number | null;
  error?: string;
}

const frame = (payload: Buffer, { compressed = false, length = payload.length } = {}) => {
  const head = Buffer.alloc(5);
  head.writeUInt8(compressed ? 1 : 0, 0);
  head.writeUInt32BE(length >>> 0, 1);
  return Buffer.concat([head, payload]);
};

const KINDS = [
  'compressed-flag-without-encoding',
  'gzip-garbage',
  'unknown-encoding',
  'length-longer-than-message',
  'length-4GiB',
  'length-shorter-than-message',
  'two-messages',
  'no-message',
  'partial-prefix',
  'content-type-grpc-json',
  'content-type-text',
  'content-type-missing',
  'no-te-trailers',
  'unknown-method',
  'odd-path',
  'grpc-timeout-garbage',
  'http-get',
  'huge-header',
  'grpc-message-type-in-request',
] as const;

export function frameCaseArb(proto: Proto, world: World): fc.Arbitrary<FrameCase> {
  // Read methods only (the frames' messages are then harmless whatever the server makes of them).
  const readMethods = proto.methods.filter((m) => /^(Get|List|Watch|Find|Select|Score)/.test(m.name) && !m.requestStream);
  return fc.record({ kind: fc.constantFrom(...KINDS), method: fc.constantFrom(...readMethods), h: hostileString, bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }), key: fc.constantFrom('admin', 'reader', 'none') }).map(({ kind, method, h, bytes, key }) => build(kind, method, world, h.value, Buffer.from(bytes), key));
}

function build(kind: (typeof KINDS)[number], method: Method, world: World, hostile: string, bytes: Buffer, key: string): FrameCase {
  // The template plus an unknown field (99, varint 42), so even an empty request has bytes to cut.
  const message = Buffer.concat([method.serialize(method.name === 'GetJob' || method.name === 'WatchJob' ? { id: world.jobId } : { dataset: world.main.name, name: world.main.name }), Buffer.from([0x98, 0x06, 0x2a])]);
  const headers: Record<string, string> = { 'content-type': 'application/grpc', te: 'trailers' };
  if (key !== 'none') headers.authorization = `Bearer ${world.keys[key as 'admin' | 'reader']}`;
  let path = method.path;
  let body = frame(message);
  switch (kind) {
    case 'compressed-flag-without-encoding':
      body = frame(message, { compressed: true });
      break;
    case 'gzip-garbage':
      headers['grpc-encoding'] = 'gzip';
      body = frame(Buffer.concat([Buffer.from([0x1f, 0x8b]), bytes]), { compressed: true });
      break;
    case 'unknown-encoding':
      headers['grpc-encoding'] = 'x-fuzz';
      body = frame(gzipSync(message), { compressed: true });
      break;
    case 'length-longer-than-message':
      body = frame(message, { length: message.length + 100 });
      break;
    case 'length-4GiB':
      body = frame(message, { length: 0xffffffff });
      break;
    case 'length-shorter-than-message':
      body = frame(Buffer.concat([message, bytes]), { length: Math.max(0, message.length - 1) });
      break;
    case 'two-messages':
      body = Buffer.concat([frame(message), frame(message)]);
      break;
    case 'no-message':
      body = Buffer.alloc(0);
      break;
    case 'partial-prefix':
      body = Buffer.from([0, 0, 0]);
      break;
    case 'content-type-grpc-json':
      headers['content-type'] = 'application/grpc+json';
      body = frame(Buffer.from(JSON.stringify({ dataset: hostile })));
      break;
    case 'content-type-text':
      headers['content-type'] = 'text/plain';
      break;
    case 'content-type-missing':
      delete headers['content-type'];
      break;
    case 'no-te-trailers':
      delete headers.te;
      break;
    case 'unknown-method':
      path = `${method.path.slice(0, method.path.lastIndexOf('/'))}/NoSuchMethod`;
      break;
    case 'odd-path':
      path = [`/${pctEncode(wtf8(hostile))}/x`, '/protoprune.v1.Protoprune', '/', `${method.path}/extra`, method.path.toLowerCase(), `${method.path}?q=1`][bytes[0] % 6];
      break;
    case 'grpc-timeout-garbage':
      headers['grpc-timeout'] = ['abc', '99999999999H', '-1S', '1x', ''][bytes[0] % 5];
      break;
    case 'http-get':
      headers[':method'] = 'GET';
      break;
    case 'huge-header':
      headers['x-fuzz-big'] = 'b'.repeat(bytes[0] % 2 === 0 ? 9000 : 70_000);
      break;
    case 'grpc-message-type-in-request':
      headers['grpc-message-type'] = hostile.replace(/[^\x20-\x7e]/g, '?');
      headers['grpc-status'] = '13';
      break;
  }
  return { method: method.name, kind, path, headers, body, summary: `${kind} ${path.slice(0, 80)} key=${key} body=${body.subarray(0, 16).toString('hex')}${body.length > 16 ? '…' : ''}` };
}

/** Sends one case on its own HTTP/2 connection. */
export function sendFrames(port: number, c: FrameCase, timeoutMs = 12_000): Promise<FrameAnswer> {
  return new Promise((resolve) => {
    const answer: FrameAnswer = { httpStatus: null, grpcStatus: null, grpcMessage: '', rstCode: null };
    let settled = false;
    const session = http2.connect(`http://127.0.0.1:${port}`);
    const done = (error?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) answer.error = error;
      session.destroy();
      resolve(answer);
    };
    const timer = setTimeout(() => done(`no end of the call within ${timeoutMs} ms`), timeoutMs);
    session.on('error', (e) => done(`session error: ${e.message}`));
    const readStatus = (h: http2.IncomingHttpHeaders) => {
      if (h['grpc-status'] !== undefined) answer.grpcStatus = Number(h['grpc-status']);
      if (typeof h['grpc-message'] === 'string') {
        try {
          answer.grpcMessage = decodeURIComponent(h['grpc-message']);
        } catch {
          answer.grpcMessage = h['grpc-message'];
        }
      }
    };
    let req: http2.ClientHttp2Stream;
    try {
      req = session.request({ ':method': 'POST', ':path': c.path, ...c.headers });
    } catch (e) {
      done(`client refused: ${(e as Error).message}`);
      return;
    }
    req.on('response', (h) => {
      answer.httpStatus = Number(h[':status']);
      readStatus(h);
    });
    req.on('trailers', readStatus);
    req.on('data', () => undefined);
    req.on('error', () => undefined);
    req.on('close', () => {
      answer.rstCode = req.rstCode ?? null;
      done();
    });
    if (c.body.length) req.write(c.body);
    req.end();
  });
}

export interface FrameJudgement {
  rule: string;
  status: string;
  detail: string;
}

export function judgeFrames(c: FrameCase, a: FrameAnswer): FrameJudgement[] {
  const status = a.grpcStatus === null ? `http ${a.httpStatus ?? '-'}${a.rstCode ? ` rst ${a.rstCode}` : ''}` : (STATUS_NAME.get(a.grpcStatus) ?? String(a.grpcStatus));
  const detail = a.error ?? a.grpcMessage;
  const out: FrameJudgement[] = [];
  if (a.error?.startsWith('no end')) out.push({ rule: 'hang (no answer within the deadline)', status, detail });
  if (a.grpcStatus === 13 || a.grpcStatus === 2 || a.grpcStatus === 15) out.push({ rule: `status-${status}`, status, detail });
  if (a.httpStatus !== null && a.httpStatus >= 500) out.push({ rule: '5xx', status, detail });
  // A broken frame is never a successful call, except the harmless changes a server may ignore.
  // (A compressed flag with identity encoding is read as identity by grpc-js: lenient, harmless.)
  const harmless = ['no-te-trailers', 'grpc-timeout-garbage', 'huge-header', 'grpc-message-type-in-request', 'content-type-missing', 'compressed-flag-without-encoding'];
  if (a.grpcStatus === 0 && !harmless.includes(c.kind) && !(c.kind === 'odd-path' && c.path.startsWith(`${c.path.split('?')[0]}?`))) out.push({ rule: 'accepted-invalid (broken framing)', status, detail });
  return out;
}
