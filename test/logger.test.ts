import * as grpc from '@grpc/grpc-js';
import Fastify, { type FastifyBaseLogger } from 'fastify';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, redactText, redactUrl } from '../src/logger.js';

const SECRET = 'pp_Zm9vYmFyYmF6cXV4cXV1eHF1dXhxdXV4';

/** A logger writing into memory; `lines()` parses what it wrote. */
function capture(level: 'info' | 'debug' = 'debug') {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += chunk;
      done();
    },
  });
  const logger = createLogger(level, stream as unknown as Parameters<typeof createLogger>[1]);
  return { logger, text: () => text, lines: () => text.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, any>) }; // eslint-disable-line @typescript-eslint/no-explicit-any
}

describe('redactUrl', () => {
  it('replaces the values of credential-looking query parameters and keeps everything else', () => {
    expect(redactUrl('/v1/datasets?api_key=abc&limit=10')).toBe('/v1/datasets?api_key=[REDACTED]&limit=10');
    expect(redactUrl('/x?token=t&access_token=a&client_secret=s&password=p&passwd=q&auth=z&credential=c&X-Amz-Signature=sig&session=s1&order=hardest'))
      .toBe('/x?token=[REDACTED]&access_token=[REDACTED]&client_secret=[REDACTED]&password=[REDACTED]&passwd=[REDACTED]&auth=[REDACTED]&credential=[REDACTED]&X-Amz-Signature=[REDACTED]&session=[REDACTED]&order=hardest');
    expect(redactUrl('/x?API_KEY=1&ApiKey=2&apikey=3')).toBe('/x?API_KEY=[REDACTED]&ApiKey=[REDACTED]&apikey=[REDACTED]');
  });

  it('matches names after percent-decoding and keeps the original spelling', () => {
    expect(redactUrl('/x?api%5Fkey=abc&a%20b=1')).toBe('/x?api%5Fkey=[REDACTED]&a%20b=1');
    expect(redactUrl('/x?%E0%A4%A=1')).toBe('/x?%E0%A4%A=1'); // undecodable name: left alone
  });

  it('leaves URLs without credential parameters, valueless parameters and fragments as they are', () => {
    expect(redactUrl('/v1/datasets/photos/selection?order=hardest&fraction=0.3')).toBe('/v1/datasets/photos/selection?order=hardest&fraction=0.3');
    expect(redactUrl('/plain/path')).toBe('/plain/path');
    expect(redactUrl('/x?token')).toBe('/x?token');
    expect(redactUrl('/x?')).toBe('/x?');
    expect(redactUrl('/x?token=abc#frag')).toBe('/x?token=[REDACTED]#frag');
    expect(redactUrl('/x?a=1&&b=2')).toBe('/x?a=1&&b=2');
    expect(redactUrl('https://h.example/p?key=v&key=w')).toBe('https://h.example/p?key=[REDACTED]&key=[REDACTED]');
    expect(redactUrl('/x?q=a=b&token=c=d')).toBe('/x?q=a=b&token=[REDACTED]');
  });
});

describe('redactText', () => {
  it('redacts URLs, bearer credentials and API key secrets inside free text', () => {
    expect(redactText('Route GET:/v1/x?api_key=abc&n=1 not found')).toBe('Route GET:/v1/x?api_key=[REDACTED]&n=1 not found');
    expect(redactText(`header was Bearer ${SECRET}, then`)).toBe('header was Bearer [REDACTED], then');
    expect(redactText('authorization: bearer a.b-c_d~e+f/g=')).toBe('authorization: bearer [REDACTED]');
    expect(redactText(`bad key ${SECRET}`)).toBe('bad key [REDACTED]');
    expect(redactText('nothing to see')).toBe('nothing to see');
  });
});

