import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../src/config/index.js';
import { startService, type RunningService } from '../../src/server.js';
import { mintApiKey, OPERATOR } from '../../src/service/auth.js';
import type { TestBackend } from '../helpers/backends.js';
import type { Logger } from 'pino';
import { silentLogger } from '../helpers/logger.js';

export interface ApiHarness {
  service: RunningService;
  /** Bearer secrets by role. */
  keys: { admin: string; writer: string; reader: string; otherOnly: string };
  /** The service's DATA_DIR. */
  dataDir: string;
  close(): Promise<void>;
}

/**
 * The whole service (HTTP, gRPC, jobs, the default image encoder) on a fresh database, with keys
 * of each scope minted. `env` overrides configuration variables; `logger` receives the service's log.
 */
export async function startApi(backend: TestBackend, env: Record<string, string> = {}, logger: Logger = silentLogger): Promise<ApiHarness> {
  const fresh = await backend.fresh();
  const modelsDir = await mkdtemp(path.join(tmpdir(), 'protoprune-models-'));
  const config = loadConfig({ PORT: '0', GRPC_PORT: '0', HOST: '127.0.0.1', JOB_POLL_MS: '50', MODELS_DIR: modelsDir, EMBEDDING_MAX_WAIT_MS: '2', ...env });
  const service = await startService({ ...config, database: fresh.config, dataDir: fresh.dataDir }, logger);
  const mint = async (scopes: string[], datasets: string[] = []) => (await mintApiKey(service.db, { name: scopes.join('+'), scopes, datasets }, OPERATOR)).secret;
  return {
    service,
    dataDir: fresh.dataDir,
    keys: { admin: await mint(['admin']), writer: await mint(['write']), reader: await mint(['read']), otherOnly: await mint(['admin'], ['other']) },
    async close() {
      await service.stop();
      await fresh.cleanup();
      await rm(modelsDir, { recursive: true, force: true });
    },
  };
}

/** `Authorization` header value for a secret. */
export const bearer = (secret: string) => `Bearer ${secret}`;
