/**
 * HTTP/1.1 that is broken before any route can match: bad request lines, bad header syntax,
 * oversized headers, contradictory framing. Node's parser refuses these; the server must still
 * answer in the API's error shape (or close the connection when nothing can be answered).
 */
export interface BrokenRequest {
  name: string;
  bytes: Buffer;
  halfClose: boolean;
  /** Closing without an answer is acceptable (the request never completed). */
  mayClose: boolean;
}

const b = (s: string) => Buffer.from(s, 'latin1');
const H = 'Host: 127.0.0.1\r\nConnection: close\r\n';

export const BROKEN_HTTP: BrokenRequest[] = [
  { name: 'garbage-request-line', bytes: b('GARBAGE\r\n\r\n'), halfClose: false, mayClose: false },
  { name: 'binary-noise', bytes: Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x0d, 0x0a, 0x0d, 0x0a]), halfClose: false, mayClose: false },
  { name: 'http-9.9', bytes: b(`GET /v1/datasets HTTP/9.9\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'http-0.9-style', bytes: b('GET /v1/datasets\r\n\r\n'), halfClose: false, mayClose: false },
  { name: 'no-host-http-1.1', bytes: b('GET /v1/datasets HTTP/1.1\r\nConnection: close\r\n\r\n'), halfClose: false, mayClose: false },
  { name: 'lowercase-method', bytes: b(`get /v1/datasets HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'unknown-method', bytes: b(`BREW /v1/datasets HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'nul-in-path', bytes: b(`GET /v1/datasets/a\u0000b HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'space-in-path', bytes: b(`GET /v1/datasets/a b HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'raw-utf8-in-path', bytes: Buffer.concat([b('GET /v1/datasets/'), Buffer.from('💥ü', 'utf8'), b(` HTTP/1.1\r\n${H}\r\n`)]), halfClose: false, mayClose: false },
  { name: 'control-char-in-path', bytes: b(`GET /v1/datasets/\u0007\u001b HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'asterisk-form', bytes: b(`OPTIONS * HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'authority-form-get', bytes: b(`GET 127.0.0.1:80 HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'absolute-form', bytes: b(`GET http://127.0.0.1/v1/datasets HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'header-no-colon', bytes: b(`GET /v1/datasets HTTP/1.1\r\n${H}NoColonHere\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'header-space-before-colon', bytes: b(`GET /v1/datasets HTTP/1.1\r\n${H}Authorization : Bearer x\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'nul-in-header', bytes: b(`GET /v1/datasets HTTP/1.1\r\n${H}Authorization: Bearer a\u0000b\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'utf8-in-header', bytes: Buffer.concat([b(`GET /v1/datasets HTTP/1.1\r\n${H}Authorization: Bearer `), Buffer.from('ключ💥', 'utf8'), b('\r\n\r\n')]), halfClose: false, mayClose: false },
  { name: 'obs-fold', bytes: b(`GET /v1/datasets HTTP/1.1\r\n${H}X-A: 1\r\n  folded\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'bare-lf', bytes: b('GET /v1/datasets HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n\n'), halfClose: false, mayClose: false },
  { name: 'bare-cr', bytes: b('GET /v1/datasets HTTP/1.1\rHost: 127.0.0.1\r\r'), halfClose: false, mayClose: false },
  { name: 'header-32k', bytes: b(`GET /v1/datasets HTTP/1.1\r\n${H}X-Big: ${'a'.repeat(32_000)}\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'url-100k', bytes: b(`GET /v1/datasets/${'d'.repeat(100_000)} HTTP/1.1\r\n${H}\r\n`), halfClose: false, mayClose: false },
  { name: 'many-headers-3000', bytes: b(`GET /v1/datasets HTTP/1.1\r\n${H}${Array.from({ length: 3000 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`), halfClose: false, mayClose: false },
  { name: 'cl-and-te', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'two-content-lengths', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}`), halfClose: false, mayClose: false },
  { name: 'content-length-garbage', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 1e3\r\n\r\n{}`), halfClose: false, mayClose: false },
  { name: 'content-length-huge', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 99999999999999999999\r\n\r\n{}`), halfClose: false, mayClose: false },
  { name: 'content-length-over-body-limit', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n{"name":`), halfClose: true, mayClose: true },
  { name: 'body-shorter-than-length', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"name":"x"`), halfClose: true, mayClose: true },
  { name: 'bad-chunk-size', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'chunk-size-overflow', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n{}\r\n0\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'te-gzip-only', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nTransfer-Encoding: gzip\r\n\r\n{}`), halfClose: false, mayClose: false },
  { name: 'truncated-chunked', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{"na`), halfClose: true, mayClose: true },
  { name: 'headers-never-end', bytes: b(`GET /v1/datasets HTTP/1.1\r\n${H}X-A: 1\r\n`), halfClose: true, mayClose: true },
  { name: 'pipelined-garbage-after-request', bytes: b(`GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\nGARBAGE\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'expect-continue-unknown', bytes: b(`POST /v1/datasets HTTP/1.1\r\n${H}Expect: 200-ok\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}`), halfClose: false, mayClose: false },
  { name: 'upgrade-h2c', bytes: b(`GET /v1/datasets HTTP/1.1\r\n${H}Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n`), halfClose: false, mayClose: false },
  { name: 'http2-preface-on-http1', bytes: b('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), halfClose: false, mayClose: false },
];