describe('createLogger', () => {
  it('redacts credential headers, gRPC metadata and query strings wherever they are logged', () => {
    const { logger, text, lines } = capture();
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${SECRET}`);
    metadata.set('x-request-id', 'r1');
    logger.info({ headers: { authorization: `Bearer ${SECRET}`, 'x-api-key': SECRET, cookie: `s=${SECRET}`, 'proxy-authorization': SECRET, accept: 'a/b' } }, 'headers');
    logger.info({ response: { headers: { 'set-cookie': SECRET, authorization: SECRET } } }, 'nested');
    logger.info({ metadata }, 'metadata');
    logger.info({ req: { method: 'GET', url: `/v1/x?api_key=${SECRET}`, headers: { authorization: `Bearer ${SECRET}`, host: 'h' } } }, 'raw request');
    logger.info('Route %s:%s not found', 'GET', `/v1/x?token=${SECRET}`);
    logger.warn(`Reply was already sent for /v1/x?access_token=${SECRET}`);
    expect(text()).not.toContain(SECRET);

    const [headers, nested, meta, req] = lines();
    expect(headers.headers).toEqual({ authorization: '[REDACTED]', 'x-api-key': '[REDACTED]', cookie: '[REDACTED]', 'proxy-authorization': '[REDACTED]', accept: 'a/b' });
    expect(nested.response.headers).toEqual({ 'set-cookie': '[REDACTED]', authorization: '[REDACTED]' });
    expect(meta.metadata).toEqual({ authorization: '[REDACTED]', 'x-request-id': 'r1' });
    expect(req.req).toEqual({ method: 'GET', url: '/v1/x?api_key=[REDACTED]', host: 'h' }); // no headers at all
    expect(lines()[4].msg).toBe('Route GET:/v1/x?token=[REDACTED] not found');
  });

  it('errors logged with err cannot carry the Authorization header, metadata or a secret URL', () => {
    const { logger, text, lines } = capture();
    const error = Object.assign(new Error(`request to /v1/x?api_key=${SECRET} failed`), {
      config: { headers: { Authorization: `Bearer ${SECRET}`, Accept: 'x' }, url: `/v1/x?token=${SECRET}` },
      request: { headers: { authorization: SECRET } },
      metadata: (() => {
        const m = new grpc.Metadata();
        m.set('authorization', `Bearer ${SECRET}`);
        return m;
      })(),
      password: SECRET,
      code: 'E_FAIL',
    });
    const wrapper = new Error('outer', { cause: error });
    logger.error({ err: error }, 'failed');
    logger.error({ err: wrapper }, 'wrapped');
    logger.error(error); // message taken from the error
    logger.error({ err: error }); // ditto
    expect(text()).not.toContain(SECRET);
    const [first, second, third, fourth] = lines();
    expect(first.err).toMatchObject({
      type: 'Error',
      message: 'request to /v1/x?api_key=[REDACTED] failed',
      config: { headers: { Authorization: '[REDACTED]', Accept: 'x' }, url: '/v1/x?token=[REDACTED]' },
      request: { headers: { authorization: '[REDACTED]' } },
      metadata: { authorization: '[REDACTED]' },
      password: '[REDACTED]',
      code: 'E_FAIL',
    });
    expect(first.err.stack).toContain('request to /v1/x?api_key=[REDACTED] failed');
    expect(second.err.message).toContain('[REDACTED]');
    expect(third.msg).toBe('request to /v1/x?api_key=[REDACTED] failed');
    expect(fourth.msg).toBe('request to /v1/x?api_key=[REDACTED] failed');
  });

  it('as fastify loggerInstance: request lines carry the redacted URL, not headers, and error lines no secret', async () => {
    const { logger, text, lines } = capture('info');
    const app = Fastify({ loggerInstance: logger as FastifyBaseLogger });
    app.get('/ok', async () => ({ ok: true }));
    app.get('/boom', async () => {
      throw Object.assign(new Error('boom'), { headers: { authorization: `Bearer ${SECRET}` } });
    });
    await app.ready();
    const headers = { authorization: `Bearer ${SECRET}`, cookie: `sid=${SECRET}`, 'x-api-key': SECRET };
    expect((await app.inject({ url: `/ok?api_key=${SECRET}&n=1`, headers })).statusCode).toBe(200);
    expect((await app.inject({ url: `/boom?token=${SECRET}`, headers })).statusCode).toBe(500);
    expect((await app.inject({ url: `/missing?session=${SECRET}`, headers })).statusCode).toBe(404);
    await app.close();

    expect(text()).not.toContain(SECRET);
    const incoming = lines().filter((l) => l.msg === 'incoming request');
    expect(incoming.map((l) => l.req.url)).toEqual(['/ok?api_key=[REDACTED]&n=1', '/boom?token=[REDACTED]', '/missing?session=[REDACTED]']);
    for (const l of incoming) expect(l.req).not.toHaveProperty('headers');
    expect(lines().filter((l) => l.msg === 'request completed')).toHaveLength(3);
    expect(lines().some((l) => l.err?.headers?.authorization === '[REDACTED]')).toBe(true);
    expect(lines().some((l) => l.msg === 'Route GET:/missing?session=[REDACTED] not found')).toBe(true);
  });
});
