import net from 'node:net';
import request from 'supertest';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EXTERNAL_ID_MAX_LENGTH } from '../../src/service/limits.js';
import { BACKENDS } from '../helpers/backends.js';
import { jpeg, sceneRaw } from '../embedding/images.js';
import { bearer, startApi, type ApiHarness } from './api-harness.js';

const DIM = 4;

/** Every refusal has the one error shape and a specific code. */
function expectError(res: { status: number; body: unknown; headers: Record<string, string> }, status: number, code: string) {
  expect({ status: res.status, body: res.body }).toMatchObject({ status, body: { error: { code } } });
  const error = (res.body as { error: Record<string, unknown> }).error;
  expect(typeof error.message).toBe('string');
  expect(typeof error.details).toBe('object');
  expect(res.headers['content-type']).toMatch(/^application\/json/);
}

/** Sends raw bytes on a fresh connection and returns the raw answer (the server closes the connection). */
function rawHttp(port: number, bytes: string | Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1');
    let answer = '';
    socket.on('data', (d) => (answer += d.toString('latin1')));
    socket.on('end', () => resolve(answer));
    socket.on('error', reject);
    socket.write(bytes);
  });
}

function parseRaw(answer: string): { status: number; contentType: string; body: unknown } {
  const [head, body] = answer.split('\r\n\r\n');
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1]);
  const contentType = /content-type: ([^\r\n]+)/i.exec(head)?.[1] ?? '';
  return { status, contentType, body: JSON.parse(body) };
}

