import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { PROJECT_ROOT } from '../../paths.js';
import { errorBody } from '../schemas.js';

/**
 * The dashboard's static files. They are plain HTML, CSS and hand-written JavaScript (no build
 * step, no external fonts or scripts), read from the source tree both when the server runs from
 * src/ (tests, `npm run dev`) and from dist/ (the Dockerfile copies src/dashboard).
 */
export const DASHBOARD_DIR = path.join(PROJECT_ROOT, 'src', 'dashboard');

const ASSET_TYPES: Record<string, string> = {
  'main.js': 'text/javascript; charset=utf-8',
  'api.js': 'text/javascript; charset=utf-8',
  'state.js': 'text/javascript; charset=utf-8',
  'poll.js': 'text/javascript; charset=utf-8',
  'dom.js': 'text/javascript; charset=utf-8',
  'charts.js': 'text/javascript; charset=utf-8',
  'view-connect.js': 'text/javascript; charset=utf-8',
  'view-datasets.js': 'text/javascript; charset=utf-8',
  'view-dataset.js': 'text/javascript; charset=utf-8',
  'view-refit.js': 'text/javascript; charset=utf-8',
  'view-preview.js': 'text/javascript; charset=utf-8',
  'view-selection.js': 'text/javascript; charset=utf-8',
  'view-duplicates.js': 'text/javascript; charset=utf-8',
  'view-manifests.js': 'text/javascript; charset=utf-8',
  'thumbs.js': 'text/javascript; charset=utf-8',
  'download.js': 'text/javascript; charset=utf-8',
  'dashboard.css': 'text/css; charset=utf-8',
  'icon.svg': 'image/svg+xml',
};

/**
 * Everything the page needs comes from this server: its own script and style, data from /v1
 * (fetch), and thumbnails as blob: URLs made from authorised fetches.
 */
const CONTENT_SECURITY_POLICY = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' blob:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

async function loadAssets(): Promise<{ html: Buffer; assets: Map<string, Buffer> }> {
  const read = async (file: string) => {
    try {
      return await readFile(path.join(DASHBOARD_DIR, file));
    } catch (error) {
      throw new Error(`dashboard file ${file} is missing from ${DASHBOARD_DIR} (a deployment must ship src/dashboard): ${(error as Error).message}`);
    }
  };
  const assets = new Map<string, Buffer>();
  for (const file of Object.keys(ASSET_TYPES)) assets.set(file, await read(file));
  return { html: await read('index.html'), assets };
}

/**
 * The dashboard at /dashboard. Loading the page needs no API key: the page asks for one and reads
 * everything through the public /v1 API with it, so it never shows more than the key may read.
 */
export const dashboardRoutes: FastifyPluginAsyncTypebox = async (app) => {
  const { html, assets } = await loadAssets();

  app.get('/dashboard', { schema: { hide: true } }, async (_request, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .header('cache-control', 'no-cache')
      .header('content-security-policy', CONTENT_SECURITY_POLICY)
      .header('x-content-type-options', 'nosniff')
      .header('referrer-policy', 'no-referrer')
      .send(html),
  );

  // Assets are referenced relative to /dashboard, so a trailing slash would break them.
  app.get('/dashboard/', { schema: { hide: true } }, async (_request, reply) => reply.redirect('../dashboard', 308));

  app.get(
    '/dashboard/assets/:file',
    { schema: { hide: true, params: Type.Object({ file: Type.String({ maxLength: 64 }) }) } },
    async (request, reply) => {
      const { file } = request.params;
      const body = Object.hasOwn(ASSET_TYPES, file) ? assets.get(file) : undefined;
      if (!body) return reply.status(404).send(errorBody('ROUTE_NOT_FOUND', `no dashboard asset ${file}`));
      return reply.type(ASSET_TYPES[file]).header('cache-control', 'no-cache').header('x-content-type-options', 'nosniff').send(body);
    },
  );
};
