import { createHash, randomBytes } from 'node:crypto';
import type { Database } from '../store/database.js';
import { findApiKeyByHash, insertApiKey, listApiKeys as listKeyRows, revokeApiKey as revokeKeyRow, touchApiKey, type ApiKeyRow } from '../store/api-keys.js';
import { isUuid } from '../store/datasets.js';
import type { ServiceContext } from './context.js';
import { ServiceError } from './errors.js';

/** `admin` implies `write`, which implies `read`. */
export const SCOPES = ['read', 'write', 'admin'] as const;
export type Scope = (typeof SCOPES)[number];

/** Who is calling: an API key, or everyone when auth is disabled by configuration. */
export interface Principal {
  keyId: string | null;
  name: string;
  scopes: Scope[];
  /** Dataset names this caller may touch; empty means every dataset. */
  datasets: string[];
}

/** The caller when `AUTH_DISABLED=true`: allowed everything. */
export const UNAUTHENTICATED_ADMIN: Principal = { keyId: null, name: 'auth-disabled', scopes: ['admin'], datasets: [] };

const KEY_PREFIX = 'pp_';
/** Writing last_used_at on every request would turn reads into writes; once a minute is enough. */
const TOUCH_INTERVAL_MS = 60_000;
const lastTouched = new Map<string, number>();

export function hashSecret(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

export interface ApiKeyView {
  id: string;
  name: string;
  scopes: Scope[];
  datasets: string[];
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
}

function view(row: ApiKeyRow): ApiKeyView {
  return { ...row, scopes: row.scopes as Scope[] };
}

export interface MintKeyInput {
  name: string;
  scopes: readonly string[];
  datasets?: readonly string[];
}

/** Creates a key; the secret is returned once and only its SHA-256 is stored. */
export async function mintApiKey(db: Database, input: MintKeyInput): Promise<ApiKeyView & { secret: string }> {
  const name = input.name.trim();
  if (name.length === 0 || name.length > 128) throw new ServiceError('invalid', 'INVALID_NAME', 'key name must be 1-128 characters', { field: 'name' });
  if (input.scopes.length === 0) throw new ServiceError('invalid', 'INVALID_SCOPES', `give at least one scope of ${SCOPES.join(', ')}`, { field: 'scopes' });
  for (const scope of input.scopes) {
    if (!(SCOPES as readonly string[]).includes(scope)) {
      throw new ServiceError('invalid', 'INVALID_SCOPES', `unknown scope ${scope}; scopes are ${SCOPES.join(', ')}`, { field: 'scopes' });
    }
  }
  const secret = KEY_PREFIX + randomBytes(24).toString('base64url');
  const row = await insertApiKey(db, { name, keyHash: hashSecret(secret), scopes: [...new Set(input.scopes)], datasets: [...new Set(input.datasets ?? [])] });
  return { ...view(row), secret };
}

export async function listApiKeys(db: Database): Promise<ApiKeyView[]> {
  return (await listKeyRows(db)).map(view);
}

export async function revokeApiKey(db: Database, id: string): Promise<ApiKeyView> {
  const row = isUuid(id) ? await revokeKeyRow(db, id) : undefined;
  if (!row) throw new ServiceError('not_found', 'API_KEY_NOT_FOUND', `API key ${id} does not exist`, { id });
  lastTouched.delete(id);
  return view(row);
}

/**
 * Resolves the secret a caller presented (the part after `Bearer `) to its key. With auth
 * disabled every caller is an admin; otherwise a missing or unknown/revoked secret is refused.
 */
export async function authenticate(ctx: ServiceContext, secret: string | undefined): Promise<Principal> {
  if (!ctx.authEnabled) return UNAUTHENTICATED_ADMIN;
  if (!secret) throw new ServiceError('unauthenticated', 'MISSING_API_KEY', 'send an API key as "Authorization: Bearer <key>"');
  const row = await findApiKeyByHash(ctx.db, hashSecret(secret));
  if (!row) throw new ServiceError('unauthenticated', 'INVALID_API_KEY', 'the API key is unknown or revoked');
  const now = Date.now();
  if (now - (lastTouched.get(row.id) ?? 0) > TOUCH_INTERVAL_MS) {
    lastTouched.set(row.id, now);
    await touchApiKey(ctx.db, row.id);
  }
  return { keyId: row.id, name: row.name, scopes: row.scopes as Scope[], datasets: row.datasets };
}

export function hasScope(principal: Principal, scope: Scope): boolean {
  const rank = SCOPES.indexOf(scope);
  return principal.scopes.some((s) => SCOPES.indexOf(s) >= rank);
}

export function mayAccessDataset(principal: Principal, dataset: string): boolean {
  return principal.datasets.length === 0 || principal.datasets.includes(dataset);
}

/** Throws `forbidden` unless the principal holds `scope` (or a higher one) and, if named, may touch `dataset`. */
export function authorize(principal: Principal, scope: Scope, dataset?: string): void {
  if (!hasScope(principal, scope)) {
    throw new ServiceError('forbidden', 'INSUFFICIENT_SCOPE', `this operation needs the ${scope} scope`, { required: scope, granted: principal.scopes });
  }
  if (dataset !== undefined && !mayAccessDataset(principal, dataset)) {
    throw new ServiceError('forbidden', 'DATASET_FORBIDDEN', `this API key may not access dataset ${dataset}`, { dataset });
  }
}

/** Read access to a job means read access to its dataset; a job whose dataset is gone is visible only to unrestricted keys. */
export function authorizeJob(principal: Principal, job: { dataset: string | null }): void {
  if (job.dataset !== null) return authorize(principal, 'read', job.dataset);
  authorize(principal, 'read');
  if (principal.datasets.length > 0) {
    throw new ServiceError('forbidden', 'DATASET_FORBIDDEN', 'this API key may not access the job of a deleted dataset', {});
  }
}