describe.each(BACKENDS)('hostile REST input on the $name backend', (backend) => {
  let h: ApiHarness;
  let http: ReturnType<typeof request>;
  const admin = () => bearer(h.keys.admin);

  beforeAll(async () => {
    h = await startApi(backend);
    http = request(h.service.http.server);
    await http.post('/v1/datasets').set('authorization', admin()).send({ name: 'vecs', dimension: DIM }).expect(201);
    await http.post('/v1/datasets').set('authorization', admin()).send({ name: 'pics' }).expect(201);
  });
  afterAll(async () => {
    await h?.close();
  });

  it('refuses NUL bytes in path segments, ids, names, metadata and key names with 400 INVALID_CHARACTERS', async () => {
    expectError(await http.get('/v1/datasets/%00').set('authorization', admin()), 400, 'INVALID_CHARACTERS');
    expectError(await http.get('/v1/datasets/vecs/items/a%00b').set('authorization', admin()), 400, 'INVALID_CHARACTERS');
    expectError(await http.delete('/v1/datasets/vecs/items/%00').set('authorization', admin()), 400, 'INVALID_CHARACTERS');
    expectError(await http.post('/v1/datasets').set('authorization', admin()).send({ name: 'a\u0000b', dimension: 2 }), 400, 'INVALID_CHARACTERS');
    const ingest = (item: object) => http.post('/v1/datasets/vecs/items').set('authorization', admin()).send({ items: [item] });
    const res = await ingest({ externalId: 'x\u0000', embedding: [1, 0, 0, 0] });
    expectError(res, 400, 'INVALID_CHARACTERS');
    expect(res.body.error.details.field).toBe('body/items/0/externalId');
    expectError(await ingest({ externalId: 'x', embedding: [1, 0, 0, 0], metadata: { note: 'a\u0000' } }), 400, 'INVALID_CHARACTERS');
    expectError(await ingest({ externalId: 'x', embedding: [1, 0, 0, 0], metadata: { 'k\u0000': 1 } }), 400, 'INVALID_CHARACTERS');
    expectError(await http.post('/v1/keys').set('authorization', admin()).send({ name: 'k\u0000', scopes: ['read'] }), 400, 'INVALID_CHARACTERS');
    expectError(await http.get('/v1/datasets/vecs/selection?cursor=%00').set('authorization', admin()), 400, 'INVALID_CHARACTERS');
  });

  it('refuses a lone UTF-16 surrogate in metadata, and JSON nested past the limit', async () => {
    const body = `{"items":[{"externalId":"x","embedding":[1,0,0,0],"metadata":{"note":"\\ud800"}}]}`;
    const res = await http.post('/v1/datasets/vecs/items').set('authorization', admin()).set('content-type', 'application/json').send(body);
    expectError(res, 400, 'INVALID_CHARACTERS');
    let deep: unknown = 1;
    for (let i = 0; i < 40; i++) deep = { deeper: deep };
    expectError(
      await http.post('/v1/datasets/vecs/items').set('authorization', admin()).send({ items: [{ externalId: 'x', embedding: [1, 0, 0, 0], metadata: deep }] }),
      400,
      'NESTING_TOO_DEEP',
    );
    // Non-ASCII and emoji are ordinary text.
    const ok = await http
      .post('/v1/datasets/vecs/items')
      .set('authorization', admin())
      .send({ items: [{ externalId: 'café-🦊', embedding: [1, 0, 0, 0], metadata: { note: 'naïve 🦊 ✓' } }] })
      .expect(200);
    expect(ok.body.counts.stored).toBe(1);
    const item = await http.get(`/v1/datasets/vecs/items/${encodeURIComponent('café-🦊')}`).set('authorization', admin()).expect(200);
    expect(item.body).toMatchObject({ externalId: 'café-🦊', metadata: { note: 'naïve 🦊 ✓' } });
  });

  it('answers a body of an unsupported media type with 415 UNSUPPORTED_MEDIA_TYPE', async () => {
    for (const type of ['text/plain', 'application/xml', 'application/x-www-form-urlencoded']) {
      const res = await http.post('/v1/datasets/vecs/items').set('authorization', admin()).set('content-type', type).send('items=1');
      expectError(res, 415, 'UNSUPPORTED_MEDIA_TYPE');
    }
  });

  it('answers malformed multipart (no boundary, truncated body, over-long boundary, garbage) with 400 MALFORMED_MULTIPART', async () => {
    const post = (type: string, body: string) => http.post('/v1/datasets/pics/items').set('authorization', admin()).set('content-type', type).send(body);
    expectError(await post('multipart/form-data', '--x\r\n\r\n'), 400, 'MALFORMED_MULTIPART');
    const truncated = '--b\r\nContent-Disposition: form-data; name="a"; filename="a.jpg"\r\nContent-Type: image/jpeg\r\n\r\n\xff\xd8\xff';
    expectError(await post('multipart/form-data; boundary=b', truncated), 400, 'MALFORMED_MULTIPART');
    const long = 'b'.repeat(300);
    expectError(await post(`multipart/form-data; boundary=${long}`, `--${long}\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--${long}--\r\n`), 400, 'MALFORMED_MULTIPART');
    expectError(await post('multipart/form-data; boundary=b', 'garbage'), 400, 'MALFORMED_MULTIPART');
    // Parts without a Content-Disposition carry nothing to store.
    expectError(await post('multipart/form-data; boundary=b', '--b\r\nnot a header line\r\n\r\nx\r\n--b--\r\n'), 400, 'NO_ITEMS');
    // A well-formed upload still works, including a non-ASCII file name as the external id.
    const image = await jpeg(64, 48, sceneRaw(64, 48, 1));
    const res = await http.post('/v1/datasets/pics/items').set('authorization', admin()).attach('file', image, 'straße-🦊.jpg').expect(200);
    expect(res.body.items[0]).toMatchObject({ externalId: 'straße-🦊.jpg', status: 'stored' });
  });

  it('takes only JSON numbers that fit float32 as embedding values', async () => {
    const ingest = (embedding: unknown) =>
      http.post('/v1/datasets/vecs/items').set('authorization', admin()).send({ items: [{ externalId: 'f32', embedding }] });
    const overflow = await ingest([1e39, 0, 0, 0]);
    expectError(overflow, 400, 'NON_FINITE_VALUE');
    expect(overflow.body.error.details.items[0]).toMatchObject({ externalId: 'f32', code: 'NON_FINITE_VALUE' });
    expectError(await ingest([-3.5e38, 1, 1, 1]), 400, 'NON_FINITE_VALUE');
    const booleans = await ingest([true, false, true, false]);
    expectError(booleans, 400, 'VALIDATION_FAILED');
    expect(booleans.body.error.details.field).toMatch(/^body\/items\/0\/embedding/);
    expectError(await ingest(['1', '0', '0', '0']), 400, 'VALIDATION_FAILED');
    expectError(await ingest([null, 0, 0, 0]), 400, 'VALIDATION_FAILED');
    // The largest float32 is a value like any other; a bad item among good ones fails alone.
    const mixed = await http
      .post('/v1/datasets/vecs/items')
      .set('authorization', admin())
      .send({ items: [{ externalId: 'max', embedding: [3.4028234e38, 0, 0, 0] }, { externalId: 'over', embedding: [0, 1e39, 0, 0] }] })
      .expect(200);
    expect(mixed.body.counts).toEqual({ stored: 1, updated: 0, failed: 1 });
    expect(mixed.body.items[1]).toMatchObject({ externalId: 'over', code: 'NON_FINITE_VALUE' });
    // Bodies are not coerced anywhere: a string where the schema wants an integer is refused.
    expectError(await http.post('/v1/datasets').set('authorization', admin()).send({ name: 'coerced', dimension: '8' }), 400, 'VALIDATION_FAILED');
    await http.get('/v1/datasets/coerced').set('authorization', admin()).expect(404);
  });

  it('addresses every external id the API accepts on every item route, percent-encoded', async () => {
    const longest = '名'.repeat(EXTERNAL_ID_MAX_LENGTH - 1) + '🦊';
    expect([...longest].length).toBe(EXTERNAL_ID_MAX_LENGTH);
    await http.post('/v1/datasets/vecs/items').set('authorization', admin()).send({ items: [{ externalId: longest, embedding: [0, 1, 0, 0] }] }).expect(200);
    const path = `/v1/datasets/vecs/items/${encodeURIComponent(longest)}`;
    expect((await http.get(path).set('authorization', admin()).expect(200)).body.externalId).toBe(longest);
    expectError(await http.get(`${path}/thumbnail`).set('authorization', admin()), 404, 'THUMBNAIL_NOT_FOUND');
    await http.delete(path).set('authorization', admin()).expect(204);
    expectError(await http.get(path).set('authorization', admin()), 404, 'ITEM_NOT_FOUND');
    // One code point more is refused where ids are created, and in paths.
    const tooLong = `${longest}x`;
    const refused = await http.post('/v1/datasets/vecs/items').set('authorization', admin()).send({ items: [{ externalId: tooLong, embedding: [0, 1, 0, 0] }] });
    expectError(refused, 400, 'VALIDATION_FAILED');
    expectError(await http.get(`/v1/datasets/vecs/items/${encodeURIComponent(tooLong)}`).set('authorization', admin()), 400, 'VALIDATION_FAILED');
    // A path parameter longer than any id the API accepts, in the error shape.
    expectError(await http.get(`/v1/datasets/vecs/items/${'%F0%9F%A6%8A'.repeat(EXTERNAL_ID_MAX_LENGTH + 1)}`).set('authorization', admin()), 414, 'PATH_PARAMETER_TOO_LONG');
  });

  it('answers the router’s and Node’s HTTP parser’s own refusals in the error shape', async () => {
    expectError(await http.get('/v1/datasets/%ZZ').set('authorization', admin()), 400, 'MALFORMED_URL');
    expectError(await http.get('/v1/no-such-route'), 404, 'ROUTE_NOT_FOUND');
    const port = h.service.httpPort;
    const broken = parseRaw(await rawHttp(port, 'GET /readyz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n'));
    expect(broken).toMatchObject({ status: 400, body: { error: { code: 'MALFORMED_REQUEST', details: {} } } });
    expect(broken.contentType).toMatch(/^application\/json/);
    const garbage = parseRaw(await rawHttp(port, '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n'));
    expect(garbage).toMatchObject({ status: 400, body: { error: { code: 'MALFORMED_REQUEST' } } });
    const huge = parseRaw(await rawHttp(port, `GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`));
    expect(huge).toMatchObject({ status: 431, body: { error: { code: 'HEADERS_TOO_LARGE' } } });
    const noHost = parseRaw(await rawHttp(port, 'GET /readyz HTTP/1.1\r\nConnection: close\r\n\r\n'));
    expect(noHost).toMatchObject({ status: 400, body: { error: { code: 'MISSING_HOST_HEADER' } } });
    const expectation = parseRaw(await rawHttp(port, 'POST /v1/datasets HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\nContent-Length: 2\r\n\r\n{}'));
    expect(expectation).toMatchObject({ status: 417, body: { error: { code: 'EXPECTATION_FAILED' } } });
    // The server keeps serving.
    await http.get('/readyz').expect(200);
  });

  it('echoes a plain client request id, and replaces one that is not', async () => {
    const plain = await http.get('/healthz').set('x-request-id', 'trace-42.a:b');
    expect(plain.headers['x-request-id']).toBe('trace-42.a:b');
    const odd = await http.get('/healthz').set('x-request-id', `${'x'.repeat(300)}`);
    expect(odd.headers['x-request-id']).toMatch(/^[0-9a-f-]{36}$/);
  });
});
